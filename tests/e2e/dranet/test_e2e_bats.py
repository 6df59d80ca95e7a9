"""DRANET's own end-to-end scenarios (kubernetes-sigs/dranet tests/e2e.bats), run against
knd with ``--driver-name dra.net`` and DRANET's manifests unchanged (veths stand in
for dummy links). One test per ``@test``, in e2e.bats order, asserting what it asserts.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from kndpeers import kubelet
from services.kernel import bpf
from services.plumber.netops import IFLA_GRO_IPV4_MAX_SIZE, IFLA_GSO_IPV4_MAX_SIZE
from tests.e2e.dranet.cluster import DRIVER, Cluster
from tests.helpers.bpf import BpfLab, ifindex, in_ns, tcx_names
from tests.helpers.netns import NetNS
from tests.plumber.test_link_knobs import link_attrs, u32

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def _iproute2_version() -> tuple[int, ...]:
    """``ip -V``: "ip utility, iproute2-6.1.0, libbpf 1.1.0"."""
    text = subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout
    found = re.search(r"iproute2-(?:ss)?(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def out(res: subprocess.CompletedProcess) -> str:
    return res.stdout


def network_ips(cluster: Cluster, claim: str) -> list[str]:
    return [ip for d in cluster.claim_status(claim).get("devices", [])
            for ip in (d.get("networkData") or {}).get("ips", [])]


@pytest.mark.parametrize("ifname", ["dummy0", "mlx5_6"],
                         ids=["resourceclaim", "resourceclaim-normalized-name"])
async def test_dummy_interface_with_ip_addresses(cluster: Cluster, ifname: str):
    """Two @tests of e2e.bats: a plain name, and one that is not a DNS label."""
    cluster.dummy(ifname)
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim")
    assert "169.254.169.13" in out(cluster.exec("pod1", "ip", "addr", "show", "eth99"))
    ips = await cluster.until(lambda: network_ips(cluster, "dummy-interface-static-ip"))
    assert any("169.254.169.13" in ip for ip in ips)


async def test_per_interface_arp_configuration(cluster: Cluster):
    cluster.dummy("dummy0")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_arp")
    res = cluster.exec("pod-arp-test", "cat", "/proc/sys/net/ipv4/conf/dranet-arp/arp_ignore")
    assert out(res).strip() == "1"
    res = cluster.exec("pod-arp-test", "cat", "/proc/sys/net/ipv4/conf/dranet-arp/arp_announce")
    assert out(res).strip() == "2"


async def test_dummy_interface_with_ip_addresses_resourceclaimtemplate(cluster: Cluster):
    cluster.dummy("dummy0", up=False)
    cluster.sh("ip", "addr", "add", "169.254.169.14/32", "dev", "dummy0")
    (pod_name,) = await cluster.apply("resourceclaimtemplate")
    assert "169.254.169.14" in out(cluster.exec(pod_name, "ip", "addr", "show", "dummy0"))
    claim = cluster.pods[pod_name].generated[0]
    ips = await cluster.until(lambda: network_ips(cluster, claim))
    assert any("169.254.169.14" in ip for ip in ips)


async def test_dummy_interface_with_ip_addresses_and_routes(cluster: Cluster):
    cluster.dummy("dummy0")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_route")
    assert "169.254.169.13" in out(cluster.exec("pod3", "ip", "addr", "show", "eth99"))
    assert "169.254.169.0/24 via 169.254.169.1" in out(cluster.exec("pod3", "ip", "route",
                                                                    "show"))
    ips = await cluster.until(lambda: network_ips(cluster, "dummy-interface-static-ip-route"))
    assert any("169.254.169.1" in ip for ip in ips)


async def test_metric_server_is_up_and_operating_on_host(cluster: Cluster):
    # DRANET serves on :9177; knd's discovery on its --metrics-address (the node's
    # loopback here, as hostNetwork's localhost there)
    script = ("import urllib.request as u; t = u.urlopen('http://127.0.0.1:9501/metrics', "
              "timeout=5).read().decode(); print('ok' if 'process_start_time_seconds' in t "
              "else 'fail')")
    res = await cluster.until(lambda: (r := cluster.sh(
        "python3", "-c", script, check=False)) and r.strip() == "ok" and r, 10)
    assert res.strip() == "ok"


async def test_advanced_network_configurations(cluster: Cluster):
    cluster.dummy("dummy0")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_advanced")
    shown = out(cluster.exec("pod-advanced-cfg", "ip", "addr", "show", "dranet0"))
    assert "169.254.169.14/24" in shown
    assert "mtu 4321" in shown
    assert "00:11:22:33:44:55" in shown
    k = out(cluster.exec("pod-advanced-cfg", "ethtool", "-k", "dranet0"))
    assert "tcp-segmentation-offload: off" in k
    assert "generic-receive-offload: off" in k
    assert "large-receive-offload: off" in k


async def test_big_tcp_network_configurations(cluster: Cluster):
    cluster.dummy("dummy0")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_bigtcp")
    shown = out(cluster.exec("pod-bigtcp-test", "ip", "-d", "link", "show", "dranet1"))
    assert "mtu 8896" in shown
    assert "gso_max_size 65536" in shown
    assert "gro_max_size 65536" in shown
    if _iproute2_version() >= (6, 3):
        assert "gso_ipv4_max_size 65536" in shown
        assert "gro_ipv4_max_size 65536" in shown
    else:  # iproute2 6.1 (Debian 12) does not print them: the same facts from netlink
        attrs = await link_attrs(cluster.pods["pod-bigtcp-test"].netns.name, "dranet1")
        assert (u32(attrs, IFLA_GSO_IPV4_MAX_SIZE), u32(attrs, IFLA_GRO_IPV4_MAX_SIZE)) == (
            65536, 65536)
    k = out(cluster.exec("pod-bigtcp-test", "ethtool", "-k", "dranet1"))
    assert "tcp-segmentation-offload: on" in k
    assert "generic-receive-offload: on" in k
    assert "large-receive-offload: off" in k


def setup_bpf_device(cluster: Cluster, lab: BpfLab) -> str:
    """DRANET's setup_bpf_device: dummy0 with a direct-action cls_bpf filter on its
    clsact ingress, then up. The program is loaded with bpf() and pinned (DRANET's
    comes from an ELF object); returns the filter's name as tc reports it."""
    cluster.dummy("dummy0", up=False)
    name = lab.tc_filter(cluster.node.name, "dummy0", "ingress", "dummy_bpf")
    cluster.sh("ip", "link", "set", "up", "dev", "dummy0")
    return name


