"""The few bpf() syscall commands knd needs, through ctypes: which TCX programs an
interface has, their names, and detaching them.

No BPF library is involved: the attribute layouts below are the kernel's stable
uapi (``union bpf_attr``, ``struct bpf_prog_info``), and every command used
exists since Linux 6.6 (TCX). An interface index is resolved in the network
namespace of the calling thread, so callers that look at another netns call
these from a thread that entered it (services.kernel.netns).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass

SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351,
           "riscv64": 280}.get(platform.machine(), 321)

BPF_PROG_LOAD, BPF_OBJ_PIN, BPF_PROG_DETACH = 5, 6, 9
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 15, 16
BPF_LINK_CREATE, BPF_LINK_GET_FD_BY_ID, BPF_LINK_DETACH = 28, 30, 34

_NAMES = {BPF_PROG_LOAD: "BPF_PROG_LOAD", BPF_OBJ_PIN: "BPF_OBJ_PIN",
          BPF_PROG_DETACH: "BPF_PROG_DETACH", BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
          BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD", BPF_PROG_QUERY: "BPF_PROG_QUERY",
          BPF_LINK_CREATE: "BPF_LINK_CREATE", BPF_LINK_GET_FD_BY_ID: "BPF_LINK_GET_FD_BY_ID",
          BPF_LINK_DETACH: "BPF_LINK_DETACH"}

BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
TCX_ATTACH_TYPES = (BPF_TCX_INGRESS, BPF_TCX_EGRESS)
TCX_DIRECTIONS = {BPF_TCX_INGRESS: "ingress", BPF_TCX_EGRESS: "egress"}

BPF_OBJ_NAME_LEN = 16
_ATTR_SIZE = 128
"""Larger than every command's part of ``union bpf_attr`` used here; the kernel
accepts a bigger attr as long as the tail is zero."""
_PROG_INFO_NAME_END = 64 + BPF_OBJ_NAME_LEN
"""``struct bpf_prog_info`` up to and including ``name``: the kernel fills what fits."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf() command the kernel refused; ``errno`` is the kernel's."""


def sys_bpf(cmd: int, attr: ctypes.Array) -> int:
    """bpf(cmd, attr, sizeof attr); returns the kernel's non-negative result."""
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        code = ctypes.get_errno()
        raise BpfError(code, f"{_NAMES.get(cmd, cmd)}: {os.strerror(code)}")
    return ret


def new_attr(*fields: tuple[int, str, int]) -> ctypes.Array:
    """A zeroed ``union bpf_attr`` with ``(offset, struct format, value)`` fields set."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    for off, fmt, value in fields:
        struct.pack_into(fmt, attr, off, value)
    return attr


@dataclass(frozen=True)
class TcxEntry:
    prog_id: int
    link_id: int
    """The BPF link that holds the attachment; 0 for a plain BPF_PROG_ATTACH."""


def tcx_query(ifindex: int, attach_type: int, capacity: int = 64) -> list[TcxEntry]:
    """The programs attached to ``ifindex`` at ``attach_type``, in run order.

    An empty list when nothing is attached; raises BpfError when the kernel cannot
    answer (no TCX support, no such interface)."""
    while True:
        progs = (ctypes.c_uint32 * capacity)()
        links = (ctypes.c_uint32 * capacity)()
        attr = new_attr((0, "=I", ifindex), (4, "=I", attach_type),
                        (16, "=Q", ctypes.addressof(progs)), (24, "=I", capacity),
                        (40, "=Q", ctypes.addressof(links)))
        try:
            sys_bpf(BPF_PROG_QUERY, attr)
        except BpfError as exc:
            if exc.errno == 28:  # ENOSPC: more programs than room, ask again with more
                capacity = struct.unpack_from("=I", attr, 24)[0] + 8
                continue
            raise
        count = struct.unpack_from("=I", attr, 24)[0]
        return [TcxEntry(progs[i], links[i]) for i in range(min(count, capacity))]


class TcxCounter:
    """How many TCX programs an interface has: one syscall on a reused buffer, the
    cheap first question a rescan asks of every interface."""

    def __init__(self) -> None:
        self._attr = ctypes.create_string_buffer(_ATTR_SIZE)
        self._ref = ctypes.byref(self._attr)

    def count(self, ifindex: int, attach_type: int) -> int:
        attr = self._attr
        struct.pack_into("=IIIIQI", attr, 0, ifindex, attach_type, 0, 0, 0, 0)
        if _libc.syscall(SYS_BPF, BPF_PROG_QUERY, self._ref, _ATTR_SIZE) < 0:
            code = ctypes.get_errno()
            raise BpfError(code, f"BPF_PROG_QUERY: {os.strerror(code)}")
        return struct.unpack_from("=I", attr, 24)[0]


def prog_fd_by_id(prog_id: int) -> int:
    return sys_bpf(BPF_PROG_GET_FD_BY_ID, new_attr((0, "=I", prog_id)))


def prog_name_of_fd(fd: int) -> str:
    info = ctypes.create_string_buffer(_PROG_INFO_NAME_END)
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, new_attr(
        (0, "=I", fd), (4, "=I", _PROG_INFO_NAME_END), (8, "=Q", ctypes.addressof(info))))
    return info.raw[64:_PROG_INFO_NAME_END].split(b"\0", 1)[0].decode(errors="replace")


def prog_name(prog_id: int) -> str:
    """The name a program was loaded with (at most 15 bytes, as the kernel keeps it)."""
    fd = prog_fd_by_id(prog_id)
    try:
        return prog_name_of_fd(fd)
    finally:
        os.close(fd)


def tcx_detach(ifindex: int, attach_type: int, entry: TcxEntry) -> None:
    """Take one TCX program off ``ifindex``.

    A link-held attachment is detached through its link (BPF_LINK_DETACH): the
    link stays valid for whoever holds or pinned it, but no longer runs. The
    kernel refuses BPF_PROG_DETACH for those. A plain attachment is detached
    with BPF_PROG_DETACH."""
    if entry.link_id:
        fd = sys_bpf(BPF_LINK_GET_FD_BY_ID, new_attr((0, "=I", entry.link_id)))
        try:
            sys_bpf(BPF_LINK_DETACH, new_attr((0, "=I", fd)))
        finally:
            os.close(fd)
        return
    fd = prog_fd_by_id(entry.prog_id)
    try:
        sys_bpf(BPF_PROG_DETACH, new_attr((0, "=I", ifindex), (4, "=I", fd),
                                          (8, "=I", attach_type)))
    finally:
        os.close(fd)
