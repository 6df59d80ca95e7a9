"""End-to-end fixtures."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state dir near /: unix socket paths must stay under 108 bytes, and pytest's
    tmp_path is too deep for kubelet's plugins_registry/<driver>-reg.sock."""
    d = Path(tempfile.mkdtemp(prefix="knd-e2e-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