def setup_tcx_filter(cluster: Cluster, lab: BpfLab) -> None:
    """DRANET's setup_tcx_filter: a program named handle_ingress attached as TCX ingress
    (a pinned link), then the link cycled so discovery hears about the interface."""
    in_ns(cluster.node, lab.tcx_link, ifindex(cluster.node, "dummy0"), bpf.BPF_TCX_INGRESS,
          "handle_ingress", True)
    cluster.sh("ip", "link", "set", "down", "dev", "dummy0")
    cluster.sh("ip", "link", "set", "up", "dev", "dummy0")


def string_attr(cluster: Cluster, device: str, name: str) -> object:
    attr = cluster.devices().get(device, {}).get("attributes", {}).get(f"{DRIVER}/{name}")
    return attr and next(iter(attr.values()))


async def test_bpf_filter_attributes(cluster: Cluster, lab: BpfLab):
    name = setup_bpf_device(cluster, lab)
    assert f"{name} direct-action" in cluster.sh("tc", "filter", "show", "dev", "dummy0",
                                                 "ingress")
    await cluster.until(lambda: string_attr(cluster, "dummy0", "ebpf") is True, 20)
    assert string_attr(cluster, "dummy0", "tcFilterNames") == name


async def test_tcx_bpf_filter_attributes(cluster: Cluster, lab: BpfLab):
    setup_bpf_device(cluster, lab)
    setup_tcx_filter(cluster, lab)
    assert tcx_names(cluster.node, "dummy0")["ingress"] == ["handle_ingress"]
    await cluster.until(lambda: string_attr(cluster, "dummy0", "tcxProgramNames"), 20)
    assert string_attr(cluster, "dummy0", "ebpf") is True
    assert string_attr(cluster, "dummy0", "tcxProgramNames") == "handle_ingress"


async def test_bpf_programs_are_removed(cluster: Cluster, lab: BpfLab):
    name = setup_bpf_device(cluster, lab)
    setup_tcx_filter(cluster, lab)
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_disable_ebpf")
    pod_ns = cluster.pods["pod-ebpf"].netns
    assert "handle_ingress" not in tcx_names(pod_ns, "dummy0")["ingress"]
    shown = out(cluster.exec("pod-ebpf", "tc", "filter", "show", "dev", "dummy0", "ingress"))
    assert name not in shown


