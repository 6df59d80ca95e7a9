"""``knd up`` logs how each child ended: exit status or signal, and its last words."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from services import supervisor
from services.supervisor import Child, ended
from tests.helpers.wait import until

pytestmark = pytest.mark.anyio

FAKE = [sys.executable, "-m", "tests.lifecycle.fake_service"]


def test_how_a_child_ended_reads() -> None:
    assert ended(1, "failed: OSError: no") == "exited with status 1 (failed: OSError: no)"
    assert ended(-signal.SIGKILL, "") == "was killed by SIGKILL, saying nothing"
    assert ended(0, None) == "exited with status 0"  # the nats-server says nothing ever


async def test_a_child_that_returns_unasked_is_logged_with_its_reason(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "MIN_BACKOFF", 30.0)  # one run is enough
    child = Child("discovery", [*FAKE, "return"], {}, last_words=True)
    caplog.set_level(logging.INFO, "knd.up")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child.supervise)
            await until(lambda: any("restarting in" in r.getMessage() for r in caplog.records),
                        limit=30, what="the supervisor to restart the child")
            tg.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "knd.up"]
    assert any(line.startswith(
        "discovery exited with status 1 (returned without being asked to stop")
        and "restarting in" in line for line in lines), lines


async def test_a_child_stopped_by_knd_up_is_logged_as_stopped(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    child = Child("plumber", [*FAKE, "serve"], {**os.environ, "FAKE_READY": str(ready)},
                  last_words=True)
    caplog.set_level(logging.INFO, "knd.up")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child.supervise)
            await until(ready.exists, limit=30, what="the child to be ready")
            tg.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "knd.up"]
    assert "plumber exited with status 0 (stopped on SIGTERM)" in lines, lines
