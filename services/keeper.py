"""The resident part of ``knd up``: runs the bus and every service, restarts whichever
ends, and stops them in order (services first, then the bus).

``knd up`` plans first (services.supervisor: flags, agent locks, bus config, each
child's command and environment), then replaces itself with this module, handing
over the plan on an inherited file. What planning needed (msgspec and the bus
schemas, CEL for ``--filter``, an event loop) is then not kept for the agent's whole
life on every node. Waiting on five children needs no event loop either: one
thread waits in ``select()`` on their pidfds, its signal pipe and the time of the
next restart. Standard library only, so the resident supervisor stays small.

A child that ends is restarted with doubling delays (0.5 s to 30 s; back to 0.5 s
after it ran for a minute), and its end is logged: exit status or signal, and the
service's last words, the reason it wrote on the pipe named by ``KND_LAST_WORDS_FD``.
Children run in sessions of their own (a terminal's Ctrl-C reaches only this
process) and die with it (services.common.pdeathsig).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from services.common import logs
from services.common.backoff import Backoff

log = logging.getLogger("knd.up")

LAST_WORDS_ENV = "KND_LAST_WORDS_FD"
MIN_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 0.5, 30.0, 60.0
STOP_GRACE = 5.0
"""Seconds a child has from SIGTERM to exit before it is killed."""
BUS_WAIT = 10.0
"""Seconds the bus has to listen before the services start anyway (they retry)."""


@dataclass
class Spec:
    """One child as planned: ``last_words``: a knd service, which says why it exits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    keep_fds: tuple[int, ...] = ()
    last_words: bool = False

    @classmethod
    def decode(cls, raw: dict[str, Any]) -> Spec:
        return cls(name=raw["name"], argv=list(raw["argv"]), env=dict(raw["env"]),
                   keep_fds=tuple(raw.get("keep_fds", ())),
                   last_words=bool(raw.get("last_words", False)))


