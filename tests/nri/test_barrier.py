"""The barrier hook: the node's shell waiting on the gateway's result files, run as runc
runs a createRuntime hook."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from kndpeers.nri_runtime import HookFailed, run_oci_hooks
from services.kubelet_gateway.nri.barrier import Barrier
from services.kubelet_gateway.pb import nri_pb2 as api

pytestmark = pytest.mark.anyio
UID = "3f1c2a7e-0d4b-4e0e-9a51-2b1c0f9d8e11"


def as_nri(barrier: Barrier, timeout: float = 5.0) -> api.Hook:
    h = barrier.hook(uid=UID, namespace="ns", name="web", container="main",
                     netns="/var/run/netns/cni-1", deadline_in=timeout)
    return api.Hook(path=h.path, args=h.args, env=h.env, timeout=api.OptionalInt(value=h.timeout))


async def run(hook: api.Hook) -> float:
    started = time.monotonic()
    await run_oci_hooks([hook], {"id": "ctr", "status": "creating"})
    return time.monotonic() - started


async def test_the_hook_waits_until_the_attach_ends(tmp_path: Path):
    b = Barrier(tmp_path / "attach")
    b.reset()
    b.pending(UID)
    async with anyio.create_task_group() as tg:
        async def later() -> None:
            await anyio.sleep(0.4)
            b.release(UID)
        tg.start_soon(later)
        took = await run(as_nri(b))
    assert 0.4 <= took < 2.0
    assert sorted(p.name for p in b.folder.iterdir()) == [f"{UID}.ok"]


async def test_a_failed_attach_fails_the_container_with_why(tmp_path: Path):
    b = Barrier(tmp_path)
    b.pending(UID)
    b.release(UID, "device slow3 of claim c1: move: Device or resource busy")
    with pytest.raises(HookFailed, match="not attached: device slow3 of claim c1: move"):
        await run(as_nri(b))


async def test_no_attach_in_progress_fails_at_once(tmp_path: Path):
    b = Barrier(tmp_path)
    b.reset()  # a restarted gateway: nothing pending
    with pytest.raises(HookFailed, match="no network device attach in progress"):
        assert await run(as_nri(b)) < 1.0


async def test_the_runtime_kills_a_hook_past_its_timeout(tmp_path: Path):
    b = Barrier(tmp_path)
    b.pending(UID)
    hook = as_nri(b, timeout=0.5)
    assert hook.timeout.value == 1  # whole seconds, at least one
    with pytest.raises(HookFailed, match="timed out"):
        await run(hook)


def test_a_release_without_a_waiting_hook_writes_nothing(tmp_path: Path):
    b = Barrier(tmp_path)
    b.release(UID, "x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="cannot name a file"):
        b.pending("../etc/passwd")