async def test_two_dummy_interfaces_with_ip_addresses_resourceclaimtemplate(cluster: Cluster):
    for name, ip in (("dummy0", "169.254.169.13/32"), ("dummy1", "169.254.169.14/32")):
        cluster.dummy(name)
        cluster.sh("ip", "addr", "add", ip, "dev", name)
    await cluster.apply("deviceclass")
    (pod_name,) = await cluster.apply("resourceclaimtemplate_double")
    assert "169.254.169.13" in out(cluster.exec(pod_name, "ip", "addr", "show", "dummy0"))
    assert "169.254.169.14" in out(cluster.exec(pod_name, "ip", "addr", "show", "dummy1"))
    claim = cluster.pods[pod_name].generated[0]
    ips = " ".join(await cluster.until(lambda: len(network_ips(cluster, claim)) >= 2
                                       and network_ips(cluster, claim)))
    assert "169.254.169.13" in ips and "169.254.169.14" in ips


async def test_reapply_pod_with_dummy_resource_claim(cluster: Cluster):
    cluster.dummy("dummy8")
    cluster.sh("ip", "addr", "add", "169.254.169.14/32", "dev", "dummy8")
    (pod_name,) = await cluster.apply("repeatresourceclaimtemplate")
    assert "169.254.169.14" in out(cluster.exec(pod_name, "ip", "addr", "show", "dummy8"))
    claim = cluster.pods[pod_name].generated[0]
    assert any("169.254.169.14" in ip for ip in await cluster.until(
        lambda: network_ips(cluster, claim)))
    await cluster.delete_pod(pod_name)
    # DRANET's test adds the address again here ("dummy devices do not have the ability
    # to reclaim the IP when moved back"); knd gives the device back with its addresses
    assert "169.254.169.14/32" in cluster.sh("ip", "addr", "show", "dev", "dummy8")
    (pod_name,) = await cluster.apply("repeatresourceclaimtemplate")
    assert "169.254.169.14" in out(cluster.exec(pod_name, "ip", "addr", "show", "dummy8"))
    claim = cluster.pods[pod_name].generated[0]
    assert any("169.254.169.14" in ip for ip in await cluster.until(
        lambda: network_ips(cluster, claim)))


async def test_driver_gracefully_shuts_down_when_terminated(cluster: Cluster):
    kubelet = cluster.agent.kubelet_root
    dra, reg = kubelet / "plugins" / DRIVER / "dra.sock", kubelet / "plugins_registry" / (
        f"{DRIVER}-reg.sock")
    await cluster.until(lambda: dra.is_socket() and reg.is_socket(), what="both sockets")
    assert cluster.agent.stop() == 0
    assert not dra.exists()
    assert not reg.exists()


def _pod_configs(state: Path, pod_uid: str) -> list[tuple]:
    """The checkpoint's rows for ``pod_uid`` (DRANET's test reads its bbolt DB the same way)."""
    db = sqlite3.connect(f"file:{state / 'plumber' / 'checkpoint.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT claim_uid, device, phase FROM attachments WHERE pod_uid = ?",
                          (pod_uid,)).fetchall()
    finally:
        db.close()


async def test_unprepare_on_driver_restart_after_pod_deletion_during_downtime(cluster: Cluster):
    cluster.dummy("dummy-downtime")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim")
    run = cluster.pods["pod1"]
    state = cluster.agent.state_dir
    assert cluster.agent.stop() == 0  # the driver goes away from the node
    run.netns.delete()  # the pod is force-deleted meanwhile: its netns goes with it
    assert _pod_configs(state, run.uid)  # still recorded: nobody could clean up
    cluster.agent.start()
    await cluster.shake_hands()
    # kubelet unprepares the deleted pod's claim once the driver is back
    claim = run.claims[0]
    resp = await kubelet.unprepare(cluster.dra, "v1", [kubelet.ref(claim)])
    assert not resp.claims[claim["metadata"]["uid"]].error
    await cluster.until(lambda: not _pod_configs(state, run.uid), 20,
                        what="the deleted pod's configs removed after the restart")


async def test_permanent_neighbor_entry_is_copied_to_pod_namespace(cluster: Cluster):
    cluster.dummy("dummy-neigh")
    cluster.sh("ip", "addr", "add", "169.254.169.15/32", "dev", "dummy-neigh")
    cluster.sh("ip", "neigh", "add", "192.168.1.1", "lladdr", "00:11:22:33:44:55", "dev",
               "dummy-neigh", "nud", "permanent")
    cluster.sh("ip", "-6", "neigh", "add", "2001:db8::1", "lladdr", "00:aa:bb:cc:dd:ee", "dev",
               "dummy-neigh", "nud", "permanent")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim")
    shown = out(cluster.exec("pod1", "ip", "neigh", "show"))
    assert "192.168.1.1 dev eth99 lladdr 00:11:22:33:44:55 PERMANENT" in shown
    assert "2001:db8::1 dev eth99 lladdr 00:aa:bb:cc:dd:ee PERMANENT" in shown


