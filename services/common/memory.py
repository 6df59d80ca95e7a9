"""Giving freed memory back to the system.

Every attach and detach opens netlink sessions (pyroute2 objects, buffers) and frees
them again. glibc keeps much of what Python frees in its heaps, fragmented, so a
plumber's RSS crept up ~5 MB over 8000 attaches and detaches although nothing it
holds grew (bench/footprint.py). ``malloc_trim`` returns the free pages; with it the
same churn leaves RSS flat.
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
