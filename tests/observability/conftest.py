"""Observability tests: the HTTP endpoints, ``knd events``, ``knd status`` and JSON logs.

They reuse the plumber harness (``env``) and the end-to-end state dir (``short_dir``).
"""

from __future__ import annotations

import io
import json
import logging
import select
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from services.common import logs
from tests.e2e.conftest import short_dir  # noqa: F401
from tests.helpers.wait import wait_for
from tests.plumber.conftest import env  # noqa: F401


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body); (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


poll = wait_for
"""Synchronous wait (the HTTP endpoints run in their own threads)."""


def read_line(stream, timeout: float) -> str:
    """One line from a subprocess pipe, or "" after ``timeout``."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def wait_following(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """Wait for ``knd events`` to say it follows the bus (its first stderr line)."""
    line = read_line(proc.stderr, timeout)
    assert "following" in line, f"knd events did not start: {line!r} (rc {proc.poll()})"
    return line


class JsonLogs:
    """Root logging as ``knd <service> --log-json`` sets it up, into a buffer."""

    def __init__(self, service: str) -> None:
        self.buf = io.StringIO()
        self.service = service

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.buf.getvalue().splitlines() if line]


@pytest.fixture
def json_logs() -> Iterator[Callable[[str], JsonLogs]]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def start(service: str) -> JsonLogs:
        out = JsonLogs(service)
        logs.setup("info", True, service=service, stream=out.buf)
        return out

    try:
        yield start
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
