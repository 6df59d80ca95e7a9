"""RDMA devices: char devices for every container, and the CDI spec per claim."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import anyio
import pytest

from schemas import plumber as p
from schemas.base import decode
from schemas.inventory import Device
from schemas.netconfig import InterfaceConfig, NetworkConfig
from schemas.subjects import Subjects
from services.common import bus as busmod
from tests.helpers.sysfs_tree import rdma_without_netdev
from tests.plumber.conftest import DRIVER, NODE, Env, netdev, uid

pytestmark = pytest.mark.anyio

MAJOR = 231
NODES = {"uverbs0": 192, "uverbs1": 193, "uverbs2": 194, "umad0": 0, "umad1": 1,
         "issm0": 64, "issm1": 65}


def dev_root(root: Path, rdma_cm: bool = True) -> None:
    """Real character device nodes (we are root) under a fake /dev."""
    ib = root / "infiniband"
    ib.mkdir(parents=True)
    nodes = dict(NODES, **({"rdma_cm": 255} if rdma_cm else {}))
    for name, minor in nodes.items():
        major = 10 if name == "rdma_cm" else MAJOR
        os.mknod(ib / name, 0o600 | stat.S_IFCHR, os.makedev(major, minor))


def ib_only(name: str, rdma: str) -> Device:
    return Device(name=name, attributes={f"{DRIVER}/type": "rdma", f"{DRIVER}/rdma": True,
                                         f"{DRIVER}/rdmaDevice": rdma,
                                         f"{DRIVER}/virtual": False})


@pytest.fixture
async def rdma_env(env: Env):
    rdma_without_netdev(env.tmp / "sysfs")  # mlx5_0 (no netdev), eth1/mlx5_1, rxe0
    dev_root(env.tmp / "dev")
    async with env.running():
        yield env


async def test_container_devices_and_cdi(rdma_env: Env) -> None:
    env = rdma_env
    env.node.veth("eth1", "peer1")
    await env.inventory([ib_only("ib-a", "mlx5_0"),
                         netdev("dev-r", "eth1", rdma=True, rdmaDevice="mlx5_1")])
    claim, pod_uid = uid(), uid("pod")
    rep = await env.prepare(claim, [("ib-a", None), ("dev-r", None)], [pod_uid])
    assert rep.error == "", rep.error
    spec = json.loads((env.cdi_root / f"knd.dev_{claim}.json").read_text())
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "knd.dev/net"
    by_name = {d["name"]: d["containerEdits"] for d in spec["devices"]}
    ib = by_name[f"{claim}-ib-a"]
    assert ib["env"] == ["KND_RDMA_IB_A=mlx5_0"]
    assert [(n["path"], n["major"], n["minor"]) for n in ib["deviceNodes"]] == [
        ("/dev/infiniband/uverbs0", MAJOR, 192), ("/dev/infiniband/issm0", MAJOR, 64),
        ("/dev/infiniband/umad0", MAJOR, 0)]
    assert ib["deviceNodes"][0]["hostPath"] == str(env.tmp / "dev/infiniband/uverbs0")
    # the container's node gets the host node's mode (made 0600 above), not a default
    assert {n["fileMode"] for n in ib["deviceNodes"]} == {0o600}
    assert by_name[f"{claim}-dev-r"]["env"] == ["KND_NET_DEV_R=eth1", "KND_RDMA_DEV_R=mlx5_1"]
    assert spec["containerEdits"]["deviceNodes"][0]["path"] == "/dev/infiniband/rdma_cm"

    assert (await env.attach(pod_uid, env.pod())).error == ""
    got = await env.ask("container-devices", p.ContainerDevices(pod=p.PodRef(uid=pod_uid),
                                                                container="app"),
                        p.ContainerDevicesReply)
    assert got.error == ""
    assert sorted((d.path, d.type, d.major, d.minor) for d in got.devices) == sorted(
        [(f"/dev/infiniband/{n}", "c", MAJOR, NODES[n])
         for n in ("uverbs0", "umad0", "issm0", "uverbs1", "umad1", "issm1")]
        + [("/dev/infiniband/rdma_cm", "c", 10, 255)])
    assert {d.file_mode for d in got.devices} == {0o600}
    other = await env.ask("container-devices", p.ContainerDevices(pod=p.PodRef(uid="nobody")),
                          p.ContainerDevicesReply)
    assert other.devices == [] and other.error == ""
    assert sorted((await env.detach(pod_uid)).restored) == ["dev-r", "ib-a"]
    assert (await env.unprepare(claim)).error == ""
    assert not (env.cdi_root / f"knd.dev_{claim}.json").exists()


async def test_missing_char_device_fails_prepare(rdma_env: Env) -> None:
    env = rdma_env
    (env.tmp / "dev/infiniband/umad0").unlink()
    await env.inventory([ib_only("ib-a", "mlx5_0")])
    rep = await env.prepare(uid(), [("ib-a", None)], [uid("pod")])
    assert "devices[0].device: RDMA device mlx5_0" in rep.error and "umad0" in rep.error
    assert list(env.cdi_root.glob("*.json")) == []


async def test_exclusive_mode_rdma_move_is_best_effort(env: Env) -> None:
    """No RDMA netlink on this kernel: the netdev still attaches, the RDMA move is logged
    and reported (``device.failed``, step ``rdma``: an Event on the pod)."""
    rdma_without_netdev(env.tmp / "sysfs")
    dev_root(env.tmp / "dev")
    env.node.veth("eth1", "peer1")
    observer = await busmod.connect(env.creds, "observer")
    failed: list[p.DeviceFailed] = []

    async def on_failed(msg) -> None:
        failed.append(decode(msg.data, p.DeviceFailed))

    await observer.subscribe(Subjects(NODE).event("device.failed"), cb=on_failed)
    await busmod.flush(observer)
    try:
        async with env.running(rdma_mode="exclusive") as pl:
            assert pl.rdma.mode == "exclusive"
            await env.inventory([netdev("dev-r", "eth1", rdma=True, rdmaDevice="mlx5_1")])
            claim, pod_uid = uid(), uid("pod")
            assert (await env.prepare(claim, [("dev-r", None)], [pod_uid])).error == ""
            rep = await env.attach(pod_uid, env.pod())
            assert rep.error == "" and rep.interfaces[0].interface == "eth1"
            assert pl.store.attachments()[0].rdma_moved is False
            with anyio.fail_after(5):
                while not failed:
                    await anyio.sleep(0.01)
            (ev,) = failed
            assert (ev.step, ev.rolled_back, ev.device, ev.pod_uid) == \
                ("rdma", False, "dev-r", pod_uid)
            assert "mlx5_1" in ev.error and ev.pod_name == f"pod-{pod_uid}"
            assert (await env.detach(pod_uid)).restored == ["dev-r"]
    finally:
        await busmod.close(observer)


async def test_missing_cdi_spec_is_rewritten_on_start(env: Env) -> None:
    env.node.veth("ca7", "cb7")
    claim = uid()
    async with env.running():
        await env.inventory([netdev("dev-c", "ca7")])
        assert (await env.prepare(claim, [("dev-c", None)], [uid("pod")])).error == ""
    spec = env.cdi_root / f"knd.dev_{claim}.json"
    spec.unlink()
    stray = env.cdi_root / "knd.dev_stale-claim.json"
    stray.write_text("{}")
    foreign = env.cdi_root / "other.vendor_x.json"
    foreign.write_text("{}")
    async with env.running():
        assert spec.exists()
        assert stray.exists() and foreign.exists()  # not ours to judge: left alone


async def test_a_child_of_an_rdma_nic_needs_the_shared_mode(env: Env) -> None:
    """DRANET's rule: in exclusive mode the RDMA device would follow one pod, so a child
    (which leaves its parent shared on the host) is refused at prepare, naming why."""
    rdma_without_netdev(env.tmp / "sysfs")
    dev_root(env.tmp / "dev")
    env.node.veth("eth1", "peer1")
    cfg = NetworkConfig(interface=InterfaceConfig(type="MACVLAN",
                                                  addresses=["10.82.0.2/24"]))
    async with env.running(rdma_mode="exclusive"):
        await env.inventory([netdev("dev-r", "eth1", rdma=True, rdmaDevice="mlx5_1")])
        rep = await env.prepare(uid(), [("dev-r", cfg)], [uid("pod")])
        assert rep.error.startswith("devices[0].config.interface.type: ") and \
            "needs the shared mode" in rep.error, rep.error
    async with env.running(rdma_mode="shared") as pl:  # shared: it may
        assert (await env.prepare(uid(), [("dev-r", cfg)], [uid("pod")])).error == ""
        assert len(pl.store.claims()) == 1
