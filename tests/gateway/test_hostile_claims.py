"""Claims no real API server would store, served over real HTTP to the real client, and
kubelet's references echoed back: every one is a one-line claim error naming the field
or the limit, never ``internal error: AttributeError`` or ``RecursionError``."""

from __future__ import annotations

import json

import pytest

from kndpeers.kubelet import make_claim, prepare, ref
from services.common.api.decode import MAX_DEPTH, MAX_OBJECT_BYTES
from tests.gateway.conftest import FakePlumber, Gateway
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio

PATH = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/{name}"


def _deep(levels: int) -> bytes:
    return b'{"metadata": ' + b"[" * levels + b"]" * levels + b"}"


HOSTILE = {
    "wrong-types": (json.dumps({"metadata": 5, "status": "nope"}).encode(),
                    "metadata: expected an object, got a number"),
    "deep": (_deep(100_000), f"nested deeper than {MAX_DEPTH} levels"),
    "huge": (json.dumps({"metadata": {"name": "huge"},
                         "pad": "x" * MAX_OBJECT_BYTES}).encode(),
             f"over {MAX_OBJECT_BYTES} bytes"),
    "not-an-object": (b"[1, 2]", "expected a JSON object, got a list"),
    "status-a-string": (None, 'status: expected an object, got a string "nope"'),
    "results-not-objects": (None, "status.allocation.devices.results[0]: expected an object, "
                                  "got a number"),
}


@pytest.mark.parametrize("case", HOSTILE)
async def test_a_malformed_claim_is_a_claim_error(gateway: Gateway, kube_api: KubeApiServer,
                                                  plumber: FakePlumber, case: str) -> None:
    body, expected = HOSTILE[case]
    uid = f"uid-{case}"
    if body is None:  # a real claim with one field broken
        claim = make_claim(case, uid=uid)
        if case == "status-a-string":
            claim["status"] = "nope"
        else:
            claim["status"]["allocation"]["devices"]["results"] = [7]
        body = json.dumps(claim).encode()
    kube_api.serve_raw(PATH.format(name=case), body)

    resp = await prepare(gateway.dra, "v1", [("default", case, uid)])

    error = resp.claims[uid].error
    assert expected in error, error
    assert error.startswith(f"claim default/{case}: ")
    assert "internal error" not in error and "\n" not in error and len(error) < 1000
    assert not plumber.prepares


async def test_kubelets_names_are_escaped_and_cut(gateway: Gateway,
                                                  kube_api: KubeApiServer) -> None:
    name = "a\x00b\n" + "x" * 1_000_000
    resp = await prepare(gateway.dra, "v1", [("default", name, "uid-long"), ("", "", "")])
    error = resp.claims["uid-long"].error
    assert "not a Kubernetes name" in error and "\x00" not in error and "\n" not in error
    assert "a\\x00b\\n" in error and len(error) < 500, len(error)


async def test_a_sound_claim_still_prepares(gateway: Gateway, kube_api: KubeApiServer,
                                            plumber: FakePlumber) -> None:
    claim = make_claim("sound")
    kube_api.put_object("resourceclaims", claim)
    resp = await prepare(gateway.dra, "v1", [ref(claim)])
    assert resp.claims[claim["metadata"]["uid"]].error == ""
