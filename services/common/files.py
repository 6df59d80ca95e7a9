"""Replacing a file atomically: readers see the old content or the new, never half.

Credentials, CDI specs and the standalone API objects are all read by another process
(nats clients, the container runtime, the tests) while knd may be rewriting them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data``, created with ``mode`` whatever the umask; ``fsync``
    first when the content must survive a crash (specs, objects), not only a reader."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(raw)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:  # the rename itself, too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
