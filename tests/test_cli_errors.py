"""Mistakes a person makes with ``knd``, run as the real command: each is one line on
stderr that says what is wrong and what to do (no traceback), exit status 2 for a
usage error and 1 for a refusal, and nothing is left behind (no state directory, no
namespace, no half-started service)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
BAD_FILTER = "attributes["


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KND_")}
    env.pop("KUBECONFIG", None)
    env["KND_CLOUD_PROVIDER_HINT"] = "NONE"  # never probe a real cloud's metadata service
    env.update(extra)
    return env


def _without_capabilities() -> None:
    """preexec: empty the bounding set, so the command (still uid 0) execs with no
    capabilities at all, as an unprivileged user or a container without them would."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; past the last capability: EINVAL


def knd(*argv: str, env: dict[str, str] | None = None, unprivileged: bool = False,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *argv], cwd=ROOT,
                          env=env or _clean_env(), capture_output=True, text=True,
                          timeout=timeout,
                          preexec_fn=_without_capabilities if unprivileged else None)


def one_line(res: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    """The single stderr line of a failed command, checked for status and content."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == status, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- usage errors (exit 2) ------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--filter", "--shared-devices"])
@pytest.mark.parametrize("argv", [
    ["discovery", "--once"],
    ["up", "--standalone", "--metrics-address", "off"],
])
def test_a_filter_that_does_not_compile_stops_everything(argv: list[str], flag: str,
                                                         tmp_path: Path) -> None:
    state = tmp_path / "state"
    res = knd(*argv, flag, BAD_FILTER, "--state-dir", str(state))
    line = one_line(res, 2, f"knd {argv[0]}: {flag}", "not a valid CEL expression", "1:12")
    assert line.startswith(f"knd {argv[0]}: ")
    assert not state.exists()


def test_the_filter_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    res = knd("discovery", "--once", env=_clean_env(KND_FILTER=BAD_FILTER))
    one_line(res, 2, "--filter", "not a valid CEL expression")


def test_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("mine\n")
    res = knd("up", "--standalone", "--state-dir", str(file))
    one_line(res, 2, "--state-dir", str(file), "not a directory")
    assert file.read_text() == "mine\n"


@pytest.mark.parametrize(("argv", "needles"), [
    (["up", "--only", "discovry"], ["invalid choice: 'discovry'", "discovery", "publisher",
                                    "plumber", "kubelet-gateway"]),
    (["up", "--metrics-address", "notaport"], ["--metrics-address", "notaport", "host:port"]),
    (["up", "--standalon"], ["knd up: unrecognized arguments: --standalon"]),
    (["discovery", "--resync"], ["knd discovery: unrecognized arguments: --resync"]),
])
def test_flags_that_cannot_be_right(argv: list[str], needles: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    one_line(knd(*argv, "--state-dir", str(state)), 2, *needles)
    assert not state.exists()


def test_an_unknown_flag_is_reported_by_its_own_command() -> None:
    line = one_line(knd("topology", "--jsn"), 2,
                    "knd topology: unrecognized arguments: --jsn", "knd topology --help")
    assert "usage: knd [-h]" not in line and "{" not in line


@pytest.mark.parametrize(("env", "needle"), [
    ({"KND_STANDALONE": "maybe"}, 'KND_STANDALONE="maybe"'),
    ({"KND_METRICS_ADDRESS": "nowhere:port"}, 'KND_METRICS_ADDRESS="nowhere:port"'),
    ({"KND_LOG_LEVEL": "loud"}, 'KND_LOG_LEVEL="loud": expected one of debug'),
    ({"KND_BUS_PORT": "many"}, 'KND_BUS_PORT="many": expected a port'),
    ({"KND_RESYNC_INTERVAL": "60"}, "set KND_RESCAN_INTERVAL (discovery's rescans"),
])
def test_bad_environment_values_are_usage_errors(env: dict[str, str], needle: str,
                                                 tmp_path: Path) -> None:
    state = tmp_path / "state"
    one_line(knd("up", "--state-dir", str(state), env=_clean_env(**env)), 2, needle)
    assert not state.exists()


def test_hostile_input_is_echoed_quoted_and_cut(tmp_path: Path) -> None:
    expression = "x +\n" + "y" * 100_000 + " )"  # one argument may be at most 128 KiB
    line = one_line(knd("discovery", "--once", "--filter", expression), 2, '"x +\\nyyy')
    assert len(line) < 1000, len(line)
    line = one_line(knd("up", "--only", "z" * 100_000, "--state-dir", str(tmp_path / "s")), 2)
    assert len(line) < 1200, len(line)


# ---- refusals (exit 1) ----------------------------------------------------------------------


def test_a_service_without_bus_credentials(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = knd("discovery", "--state-dir", str(empty))
    one_line(res, 1, str(empty / "bus" / "creds.json"), "knd up", "knd bus-config")
    assert list(empty.iterdir()) == []


def _demo_netns() -> set[str]:
    # the demo's own namespaces only: other test runs on the machine make and drop theirs
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("knd-demo-")}


def test_demo_without_privileges() -> None:
    before = _demo_netns()
    res = knd("demo", unprivileged=True)
    one_line(res, 1, "knd demo: needs root", "CAP_NET_ADMIN", "sudo knd demo")
    assert _demo_netns() == before


def test_the_checkout_launcher_for_a_user_who_cannot_build_it(request) -> None:
    """``./knd`` from root's checkout, run by nobody: one line, and no .venv attempted."""
    # not under tmp_path: pytest's base folder is root's alone
    copy = Path(tempfile.mkdtemp(prefix="knd-checkout-"))
    request.addfinalizer(lambda: shutil.rmtree(copy, ignore_errors=True))
    copy.chmod(0o755)
    (copy / "scripts").mkdir(parents=True)
    for name in ("knd", "pyproject.toml", "setup.py"):
        shutil.copy2(ROOT / name, copy / name)
    for name in ("bootstrap.sh", "test-tools.txt"):
        shutil.copy2(ROOT / "scripts" / name, copy / "scripts" / name)
    shutil.copytree(ROOT / "protos", copy / "protos")
    for path in copy.rglob("*"):
        path.chmod(path.stat().st_mode | 0o055)

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)

    res = subprocess.run([str(copy / "knd"), "status"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(copy)},
                         preexec_fn=as_nobody, timeout=60)
    one_line(res, 1, ".venv is missing or out of date", "cannot write", "as root")
    assert not (copy / ".venv").exists()


