"""Running code in a fresh interpreter: what a process imports can only be seen from a
process that imported nothing else first (the test process has loaded everything)."""

from __future__ import annotations

import subprocess
import sys


def python(code: str, *args: str) -> str:
    """``code``'s standard output, stripped; a failure raises with its stderr."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, check=True).stdout.strip()
