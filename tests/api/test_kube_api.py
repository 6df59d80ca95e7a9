"""KubeApi through the real kubernetes-asyncio client against the test API server.

These pin what the publisher relies on: objects come back as plain dicts in
the API's own shape, conflicts and missing objects surface as the port's
typed errors, and a failing or hanging server becomes an ApiError quickly.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from services import cli
from services.common.api import kube as kube_module
from services.common.api import open_api
from services.common.api.files import FileApi
from services.common.api.kube import KubeApi
from services.common.api.port import ApiError, Conflict, NotFound
from tests.api.objects import make_slice
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio


async def test_get_node_returns_the_servers_object(kube_api: KubeApiServer, api: KubeApi) -> None:
    node = kube_api.add_node("node-a")
    got = await api.get_node("node-a")
    assert got["metadata"]["uid"] == node["metadata"]["uid"]
    assert got["kind"] == "Node" and got["apiVersion"] == "v1"
    with pytest.raises(NotFound) as err:
        await api.get_node("node-b")
    assert err.value.status == 404 and err.value.reason == "NotFound"


async def test_create_fills_server_fields(kube_api: KubeApiServer, api: KubeApi) -> None:
    created = await api.create_slice(make_slice())
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    # Plain dicts in the API's camelCase, not the client's snake_case models.
    assert created["spec"]["pool"]["resourceSliceCount"] == 1
    assert created["spec"]["devices"][0]["attributes"]["knd.dev/mtu"] == {"int": 1500}
    assert kube_api.objects("resourceslices") == [created]
    assert kube_api.writes() == 1


async def test_create_with_generate_name(api: KubeApi) -> None:
    a = await api.create_slice(make_slice(None))
    b = await api.create_slice(make_slice(None))
    assert a["metadata"]["name"].startswith("node-a-knd.dev-")
    assert a["metadata"]["name"] != b["metadata"]["name"]


async def test_create_existing_name_is_already_exists(api: KubeApi) -> None:
    await api.create_slice(make_slice())
    with pytest.raises(Conflict) as err:
        await api.create_slice(make_slice())
    assert err.value.reason == "AlreadyExists"


async def test_list_uses_node_and_driver(kube_api: KubeApiServer, api: KubeApi) -> None:
    mine = [await api.create_slice(make_slice(f"node-a-{i}")) for i in range(2)]
    await api.create_slice(make_slice("node-b-0", node="node-b"))
    await api.create_slice(make_slice("other-0", driver="other.example.com"))
    got = await api.list_slices("knd.dev", "node-a")
    assert sorted(s["metadata"]["name"] for s in got) == ["node-a-0", "node-a-1"]
    # Items are complete objects (apiVersion/kind restored) that can be written back.
    assert got == sorted(mine, key=lambda s: s["metadata"]["name"])
    assert await api.list_slices("knd.dev", "node-c") == []
    assert kube_api.requests[-1] == ("list", "resourceslices", 200)


async def test_update_bumps_version_and_generation(api: KubeApi) -> None:
    created = await api.create_slice(make_slice())
    changed = dict(created, spec={**created["spec"], "pool": {
        "name": "node-a", "generation": 2, "resourceSliceCount": 1}})
    updated = await api.update_slice(changed)
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert updated["metadata"]["generation"] == 2
    assert updated["spec"]["pool"]["generation"] == 2


async def test_update_with_stale_version_conflicts(kube_api: KubeApiServer, api: KubeApi) -> None:
    created = await api.create_slice(make_slice())
    await api.update_slice(created)  # no-op: the version stays valid
    newer = await api.update_slice({**created, "spec": make_slice(devices=2)["spec"]})
    with pytest.raises(Conflict) as err:
        await api.update_slice(created)  # still carries the first resourceVersion
    assert err.value.status == 409 and err.value.reason == "Conflict"
    assert kube_api.objects("resourceslices") == [newer]


async def test_update_cannot_change_uid(api: KubeApi) -> None:
    created = await api.create_slice(make_slice())
    forged = dict(created, metadata={**created["metadata"], "uid": "not-the-uid"})
    with pytest.raises(Conflict):
        await api.update_slice(forged)


async def test_update_missing_is_not_found(api: KubeApi) -> None:
    with pytest.raises(NotFound):
        await api.update_slice(make_slice("never-created"))


async def test_delete_checks_preconditions(kube_api: KubeApiServer, api: KubeApi) -> None:
    s = await api.create_slice(make_slice())
    name, uid, rv = s["metadata"]["name"], s["metadata"]["uid"], s["metadata"]["resourceVersion"]
    with pytest.raises(Conflict):
        await api.delete_slice(name, "another-uid", rv)
    with pytest.raises(Conflict):
        await api.delete_slice(name, uid, str(int(rv) + 100))
    assert len(kube_api.objects("resourceslices")) == 1
    await api.delete_slice(name, uid, rv)
    assert kube_api.objects("resourceslices") == []
    with pytest.raises(NotFound):
        await api.delete_slice(name, uid, rv)


async def test_injected_server_error_is_api_error(kube_api: KubeApiServer, api: KubeApi) -> None:
    kube_api.inject("create", "resourceslices", status=500)
    with pytest.raises(ApiError) as err:
        await api.create_slice(make_slice())
    assert err.value.status == 500 and err.value.reason == "InternalError"
    assert not isinstance(err.value, Conflict | NotFound)
    assert kube_api.objects("resourceslices") == []
    await api.create_slice(make_slice())  # the fault was for one request only
    assert kube_api.writes() == 1


async def test_client_raised_error_reads_its_body_as_text() -> None:
    """A client that raises ApiException for an answer (older kubernetes-asyncio, or with
    preloaded content) holds its body as the bytes read: the error says the text."""
    answer = SimpleNamespace(status=409, reason="Conflict", data=b'{"message":"taken"}',
                             getheaders=dict)

    async def create_resource_slice(**_: object) -> None:
        raise ApiException(http_resp=answer)

    with pytest.raises(Conflict) as err:
        await KubeApi()._call(create_resource_slice)
    assert str(err.value) == 'create_resource_slice: Conflict: {"message":"taken"}'


async def test_hanging_server_times_out(kube_api: KubeApiServer, tmp_path: Path) -> None:
    kube_api.add_node("node-a")
    client = KubeApi(kubeconfig=str(kube_api.write_kubeconfig(tmp_path / "kc")), timeout=0.5)
    try:
        kube_api.inject("list", "resourceslices", delay=60)
        start = time.monotonic()
        with pytest.raises(ApiError) as err:
            await client.list_slices("knd.dev", "node-a")
        assert err.value.status == 0
        assert time.monotonic() - start < 5
        assert (await client.get_node("node-a"))["metadata"]["name"] == "node-a"
    finally:
        await client.aclose()


async def test_unreachable_server_is_api_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = KubeApiServer()
    server.url = f"http://127.0.0.1:{port}"
    client = KubeApi(kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")), timeout=2.0)
    try:
        with pytest.raises(ApiError) as err:
            await client.get_node("node-a")
        assert err.value.status == 0
    finally:
        await client.aclose()


async def test_missing_kubeconfig_is_api_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    client = KubeApi(kubeconfig=str(tmp_path / "absent"))
    with pytest.raises(ApiError):
        await client.get_node("node-a")
    await client.aclose()


async def test_kubeconfig_from_environment(kube_api: KubeApiServer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    kube_api.add_node("node-a")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kube_api.write_kubeconfig(tmp_path / "kc")))
    # KUBECONFIG is --kubeconfig's variable (services.common.settings), as kubectl reads it
    args = cli.build_parser("publisher").parse_args(["publisher"])
    client = KubeApi(kubeconfig=args.kubeconfig)
    try:
        assert (await client.get_node("node-a"))["metadata"]["name"] == "node-a"
    finally:
        await client.aclose()


async def test_in_cluster_config_when_in_a_pod(kube_api: KubeApiServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pod (KUBERNETES_SERVICE_HOST set) without --kubeconfig the service account is used."""
    kube_api.add_node("node-a")
    used: list[bool] = []

    def fake_incluster(client_configuration: object, **_: object) -> None:
        used.append(True)
        client_configuration.host = kube_api.url  # type: ignore[attr-defined]

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr(kube_module.kube_config, "load_incluster_config", fake_incluster)
    client = KubeApi()
    try:
        await client.get_node("node-a")
        assert used == [True]
    finally:
        await client.aclose()
    # An explicit kubeconfig wins even inside a pod.
    client = KubeApi(kubeconfig=str(kube_api.write_kubeconfig(tmp_path / "kc")))
    try:
        await client.get_node("node-a")
        assert used == [True]
    finally:
        await client.aclose()


async def test_open_api_picks_the_backend(tmp_path: Path) -> None:
    files = open_api(standalone=True, state_dir=tmp_path, kubeconfig=None)
    assert isinstance(files, FileApi) and files.root == tmp_path / "api"
    kube = open_api(standalone=False, state_dir=tmp_path, kubeconfig="/x/kc", timeout=3.0)
    assert isinstance(kube, KubeApi) and kube.kubeconfig == "/x/kc" and kube.timeout == 3.0
    await kube.aclose()
