"""Find service code that blocks the event loop, in every async test.

A blocking call on the loop (a sync file or socket wait, ``time.sleep``,
``subprocess.run``) stops every other claim, the bus and the health endpoint
for as long. asyncio's debug mode reports slow callbacks but made the suite
twice as slow; this is cheaper: the tests' loop runs on a selector that notes
when the loop leaves ``select()``, and a watchdog thread looks at a loop that
has been busy for longer than :data:`THRESHOLD`. It blames the loop only when
its thread sleeps in the kernel (a blocking call, not computing or waiting for a
CPU on a loaded machine) and the innermost coroutine of ours on its stack is a
service's (``services/``, ``schemas/``): a test's own ``ip`` commands block too,
by design, and a first import reads files once.
"""

from __future__ import annotations

import asyncio
import inspect
import selectors
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THRESHOLD = 0.5
"""Seconds a loop may stay out of select() in one blocking call of a service: far
more than any call should take, so that a loaded machine is not blamed on us."""

ROOT = Path(__file__).resolve().parents[2]
BLAMED = tuple(str(ROOT / d) + "/" for d in ("services", "schemas"))
OURS = str(ROOT) + "/"
KNOWN = {
    (str(ROOT / "services/plumber/checkpoint.py"), ""):
        "the plumber's checkpoint writes its sqlite rows on the loop, in order, before "
        "every kernel change; a busy disk (or a test's second connection to the database) "
        "stalls the loop while it waits. To move to a thread of its own.",
    (str(ROOT / "services/common/api/kube.py"), "_connect"):
        "once per process: kubernetes-asyncio's client builds its TLS context, reading the "
        "CA bundle, in its constructor, which must run on the loop (aiohttp's session).",
}
"""(file, function or "" for any) -> why it may block, for now."""


@dataclass
class _Busy:
    ident: int
    native: int
    since: float | None = None
    """When the loop left select(); None while it waits in it."""
    reported: float | None = None
    candidate: tuple[float, str] | None = None
    """A stall seen once, with its stack: reported when the next look sees the same."""


@dataclass
class Findings:
    stacks: list[str] = field(default_factory=list)


class _WatchedSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def __init__(self, busy: _Busy) -> None:
        super().__init__()
        self.busy = busy

    def select(self, timeout: float | None = None) -> Any:
        self.busy.since = None
        try:
            return super().select(timeout)
        finally:
            self.busy.since = time.monotonic()


class Watchdog:
    """One thread for the whole session, looking at the loops :meth:`loop` made."""

    def __init__(self, interval: float = 0.05, blamed: tuple[str, ...] = BLAMED) -> None:
        self.interval = interval
        self.blamed = blamed
        self.findings = Findings()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Busy] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="blocking-watchdog",
                                        daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def loop(self) -> asyncio.AbstractEventLoop:
        """A new event loop for a test, watched while it runs."""
        busy = _Busy(threading.get_ident(), threading.get_native_id())
        loop = asyncio.SelectorEventLoop(_WatchedSelector(busy))
        with self._lock:
            self._loops[loop] = busy
        return loop

    def take(self) -> list[str]:
        """What was found since the last call."""
        with self._lock:
            found, self.findings.stacks = self.findings.stacks, []
        return found

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                watched = list(self._loops.values())
            now = time.monotonic()
            for busy in watched:
                since = busy.since
                if since is None or now - since < THRESHOLD or busy.reported == since:
                    continue
                stack = self._blocked_in_ours(busy, self.blamed)
                if stack is None or busy.since != since:  # not ours, or over already
                    busy.candidate = None
                    continue
                # a blocking call stays on its line; a thread that only waits for the
                # GIL, or was caught between two calls, has moved on by the next look
                if busy.candidate != (since, stack):
                    busy.candidate = (since, stack)
                    continue
                busy.reported = since
                with self._lock:
                    self.findings.stacks.append(stack)

    @staticmethod
    def _blocked_in_ours(busy: _Busy, blamed: tuple[str, ...]) -> str | None:
        """The loop thread's stack when it sleeps in the kernel inside our code."""
        try:
            stat = Path(f"/proc/self/task/{busy.native}/stat").read_text()
        except OSError:
            return None
        if stat.rsplit(")", 1)[1].split()[0] not in ("S", "D"):
            return None  # computing, or waiting for a CPU: not a blocking call
        try:
            wchan = Path(f"/proc/self/task/{busy.native}/wchan").read_text()
        except OSError:
            wchan = ""
        frame = sys._current_frames().get(busy.ident)
        if frame is None:
            return None
        frames = []
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        if wchan.strip() in ("", "0") or wchan.startswith(("do_epoll_wait", "do_select",
                                                           "do_sys_poll")):
            return None  # out of its wait by now (back in the loop's own): not one that lasts
        if wchan.startswith("futex") and not frames[0].f_code.co_filename.endswith(
                "/threading.py"):
            # a futex outside threading's joins and waits is the GIL, held by another
            # thread of ours (many pods' netlink threads on a busy machine): contention,
            # not a blocking call
            return None
        if any(f.f_code.co_filename.startswith("<frozen importlib") for f in frames):
            return None  # a module's first import: once per process, not a blocking call
        if any(f.f_code.co_name == "start" and f.f_code.co_filename.endswith("/threading.py")
               for f in frames):
            return None  # a new thread's start handshake (an executor's): slow only when
            # the machine is busy
        if any(f.f_code.co_name == "run_sync_in_worker_thread" for f in frames):
            return None  # anyio handing work to a thread (whose start a busy machine delays)
        if any((f.f_code.co_filename, "") in KNOWN
               or (f.f_code.co_filename, f.f_code.co_name) in KNOWN for f in frames):
            return None
        # whose async code waits: the innermost coroutine of ours on the stack (a test that
        # calls a service's sync function itself is the test's choice)
        waiting = next((f for f in frames if f.f_code.co_flags & _ASYNC
                        and _ours(f.f_code.co_filename)), None)
        if waiting is None or not waiting.f_code.co_filename.startswith(blamed):
            return None
        stack = traceback.extract_stack(frames[0])
        shown = [s for s in stack if _ours(s.filename)]
        inner = stack[-1]
        return ("".join(traceback.format_list(shown[-8:]))
                + f"  (innermost: {inner.filename}:{inner.lineno} {inner.name}; "
                  f"kernel wait: {wchan.strip() or '?'})\n")


_ASYNC = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _ours(filename: str) -> bool:
    return filename.startswith(OURS) and "/.venv/" not in filename
