"""Running a service until it is asked to stop, and exiting with the reason why.

The rule every service follows: it exits 0 only when a signal (SIGTERM, SIGINT)
asked it to stop. Returning on its own is a bug and exits 1, as does an error;
either way the reason is logged in one line and, when the service runs under
``knd up``, written to the supervisor as its last words (``KND_LAST_WORDS_FD``), so
the supervisor's "exited with" line says why.

Stopping is bounded: a service still stopping ``deadline`` seconds after the
signal is ended by a watchdog thread, which works even when the event loop is
stuck. When a service started to die with its parent (``KND_PARENT_PID``, set by
services.common.pdeathsig under ``knd up``) sees that parent gone, the bound is
``ORPHAN_DEADLINE`` from then, signal or not, so no service
of a dead agent is still there when the next one starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import anyio

from services.common.pdeathsig import PARENT_ENV
from services.keeper import LAST_WORDS_ENV

log = logging.getLogger("knd.runner")

STOP_DEADLINE = 4.0
"""Seconds from the signal to exit when the parent is alive (``knd up`` waits 5)."""
ORPHAN_DEADLINE = 1.2
"""Seconds from noticing the parent died to exit."""
PARENT_POLL = 0.2
"""How often the watchdog looks at the clock once stopping began, and for its parent
where the kernel cannot tell it (no pidfd)."""


class Refused(Exception):
    """The service must not start here; the text says why and what to do, in one line."""


class Stopping:
    """Why and since when the service is stopping, shared with the watchdog thread."""

    def __init__(self, name: str, deadline: float | None) -> None:
        self.name = name
        self.deadline = deadline
        promised = os.environ.get(PARENT_ENV, "")
        self.parent = int(promised) if promised.isdigit() else None
        """The pid we die with (None: no such promise, e.g. a container's pid 1)."""
        self.signal: str | None = None
        self._since: float | None = None
        self._orphaned = False
        self._changed_r, self._changed_w = socket.socketpair()
        self.wake: socket.socket | None = None
        """Wakes the event loop (set while it runs)."""

    def install(self) -> dict[int, Any]:
        """Our handlers for SIGTERM and SIGINT; the ones they replace."""
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Runs in the main thread. Stays installed until the process ends: a second
        # SIGTERM (a dying multi-threaded parent sends one per thread) must not
        # kill us halfway through our cleanup or our last words.
        self.asked(signum)
        if self.wake is not None:
            with contextlib.suppress(OSError):
                self.wake.send(b"\0")

    def asked(self, signum: int) -> None:
        """A signal asked us to stop: start the clock."""
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            log.info("%s: stopping on %s", self.name, self.signal)
        self.begin()

    def begin(self) -> None:
        if self._since is None:
            self._since = time.monotonic()
            with contextlib.suppress(OSError):
                self._changed_w.send(b"\0")

    def orphaned(self) -> bool:
        """Whether the parent we die with is gone (we were reparented)."""
        return self.parent is not None and os.getppid() != self.parent

    def watch(self) -> None:
        """The watchdog thread: exits the process when stopping overruns its bound.

        It sleeps until something happens: stopping begins, or the parent we die with
        ends (its pidfd turns readable; a thread, so this holds even when the event
        loop is stuck). Only then does it look at the clock, every PARENT_POLL: an
        idle service wakes for nothing (a poll of the parent every 0.2 s was most of
        an idle service's CPU)."""
        parent_fd = _pidfd(self.parent)
        while True:
            watching_parent = self.parent is not None and not self._orphaned
            fds: list[Any] = [self._changed_r]
            if watching_parent and parent_fd is not None:
                fds.append(parent_fd)
            clock = self._since is not None or (watching_parent and parent_fd is None)
            readable, _, _ = select.select(fds, [], [], PARENT_POLL if clock else None)
            if self._changed_r in readable:
                with contextlib.suppress(OSError):
                    self._changed_r.recv(64)
            if not self._orphaned and self.orphaned():
                self._orphaned = True
                if self._since is None:
                    self._since = time.monotonic()
            if self._since is None or self.deadline is None:
                continue
            bound = ORPHAN_DEADLINE if self._orphaned else self.deadline
            if time.monotonic() - self._since >= bound:
                why = (f"still stopping {bound:.1f}s after "
                       f"{'its parent died' if self._orphaned else self.signal or 'exit began'}"
                       "; exiting without finishing cleanup")
                log.warning("%s: %s", self.name, why)
                last_words(why)
                os._exit(1)


async def until_signalled(main: Callable[[], Awaitable[None]],
                          stopping: Stopping | None = None) -> None:
    """Run ``main``; a SIGTERM or SIGINT cancels it so its cleanup runs.

    The signal is taken by a handler of this process, not read back from the event
    loop's self-pipe: a forked child shares that pipe, and what it wrote there was
    once read as our own SIGTERM (services.kernel.netns). The pipe here only wakes
    the loop. Without ``stopping`` (tests) the handlers are put back afterwards."""
    own = stopping is None
    if stopping is None:
        stopping = Stopping("main", None)
    previous = stopping.install() if own else {}
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    stopping.wake = wake_w
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while stopping.signal is None:
                    await anyio.wait_readable(wake_r)
                    with contextlib.suppress(BlockingIOError):
                        while wake_r.recv(512):
                            pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await main()
            tg.cancel_scope.cancel()
    finally:
        stopping.wake = None
        signal.set_wakeup_fd(old_wakeup)
        wake_r.close()
        wake_w.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def last_words(reason: str) -> None:
    """Tell the supervisor, if there is one, why we exit (one line, best effort)."""
    fd = os.environ.get(LAST_WORDS_ENV, "")
    if not fd.isdigit():
        return
    try:
        os.write(int(fd), reason.encode(errors="replace")[:1000] + b"\n")
    except OSError:
        pass  # no supervisor listening any more


def summary(exc: BaseException) -> str:
    """One line for an error: the innermost exceptions of a group, with their text."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(summary(e) for e in exc.exceptions))
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _only(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` if it is a ``kind``, or a group holding exactly one, which it returns."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, kind) else None


def run(main: Callable[[], Awaitable[None]], name: str,
        deadline: float = STOP_DEADLINE) -> NoReturn:
    """Run ``main`` until signalled and exit: 0 when asked to stop, 1 otherwise.

    ``deadline``: the bound on stopping, kept by a watchdog thread."""
    stopping = Stopping(name, deadline)
    stopping.install()
    threading.Thread(target=stopping.watch, name="knd-watchdog", daemon=True).start()
    code, level = 1, logging.ERROR
    try:
        anyio.run(until_signalled, main, stopping)
    except KeyboardInterrupt:  # SIGINT before the loop had its handler
        stopping.asked(signal.SIGINT)
        code, level, reason = 0, logging.INFO, "stopped on SIGINT"
    except BaseException as exc:
        refused = _only(exc, Refused)
        if refused is not None:
            reason = str(refused)
        elif stopping.signal is not None:
            # the bus or a peer may be gone already; cleanup did what it could
            code, level = 0, logging.WARNING
            reason = f"stopped on {stopping.signal}; cleanup failed: {summary(exc)}"
        else:  # a crash: the traceback is what a bug report needs
            reason = f"failed: {summary(exc)}"
            log.error("%s: %s", name, reason, exc_info=exc)
            level = logging.NOTSET
    else:
        if stopping.signal is not None:
            code, level, reason = 0, logging.INFO, f"stopped on {stopping.signal}"
        else:
            reason = "returned without being asked to stop (a bug); exiting 1"
    stopping.begin()  # the watchdog bounds the interpreter's exit too
    if level:
        log.log(level, "%s: %s", name, reason)
    last_words(reason)
    # Cleanup is done. Finalizing the interpreter would put SIGTERM back to its
    # default first (a repeated one would then kill us with the wrong status) and
    # wait for library threads (grpc's): neither helps a process that is leaving.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _pidfd(pid: int | None) -> int | None:
    """A pidfd of ``pid`` (readable once it ends), or None where there is none."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