async def test_route_rules_and_non_default_table_routes_are_copied(cluster: Cluster):
    cluster.dummy("dummy-rules")
    cluster.sh("ip", "addr", "add", "169.254.169.13/24", "dev", "dummy-rules")
    cluster.sh("ip", "route", "add", "10.10.10.0/24", "via", "169.254.169.1", "dev",
               "dummy-rules", "table", "100")
    cluster.sh("ip", "rule", "add", "from", "10.20.30.0/24", "table", "100", "priority", "500")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim")
    assert "10.10.10.0/24 via 169.254.169.1 dev eth99" in out(
        cluster.exec("pod1", "ip", "route", "show", "table", "100"))
    assert re.search(r"500:\s+from 10.20.30.0/24 lookup 100",
                     out(cluster.exec("pod1", "ip", "rule", "show")))


async def test_dummy_interface_with_ipv6_subnet_route(cluster: Cluster):
    cluster.dummy("dummy-ipv6", up=False)
    cluster.sh("ip", "-6", "addr", "add", "fd36::3:0:e:0:0/96", "dev", "dummy-ipv6")
    cluster.sh("ip", "link", "set", "up", "dev", "dummy-ipv6")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_ipv6_subnet")
    shown = out(cluster.exec("pod-ipv6", "ip", "-6", "route", "show"))
    assert "fd36::3:0:e:0:0/96 dev dummy-ipv6 proto kernel metric 256 pref medium" in shown
    assert "fd36::3:0:e:0:0/96 dev dummy-ipv6 metric 1024 pref medium" not in shown


async def test_pbr_configuration(cluster: Cluster):
    for i in (1, 2):  # pod ends and router ends of two veth pairs, all in the node
        cluster.sh("ip", "link", "add", f"pbr-test-pod-{i}", "type", "veth", "peer", "name",
                   f"pbr-rtr-{i}")
        cluster.sh("ip", "link", "set", "up", "dev", f"pbr-test-pod-{i}")
        cluster.sh("ip", "link", "set", "up", "dev", f"pbr-rtr-{i}")
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim_pbr")
    res = cluster.exec("pod-pbr-1", "ping", "-c", "1", "-W", "2", "192.168.200.10",
                       check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def _vrf_kernel() -> bool:
    probe = NetNS("knd-vrf-probe")
    try:
        res = subprocess.run(probe.exec_argv(["ip", "link", "add", "v0", "type", "vrf",
                                              "table", "10"]), capture_output=True)
        return res.returncode == 0
    finally:
        probe.delete()


async def test_vrf_routing(cluster: Cluster):
    for i in (1, 2):
        cluster.sh("ip", "link", "add", f"vrf-test-pod-{i}", "type", "veth", "peer", "name",
                   f"vrf-rtr-{i}")
        cluster.sh("ip", "link", "set", "up", "dev", f"vrf-test-pod-{i}")
        cluster.sh("ip", "link", "set", "up", "dev", f"vrf-rtr-{i}")
    await cluster.apply("deviceclass")
    if not _vrf_kernel():
        # as far as this kernel allows (no CONFIG_NET_VRF): the claims are valid and
        # prepared; the pod start fails naming the VRF, and the device is home as before
        before = cluster.sh("ip", "-o", "addr", "show", "dev", "vrf-test-pod-1")
        with pytest.raises(Exception, match=r"(?i)vrf"):
            await cluster.apply("resourceclaim_vrf")
        assert cluster.sh("ip", "-o", "addr", "show", "dev", "vrf-test-pod-1") == before
        return
    await cluster.apply("resourceclaim_vrf")
    res = cluster.exec("pod-vrf-1", "ping", "-I", "eth1", "-c", "1", "-W", "2", "10.10.20.1",
                       check=False)
    assert res.returncode == 0, res.stdout + res.stderr


async def test_allocated_device_in_resourceslice_remains_unchanged(cluster: Cluster):
    cluster.dummy("dummy0")
    # discovered and published with its link up (DRANET's test sleeps 5 s for this)
    original = (await cluster.until(lambda: (d := cluster.devices().get("dummy0")) and d[
        "attributes"]["dra.net/state"] == {"string": "up"} and d))["attributes"]
    assert original
    await cluster.apply("deviceclass")
    await cluster.apply("resourceclaim")
    assert cluster.devices()["dummy0"]["attributes"] == original
    # kubectl rollout restart: the agent stops and starts again
    assert cluster.agent.stop() == 0
    cluster.agent.start()
    await cluster.shake_hands()
    await cluster.until(lambda: cluster.agent.children().get("publisher"))
    assert cluster.devices()["dummy0"]["attributes"] == original
    await cluster.delete_pod("pod1")

