"""DRANET's IPVLAN and SLAAC scenarios (kubernetes-sigs/dranet tests/e2e.bats, and the
SLAAC manifest), against knd with DRANET's manifests, asserting what they assert.

Two substitutions, each said where it is made:

- dummy links are veths (cluster.py), as in the rest of this port;
- on a kernel without ipvlan (CONFIG_IPVLAN unset, as on this project's CI kernel) the
  manifest as it is must be refused cleanly (the pod start fails naming
  ``interface.type`` and the missing ipvlan support; the parent is left as it was), and
  every other assertion of the scenario then runs on the same manifest with
  ``type: MACVLAN``, knd's other child type, with "ipvlan" read as "macvlan" in
  ``ip -d link``. Where the kernel has ipvlan, the scenario runs as DRANET's does.
"""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from services.plumber.netops import IFLA_GRO_IPV4_MAX_SIZE, IFLA_GSO_IPV4_MAX_SIZE
from tests.e2e.dranet.cluster import Cluster
from tests.e2e.dranet.test_e2e_bats import _iproute2_version, network_ips, out
from tests.helpers.ra import Router
from tests.plumber.test_children import HAS_IPVLAN
from tests.plumber.test_link_knobs import link_attrs, u32

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def as_macvlan(doc: dict) -> None:
    """The substitution: the claim's child is a macvlan, under a name of its own (the
    refused ipvlan claim keeps its name in the API)."""
    if doc["kind"] == "ResourceClaim":
        doc["metadata"]["name"] += "-macvlan"
        for cfg in doc["spec"]["devices"].get("config", []):
            cfg["opaque"]["parameters"]["interface"]["type"] = "MACVLAN"
    elif doc["kind"] == "Pod":
        for ref in doc["spec"]["resourceClaims"]:
            ref["resourceClaimName"] += "-macvlan"


async def child_kind(cluster: Cluster, manifest: str, claim: str, parent: str) -> str:
    """Apply ``manifest``: "ipvlan" where the kernel has it; otherwise check the clean
    refusal, then apply it as macvlan (see the module doc) and return "macvlan"."""
    if HAS_IPVLAN:
        await cluster.apply(manifest)
        return "ipvlan"
    before = cluster.sh("ip", "-d", "addr", "show", "dev", parent)
    with pytest.raises(Exception, match=r"interface\.type.*CONFIG_IPVLAN"):
        await cluster.apply(manifest)
    assert cluster.sh("ip", "-d", "addr", "show", "dev", parent) == before
    pod_name = next(n for n, r in cluster.pods.items() if r.claims
                    and r.claims[0]["metadata"]["name"] == claim)
    await cluster.delete_pod(pod_name)
    cluster.claims.pop(claim)  # deallocated: the scheduler may give the parent again
    await cluster.apply(manifest, as_macvlan)
    return "macvlan"


async def test_dummy_interface_with_ipvlan_resourceclaim_and_address(cluster: Cluster):
    cluster.dummy("dummy0")
    await cluster.apply("deviceclass")
    kind = await child_kind(cluster, "resourceclaim_ipvlan", "dummy-interface-ipvlan", "dummy0")
    shown = out(cluster.exec("pod-ipvlan", "ip", "-d", "link", "show", "dummy0"))
    assert kind in shown
    assert "mtu 1400" in shown
    assert "gso_max_size 32768" in shown
    assert "gro_max_size 32768" in shown
    if _iproute2_version() >= (6, 3):
        assert "gso_ipv4_max_size 32768" in shown
        assert "gro_ipv4_max_size 32768" in shown
    else:  # iproute2 6.1 (Debian 12) does not print them: the same facts from netlink
        attrs = await link_attrs(cluster.pods["pod-ipvlan"].netns.name, "dummy0")
        assert (u32(attrs, IFLA_GSO_IPV4_MAX_SIZE), u32(attrs, IFLA_GRO_IPV4_MAX_SIZE)) == (
            32768, 32768)
    assert "169.254.200.10" in out(cluster.exec("pod-ipvlan", "ip", "addr", "show", "dummy0"))
    conf = "/proc/sys/net/ipv4/conf/dummy0"
    assert out(cluster.exec("pod-ipvlan", "cat", f"{conf}/arp_ignore")).strip() == "1"
    assert out(cluster.exec("pod-ipvlan", "cat", f"{conf}/arp_announce")).strip() == "2"
    assert out(cluster.exec("pod-ipvlan", "cat", "/proc/sys/net/ipv6/conf/default/accept_ra")
               ).strip() != "0"
    assert out(cluster.exec("pod-ipvlan", "cat", "/proc/sys/net/ipv6/conf/dummy0/accept_ra")
               ).strip() == "0"
    assert "mtu 1500" in cluster.sh("ip", "link", "show", "dummy0")  # the parent stays home


