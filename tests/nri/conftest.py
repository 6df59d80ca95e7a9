"""NRI fixtures: a short socket path (unix socket paths are limited to 107 bytes)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="knd-nri-", dir="/tmp"))
    try:
        yield d / "nri.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)
