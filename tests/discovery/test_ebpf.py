"""DRANET's eBPF attributes from real programs: cls_bpf filters attached with tc and
TCX programs attached with the bpf() syscall, in a throwaway node netns.

Mirrors DRANET's e2e "validate bpf filter attributes" and "validate tcx bpf filter
attributes": ``ebpf`` is true and the names are the filter's and the program's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from services.discovery.filter import DeviceFilter
from services.discovery.service import Scanner
from services.kernel.bpf import BPF_TCX_EGRESS, BPF_TCX_INGRESS
from services.kernel.sysfs import Sysfs
from tests.discovery.test_service import Running, running  # noqa: F401 (fixture)
from tests.helpers.bpf import BpfLab, ifindex, in_ns
from tests.helpers.netns import NetNS

D = "knd.dev"





def scan(ns: NetNS, tmp_path: Path) -> dict[str, dict]:
    scanner = Scanner(D, Sysfs(tmp_path / "no-sysfs"), DeviceFilter("true"), ns.name)
    try:
        return {d.name: d.attributes for d in scanner.scan()}
    finally:
        scanner.close()


def test_tc_filter_and_tcx_programs_are_published(node_ns: NetNS, lab: BpfLab,
                                                  tmp_path: Path) -> None:
    node_ns.veth("bpf0", "plain0")
    plain_before = scan(node_ns, tmp_path)["plain0"]
    ingress = lab.tc_filter(node_ns.name, "bpf0", "ingress", "dummy_bpf")
    egress = lab.tc_filter(node_ns.name, "bpf0", "egress", "egress_bpf")
    idx = ifindex(node_ns, "bpf0")
    in_ns(node_ns, lab.tcx_link, idx, BPF_TCX_INGRESS, "handle_ingress")
    in_ns(node_ns, lab.tcx_attach, idx, BPF_TCX_EGRESS, "handle_egress")
    # the same program name twice counts once, as in DRANET's name set
    in_ns(node_ns, lab.tcx_link, idx, BPF_TCX_EGRESS, "handle_egress")

    attrs = scan(node_ns, tmp_path)
    a = attrs["bpf0"]
    assert a[f"{D}/ebpf"] is True
    assert a[f"{D}/tcFilterNames"] == ",".join(sorted([ingress, egress]))
    assert ingress == "tc-dummy_bpf:[*fsobj]"  # what tc names a filter loaded from a pin
    assert a[f"{D}/tcxProgramNames"] == "handle_egress,handle_ingress"
    plain = attrs["plain0"]
    assert plain[f"{D}/ebpf"] is False and plain == plain_before
    assert f"{D}/tcFilterNames" not in plain and f"{D}/tcxProgramNames" not in plain


def test_each_kind_alone(node_ns: NetNS, lab: BpfLab, tmp_path: Path) -> None:
    node_ns.veth("tconly", "tcxonly")
    name = lab.tc_filter(node_ns.name, "tconly", "egress", "only_tc")
    in_ns(node_ns, lab.tcx_link, ifindex(node_ns, "tcxonly"), BPF_TCX_INGRESS, "only_tcx")
    attrs = scan(node_ns, tmp_path)
    tc, tcx = attrs["tconly"], attrs["tcxonly"]
    assert tc[f"{D}/ebpf"] is True and tc[f"{D}/tcFilterNames"] == name
    assert f"{D}/tcxProgramNames" not in tc
    assert tcx[f"{D}/ebpf"] is True and tcx[f"{D}/tcxProgramNames"] == "only_tcx"
    assert f"{D}/tcFilterNames" not in tcx


def test_an_empty_clsact_is_not_ebpf_and_a_closed_link_is_gone(
        node_ns: NetNS, lab: BpfLab, tmp_path: Path) -> None:
    node_ns.veth("cls0", "cls1")
    subprocess.run(node_ns.exec_argv(["tc", "qdisc", "add", "dev", "cls0", "clsact"]),
                   check=True)
    link = in_ns(node_ns, lab.tcx_link, ifindex(node_ns, "cls1"), BPF_TCX_INGRESS, "short_lived")
    attrs = scan(node_ns, tmp_path)
    assert attrs["cls0"][f"{D}/ebpf"] is False
    assert attrs["cls1"][f"{D}/tcxProgramNames"] == "short_lived"
    lab.fds.remove(link)
    os.close(link)  # the last reference: the kernel detaches the program
    assert scan(node_ns, tmp_path)["cls1"][f"{D}/ebpf"] is False


def test_names_are_cut_whole_within_64_bytes(node_ns: NetNS, lab: BpfLab,
                                             tmp_path: Path) -> None:
    node_ns.veth("many0", "many1")
    idx = ifindex(node_ns, "many0")
    progs = [f"prog_number_{n:02d}" for n in range(6)]  # 14 bytes each, 89 joined
    for p in progs:
        in_ns(node_ns, lab.tcx_link, idx, BPF_TCX_INGRESS, p)
    value = scan(node_ns, tmp_path)["many0"][f"{D}/tcxProgramNames"]
    assert value == ",".join(progs[:4])  # 59 bytes; a fifth would make 74
    filters = [lab.tc_filter(node_ns.name, "many1", "ingress", f"filter_{n}_{'x' * 20}")
               for n in range(3)]
    value = scan(node_ns, tmp_path)["many1"][f"{D}/tcFilterNames"]
    assert len(value.encode()) <= 64 and value == sorted(filters)[0]


@pytest.mark.anyio
async def test_tc_filter_change_is_published_without_waiting_for_the_resync(
        running: Running, node_ns: NetNS, lab: BpfLab) -> None:  # noqa: F811
    node_ns.veth("ev0", "ev1", up=False)  # down: no IPv6 address events to rescan for us
    await running.until(lambda: {"ev0", "ev1"} <= running.names())

    def ebpf(dev: str):
        for d in running.snapshots[-1].devices:
            if d.name == dev:
                return d.attributes.get(f"{D}/ebpf"), d.attributes.get(f"{D}/tcFilterNames")
        return None

    assert ebpf("ev0") == (False, None)
    name = lab.tc_filter(node_ns.name, "ev0", "ingress", "late_filter")
    await running.until(lambda: ebpf("ev0") == (True, name))  # resync is an hour here
    await anyio.run_process(node_ns.exec_argv(["tc", "filter", "del", "dev", "ev0", "ingress"]))
    await running.until(lambda: ebpf("ev0") == (False, None))

    # TCX attachments send no event: like DRANET's e2e, a link change makes it seen
    in_ns(node_ns, lab.tcx_link, ifindex(node_ns, "ev1"), BPF_TCX_INGRESS, "late_tcx")
    node_ns.ip("link", "set", "ev1", "mtu", "1400")

    def tcx(dev: str):
        for d in running.snapshots[-1].devices:
            if d.name == dev:
                return d.attributes.get(f"{D}/ebpf"), d.attributes.get(f"{D}/tcxProgramNames")
        return None

    await running.until(lambda: tcx("ev1") == (True, "late_tcx"))


def test_unnamed_filter_counts_without_a_name(node_ns: NetNS, tmp_path: Path) -> None:
    """A classic-BPF cls_bpf filter has no name: DRANET counts it (``ebpf`` true, the
    names attribute present); knd adds no empty name to the list."""
    node_ns.veth("cbpf0", "cbpf1")
    for argv in (["tc", "qdisc", "add", "dev", "cbpf0", "clsact"],
                 ["tc", "filter", "add", "dev", "cbpf0", "egress", "bpf", "bytecode",
                  "1,6 0 0 0,"]):
        subprocess.run(node_ns.exec_argv(argv), check=True)
    a = scan(node_ns, tmp_path)["cbpf0"]
    assert a[f"{D}/ebpf"] is True and a[f"{D}/tcFilterNames"] == ""


def test_a_rescan_after_events_reads_only_new_and_named_interfaces(
        node_ns: NetNS, lab: BpfLab, tmp_path: Path) -> None:
    node_ns.veth("inc0", "inc1")
    scanner = Scanner(D, Sysfs(tmp_path / "no-sysfs"), DeviceFilter("true"), node_ns.name)
    try:
        def ebpf(touched: set[int] | None) -> dict[str, bool]:
            return {d.name: d.attributes[f"{D}/ebpf"] for d in scanner.scan(touched=touched)}

        assert ebpf(None) == {"inc0": False, "inc1": False}
        for dev in ("inc0", "inc1"):
            in_ns(node_ns, lab.tcx_link, ifindex(node_ns, dev), BPF_TCX_INGRESS, "quiet")
        node_ns.veth("inc2", "inc3")
        lab.tc_filter(node_ns.name, "inc2", "ingress", "newcomer")
        # no event named inc0 or inc1: not read again; the new inc2 is
        assert ebpf(set()) == {"inc0": False, "inc1": False, "inc2": True, "inc3": False}
        assert ebpf({ifindex(node_ns, "inc1")})["inc1"] is True
        assert ebpf(None)["inc0"] is True  # the resync reads every interface
    finally:
        scanner.close()
