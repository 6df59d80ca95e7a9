"""``interface.disableEbpfPrograms``: take every tc and TCX eBPF program off an
interface once it is in the pod, as DRANET does.

- tc: each cls_bpf filter on the clsact ingress and egress hooks is deleted
  (the filters, not the qdisc, which stays with any other classifier). Moving
  an interface to another netns already drops its qdiscs and so these filters;
  this covers anything attached in the pod before the step runs.
- TCX: every program attached at ingress or egress is detached, including
  those held by a BPF link (BPF_LINK_DETACH: the link stays valid for its
  owner and any pin, but runs no more). DRANET instead unpins the interface's
  links from the host's /sys/fs/bpf at prepare, which detaches a link only if
  nothing else holds it; knd leaves the host's bpffs alone.

Nothing is re-attached when the interface returns home: a detached link cannot
be re-attached and the programs' owners may be gone (DRANET does not either).
Runs on a thread inside the pod netns: the bpf() calls resolve the ifindex there.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct

from services.kernel import bpf, rtnl
from services.kernel.tc import (
    PARENT_EGRESS,
    PARENT_INGRESS,
    TCA_CHAIN,
    TCA_KIND,
    TCMSG,
    bpf_filters,
)
from services.plumber import nsfs
from services.plumber.netops import KernelError

log = logging.getLogger("knd.plumber.ebpf")

STEP = "config.interface.disableEbpfPrograms"
NLM_F_ACK = 0x4


def _delete_filter(sock: socket.socket, ifindex: int, parent: int, handle: int, info: int,
                   chain: int, seq: int) -> None:
    kind = b"bpf\0"
    body = (TCMSG.pack(0, ifindex, handle, parent, info)
            + struct.pack("=HH", 4 + len(kind), TCA_KIND) + kind
            + struct.pack("=HHI", 8, TCA_CHAIN, chain))
    sock.send(struct.pack("=IHHII", 16 + len(body), rtnl.RTM_DELTFILTER,
                          rtnl.NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
    while True:
        data = sock.recv(65536)
        for t, s, a, _b in rtnl._messages(data):
            if s == seq and t == rtnl.NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, a)[0]
                if code and code != errno.ENOENT:  # ENOENT: gone meanwhile
                    raise OSError(code, f"delete tc filter: {errno.errorcode.get(code, code)}")
                return


def _detach_tc(ifindex: int) -> list[str]:
    done = []
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, rtnl.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        seq = 0
        for parent, where in ((PARENT_INGRESS, "ingress"), (PARENT_EGRESS, "egress")):
            seq += 1
            try:
                found = bpf_filters(sock, ifindex, parent, seq)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):  # no clsact hook here
                    continue
                raise
            for handle, info, chain in found:
                seq += 1
                _delete_filter(sock, ifindex, parent, handle, info, chain, seq)
                done.append(f"tc {where} filter {handle:#x} (pref {info >> 16})")
    finally:
        sock.close()
    return done


def _detach_tcx(ifindex: int) -> list[str]:
    done: list[str] = []
    for attach in bpf.TCX_ATTACH_TYPES:
        try:
            entries = bpf.tcx_query(ifindex, attach)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # a kernel without TCX has no TCX programs
                return done
            raise
        for entry in entries:
            bpf.tcx_detach(ifindex, attach, entry)
            how = f"link {entry.link_id}" if entry.link_id else "attached"
            done.append(f"tcx {bpf.TCX_DIRECTIONS[attach]} program {entry.prog_id} ({how})")
    return done


def _detach_all(ifindex: int) -> list[str]:
    return _detach_tc(ifindex) + _detach_tcx(ifindex)


async def detach_programs(fd: int, ifindex: int, ifname: str) -> list[str]:
    """Detach every tc cls_bpf filter and TCX program of ``ifindex`` in the netns ``fd``;
    returns what was detached. A refusal is a KernelError of the config step."""
    try:
        done = await nsfs.in_netns(fd, _detach_all, ifindex)
    except OSError as exc:
        raise KernelError(STEP, exc.errno or 0,
                          f"{ifname}: {exc.strerror or exc}") from None
    if done:
        log.info("%s: detached eBPF programs: %s", ifname, "; ".join(done))
    return done
