"""One knd agent per state dir and per kubelet root, decided by flock(2).

Two agents on one node (a stray ``knd up --standalone``, two DaemonSet pods) would
share a checkpoint and take each other's kubelet sockets over. So whoever owns a
state dir or a kubelet plugin folder holds ``knd.lock`` in it for as long as it
runs, and a second one refuses to start, naming the holder. The kernel drops a
flock when the last fd on it closes, so a holder that died (SIGKILL included)
never blocks the next start; the pid in the file is only there to name the holder.

Owners: the plumber (state dir: its checkpoint) and the kubelet gateway
(``<kubelet-root>/plugins/<driver>``: its sockets), each on its own in the
DaemonSet. ``knd up`` takes both before it changes anything and hands the open
files to its services (``KND_LOCK_FDS``); a service that finds its lock among them
holds it already, and the lock lives on until the last of them is gone, so a new
``knd up`` cannot start beside the services of an old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from services.common.runner import Refused

LOCK_NAME = "knd.lock"
FDS_ENV = "KND_LOCK_FDS"
HOLDER_WAIT = 1.0
"""Seconds to wait for a new holder to write its pid (it locks, then writes)."""


def state_lock(state_dir: Path | str) -> Path:
    return Path(state_dir).absolute() / LOCK_NAME


def kubelet_lock(kubelet_root: Path | str, driver: str) -> Path:
    """Beside the DRA socket: the folder only this driver's plugin writes to."""
    return Path(kubelet_root).absolute() / "plugins" / driver / LOCK_NAME


def _inherited(path: Path) -> int | None:
    """The fd of ``path`` that ``knd up`` handed down, if it did."""
    try:
        want = path.stat()
    except OSError:
        return None
    for word in os.environ.get(FDS_ENV, "").split(","):
        if not word.isdigit():
            continue
        try:
            st = os.fstat(int(word))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return int(word)
    return None


def _holder(fd: int) -> str:
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        words = os.pread(fd, 200, 0).decode(errors="replace").split(maxsplit=1)
        if words and words[0].isdigit():
            return f"pid {words[0]}" + (f", {words[1].strip()}" if len(words) > 1 else "")
        if time.monotonic() > deadline:
            return "pid unknown"
        time.sleep(0.02)


def acquire(path: Path, holder: str) -> int:
    """Hold the lock at ``path`` while the returned fd is open (and in any child
    it is passed to), or raise Refused naming the holder. ``holder`` says who we
    are."""
    fd = _inherited(path)
    if fd is not None:
        # the same open file as knd up's: flock on it succeeds, we already hold it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _holder(fd)
        os.close(fd)
        raise Refused(f"{path.parent} belongs to another knd agent ({who}; lock {path}): "
                      "stop that one first, or give this one its own --state-dir and "
                      "--kubelet-root") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def held(path: Path, holder: str) -> Iterator[int]:
    """:func:`acquire` for the length of a ``with`` block."""
    fd = acquire(path, holder)
    try:
        yield fd
    finally:
        os.close(fd)
