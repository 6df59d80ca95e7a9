"""``knd events`` and ``knd status`` against the test bus: decoding, filtering, raw
payloads, and a clear one-line failure when the bus is not there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from schemas.base import encode
from schemas.events import Notice
from schemas.inventory import DeviceEvent
from schemas.subjects import Subjects
from services.common import auth
from services.common import bus as busmod
from services.common.natsd import free_port
from services.tools.events import parse
from tests.conftest import NODE
from tests.observability.conftest import wait_following

pytestmark = pytest.mark.anyio

KND = [sys.executable, "-m", "services.cli"]
ROOT = Path(__file__).resolve().parents[2]


def knd(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*KND, *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def events(state: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([*KND, "events", "--state-dir", str(state), "--timeout", "20",
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def added(device: str) -> bytes:
    return encode(DeviceEvent(node=NODE, device=device, kind="added",
                              attributes={"knd.dev/ifName": device, "knd.dev/type": "veth"}))


@pytest.mark.parametrize("tool", ["status", "events"])
def test_bus_unreachable_is_one_line_and_exit_2(tool: str, tmp_path: Path) -> None:
    auth.generate(tmp_path / "bus", NODE, "127.0.0.1", free_port())  # nobody listens there
    res = knd(tool, "--state-dir", str(tmp_path))
    assert res.returncode == 2, res
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "nats://127.0.0.1:" in lines[0]
    res = knd(tool, "--state-dir", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
    assert "cannot read bus credentials" in res.stderr


async def test_malformed_and_unknown_payloads_are_printed_raw(bus, bus_state: Path) -> None:
    proc = events(bus_state, "--json", "--count", "3", "--node", NODE)
    disc = await busmod.connect(bus, "discovery")
    gw = await busmod.connect(bus, "gateway")
    try:
        await anyio.to_thread.run_sync(wait_following, proc)
        s = Subjects(NODE)
        await disc.publish(s.event("device.added"), b'{"v": 1, "node": "x", "devi')
        await disc.publish(s.event("device.added"), added("ok-dev"))
        await gw.publish(s.event("claim.prepared"), b'{"v": 1}')
        await busmod.flush(disc)
        await busmod.flush(gw)
        out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
    finally:
        if proc.poll() is None:
            proc.kill()
        await busmod.close(disc)
        await busmod.close(gw)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    by_event = {(x["event"], "raw" in x): x for x in lines}
    good = by_event[("device.added", False)]
    assert good["device"] == "ok-dev" and good["kind"] == "added" and good["node"] == NODE
    assert good["subject"] == s.event("device.added")
    assert good["attributes"]["knd.dev/ifName"] == "ok-dev"
    bad = by_event[("device.added", True)]
    assert bad["raw"] == '{"v": 1, "node": "x", "devi' and "DeviceEvent" in bad["error"]
    missing = by_event[("claim.prepared", True)]
    assert missing["raw"] == '{"v": 1}' and "ClaimPrepared" in missing["error"]
    # the bus refuses an event outside its table; one that came anyway is raw too
    unknown = parse(s.event("claim.someday"), b'{"v": 1}')
    assert unknown.msg is None and "unknown event kind" in unknown.error
    assert "2 malformed or unknown" in err


async def test_kind_filter_and_readable_lines(bus, bus_state: Path) -> None:
    proc = events(bus_state, "--kind", "device.added", "--count", "2")
    disc = await busmod.connect(bus, "discovery")
    try:
        await anyio.to_thread.run_sync(wait_following, proc)
        s = Subjects(NODE)
        await disc.publish(s.event("device.removed"), encode(DeviceEvent(
            node=NODE, device="gone-dev", kind="removed")))
        await disc.publish(s.event("device.added"), added("new-dev"))
        await disc.publish(s.event("device.added"), b"not json")
        await busmod.flush(disc)
        out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
    finally:
        if proc.poll() is None:
            proc.kill()
        await busmod.close(disc)
    assert proc.returncode == 0, err
    first, second = out.splitlines()
    assert f" {NODE} device.added " in first
    assert "device=new-dev" in first and "if=new-dev" in first and "type=veth" in first
    assert "gone-dev" not in out
    assert "RAW not json" in second and "invalid DeviceEvent" in second


async def test_a_notice_reads_as_the_event_it_becomes(bus, bus_state: Path) -> None:
    proc = events(bus_state, "--kind", "notice", "--count", "1")
    gateway = await busmod.connect(bus, "gateway")
    try:
        await anyio.to_thread.run_sync(wait_following, proc)
        await gateway.publish(Subjects(NODE).notice, encode(Notice(
            node=NODE, kind="Pod", namespace="team-a", name="web-0", uid="uid-1",
            type="Warning", reason="NetworkDeviceAttachDeferred", message="attached 1/2")))
        await busmod.flush(gateway)
        out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=20))
    finally:
        if proc.poll() is None:
            proc.kill()
        await busmod.close(gateway)
    assert proc.returncode == 0, err
    (line,) = out.splitlines()
    assert f" {NODE} notice " in line
    assert "object=pod/team-a/web-0 uid=uid-1 type=Warning " \
        "reason=NetworkDeviceAttachDeferred message='attached 1/2'" in line


def test_another_nodes_events_are_refused(bus, bus_state: Path) -> None:
    res = knd("events", "--state-dir", str(bus_state), "--node", "node-z", "--timeout", "5")
    assert res.returncode == 2 and "bus refused" in res.stderr and res.stdout == ""


def test_count_not_reached_in_time_is_exit_1(bus, bus_state: Path) -> None:
    res = knd("events", "--state-dir", str(bus_state), "--kind", "device.failed",
              "--count", "1", "--timeout", "0.5")
    assert res.returncode == 1 and res.stdout == ""
    assert "0 of 1 event(s)" in res.stderr
