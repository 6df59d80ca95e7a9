"""Giving freed memory back to the system.

Every attach and detach opens netlink sessions (pyroute2 objects, buffers) and frees
them again. glibc keeps much of what Python frees in its heaps, fragmented, so a
plumber's RSS crept up ~5 MB over 8000 attaches and detaches although nothing it
holds grew (bench/footprint.py). ``malloc_trim`` returns the free pages; with it the
same churn leaves RSS flat.

Each thread that allocates also gets a glibc arena of its own, and the plumber runs
every netns operation on a short-lived thread: freed memory then lies fragmented over
many arenas. :func:`one_arena` keeps them all in one (the GIL serialises the threads
anyway), which halved the plumber's growth over a soak of 4800 attaches and detaches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("knd.memory")

_libc: ctypes.CDLL | None = None
_tried = False


def _trim_function() -> ctypes.CDLL | None:
    global _libc, _tried
    if not _tried:
        _tried = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
            libc.malloc_trim  # noqa: B018 (glibc only: musl has none)
            _libc = libc
        except (OSError, AttributeError) as exc:
            log.debug("no malloc_trim here: %r", exc)
    return _libc


def give_back() -> bool:
    """Return free heap pages to the system; whether any were (False without glibc)."""
    libc = _trim_function()
    return bool(libc.malloc_trim(0)) if libc is not None else False


M_ARENA_MAX = -8
"""mallopt(3)'s parameter number for the arena limit (glibc's malloc.h)."""


def one_arena() -> bool:
    """Every thread allocates from the main arena from now on; whether that took
    (False without glibc). Call before threads start."""
    libc = _trim_function()
    return bool(libc.mallopt(M_ARENA_MAX, 1)) if libc is not None else False
