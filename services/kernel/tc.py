"""tc over rtnetlink: the qdisc and filter dumps that find cls_bpf filters.

Discovery names the filters of an interface (``tcFilterNames``); the plumber finds the
same filters to delete them (``interface.disableEbpfPrograms``). Both read them here,
over a raw rtnetlink socket (services.kernel.rtnl), in the netns of that socket.
"""

from __future__ import annotations

import socket
import struct

from services.kernel import rtnl

RTM_GETQDISC, RTM_GETTFILTER = 38, 46
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_CHAIN = 11
TCA_BPF_NAME = 7
TC_H_MAJ_MASK = 0xFFFF0000
TC_H_INGRESS_MAJ = 0xFFFF0000
"""The major handle of both the ``ingress`` and the ``clsact`` qdisc."""
PARENT_INGRESS, PARENT_EGRESS = 0xFFFFFFF2, 0xFFFFFFF3
"""clsact's ingress and egress hooks (``tc filter ... ingress|egress``)."""

TCMSG = struct.Struct("=BxxxiIII")
"""``struct tcmsg``: family, ifindex, handle, parent, info."""


def tcmsg(ifindex: int = 0, parent: int = 0) -> bytes:
    return TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0)


def ingress_qdisc_links(sock: socket.socket, seq: int) -> set[int]:
    """Interfaces that have an ``ingress`` or ``clsact`` qdisc."""
    out: set[int] = set()
    for data, t, a, _b in rtnl._dump(sock, RTM_GETQDISC, tcmsg(), seq):
        if t == rtnl.RTM_NEWQDISC:
            _f, ifindex, handle, _parent, _info = TCMSG.unpack_from(data, a)
            if handle & TC_H_MAJ_MASK == TC_H_INGRESS_MAJ:
                out.add(ifindex)
    return out


def bpf_filter_names(sock: socket.socket, ifindex: int, parent: int, seq: int) -> list[str]:
    """The names of the cls_bpf filters at ``parent`` of ``ifindex``.

    A dump also lists each filter chain's header (kind only, no options): only
    messages with options are filters, as DRANET (vishvananda/netlink) counts them.
    """
    names = []
    for data, t, a, b in rtnl._dump(sock, RTM_GETTFILTER, tcmsg(ifindex, parent), seq):
        if t != rtnl.RTM_NEWTFILTER:
            continue
        kind, name, detailed = "", "", False
        for at, s, e in rtnl._attrs(data, a + TCMSG.size, b):
            if at == TCA_KIND:
                kind = rtnl._cstr(data, s, e)
            elif at == TCA_OPTIONS:
                detailed = True
                for ot, os_, oe in rtnl._attrs(data, s, e):
                    if ot == TCA_BPF_NAME:
                        name = rtnl._cstr(data, os_, oe)
        if kind == "bpf" and detailed:
            names.append(name)
    return names


def bpf_filters(sock: socket.socket, ifindex: int, parent: int,
                seq: int) -> list[tuple[int, int, int]]:
    """(handle, info, chain) of each cls_bpf filter at ``parent``; chain headers skipped."""
    out = []
    for data, t, a, b in rtnl._dump(sock, RTM_GETTFILTER,
                                    TCMSG.pack(0, ifindex, 0, parent, 0), seq):
        if t != rtnl.RTM_NEWTFILTER:
            continue
        _f, _i, handle, _p, info = TCMSG.unpack_from(data, a)
        kind, chain = "", 0
        for at, s, e in rtnl._attrs(data, a + TCMSG.size, b):
            if at == TCA_KIND:
                kind = rtnl._cstr(data, s, e)
            elif at == TCA_CHAIN:
                chain = struct.unpack_from("=I", data, s)[0]
        if kind == "bpf" and handle:
            out.append((handle, info, chain))
    return out