# ---- knd up without privileges: running, but honestly not ready -------------------------------


def _free_port_block(n: int = 4) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        try:
            holders = []
            for port in range(base, base + n):
                t = socket.socket()
                holders.append(t)
                t.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for t in holders:
                t.close()
    raise RuntimeError("no block of free ports")


def test_up_without_privileges_is_not_ready_and_says_why(tmp_path: Path) -> None:
    state = tmp_path / "state"
    base = _free_port_block()
    address = f"127.0.0.1:{base}"
    # KND_STANDALONE=1 must be honoured as --standalone is (the up line says "standalone")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--only", "plumber", "--state-dir",
         str(state), "--kubelet-root", str(tmp_path / "kubelet"), "--metrics-address", address],
        cwd=ROOT, env=_clean_env(KND_STANDALONE="1"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, preexec_fn=_without_capabilities)
    try:
        first = proc.stderr.readline() if proc.stderr else ""
        assert "knd up: node" in first and "(standalone)" in first, first
        body = _wait_ready_body(f"http://127.0.0.1:{base + 2}/readyz")
        assert body["ready"] is False and body["checks"]["privileges"] is False
        assert body["checks"]["bus"] is True and body["checks"]["reconciled"] is True
        reason = body["reasons"]["privileges"]
        assert "CAP_NET_ADMIN" in reason and "CAP_SYS_ADMIN" in reason
        status = knd("status", "--state-dir", str(state), "--metrics-address", address)
        row = next(ln for ln in status.stdout.splitlines() if ln.strip().startswith("plumber"))
        assert " NO " in row and "privileges: lacks CAP_NET_ADMIN" in row, status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()


def _wait_ready_body(url: str, seconds: float = 20) -> dict:
    """/readyz once the plumber has connected and reconciled (whatever else it says)."""
    def reconciled() -> dict | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        except OSError:
            return None
        return body if body.get("checks", {}).get("reconciled") else None

    return wait_for(reconciled, timeout=seconds, what="the plumber to reconcile")
