"""AttachJobs over the real bus, to an in-test plumber whose attach takes its time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from kndpeers.nri_runtime import HookFailed, run_oci_hooks
from schemas import plumber as p
from schemas.base import decode, encode
from schemas.events import Notice
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.kubelet_gateway.dra import ClaimEvents
from services.kubelet_gateway.nri.attach_jobs import AttachJobs
from services.kubelet_gateway.nri.barrier import Barrier
from services.kubelet_gateway.pb import nri_pb2 as api
from services.kubelet_gateway.plumber_client import PlumberClient, PlumberError
from tests.conftest import NODE

pytestmark = pytest.mark.anyio
S = Subjects(NODE)
POD = p.PodRef(uid="5e1a0c39-8d1f-4b7e-a2f0-6c3d9b1e7a44", namespace="ns", name="web")


class SlowPlumber:
    """Attaches take ``delay`` seconds; ``error`` fails them."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.error = ""
        self.attaches: list[p.Attach] = []

    async def on_attach(self, msg) -> None:
        req = decode(msg.data, p.Attach)
        self.attaches.append(req)
        await anyio.sleep(self.delay)
        await msg.respond(encode(p.AttachReply(error=self.error)))

    async def on_status(self, msg) -> None:
        done = len(self.attaches) > 0 and self.delay < 1.0
        await msg.respond(encode(p.PlumberStatus(
            node=NODE, claims=[p.ClaimView(uid="c1", pods=[POD], devices=["a", "b"])],
            attachments=[p.AttachmentView(claim_uid="c1", device="a", pod_uid=POD.uid,
                                          phase="attached" if done else "attaching")])))


@asynccontextmanager
async def jobs_with(bus, tmp_path: Path, delay: float, **kw
                    ) -> AsyncIterator[tuple[SlowPlumber, AttachJobs, list[Notice]]]:
    plumber_nc = await busmod.connect(bus, "plumber")
    gateway_nc = await busmod.connect(bus, "gateway")
    publisher_nc = await busmod.connect(bus, "publisher")
    slow, notes = SlowPlumber(delay), []

    async def on_notice(msg) -> None:
        notes.append(decode(msg.data, Notice))

    try:
        await plumber_nc.subscribe(S.plumber("attach"), cb=slow.on_attach)
        await plumber_nc.subscribe(S.plumber("status"), cb=slow.on_status)
        await publisher_nc.subscribe(S.event("notice"), cb=on_notice)
        for nc in (plumber_nc, publisher_nc):
            await busmod.flush(nc)
        async with anyio.create_task_group() as tg:
            jobs = await tg.start(AttachJobs(PlumberClient(gateway_nc, NODE),
                                             events=ClaimEvents(gateway_nc, NODE),
                                             **kw).run)
            yield slow, jobs, notes
            tg.cancel_scope.cancel()
    finally:
        for nc in (gateway_nc, plumber_nc, publisher_nc):
            await busmod.close(nc)


def nri_hook(h) -> api.Hook:
    return api.Hook(path=h.path, args=h.args, env=h.env, timeout=api.OptionalInt(value=h.timeout))


async def test_a_slow_attach_is_deferred_and_the_hook_waits_for_it(bus, tmp_path: Path):
    barrier = Barrier(tmp_path / "attach")
    async with jobs_with(bus, tmp_path, 1.2, attach_timeout=10.0, barrier=barrier) as (
            slow, jobs, notes):
        t0 = time.monotonic()
        await jobs.run_pod(POD, "sb1", "/var/run/netns/p1", budget=0.5)
        assert time.monotonic() - t0 < 0.6  # answered within its budget
        assert 9 < slow.attaches[0].deadline - time.time() <= 10
        hook = await jobs.container(POD, "sb1", "/var/run/netns/p1", "main", budget=0.3)
        assert hook is not None and 8 <= hook.timeout <= 10
        await run_oci_hooks([nri_hook(hook)], {"id": "c"})
        assert time.monotonic() - t0 >= 1.2  # released when the attach ended
        # the next container finds the devices in: no hook
        assert await jobs.container(POD, "sb1", "/var/run/netns/p1", "side", 0.3) is None
        await busmod.flush(jobs.client.nc)
        with anyio.fail_after(2):
            while not notes:
                await anyio.sleep(0.02)
        [note] = notes
        assert (note.kind, note.uid, note.name, note.reason) == (
            "Pod", POD.uid, "web", "NetworkDeviceAttachDeferred")
        assert "attached 0/2 network devices to pod ns/web" in note.message


