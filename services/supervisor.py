"""``knd up``: the embedded bus plus every service as a supervised child process.

Children get their settings through ``KND_*`` environment variables, the same
way the DaemonSet's sidecars and compose get theirs, so there is one
configuration path. A child that dies is restarted with exponential backoff and
its end is logged: exit status or signal, and the service's last words (the
reason it wrote to ``KND_LAST_WORDS_FD``). SIGTERM / Ctrl-C stops the services
first, then the bus.

Before it changes anything ``knd up`` takes the state dir's and the kubelet
root's agent locks (services.common.agentlock) and passes them to its services,
so a second agent on the same node refuses to start.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
from anyio.abc import Process

from services.common import agentlock, config, natsd, settings
from services.common.backoff import Backoff
from services.common.runner import LAST_WORDS_ENV

log = logging.getLogger("knd.up")

MIN_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 0.5, 30.0, 60.0


def child_env(args: argparse.Namespace, creds_path: Path,
              service: str | None = None) -> dict[str, str]:
    """The environment of one child (``service``; None: the nats-server): ours, less
    every knd setting, plus the settings that service reads as ``knd up`` was given
    them. Each service gets its own ``KND_METRICS_ADDRESS`` (``--metrics-address`` is
    discovery's; the others follow at +1..+3), never one that only the first could
    bind."""
    env = {k: v for k, v in os.environ.items() if k not in settings.by_env()}
    if service is not None:
        env.update(settings.child_env(args, service))
        env["KND_BUS_CREDS"] = str(creds_path)
        env["KND_METRICS_ADDRESS"] = config.metrics_address(args.metrics_address, service)
    return env


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


class Child:
    """One supervised process: restarted with backoff whenever it exits.

    ``keep_fds``: open files the child inherits (the agent locks); ``last_words``:
    whether it is a knd service, which tells why it exits on a pipe of its own."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str],
                 keep_fds: tuple[int, ...] = (), last_words: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.keep_fds = keep_fds
        self.last_words = last_words
        self.proc: Process | None = None

    async def _start(self) -> tuple[Process, int | None]:
        """Start the child; it and the read end of its last-words pipe, if it has one."""
        words_r = words_w = None
        env = self.env
        if self.last_words:
            words_r, words_w = os.pipe2(os.O_CLOEXEC)
            env = {**env, LAST_WORDS_ENV: str(words_w)}
        try:
            proc = self.proc = await anyio.open_process(
                [sys.executable, "-m", "services.common.pdeathsig", str(os.getpid()),
                 *self.argv],
                env=env, stdin=subprocess.DEVNULL, stdout=None, stderr=None,
                start_new_session=True,
                pass_fds=(*self.keep_fds, *([words_w] if words_w is not None else [])))
        except BaseException:
            if words_r is not None:
                os.close(words_r)
            raise
        finally:
            if words_w is not None:
                os.close(words_w)
        return proc, words_r

    async def supervise(self, started: anyio.Event | None = None) -> None:
        backoff = Backoff(MIN_BACKOFF, MAX_BACKOFF)
        while True:
            began = time.monotonic()
            proc, words_r = await self._start()
            if started is not None:
                started.set()
                started = None
            stopping = True
            try:
                await proc.wait()
                stopping = False
            finally:
                with anyio.CancelScope(shield=True):
                    code = await self.stop()
                words = _read_words(words_r) if words_r is not None else None
                if stopping:  # knd up is stopping: an end, not a failure
                    log.info("%s %s", self.name, ended(code, words))
            if time.monotonic() - began > STABLE_AFTER:
                backoff.reset()
            log.warning("%s %s; restarting in %.1fs", self.name, ended(code, words),
                        backoff.delay)
            await backoff.sleep()

    async def stop(self) -> int | None:
        """Stop the child (SIGTERM, SIGKILL after 5 s); its exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(5):
            return await proc.wait()
        proc.kill()
        return await proc.wait()


@contextlib.contextmanager
def _locked(state_dir: Path, kubelet_root: Path, driver: str) -> Iterator[tuple[int, int]]:
    """Both agent locks, or Refused with nothing left behind (no new state dir).
    Always taken in this order, so of two agents started at once exactly one
    gets both."""
    made = not state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = agentlock.state_lock(state_dir)
    got = False
    try:
        with agentlock.held(state, "knd up") as ours, agentlock.held(
                agentlock.kubelet_lock(kubelet_root, driver), "knd up") as kubelets:
            got = True
            yield ours, kubelets
    finally:
        if made and not got:
            state.unlink(missing_ok=True)
            state_dir.rmdir()


async def run(args: argparse.Namespace) -> None:
    state_dir = Path(args.state_dir)
    with _locked(state_dir, Path(args.kubelet_root), args.driver_name) as locks:
        await _run(args, state_dir, locks)


async def _run(args: argparse.Namespace, state_dir: Path, locks: tuple[int, int]) -> None:
    from services.cli import available_services

    creds, nats_argv = natsd.prepare(state_dir, args.node, args.bus_port)
    creds_path = state_dir / "bus" / "creds.json"
    env = child_env(args, creds_path)
    names = [n for n in available_services() if not args.only or n in args.only]
    log.info("knd up: node %s, bus %s, services %s%s; metrics %s", args.node, creds.url,
             ", ".join(names), " (standalone)" if args.standalone else "",
             ", ".join(f"{n} {config.metrics_address(args.metrics_address, n)}"
                       for n in names))
    bus = Child("nats-server", nats_argv, env)
    services = [Child(n, [sys.executable, "-m", "services.cli", n],
                      {**child_env(args, creds_path, n),
                       agentlock.FDS_ENV: ",".join(map(str, locks))},
                      keep_fds=locks, last_words=True) for n in names]
    # The bus runs shielded so that, on SIGTERM, it outlives the services and they
    # can flush their last messages; it is stopped explicitly once they are gone.
    bus_scope = anyio.CancelScope(shield=True)

    async def run_bus() -> None:
        with bus_scope:
            await bus.supervise()

    async with anyio.create_task_group() as outer:
        outer.start_soon(run_bus)
        try:
            host, port = creds.url.rsplit("/", 1)[1].split(":")
            await anyio.to_thread.run_sync(natsd.wait_listening, host, int(port))
            async with anyio.create_task_group() as inner:
                for child in services:
                    inner.start_soon(child.supervise)
        finally:
            bus_scope.cancel()
