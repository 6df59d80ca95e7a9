"""``knd demo`` keeps working: it is the README's tour of the whole path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_path_and_cleans_up():
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split())
    knd = Path(sys.executable).parent / "knd"
    res = subprocess.run([str(knd), "demo"], capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "demo complete" in out
    assert "64 bytes from 10.77.0.2" in out  # the ping went through the moved interface
    assert "net1" in out and "10.77.0.2/24" in out
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=True).stdout.split())
    assert not {n for n in after - before if n.startswith("knd-demo")}
