"""``interface.disableEbpfPrograms``: real tc cls_bpf filters and TCX programs on a
claimed interface, and what is left of them in the pod and back home.

Mirrors DRANET's e2e "validate bpf programs are removed" (the claim of
resourceclaim_disable_ebpf.yaml): in the pod, no TCX program and no cls_bpf
filter is left on the interface.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig
from services.kernel import bpf
from services.kernel.netns import path_of
from services.plumber import ebpf, nsfs
from tests.helpers.bpf import BpfLab, ifindex, in_ns, tcx_names
from tests.helpers.netns import NetNS
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio






def tc(ns: NetNS, *args: str) -> str:
    return subprocess.run(ns.exec_argv(["tc", *args]), capture_output=True, text=True,
                          check=True).stdout


def programs(lab: BpfLab, ns: NetNS, dev: str) -> None:
    """DRANET's e2e setup: a cls_bpf filter on ingress and a TCX program on ingress;
    here also a TCX program attached without a link on egress, and a link held by
    someone else (our fd, and a pin on the bpffs)."""
    lab.tc_filter(ns.name, dev, "ingress", "dummy_bpf")
    idx = ifindex(ns, dev)
    in_ns(ns, lab.tcx_link, idx, bpf.BPF_TCX_INGRESS, "handle_ingress", True)
    in_ns(ns, lab.tcx_attach, idx, bpf.BPF_TCX_EGRESS, "handle_egress")
    assert "dummy_bpf" in tc(ns, "filter", "show", "dev", dev, "ingress")
    assert tcx_names(ns, dev) == {"ingress": ["handle_ingress"], "egress": ["handle_egress"]}


async def test_disable_ebpf_programs_detaches_them_in_the_pod(env: Env, plumber,
                                                               lab: BpfLab) -> None:
    env.node.veth("ea0", "eb0")
    programs(lab, env.node, "ea0")
    await env.inventory([netdev("dev-e", "ea0")])
    pod = env.pod()
    cfg = NetworkConfig(interface=InterfaceConfig(name="net1", disableEbpfPrograms=True))
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-e", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert rep.error == "", rep.error
    assert tc(pod, "filter", "show", "dev", "net1", "ingress").strip() == ""
    assert tc(pod, "filter", "show", "dev", "net1", "egress").strip() == ""
    assert tcx_names(pod, "net1") == {"ingress": [], "egress": []}
    # the pinned link is still there for its owner, detached
    assert any(p.endswith("link-handle_ingress") for p in lab.pins)
    assert os.path.exists(next(p for p in lab.pins if p.endswith("link-handle_ingress")))
    # home again: nothing is re-attached (as DRANET)
    assert (await env.detach(pod_uid)).restored == ["dev-e"]
    assert tcx_names(env.node, "ea0") == {"ingress": [], "egress": []}
    assert tc(env.node, "filter", "show", "dev", "ea0", "ingress").strip() == ""


async def test_without_the_flag_tcx_programs_stay(env: Env, plumber, lab: BpfLab) -> None:
    env.node.veth("fa0", "fb0")
    programs(lab, env.node, "fa0")
    await env.inventory([netdev("dev-f", "fa0")])
    pod = env.pod()
    cfg = NetworkConfig(interface=InterfaceConfig(name="net1"))
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-f", cfg)], [pod_uid])).error == ""
    assert (await env.attach(pod_uid, pod)).error == ""
    assert tcx_names(pod, "net1") == {"ingress": ["handle_ingress"], "egress": ["handle_egress"]}
    # the kernel drops an interface's qdiscs, and so its tc filters, when it changes
    # netns: with DRANET as with knd, they do not follow the interface
    assert tc(pod, "filter", "show", "dev", "net1", "ingress").strip() == ""
    assert (await env.detach(pod_uid)).restored == ["dev-f"]
    assert tcx_names(env.node, "fa0") == {"ingress": ["handle_ingress"],
                                          "egress": ["handle_egress"]}


async def test_detach_removes_only_bpf_filters_and_keeps_the_qdisc(node_ns: NetNS,
                                                                   lab: BpfLab) -> None:
    """The step itself, on an interface that has filters in several chains and
    both hooks: every cls_bpf filter goes, the clsact qdisc stays."""
    node_ns.veth("da0", "db0")
    lab.tc_filter(node_ns.name, "da0", "ingress", "in_one")
    lab.tc_filter(node_ns.name, "da0", "egress", "out_one")
    pin = lab.pin(lab.load("chained"), "chained")
    tc(node_ns, "filter", "add", "dev", "da0", "ingress", "chain", "7", "pref", "5", "bpf",
       "da", "pinned", pin)
    tc(node_ns, "filter", "add", "dev", "da0", "ingress", "pref", "9", "bpf", "da",
       "pinned", pin)
    assert tc(node_ns, "filter", "show", "dev", "da0", "ingress", "chain", "7").strip()
    idx = ifindex(node_ns, "da0")
    in_ns(node_ns, lab.tcx_link, idx, bpf.BPF_TCX_EGRESS, "tcx_one")
    fd = nsfs.open_netns(path_of(node_ns.name))
    try:
        done = await ebpf.detach_programs(fd, idx, "da0")
        assert len(done) == 5, done
        assert await ebpf.detach_programs(fd, idx, "da0") == []  # nothing left
    finally:
        os.close(fd)
    for hook in ("ingress", "egress"):
        assert tc(node_ns, "filter", "show", "dev", "da0", hook).strip() == ""
    assert tc(node_ns, "filter", "show", "dev", "da0", "ingress", "chain", "7").strip() == ""
    assert "clsact" in tc(node_ns, "qdisc", "show", "dev", "da0")
    assert tcx_names(node_ns, "da0") == {"ingress": [], "egress": []}
