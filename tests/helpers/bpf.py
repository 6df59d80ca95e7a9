"""Real BPF programs for tests: load ``r0 = 0; exit`` as a named SCHED_CLS program,
pin it on a private bpffs, attach it as a tc cls_bpf filter (through tc) and as
TCX (a BPF link or a plain attachment), and always clean up.

:class:`BpfLab` owns everything it made: program and link fds, pins, the bpffs
mount and its directory; ``close()`` (the context manager's exit) releases them
even after a failed test, which detaches every link it created.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import tempfile
from types import TracebackType

from services.kernel import bpf as kbpf
from services.kernel.bpf import (
    BPF_LINK_CREATE,
    BPF_OBJ_PIN,
    BPF_PROG_LOAD,
    new_attr,
    sys_bpf,
)
from services.kernel.netns import path_of, run_in_netns

BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_ATTACH = 8
# r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K, dst r0); exit (BPF_JMP | BPF_EXIT)
RET0 = struct.pack("=BBhi", 0xB7, 0x00, 0, 0) + struct.pack("=BBhi", 0x95, 0x00, 0, 0)

_libc = ctypes.CDLL(None, use_errno=True)


def prog_load(name: str) -> int:
    """Load the two-instruction SCHED_CLS program under ``name``; returns its fd."""
    insns = ctypes.create_string_buffer(RET0, len(RET0))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = new_attr((0, "=I", BPF_PROG_TYPE_SCHED_CLS), (4, "=I", len(RET0) // 8),
                    (8, "=Q", ctypes.addressof(insns)), (16, "=Q", ctypes.addressof(lic)))
    raw = name.encode()[:15]
    ctypes.memmove(ctypes.addressof(attr) + 48, raw, len(raw))
    return sys_bpf(BPF_PROG_LOAD, attr)


class BpfLab:
    """Programs, pins and attachments made by one test, released by ``close()``."""

    def __init__(self) -> None:
        self.fsdir = tempfile.mkdtemp(prefix="knd-bpffs-")
        if subprocess.run(["mount", "-t", "bpf", "bpf", self.fsdir]).returncode != 0:
            os.rmdir(self.fsdir)
            raise RuntimeError("cannot mount a bpffs")
        self.fds: list[int] = []
        self.pins: list[str] = []

    def __enter__(self) -> BpfLab:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def load(self, name: str) -> int:
        fd = prog_load(name)
        self.fds.append(fd)
        return fd

    def pin(self, fd: int, name: str) -> str:
        path = os.path.join(self.fsdir, name)
        buf = ctypes.create_string_buffer(path.encode())
        sys_bpf(BPF_OBJ_PIN, new_attr((0, "=Q", ctypes.addressof(buf)), (8, "=I", fd)))
        self.pins.append(path)
        return path

    def tc_filter(self, netns: str, dev: str, direction: str, prog_name: str) -> str:
        """A cls_bpf filter (direct-action) on ``dev``'s clsact ``direction``, loaded
        from a pin the way ``tc ... bpf da pinned`` does; returns the filter's name."""
        path = self.pin(self.load(prog_name), f"tc-{prog_name}")
        ns = ["ip", "netns", "exec", netns] if netns else []
        subprocess.run([*ns, "tc", "qdisc", "replace", "dev", dev, "clsact"], check=True)
        subprocess.run([*ns, "tc", "filter", "add", "dev", dev, direction, "bpf", "da",
                        "pinned", path], check=True)
        return f"tc-{prog_name}:[*fsobj]"  # the name tc gives a filter from a pin

    def tcx_link(self, ifindex: int, attach_type: int, prog_name: str,
                 pin: bool = False) -> int:
        """Attach a new program with BPF_LINK_CREATE; the link lives while its fd (and
        pin, when ``pin``) does. Call from a thread in the interface's netns."""
        fd = self.load(prog_name)
        link = sys_bpf(BPF_LINK_CREATE, new_attr((0, "=I", fd), (4, "=I", ifindex),
                                                 (8, "=I", attach_type)))
        self.fds.append(link)
        if pin:
            self.pin(link, f"link-{prog_name}")
        return link

    def tcx_attach(self, ifindex: int, attach_type: int, prog_name: str) -> None:
        """Attach a new program with BPF_PROG_ATTACH (no link: it stays until detached
        or the interface goes, whatever happens to our fds)."""
        fd = self.load(prog_name)
        sys_bpf(BPF_PROG_ATTACH, new_attr((0, "=I", ifindex), (4, "=I", fd),
                                          (8, "=I", attach_type)))

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        for path in self.pins:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.pins.clear()
        subprocess.run(["umount", "-l", self.fsdir], check=False)
        try:
            os.rmdir(self.fsdir)
        except OSError:
            pass


def ifindex(ns, name: str) -> int:
    """The index of interface ``name`` in netns ``ns`` (a tests.helpers.netns.NetNS)."""
    return int(ns.ip("-o", "link", "show", name).split(":", 1)[0])


def in_ns(ns, fn, *args):
    """``fn(*args)`` on a thread inside netns ``ns``: bpf() calls about an interface
    must be made in its netns."""
    fd = os.open(path_of(ns.name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, fn, *args)
    finally:
        os.close(fd)


def tcx_names(ns, name: str) -> dict[str, list[str]]:
    """TCX program names by direction, asked of the kernel with bpf() in ``ns``."""
    idx = ifindex(ns, name)

    def query() -> dict[str, list[str]]:
        return {kbpf.TCX_DIRECTIONS[t]: sorted(kbpf.prog_name(e.prog_id)
                                               for e in kbpf.tcx_query(idx, t))
                for t in kbpf.TCX_ATTACH_TYPES}
    return in_ns(ns, query)
