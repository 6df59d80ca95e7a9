"""``knd status`` counts the gateway's DRA and NRI calls, not only its bus requests:
real kubelet gRPC calls and real NRI calls, read back from the gateway's /metrics."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.exposition import generate_latest

from kndpeers.kubelet import make_claim, prepare, ref, unprepare
from kndpeers.nri_runtime import pod
from services.cli import build_parser
from services.common.auth import Credentials
from services.common.httpserver import Health, serving
from services.common.natsd import free_port
from services.tools import calls, status
from tests.conftest import NODE
from tests.gateway.conftest import Gateway
from tests.kubeapi.server import KubeApiServer
from tests.nri.helpers import FakeHandler, nri_setup

pytestmark = pytest.mark.anyio

Key = tuple[str, str, str]


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="knd-st-", dir="/tmp"))
    try:
        yield d / "nri.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def counts(st: dict) -> dict[Key, tuple[int, int]]:
    return {(c["api"], c["method"], c["version"]): (c["requests"], c["errors"])
            for c in st["services"]["kubelet-gateway"].get("calls", [])}


def delta(after: dict[Key, tuple[int, int]], before: dict[Key, tuple[int, int]]
          ) -> dict[Key, tuple[int, int]]:
    out = {}
    for key, (n, e) in after.items():
        n0, e0 = before.get(key, (0, 0))
        if (n - n0, e - e0) != (0, 0):
            out[key] = (n - n0, e - e0)
    return out


async def test_status_requests_count_dra_and_nri_calls(
        bus: Credentials, gateway: Gateway, kube_api: KubeApiServer, sock: Path) -> None:
    port = free_port()
    while port < 4:
        port = free_port()
    # status finds the gateway at discovery's port + 3, as knd up places it
    args = build_parser("status").parse_args([
        "status", "--node", NODE, "--timeout", "1", "--metrics-address",
        f"127.0.0.1:{port - 3}"])
    claim = make_claim("st-claim")
    kube_api.put_object("resourceclaims", claim)
    async with serving(f"127.0.0.1:{port}", Health("kubelet-gateway", requires=())):
        before = await status.collect(args, bus)
        assert "calls_error" not in before["services"]["kubelet-gateway"]
        await prepare(gateway.dra, "v1", [ref(claim)])
        await prepare(gateway.dra, "v1", [("default", "nope", "uid-missing")])  # claim error
        await prepare(gateway.dra, "v1beta1", [ref(claim)])
        await unprepare(gateway.dra, "v1", [ref(claim)])
        async with nri_setup(sock, FakeHandler()) as (_, conn, _plugin):
            sandbox = pod(uid="st-pod", name="web")
            await conn.run_pod_sandbox(sandbox)
            await conn.stop_pod_sandbox(sandbox)
        after = await status.collect(args, bus)
    made = delta(counts(after), counts(before))
    assert made[("DRA", "NodePrepareResources", "v1")] == (2, 1)
    assert made[("DRA", "NodePrepareResources", "v1beta1")] == (1, 0)
    assert made[("DRA", "NodeUnprepareResources", "v1")] == (1, 0)
    nri = {k[1]: v for k, v in made.items() if k[0] == "NRI"}
    assert nri["RunPodSandbox"] == (1, 0) and nri["StopPodSandbox"] == (1, 0), made

    text = status.render(after)
    row = next(line.split() for line in text.splitlines()
               if line.strip().startswith("kubelet-gateway"))
    total = sum(n for n, _ in counts(after).values())
    errors = sum(e for _, e in counts(after).values())
    # no $SRV endpoints here: the gateway's REQUESTS are its DRA and NRI calls
    assert str(total) in row and str(errors) in row, row
    assert "kubelet-gateway calls" in text
    n, e = counts(after)[("DRA", "NodePrepareResources", "v1")]
    assert ["DRA", "NodePrepareResources", "v1", str(n), str(e)] in [
        line.split() for line in text.splitlines()]


def test_calls_are_parsed_from_openmetrics_text() -> None:
    registry = CollectorRegistry()
    dra = Counter("knd_gateway_dra_requests", "", ["method", "version", "status"],
                  registry=registry)
    nri = Counter("knd_nri_requests", "", ["method", "status"], registry=registry)
    other = Counter("knd_bus_dropped_messages", "", ["service"], registry=registry)
    dra.labels("NodePrepareResources", "v1", "ok").inc(3)
    dra.labels("NodePrepareResources", "v1", "claim_error").inc(2)
    nri.labels("RunPodSandbox", "OK").inc(4)
    nri.labels("RunPodSandbox", "DEADLINE_EXCEEDED").inc()
    other.labels("x").inc(9)
    assert calls.parse(generate_latest(registry).decode()) == [
        {"api": "DRA", "method": "NodePrepareResources", "version": "v1", "requests": 5,
         "errors": 2},
        {"api": "NRI", "method": "RunPodSandbox", "version": "", "requests": 5,
         "errors": 1}]
