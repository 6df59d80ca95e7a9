"""Which eBPF programs each interface runs: tc cls_bpf filters and TCX programs.

DRANET publishes three attributes from these: ``tcFilterNames`` (the names of the
cls_bpf filters on the clsact ingress and egress hooks), ``tcxProgramNames`` (the
names of the programs attached with TCX, ingress and egress) and ``ebpf`` (either
kind is there). This module finds them at a cost that stays small at a thousand
links, since it runs on every hot-plug rescan:

- only new interfaces and those named by netlink events since the last rescan
  are read again (:class:`EbpfReader`); the periodic resync reads them all;
- tc: for many interfaces, one qdisc dump tells which have an ingress or clsact
  qdisc; only those get the two filter dumps (a filter needs such a qdisc);
- TCX: one BPF_PROG_QUERY per interface and direction that only counts (each
  takes the kernel's RTNL lock, about 2 us a call when it is free); ids and
  names are fetched for the few that have programs, names cached by program id
  (ids are not reused while the kernel runs).

tc is read over discovery's own netlink socket, in the netns it watches; the
bpf() calls resolve an ifindex in the calling thread's netns, so for a named
netns they run on a thread that entered it.
"""

from __future__ import annotations

import errno
import logging
import os

from services.kernel import bpf, rtnl
from services.kernel.links import Programs
from services.kernel.netns import path_of, run_in_netns
from services.kernel.tc import (
    PARENT_EGRESS,
    PARENT_INGRESS,
    bpf_filter_names,
    ingress_qdisc_links,
)

log = logging.getLogger("knd.discovery.ebpf")

NONE = Programs()


SMALL = 16
"""Up to this many interfaces to read, their filters are dumped straight away rather
than first finding, with a dump of every qdisc, which of them can have any."""


class EbpfReader:
    """Reads :class:`Programs` for the interfaces of one netns (not thread-safe).

    What it read is kept by ifindex: a rescan after events asks again only about
    new interfaces and those the events named (tc changes send events; TCX
    attachments send none, so a TCX change shows at the next event about its
    interface, such as a link going down and up, or at the periodic resync, which
    asks about every interface, as DRANET's resync does).
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._programs: dict[int, Programs] = {}
        self._names: dict[int, str] = {}
        self._tcx_unusable = False

    def read(self, reader: rtnl.Reader, indexes: list[int],
             touched: set[int] | None = None) -> dict[int, Programs]:
        """Programs by ifindex, only for interfaces that have some. ``touched``: the
        interfaces events named since the last read; None asks about every one."""
        live = set(indexes)
        if touched is None:
            ask = live
        else:
            ask = (live - self._programs.keys()) | (touched & live)
        self._programs = {i: p for i, p in self._programs.items() if i in live}
        if ask:
            tc = self._tc(reader, ask)
            tcx = self._tcx_in_netns(sorted(ask), prune=touched is None)
            for i in ask:
                self._programs[i] = Programs(tc.get(i), tcx.get(i))
        return {i: p for i, p in self._programs.items() if p != NONE}

    def _tc(self, reader: rtnl.Reader, indexes: set[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, tuple[str, ...]] = {}
        if len(indexes) > SMALL:
            indexes = ingress_qdisc_links(reader.sock, reader._next()) & indexes
        for index in indexes:
            found: list[str] = []
            counted = False
            for parent in (PARENT_INGRESS, PARENT_EGRESS):
                try:
                    names = bpf_filter_names(reader.sock, index, parent, reader._next())
                except OSError as exc:  # gone meanwhile, or a hook this qdisc lacks
                    log.debug("tc filters of ifindex %d (parent %x): %s", index, parent, exc)
                    continue
                counted = counted or bool(names)
                found.extend(names)
            if counted:
                out[index] = tuple(sorted(set(found)))
        return out

    def _tcx_in_netns(self, indexes: list[int], prune: bool) -> dict[int, tuple[str, ...]]:
        if self._tcx_unusable or not indexes:
            return {}
        if not self.netns:
            return self._tcx(indexes, prune)
        fd = os.open(path_of(self.netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return run_in_netns(fd, self._tcx, indexes, prune)
        finally:
            os.close(fd)

    def _tcx(self, indexes: list[int], prune: bool) -> dict[int, tuple[str, ...]]:
        """TCX program names by ifindex. ``prune``: every interface is asked about, so
        names of programs no interface has any more can be forgotten."""
        out: dict[int, tuple[str, ...]] = {}
        seen: set[int] = set()
        counter = bpf.TcxCounter()
        for index in indexes:
            names: set[str] = set()
            attached = False
            for attach in bpf.TCX_ATTACH_TYPES:
                try:
                    if not counter.count(index, attach):
                        continue
                    entries = bpf.tcx_query(index, attach)
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP,
                                     errno.ENOSYS):
                        # a kernel without TCX, or no CAP_NET_ADMIN: no interface
                        # will answer better, so stop asking
                        log.warning("TCX programs cannot be read (%s): tcxProgramNames is "
                                    "not published and ebpf reflects tc filters only "
                                    "(reading them needs CAP_NET_ADMIN, their names "
                                    "CAP_SYS_ADMIN)", exc.strerror)
                        self._tcx_unusable = True
                        return {}
                    continue  # the interface went away meanwhile
                attached = attached or bool(entries)
                for entry in entries:
                    seen.add(entry.prog_id)
                    name = self._name(entry.prog_id)
                    if name is not None:
                        names.add(name)
            if attached:
                out[index] = tuple(sorted(names))
        if prune:
            for gone in self._names.keys() - seen:
                del self._names[gone]
        return out

    def _name(self, prog_id: int) -> str | None:
        if prog_id not in self._names:
            try:
                self._names[prog_id] = bpf.prog_name(prog_id)
            except OSError as exc:
                log.debug("name of BPF program %d: %s", prog_id, exc)
                return None
        return self._names[prog_id]