async def test_validate_pbr_configuration_with_ipvlan_subinterface(cluster: Cluster):
    cluster.sh("ip", "link", "add", "ipvlan-pbr-a", "type", "veth", "peer", "name",
               "ipvlan-pbr-b")
    cluster.sh("ip", "link", "set", "ipvlan-pbr-a", "up")
    cluster.sh("ip", "link", "set", "ipvlan-pbr-b", "up")
    cluster.sh("ip", "addr", "add", "169.254.201.1/24", "dev", "ipvlan-pbr-b")
    cluster.sh("ip", "addr", "add", "169.254.202.1/32", "dev", "ipvlan-pbr-b")
    await cluster.apply("deviceclass")
    kind = await child_kind(cluster, "resourceclaim_ipvlan_pbr", "ipvlan-pbr", "ipvlan-pbr-a")
    assert kind in out(cluster.exec("pod-ipvlan-pbr", "ip", "-d", "link", "show", "net1"))
    table = out(cluster.exec("pod-ipvlan-pbr", "ip", "route", "show", "table", "150"))
    assert "169.254.201.1 dev net1 scope link" in table
    assert "169.254.202.0/24 via 169.254.201.1 dev net1" in table
    rules = out(cluster.exec("pod-ipvlan-pbr", "ip", "rule", "show"))
    assert re.search(r"32000:\s+from 169.254.201.10 lookup 150", rules), rules
    assert re.search(r"32000:\s+from all to 169.254.202.0/24 lookup 150", rules), rules
    # reachable only through the PBR table
    res = cluster.exec("pod-ipvlan-pbr", "ping", "-c", "1", "-W", "2", "169.254.202.1",
                       check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    cluster.sh("ip", "link", "show", "ipvlan-pbr-a")  # the parent is still on the host
    cluster.sh("ip", "link", "del", "ipvlan-pbr-a")


def host_links(cluster: Cluster, *names: str) -> dict:
    return {n: json.loads(cluster.sh("ip", "-j", "-d", "addr", "show", "dev", n)) for n in names}


async def test_slaac_interfaces_without_a_router_end_up_on_the_host(cluster: Cluster):
    """resourceclaim_slaac.yaml as its comment has it: no router answers on these
    links, so the interface's wait fails and the pod does not start; both interfaces
    end up on the host."""
    for name in ("dummy1", "dummy2"):
        cluster.dummy(name)
    await cluster.apply("deviceclass")
    await cluster.until(lambda: {"dummy1", "dummy2"} <= set(cluster.devices()))
    before = host_links(cluster, "dummy1", "dummy2")
    # the wait fails RunPodSandbox, or, when it outlasts the runtime's request, the
    # creation of the pod's first container that waited for it
    with pytest.raises(Exception, match=r"SLAAC: dranet-slaac2? has no autoconfigured"):
        await cluster.apply("resourceclaim_slaac")
    after = host_links(cluster, "dummy1", "dummy2")
    for link in (*before.values(), *after.values()):
        for a in link[0]["addr_info"]:
            a.pop("valid_life_time", None), a.pop("preferred_life_time", None)
    assert after == before
    assert "dranet-slaac" not in out(cluster.exec("pod-slaac-test", "ip", "link"))


async def test_slaac_interfaces_autoconfigure_from_a_router(cluster: Cluster):
    """The same manifest with a router advertising a prefix on each link (knd's test of
    the success path): the pod starts with an autoconfigured address on each."""
    prefixes = {"dummy1": "2001:db8:101::/64", "dummy2": "2001:db8:102::/64"}
    peers = {name: cluster.dummy(name) for name in prefixes}
    await cluster.apply("deviceclass")
    with Router(cluster.wire.name, peers["dummy1"], prefixes["dummy1"]), \
            Router(cluster.wire.name, peers["dummy2"], prefixes["dummy2"]):
        await cluster.apply("resourceclaim_slaac")
    for name, pod_if in (("dummy1", "dranet-slaac"), ("dummy2", "dranet-slaac2")):
        shown = out(cluster.exec("pod-slaac-test", "ip", "-6", "addr", "show", pod_if,
                                 "scope", "global"))
        got = re.findall(r"inet6 (\S+)", shown)
        assert [ipaddress.ip_interface(a).network for a in got] == [
            ipaddress.ip_network(prefixes[name])], shown
        assert out(cluster.exec("pod-slaac-test", "cat",
                                f"/proc/sys/net/ipv6/conf/{pod_if}/accept_ra")).strip() == "2"
    ips = await cluster.until(lambda: len(network_ips(cluster, "dummy-interface-slaac")) >= 2
                              and network_ips(cluster, "dummy-interface-slaac"))
    assert {str(ipaddress.ip_interface(a).network) for a in ips} == set(prefixes.values())


async def test_one_nic_for_many_pods(node_ns, short_dir):
    """knd's sharing end to end (not a DRANET scenario: DRANET publishes a parent for
    one claim at a time): discovery publishes dummy0 with allowMultipleAllocations
    (--shared-devices), the scheduler gives it to two claims with a shareID each, and
    each pod gets a child of it; both reach the far end, and the parent stays home."""
    from kndpeers.nri_runtime import FakeRuntime

    state = short_dir / "state"
    (state / "nri").mkdir(parents=True, exist_ok=True)
    shared = 'device.attributes["dra.net"].ifName == "dummy0"'
    async with FakeRuntime(state / "nri" / "nri.sock") as runtime:
        cluster = Cluster(node_ns, state, runtime, extra=("--shared-devices", shared))
        try:
            await cluster.start()
            peer = cluster.dummy("dummy0")
            cluster.wire.ip("addr", "add", "169.254.210.1/24", "dev", peer)
            await cluster.apply("deviceclass")
            await cluster.until(lambda: cluster.devices().get("dummy0", {}).get(
                "allowMultipleAllocations") is True, what="dummy0 published as shared")
            for i in (1, 2):
                cluster.claims[f"share-{i}"] = {
                    "metadata": {"name": f"share-{i}"},
                    "spec": {"devices": {
                        "requests": [{"name": "nic", "exactly": {
                            "deviceClassName": "dra.net", "selectors": [{"cel": {
                                "expression": 'device.attributes["dra.net"].ifName == '
                                              '"dummy0"'}}]}}],
                        "config": [{"opaque": {"driver": "dra.net", "parameters": {
                            "interface": {"type": "MACVLAN", "name": "net1",
                                          "addresses": [f"169.254.210.1{i}/24"]}}}}]}}}
                await cluster.run_pod(f"pod-share-{i}", [{"name": "nic",
                                                          "resourceClaimName": f"share-{i}"}])
            shares = {cluster.claims[f"share-{i}"]["status"]["allocation"]["devices"][
                "results"][0]["shareID"] for i in (1, 2)}
            assert len(shares) == 2
            for i in (1, 2):
                res = cluster.exec(f"pod-share-{i}", "ping", "-c", "1", "-W", "2",
                                   "169.254.210.1", check=False)
                assert res.returncode == 0, res.stdout + res.stderr
                status = await cluster.until(lambda i=i: cluster.claim_status(
                    f"share-{i}").get("devices"))
                assert status[0]["shareID"] in shares
            assert "dummy0" in cluster.sh("ip", "link", "show", "dummy0")
            for i in (1, 2):
                await cluster.delete_pod(f"pod-share-{i}")
            assert "state UP" in cluster.sh("ip", "link", "show", "dummy0")
        finally:
            await cluster.close()
