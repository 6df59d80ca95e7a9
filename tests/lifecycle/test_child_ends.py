"""``knd up``'s keeper (services/keeper.py), run as the real process ``knd up`` becomes:
how each child ended is logged with its last words, a child that ends is restarted with
doubling delays, and a stop ends the services first, then the bus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.natsd import free_port
from services.keeper import Plan, Spec, ended
from tests.helpers.wait import wait_for

FAKE = [sys.executable, "-m", "tests.lifecycle.fake_service"]
ROOT = Path(__file__).resolve().parents[2]


def test_how_a_child_ended_reads() -> None:
    assert ended(1, "failed: OSError: no") == "exited with status 1 (failed: OSError: no)"
    assert ended(-signal.SIGKILL, "") == "was killed by SIGKILL, saying nothing"
    assert ended(0, None) == "exited with status 0"  # the nats-server says nothing ever


def listener(port: int, ignore_term: bool = False) -> list[str]:
    """A stand-in bus: listens on ``port`` until killed."""
    code = ("import signal, socket, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
            "time.sleep(3600)\n")
    return [sys.executable, "-c", code]


@contextmanager
def keeper(services: list[Spec], log: Path, *, stubborn_bus: bool = False,
           grace: float = 5.0) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    plan = Plan(bus=Spec("nats-server", listener(port, stubborn_bus), dict(os.environ)),
                bus_address=("127.0.0.1", port), services=services, stop_grace=grace)
    carrier = os.memfd_create("plan", 0)
    os.write(carrier, plan.encode())
    os.lseek(carrier, 0, os.SEEK_SET)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.keeper", str(carrier)],
                                cwd=ROOT, pass_fds=(carrier,), stdout=out, stderr=out,
                                start_new_session=True)
    os.close(carrier)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # its children die with it (parent-death signal)
            proc.wait()


def lines(log: Path) -> list[str]:
    return [line.split(" knd.up: ", 1)[1] for line in log.read_text().splitlines()
            if " knd.up: " in line]


def test_a_child_that_returns_unasked_is_logged_and_restarted_ever_later(tmp_path) -> None:
    log = tmp_path / "up.log"
    with keeper([Spec("discovery", [*FAKE, "return"], dict(os.environ), last_words=True)],
                log) as proc:
        said = wait_for(lambda: [x for x in lines(log) if x.startswith("discovery ")][:3]
                        if len([x for x in lines(log) if x.startswith("discovery ")]) >= 3
                        else None, timeout=30, what="three restarts")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    why = "discovery exited with status 1 (returned without being asked to stop (a bug); " \
          "exiting 1); restarting in"
    assert [x.startswith(why) for x in said] == [True, True, True], said
    assert [x.rsplit(" ", 1)[1] for x in said] == ["0.5s", "1.0s", "2.0s"], said
    assert lines(log)[-1] == "knd up: stopped on SIGTERM"


def test_a_stop_ends_the_services_first_then_the_bus(tmp_path) -> None:
    log, ready = tmp_path / "up.log", tmp_path / "ready"
    env = {**os.environ, "FAKE_READY": str(ready)}
    with keeper([Spec("plumber", [*FAKE, "serve"], env, last_words=True)], log) as proc:
        wait_for(ready.exists, timeout=30, what="the service to be ready")
        proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C
        assert proc.wait(15) == 0
    said = lines(log)
    assert said[-4:] == ["knd up: stopping on SIGINT",
                         "plumber exited with status 0 (stopped on SIGTERM)",
                         "nats-server was killed by SIGTERM",
                         "knd up: stopped on SIGINT"], said
    assert not any("restarting" in x for x in said), said


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path) -> None:
    log, ready = tmp_path / "up.log", tmp_path / "ready"
    env = {**os.environ, "FAKE_READY": str(ready)}
    with keeper([Spec("publisher", [*FAKE, "serve"], env, last_words=True)], log,
                stubborn_bus=True, grace=0.5) as proc:
        wait_for(ready.exists, timeout=30, what="the service to be ready")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    said = lines(log)
    assert "nats-server was killed by SIGKILL" in said, said
    assert said[-1] == "knd up: stopped on SIGTERM"
