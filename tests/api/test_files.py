"""FileApi: the standalone store must behave like the API server and survive restarts.

``knd up --standalone`` restarts often (a laptop, a demo); the publisher's
owner references and conflict handling only stay correct if node uids are
stable and resourceVersions never go backwards, and a crash mid-write must
never leave a half-written object for the next start to trip on.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from services.common.api import files as files_module
from services.common.api.files import FileApi
from services.common.api.port import ApiError, Conflict, Invalid, NotFound
from tests.api.objects import make_slice

pytestmark = pytest.mark.anyio


def _rv(obj: dict) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


async def test_create_writes_a_full_object_file(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    created = await api.create_slice(make_slice("node-a-0"))
    path = tmp_path / "api" / "resourceslices" / "node-a-0.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == created
    assert on_disk["apiVersion"] == "resource.k8s.io/v1" and on_disk["kind"] == "ResourceSlice"
    assert on_disk["metadata"]["uid"] and on_disk["metadata"]["generation"] == 1
    assert on_disk["spec"] == make_slice("node-a-0")["spec"]
    assert _leftovers(tmp_path) == []


async def test_create_conflicts_and_generate_name(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    await api.create_slice(make_slice("node-a-0"))
    with pytest.raises(Conflict) as err:
        await api.create_slice(make_slice("node-a-0"))
    assert err.value.reason == "AlreadyExists"
    generated = await api.create_slice(make_slice(None))
    assert generated["metadata"]["name"].startswith("node-a-knd.dev-")
    with pytest.raises(ApiError):  # as the API server: no resourceVersion on create
        await api.create_slice(make_slice("x") | {"metadata": {"name": "x",
                                                              "resourceVersion": "7"}})


async def test_list_filters_by_driver_and_node(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    await api.create_slice(make_slice("a-0"))
    await api.create_slice(make_slice("a-1"))
    await api.create_slice(make_slice("b-0", node="node-b"))
    await api.create_slice(make_slice("o-0", driver="other.example.com"))
    (tmp_path / "api" / "resourceslices" / ".a-2.json.123.tmp").write_text("{")  # crash debris
    got = await api.list_slices("knd.dev", "node-a")
    assert [s["metadata"]["name"] for s in got] == ["a-0", "a-1"]
    assert await api.list_slices("knd.dev", "node-c") == []


async def test_update_and_stale_version(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    created = await api.create_slice(make_slice("s"))
    same = await api.update_slice(created)
    assert _rv(same) == _rv(created)  # a no-op write keeps the version
    updated = await api.update_slice({**created, "spec": make_slice("s", devices=2)["spec"]})
    assert _rv(updated) > _rv(created) and updated["metadata"]["generation"] == 2
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(Conflict):
        await api.update_slice({**created, "spec": make_slice("s", devices=3)["spec"]})
    with pytest.raises(Conflict):
        await api.update_slice({**updated, "metadata": {**updated["metadata"], "uid": "x"}})
    with pytest.raises(NotFound):
        await api.update_slice(make_slice("missing"))
    assert (await api.list_slices("knd.dev", "node-a")) == [updated]


async def test_delete_preconditions(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    s = await api.create_slice(make_slice("s"))
    uid, rv = s["metadata"]["uid"], s["metadata"]["resourceVersion"]
    with pytest.raises(Conflict):
        await api.delete_slice("s", "other-uid", rv)
    with pytest.raises(Conflict):
        await api.delete_slice("s", uid, str(int(rv) + 1))
    assert len(await api.list_slices("knd.dev", "node-a")) == 1
    await api.delete_slice("s", uid, rv)
    assert not (tmp_path / "api" / "resourceslices" / "s.json").exists()
    with pytest.raises(NotFound):
        await api.delete_slice("s", uid, rv)


async def test_restart_keeps_node_uid_and_versions_increase(tmp_path: Path) -> None:
    first = FileApi(tmp_path)
    node = await first.get_node("node-a")
    assert node["kind"] == "Node" and node["metadata"]["uid"]
    assert (await first.get_node("node-a")) == node
    s = await first.create_slice(make_slice("s"))
    await first.delete_slice("s", s["metadata"]["uid"], s["metadata"]["resourceVersion"])
    await first.aclose()

    second = FileApi(tmp_path)  # a new process on the same state dir
    assert (await second.get_node("node-a"))["metadata"]["uid"] == node["metadata"]["uid"]
    again = await second.create_slice(make_slice("s"))
    assert _rv(again) > _rv(s)  # even though the highest object was deleted

    (tmp_path / "api" / "resourceVersion").unlink()  # counter lost: derived from the files
    third = FileApi(tmp_path)
    later = await third.create_slice(make_slice("t"))
    assert _rv(later) > _rv(again)


async def test_failed_write_leaves_the_old_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    api = FileApi(tmp_path)
    created = await api.create_slice(make_slice("s"))
    path = tmp_path / "api" / "resourceslices" / "s.json"
    before = path.read_text()

    import services.common.files as atomic

    real_fsync = atomic.os.fsync
    written: list[int] = []

    def broken_fsync(fd: int) -> None:  # the disk fills up as the new object is flushed
        written.append(fd)
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        await api.update_slice({**created, "spec": make_slice("s", devices=2)["spec"]})
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert written
    assert not list(path.parent.glob(".*.tmp"))  # no half-written file left behind
    monkeypatch.undo()
    assert path.read_text() == before
    assert _leftovers(tmp_path) == []
    assert (await api.list_slices("knd.dev", "node-a")) == [created]


def test_atomic_write_keeps_old_content_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "obj.json"
    files_module.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        files_module.write_json_atomic(path, {"a": 2, "z": object()})  # fails mid-dump
    assert json.loads(path.read_text()) == {"a": 1}
    assert _leftovers(tmp_path) == []


async def test_concurrent_writers_get_distinct_versions(tmp_path: Path) -> None:
    """Two stores on one directory (two processes) never hand out the same version."""
    a, b = FileApi(tmp_path), FileApi(tmp_path)
    results: list[dict] = []

    async def create(api: FileApi, name: str) -> None:
        results.append(await api.create_slice(make_slice(name)))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(create, a if i % 2 else b, f"s-{i}")
    versions = [_rv(r) for r in results]
    assert len(set(versions)) == 20
    assert len(await a.list_slices("knd.dev", "node-a")) == 20


async def test_names_cannot_escape_the_store(tmp_path: Path) -> None:
    api = FileApi(tmp_path / "state")
    for bad in ("../evil", ".hidden", "a/b", ""):
        with pytest.raises(Invalid):
            await api.create_slice(make_slice(bad or None) | {"metadata": {"name": bad}})
    with pytest.raises(Invalid):
        await api.get_claim("..", "x")
    assert not (tmp_path / "evil.json").exists()


async def test_corrupt_file_is_an_error_not_an_absence(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    await api.create_slice(make_slice("s"))
    (tmp_path / "api" / "resourceslices" / "s.json").write_text('{"half": ')
    with pytest.raises(ApiError) as err:
        await api.list_slices("knd.dev", "node-a")
    assert not isinstance(err.value, NotFound)
