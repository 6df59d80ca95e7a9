"""``knd demo`` keeps working: it is the README's tour of the whole path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_path_and_cleans_up():
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split())
    knd = Path(sys.executable).parent / "knd"
    res = subprocess.run([str(knd), "demo"], capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "demo complete" in out
    assert "64 bytes from 10.77.0.2" in out  # the ping went through the moved interface
    assert "net1" in out and "10.77.0.2/24" in out
    # what a person reads: the prepared device and its CDI id, flags as yes/no
    uid = re.search(r"claim default/demo-claim uid (\S+)", out).group(1)
    assert (f"claim {uid}: prepared device demo0 of pool demo-node for request nic "
            f"(CDI id knd.dev/net={uid}-demo0)") in out
    assert f"claim {uid}: unprepared" in out
    assert "knd.dev/rdma = no" in out and "knd.dev/virtual = yes" in out
    assert not re.search(r"\b(True|False)\b", out), out
    assert "key: " not in out and "{" not in out  # no protobuf text dump
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=True).stdout.split())
    assert not {n for n in after - before if n.startswith("knd-demo")}


def test_answers_read_as_sentences():
    from services.demo import attribute_lines, prepared_lines, unprepared_lines
    from services.kubelet_gateway.dra import VERSIONS

    pb = VERSIONS["v1"]
    resp = pb.NodePrepareResourcesResponse(claims={
        "u1": pb.NodePrepareResourceResponse(devices=[pb.Device(
            request_names=["nic"], pool_name="p", device_name="eth1",
            cdi_device_ids=["knd.dev/net=u1-eth1"])]),
        "u2": pb.NodePrepareResourceResponse(error="no such claim")})
    assert prepared_lines(resp) == [
        "claim u1: prepared device eth1 of pool p for request nic (CDI id knd.dev/net=u1-eth1)",
        "claim u2: not prepared: no such claim"]
    done = pb.NodeUnprepareResourcesResponse(claims={
        "u1": pb.NodeUnprepareResourceResponse(),
        "u2": pb.NodeUnprepareResourceResponse(error="busy")})
    assert unprepared_lines(done) == ["claim u1: unprepared", "claim u2: not unprepared: busy"]
    assert attribute_lines({"knd.dev/rdma": {"bool": False}, "knd.dev/mtu": {"int": 9000},
                            "knd.dev/virtual": {"bool": True}}) == [
        "knd.dev/rdma = no", "knd.dev/mtu = 9000", "knd.dev/virtual = yes"]
