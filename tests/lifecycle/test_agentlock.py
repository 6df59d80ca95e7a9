"""One agent per state dir and per kubelet root (services.common.agentlock): the
second refuses naming the holder, a dead holder blocks nothing, and a lock knd up
hands down is the service's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.common import agentlock, auth
from services.common.runner import Refused

HOLD = ("import sys, time; from pathlib import Path; from services.common import agentlock; "
        "agentlock.acquire(Path(sys.argv[1]), 'holder'); print('held', flush=True); "
        "time.sleep(60)")


def hold(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.stdout.close()  # it says nothing more
    return proc


def test_the_second_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = agentlock.state_lock(tmp_path)
    holder = hold(lock)
    try:
        with pytest.raises(Refused) as refused:
            agentlock.acquire(lock, "me")
        text = str(refused.value)
        assert f"pid {holder.pid}, holder" in text and str(lock) in text
        assert "\n" not in text
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_that_died_blocks_nothing(tmp_path: Path) -> None:
    lock = agentlock.kubelet_lock(tmp_path, "knd.dev")
    holder = hold(lock)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    fd = agentlock.acquire(lock, "next")
    try:
        assert lock.read_text() == f"{os.getpid()} next\n"
    finally:
        os.close(fd)


def test_a_lock_handed_down_is_held_already(tmp_path: Path) -> None:
    """knd up's services take the lock knd up holds: the same open file."""
    lock = agentlock.state_lock(tmp_path)
    mine = agentlock.acquire(lock, "knd up")
    try:
        code = ("import sys; from pathlib import Path; from services.common import agentlock; "
                "agentlock.acquire(Path(sys.argv[1]), 'knd plumber'); print('ok')")
        handed = subprocess.run([sys.executable, "-c", code, str(lock)], pass_fds=(mine,),
                                env={**os.environ, agentlock.FDS_ENV: str(mine)},
                                capture_output=True, text=True)
        assert handed.stdout.strip() == "ok", handed.stderr
        alone = subprocess.run([sys.executable, "-c", code, str(lock)],
                               capture_output=True, text=True)
        assert alone.returncode != 0
        assert f"pid {os.getpid()}, knd up" in alone.stderr
    finally:
        os.close(mine)


@pytest.mark.parametrize("service", ["plumber", "kubelet-gateway"])
def test_a_daemonset_service_refuses_a_held_node(tmp_path: Path, service: str) -> None:
    """In the DaemonSet each service is its own container: the plumber and the gateway
    take their locks themselves, before they touch anything."""
    state, kubelet = tmp_path / "state", tmp_path / "kubelet"
    held = (agentlock.state_lock(state) if service == "plumber"
            else agentlock.kubelet_lock(kubelet, "knd.dev"))
    # credentials of a bus that is not running: the lock is refused before any connect
    creds = auth.generate(tmp_path / "bus", "n", "127.0.0.1", 9)[0]
    assert creds.url.endswith(":9")
    holder = hold(held)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "services.cli", service, "--metrics-address", ""],
            env={**os.environ, "KND_STATE_DIR": str(state), "KND_KUBELET_ROOT": str(kubelet),
                 "KND_BUS_CREDS": str(tmp_path / "bus" / "creds.json"), "KND_NODE": "n"},
            capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {holder.pid}, holder" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (kubelet / "plugins_registry").exists()  # no socket was touched