@dataclass
class Plan:
    bus: Spec
    bus_address: tuple[str, int]
    services: list[Spec]
    log_level: str = "info"
    log_json: bool = False
    stop_grace: float = STOP_GRACE

    def encode(self) -> bytes:
        def spec(s: Spec) -> dict[str, Any]:
            return {"name": s.name, "argv": s.argv, "env": s.env, "keep_fds": list(s.keep_fds),
                    "last_words": s.last_words}
        return json.dumps({"bus": spec(self.bus), "bus_address": list(self.bus_address),
                           "services": [spec(s) for s in self.services],
                           "log_level": self.log_level, "log_json": self.log_json,
                           "stop_grace": self.stop_grace}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Plan:
        raw = json.loads(data)
        host, port = raw["bus_address"]
        return cls(bus=Spec.decode(raw["bus"]), bus_address=(host, int(port)),
                   services=[Spec.decode(s) for s in raw["services"]],
                   log_level=raw.get("log_level", "info"), log_json=raw.get("log_json", False),
                   stop_grace=float(raw.get("stop_grace", STOP_GRACE)))


def ended(code: int | None, words: str | None) -> str:
    """How a child ended, for the log: its status or signal, and its last words
    (None: a child that has no way to say any, the nats-server)."""
    if code is None:
        how = "ended"
    elif code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with status {code}"
    if words is None:
        return how
    return f"{how} ({words})" if words else f"{how}, saying nothing"


def _read_words(fd: int) -> str:
    """What the child wrote to its last-words pipe, without waiting for more."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except BlockingIOError:
        pass  # a grandchild may still hold the write end; what is there is enough
    finally:
        os.close(fd)
    lines = b"".join(chunks).decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def wait_listening(host: str, port: int, timeout: float = BUS_WAIT,
                   give_up: Any = lambda: False) -> bool:
    """Whether something listens on ``host:port`` within ``timeout`` (``give_up``:
    asked between tries, to stop waiting early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not give_up():
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class Child:
    """A planned child and, while it runs, its process."""

    spec: Spec
    backoff: Backoff = field(default_factory=lambda: Backoff(MIN_BACKOFF, MAX_BACKOFF))
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    words_r: int | None = None
    began: float = 0.0
    due: float | None = None
    """When it is to be started again (None: running, or not to be restarted)."""

    def start(self) -> None:
        words_w = None
        env = self.spec.env
        if self.spec.last_words:
            self.words_r, words_w = os.pipe2(os.O_CLOEXEC)
            env = {**env, LAST_WORDS_ENV: str(words_w)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.common.pdeathsig", str(os.getpid()),
                 *self.spec.argv],
                env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                pass_fds=(*self.spec.keep_fds, *([words_w] if words_w is not None else [])))
        except BaseException:
            if self.words_r is not None:
                os.close(self.words_r)
                self.words_r = None
            raise
        finally:
            if words_w is not None:
                os.close(words_w)
        self.began, self.due = time.monotonic(), None
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except OSError:
            self.pidfd = None  # no pidfds (kernel < 5.3): found by polling instead

    def reap(self) -> str:
        """Its end, as :func:`ended` says it; the process and its pipe are let go."""
        assert self.proc is not None
        code = self.proc.wait()
        words = _read_words(self.words_r) if self.words_r is not None else None
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.proc = self.pidfd = self.words_r = None
        return ended(code, words)


class Keeper:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.bus = Child(plan.bus)
        self.services = [Child(s) for s in plan.services]
        self.signal: str | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    # ---- signals --------------------------------------------------------------------

    def install(self) -> None:
        """SIGTERM and SIGINT ask us to stop; the wakeup pipe ends the wait at once."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            log.info("knd up: stopping on %s", self.signal)

    # ---- running --------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        child.start()
        if child.pidfd is not None:
            self._sel.register(child.pidfd, selectors.EVENT_READ, child)

    def _ended(self, child: Child) -> str:
        if child.pidfd is not None:
            self._sel.unregister(child.pidfd)
        return child.reap()

    def _exited(self, child: Child) -> None:
        """A child ended while we run: log it and schedule its restart."""
        ran = time.monotonic() - child.began
        how = self._ended(child)
        if ran > STABLE_AFTER:
            child.backoff.reset()
        wait = child.backoff.next()
        child.due = time.monotonic() + wait
        log.warning("%s %s; restarting in %.1fs", child.spec.name, how, wait)

    def _children(self) -> list[Child]:
        return [self.bus, *self.services]

    def _wait(self, timeout: float | None) -> list[Child]:
        """Children that ended within ``timeout`` (None: until one does or a signal)."""
        polled = any(c.proc is not None and c.pidfd is None for c in self._children())
        if polled:
            timeout = 0.2 if timeout is None else min(timeout, 0.2)
        out = [key.data for key, _ in self._sel.select(timeout) if key.data is not None]
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(512):
                pass
        out += [c for c in self._children() if c.proc is not None and c.pidfd is None
                and c.proc.poll() is not None]
        return out

    def serve(self) -> None:
        """Run until a signal: the bus first, then the services once it listens."""
        self._start(self.bus)
        host, port = self.plan.bus_address
        if not wait_listening(host, port, give_up=lambda: self.signal is not None):
            log.warning("the bus is not listening on %s:%d after %.0fs; starting the "
                        "services anyway", host, port, BUS_WAIT)
        for child in self.services:
            if self.signal is None:
                self._start(child)
        while self.signal is None:
            due = [c.due for c in self._children() if c.due is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            for child in self._wait(timeout):
                if child.proc is not None:
                    self._exited(child)
            now = time.monotonic()
            for child in self._children():
                if child.due is not None and child.due <= now and self.signal is None:
                    self._start(child)

    def stop(self) -> None:
        """The services (SIGTERM; SIGKILL after the plan's grace), then the bus, so
        the services can still say their last messages on it."""
        self._stop(self.services)
        self._stop([self.bus])

    def _stop(self, children: list[Child]) -> None:
        running = [c for c in children if c.proc is not None]
        for c in running:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline: float | None = time.monotonic() + self.plan.stop_grace
        while running:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                for c in running:
                    assert c.proc is not None
                    with contextlib.suppress(ProcessLookupError):
                        c.proc.kill()
                deadline = left = None  # killed: they end now
            done = set(map(id, self._wait(left)))
            for c in [c for c in running if id(c) in done]:
                log.info("%s %s", c.spec.name, self._ended(c))
                running.remove(c)
        for c in children:
            c.due = None

    def run(self) -> int:
        self.install()
        try:
            self.serve()
        finally:
            self.stop()
        log.info("knd up: stopped on %s", self.signal)
        return 0


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m services.keeper PLAN_FD [knd up ARGS...] "
                 "(started by `knd up`, not by hand)")
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        plan = Plan.decode(f.read())
    logs.setup(plan.log_level, plan.log_json, service="up")
    code = Keeper(plan).run()
    logging.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
