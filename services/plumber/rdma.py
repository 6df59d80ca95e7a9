"""RDMA: the character devices a pod needs, and the RDMA netns mode.

An RDMA device ``mlx5_0`` is used through ``/dev/infiniband/uverbsN`` (and
``umadN`` / ``issmN`` for management datagrams) plus the shared ``rdma_cm``;
sysfs maps each char device to its RDMA device (``class/infiniband_verbs/
uverbsN/ibdev``). Major/minor numbers come from the device nodes under
``--dev-root`` so a test can point at a folder of ``mknod``-made nodes.

In ``exclusive`` netns mode the kernel shows each RDMA device in one netns
only, so the RDMA device must follow its netdev into the pod. That move goes
through RDMA netlink (``RDMA_NLDEV_CMD_SET`` with ``RDMA_NLDEV_NET_NS_FD``,
taking a netns fd like ``ip link`` does), and is best effort: a failure is
logged and reported in the attach events, not fatal, since the netdev itself
works. The mode is read once at start with ``rdma system show`` unless the
flag forces it (tests, nodes without the ``rdma`` tool).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio

from services.plumber import nsfs

log = logging.getLogger("knd.plumber.rdma")

CONTAINER_DIR = "/dev/infiniband"
NETLINK_RDMA = 20
RDMA_NL_NLDEV = 5
RDMA_NLDEV_CMD_GET, RDMA_NLDEV_CMD_SET = 1, 2
RDMA_NLDEV_ATTR_DEV_INDEX, RDMA_NLDEV_ATTR_DEV_NAME = 1, 2
RDMA_NLDEV_NET_NS_FD = 68
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_HDR = struct.Struct("=IHHII")


class RdmaError(Exception):
    pass


@dataclass(frozen=True)
class CharDevice:
    path: str
    """Path inside the container (``/dev/infiniband/uverbs0``)."""
    host_path: str
    major: int
    minor: int
    mode: int = 0o666
    """The host node's permission bits, which the container's node gets too."""


def detect_mode(setting: str) -> str:
    """``shared`` or ``exclusive``; ``auto`` asks ``rdma system show``."""
    if setting in ("shared", "exclusive"):
        return setting
    try:
        out = subprocess.run(["rdma", "system", "show"], capture_output=True, text=True,
                             timeout=2).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("rdma system show: %s; assuming shared RDMA netns mode", exc)
        return "shared"
    words = out.split()
    if "netns" in words and words.index("netns") + 1 < len(words):
        mode = words[words.index("netns") + 1]
        if mode in ("shared", "exclusive"):
            return mode
    return "shared"


class Rdma:
    def __init__(self, sysfs_root: str | Path, dev_root: str | Path, mode: str) -> None:
        self.sysfs = Path(sysfs_root)
        self.dev = Path(dev_root)
        self.mode = mode

    def _entries(self, cls: str, ibdev: str) -> list[str]:
        base = self.sysfs / "class" / cls
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return []
        out = []
        for name in names:
            try:
                owner = (base / name / "ibdev").read_text().strip()
            except OSError:
                continue
            if owner == ibdev:
                out.append(name)
        return out

    def _node(self, name: str) -> CharDevice:
        host = self.dev / "infiniband" / name
        try:
            st = os.stat(host)
        except OSError as exc:
            raise RdmaError(f"{host}: {exc.strerror}") from None
        if not stat.S_ISCHR(st.st_mode):
            raise RdmaError(f"{host} is not a character device")
        return CharDevice(path=f"{CONTAINER_DIR}/{name}", host_path=str(host),
                          major=os.major(st.st_rdev), minor=os.minor(st.st_rdev),
                          mode=stat.S_IMODE(st.st_mode))

    def char_devices(self, ibdev: str) -> list[CharDevice]:
        """uverbs, umad and issm nodes of ``ibdev`` (RdmaError when one is missing)."""
        names = self._entries("infiniband_verbs", ibdev)
        if not names:
            raise RdmaError(f"no uverbs device for {ibdev} under {self.sysfs}/class/"
                            "infiniband_verbs")
        names += self._entries("infiniband_mad", ibdev)
        return [self._node(n) for n in names]

    def shared_devices(self) -> list[CharDevice]:
        """``rdma_cm``, when the node has it (the rdma_ucm module is loaded)."""
        try:
            return [self._node("rdma_cm")]
        except RdmaError as exc:
            log.debug("no rdma_cm: %s", exc)
            return []

    async def move(self, ibdev: str, from_fd: int, to_fd: int) -> None:
        """Exclusive mode: move ``ibdev`` from netns ``from_fd`` into ``to_fd``."""
        sock = await nsfs.netlink_socket(from_fd, NETLINK_RDMA)
        try:
            await anyio.to_thread.run_sync(_move, sock, ibdev, to_fd)
        finally:
            sock.close()


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _request(sock: socket.socket, cmd: int, flags: int, body: bytes, seq: int) -> list[bytes]:
    mtype = (RDMA_NL_NLDEV << 10) | cmd
    sock.send(_HDR.pack(16 + len(body), mtype, NLM_F_REQUEST | flags, seq, 0) + body)
    out: list[bytes] = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, t, _f, s, _p = _HDR.unpack_from(data, off)
            if length < 16:
                return out
            if s == seq:
                if t == NLMSG_DONE:
                    return out
                if t == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return out
                out.append(data[off + 16:off + length])
                if not flags & NLM_F_DUMP:
                    return out
            off += (length + 3) & ~3


def _dev_index(sock: socket.socket, ibdev: str) -> int:
    for msg in _request(sock, RDMA_NLDEV_CMD_GET, NLM_F_DUMP, b"", 1):
        off, index, name = 0, None, None
        while off + 4 <= len(msg):
            length, kind = struct.unpack_from("=HH", msg, off)
            if length < 4:
                break
            if kind == RDMA_NLDEV_ATTR_DEV_INDEX:
                index = struct.unpack_from("=I", msg, off + 4)[0]
            elif kind == RDMA_NLDEV_ATTR_DEV_NAME:
                name = msg[off + 4:off + length].split(b"\0", 1)[0].decode()
            off += (length + 3) & ~3
        if name == ibdev and index is not None:
            return index
    raise RdmaError(f"RDMA device {ibdev} not found")


def _move(sock: socket.socket, ibdev: str, to_fd: int) -> None:
    index = _dev_index(sock, ibdev)
    body = (_attr(RDMA_NLDEV_ATTR_DEV_INDEX, struct.pack("=I", index))
            + _attr(RDMA_NLDEV_NET_NS_FD, struct.pack("=I", to_fd)))
    _request(sock, RDMA_NLDEV_CMD_SET, NLM_F_ACK, body, 2)
