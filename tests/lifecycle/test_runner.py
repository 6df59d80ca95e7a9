"""The exit rule of every service (services.common.runner): exit 0 only when a
signal asked it to stop; any other end exits non-zero, and each end is logged with
its reason and handed to the supervisor as last words."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from services.common.runner import LAST_WORDS_ENV

FAKE = [sys.executable, "-m", "tests.lifecycle.fake_service"]


def start(mode: str) -> tuple[subprocess.Popen, int]:
    """The fake service, with the read end of its last-words pipe."""
    r, w = os.pipe()
    proc = subprocess.Popen([*FAKE, mode], env={**os.environ, LAST_WORDS_ENV: str(w)},
                            pass_fds=(w,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    os.close(w)
    return proc, r


def last_words(r: int) -> str:
    with os.fdopen(r, "rb") as f:
        return f.read().decode().strip()


@pytest.mark.parametrize(("mode", "reason"), [
    ("return", "returned without being asked to stop"),
    ("crash", "failed: ValueError: boom"),
])
def test_a_service_that_ends_unasked_exits_non_zero_saying_why(mode: str, reason: str):
    proc, r = start(mode)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert reason in err, err
    assert reason in last_words(r)


def test_a_signal_is_the_only_clean_exit():
    proc, r = start("serve")
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a second one (a dying parent's threads) is no kill
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "fake: stopped on SIGTERM" in err, err
    assert last_words(r) == "stopped on SIGTERM"
    assert "Traceback" not in err


def test_a_forked_childs_signal_is_not_ours():
    """A fork shares the signal wakeup fd: what the child writes there only wakes us
    (it printed "ready" only after the loop had read it)."""
    proc, r = start("fork-signal")
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert last_words(r) == "stopped on SIGTERM"


def test_a_stop_that_never_ends_is_ended_after_the_parent_died(tmp_path) -> None:
    """Under knd up (the parent-death launcher), a service whose cleanup hangs is
    gone within 2 s of its parent's death: the watchdog does not need the loop."""
    r, w = os.pipe()
    ready = tmp_path / "ready"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys, time; subprocess.Popen(["
         "sys.executable, '-m', 'services.common.pdeathsig', str(os.getpid()), "
         f"*{FAKE!r}, 'stuck'], close_fds=False); time.sleep(60)"],
        env={**os.environ, LAST_WORDS_ENV: str(w), "FAKE_READY": str(ready)},
        pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the fake service never got ready"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    died = time.monotonic()
    words = b""
    # EOF: the service, the last holder of the pipe, is gone (waited for 10 s at most)
    while select.select([r], [], [], max(0.0, died + 10 - time.monotonic()))[0]:
        if not (chunk := os.read(r, 4096)):
            break
        words += chunk
    os.close(r)
    took = time.monotonic() - died
    assert took < 2.0, f"the service outlived its parent by {took:.1f}s"
    assert "still stopping 1.2s after its parent died" in words.decode(), words
