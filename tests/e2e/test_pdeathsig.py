"""The launcher ``knd up`` puts in front of every child: the command runs only while
the parent that asked for it is alive, including when that parent is pid 1 (``knd up``
as a container's main process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

LAUNCH = [sys.executable, "-m", "services.common.pdeathsig"]


def test_runs_the_command_for_its_parent() -> None:
    ok = subprocess.run([*LAUNCH, str(os.getpid()), "sh", "-c", "exit 7"])
    assert ok.returncode == 7  # the command's own status: it ran
    gone = subprocess.run([*LAUNCH, "999999999", "true"])  # not our parent: parent died
    assert gone.returncode == 1


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_parent_that_is_pid_1_of_a_container() -> None:
    """In a new pid namespace the parent is pid 1, as ``knd up`` is in a container;
    before, the launcher took pid 1 for "the parent died" and every child exited."""
    script = (f"{sys.executable} -m services.common.pdeathsig $$ sh -c 'echo ran'")
    res = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                         capture_output=True, text=True, cwd=os.getcwd())
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ran"