async def test_a_failed_deferred_attach_fails_the_waiting_container(bus, tmp_path: Path):
    barrier = Barrier(tmp_path / "attach")
    async with jobs_with(bus, tmp_path, 1.0, attach_timeout=10.0, barrier=barrier) as (
            slow, jobs, _):
        slow.error = "device \"a\" of claim c1: move: Device or resource busy"
        await jobs.run_pod(POD, "sb1", "/var/run/netns/p1", budget=0.4)
        hook = await jobs.container(POD, "sb1", "/var/run/netns/p1", "main", budget=0.2)
        assert hook is not None
        with pytest.raises(HookFailed, match="not attached: device \"a\" of claim c1"):
            await run_oci_hooks([nri_hook(hook)], {"id": "c"})
        # the kubelet tries again before the deadline: a new attach, the same deadline
        slow.error, slow.delay = "", 0.0
        assert await jobs.container(POD, "sb1", "/var/run/netns/p1", "main", 0.5) is None
        assert len(slow.attaches) == 2
        assert slow.attaches[1].deadline == slow.attaches[0].deadline


async def test_a_job_replaced_by_a_new_sandbox_releases_nobody(bus, tmp_path: Path):
    barrier = Barrier(tmp_path / "attach")
    async with jobs_with(bus, tmp_path, 0.6, attach_timeout=10.0, barrier=barrier) as (
            slow, jobs, _):
        await jobs.run_pod(POD, "sb1", "/var/run/netns/p1", budget=0.2)
        slow.delay = 1.5
        await jobs.run_pod(POD, "sb2", "/var/run/netns/p2", budget=0.2)  # a new sandbox
        await anyio.sleep(0.6)  # the first attach has answered
        assert sorted(f.name for f in barrier.folder.iterdir()) == [f"{POD.uid}.pending"]


async def test_with_no_attach_timeout_the_sandbox_fails_naming_the_budget(bus, tmp_path: Path):
    async with jobs_with(bus, tmp_path, 1.0, attach_timeout=0.0) as (slow, jobs, notes):
        with pytest.raises(PlumberError, match="attached 0/2 network devices: not enough "
                                               "time left in the NRI request"):
            await jobs.run_pod(POD, "sb1", "/var/run/netns/p1", budget=0.4)
        assert 0 < slow.attaches[0].deadline - time.time() < 0.4  # the plumber rolls back
        with anyio.fail_after(2):
            while not notes:
                await anyio.sleep(0.02)
        assert notes[0].reason == "NetworkDeviceAttachTimeout"


async def test_jobs_of_pods_the_runtime_no_longer_has_are_forgotten(bus, tmp_path: Path):
    barrier = Barrier(tmp_path / "attach")
    async with jobs_with(bus, tmp_path, 0.0, attach_timeout=10.0, barrier=barrier) as (
            _, jobs, _):
        other = p.PodRef(uid="0d4e2a61-7f1b-4c33-9e0a-5b8f2c1d9e77", namespace="ns", name="x")
        for pod in (POD, other):
            await jobs.run_pod(pod, "sb", "/var/run/netns/p", budget=0.5)
        jobs.keep_only({other.uid})  # RemovePodSandbox of POD was missed
        assert set(jobs.jobs) == {other.uid}
