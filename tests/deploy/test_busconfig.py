"""`knd bus-config`: the init container's bus config and per-service credentials."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import pytest
from nats.errors import NoServersError

from schemas.subjects import Subjects
from services.cli import TOOLS, build_parser
from services.common import auth, bus, busconfig, natsd

NODE = "node-b.example.com"


def test_layout_modes_and_one_role_per_file(tmp_path):
    out = tmp_path / "bus"
    creds = busconfig.write(out, NODE, "127.0.0.1", 9500)
    assert sorted(p.name for p in out.iterdir()) == sorted([*auth.ROLES, "nats"])
    for role in auth.ROLES:
        path = out / role / "creds.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        loaded = auth.load(path)
        assert loaded.url == "nats://127.0.0.1:9500" and loaded.node == NODE
        assert loaded.passwords == {role: creds.passwords[role]}
    conf = json.loads((out / "nats" / "nats.conf").read_text())
    assert stat.S_IMODE((out / "nats" / "nats.conf").stat().st_mode) == 0o640
    assert (conf["host"], conf["port"]) == ("127.0.0.1", 9500)
    assert "log_file" not in conf  # the nats container logs to stdout
    users = {u["user"]: u for u in conf["authorization"]["users"]}
    assert set(users) == set(auth.ROLES)
    for role, u in users.items():
        assert u["password"] == creds.passwords[role]
        assert u["permissions"] == auth.permissions(role, NODE)
    assert len(set(creds.passwords.values())) == len(auth.ROLES)


def test_every_run_makes_new_passwords_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        first = busconfig.write(tmp_path, NODE)
        second = busconfig.write(tmp_path, NODE)
    finally:
        os.umask(old)
    assert not set(first.passwords.values()) & set(second.passwords.values())
    assert stat.S_IMODE((tmp_path / "plumber" / "creds.json").stat().st_mode) == 0o640
    assert not list(tmp_path.glob("*/.*.tmp"))


@pytest.mark.parametrize(("host", "port", "error"), [
    ("0.0.0.0", 9500, "loopback only"),
    ("10.0.0.1", 9500, "loopback only"),
    ("127.0.0.1", 0, "out of range"),
    ("127.0.0.1", 70000, "out of range"),
])
def test_refuses_a_bus_off_loopback_or_without_a_port(tmp_path, host, port, error):
    with pytest.raises(ValueError, match=error):
        busconfig.write(tmp_path, NODE, host, port)
    assert list(tmp_path.iterdir()) == []


def test_ipv6_loopback_url(tmp_path):
    assert busconfig.write(tmp_path, NODE, "::1", 9500).url == "nats://[::1]:9500"


def test_cli_entry_point(tmp_path, monkeypatch, capsys):
    assert TOOLS["bus-config"] == "services.common.busconfig"
    monkeypatch.setenv("KND_NODE", NODE)
    monkeypatch.setenv("KND_BUS_DIR", str(tmp_path / "env-dir"))
    monkeypatch.setenv("KND_BUS_PORT", "9600")
    args = build_parser().parse_args(["bus-config"])
    assert busconfig.main(args) == 0
    assert auth.load(tmp_path / "env-dir" / "publisher" / "creds.json").url.endswith(":9600")
    args = build_parser().parse_args(["bus-config", "--out", str(tmp_path / "x"),
                                      "--bus-host", "192.0.2.1"])
    assert busconfig.main(args) == 1
    assert "loopback only" in capsys.readouterr().err


def test_knd_bus_config_command(tmp_path):
    knd = Path(sys.executable).parent / "knd"
    done = subprocess.run([str(knd), "bus-config", "--node", NODE, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gateway" / "creds.json").exists()


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[Path, auth.Credentials]]:
    """A real nats-server running the generated config: (bus folder, credentials)."""
    port = natsd.free_port()
    creds = busconfig.write(tmp_path, NODE, "127.0.0.1", port)
    proc = subprocess.Popen([natsd.server_binary(), "-c", str(tmp_path / "nats" / "nats.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        natsd.wait_listening("127.0.0.1", port)
        yield tmp_path, creds
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.anyio
async def test_a_real_nats_server_runs_the_config_and_keeps_roles_apart(served):
    folder, creds = served
    s = Subjects(NODE)
    discovery = await bus.connect(auth.load(folder / "discovery" / "creds.json"), "discovery")
    plumber = await bus.connect(auth.load(folder / "plumber" / "creds.json"), "plumber")
    got = []

    async def on_msg(msg) -> None:
        got.append(msg.data)

    await plumber.subscribe(s.inventory_snapshot, cb=on_msg)
    await bus.flush(plumber)
    await discovery.publish(s.inventory_snapshot, b"{}")
    await bus.flush(discovery)
    with anyio.fail_after(5):
        while not got:
            await anyio.sleep(0.02)
    await bus.close(discovery)
    await bus.close(plumber)
    # the publisher's file holds no other role's password
    with pytest.raises(KeyError):
        auth.load(folder / "publisher" / "creds.json").user("gateway")
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await bus.open_client(creds.url, user="gateway", password="wrong", allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=1)
