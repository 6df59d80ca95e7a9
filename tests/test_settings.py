"""The settings table: every command's flags and variables come from it, ``knd up``
hands each child exactly the settings it reads, and nothing reads a ``KND_*``
variable behind the table's back."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from services import cli, supervisor
from services.common import config, settings
from tests.test_cli_errors import _clean_env, knd, one_line

ROOT = Path(__file__).resolve().parents[1]

SAMPLES = {
    "KND_NODE": "node-7", "KND_STATE_DIR": "/srv/knd", "KND_BUS_CREDS": "/srv/creds.json",
    "KND_DRIVER_NAME": "dra.net", "KND_LOG_LEVEL": "debug", "KND_LOG_JSON": "1",
    "KND_METRICS_ADDRESS": "127.0.0.1:19501",
    "KND_FEATURE_GATES": "PersistentResourceSliceAttributes=true",
    "KND_SYSFS_ROOT": "/host/sys", "KND_NETNS": "node-ns", "KND_FILTER": "true",
    "KND_SHARED_DEVICES": "device.attributes[\"knd.dev\"].sriov == false",
    "KND_RESCAN_INTERVAL": "90", "KND_CLOUD_PROVIDER_HINT": "GCE",
    "KND_PROFILE_PROVIDER": "webhook", "KND_WEBHOOK_URL": "unix:///run/hook.sock",
    "KND_WEBHOOK_TIMEOUT": "3", "KND_METADATA_URL": "http://127.0.0.1:1",
    "KND_METADATA_TIMEOUT": "2", "KND_STANDALONE": "1", "KUBECONFIG": "/etc/kubeconfig",
    "KND_API_TIMEOUT": "7", "KND_POOL_RESYNC_INTERVAL": "120", "KND_DEV_ROOT": "/host/dev",
    "KND_CDI_ROOT": "/etc/cdi", "KND_RDMA_NETNS_MODE": "exclusive",
    "KND_SWEEP_INTERVAL": "30", "KND_KUBELET_ROOT": "/var/lib/k0s/kubelet",
    "KND_NRI_SOCKET": "/run/nri.sock", "KND_NRI_INDEX": "20", "KND_PLUMBER_TIMEOUT": "50",
    "KND_DEVICE_ATTACH_TIMEOUT": "45s", "KND_HOOK_SHELL": "/usr/bin/dash",
    "KND_HOOK_DIR": "/run/knd-hook",
    "KND_BUS_PORT": "19500", "KND_BUS_HOST": "127.0.0.2", "KND_BUS_DIR": "/run/bus",
}
"""A value other than the default for every variable; a new setting needs one here."""

COMMANDS = ("up", *cli.SERVICES, *cli.TOOLS)


def parse(command: str, env: dict[str, str], *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_to(parser, command, env)
    return parser.parse_args(list(argv))


def test_every_variable_has_a_sample_and_one_setting() -> None:
    names = [s.env for s in settings.TABLE if s.env]
    assert len(names) == len(set(names))
    assert set(names) == set(SAMPLES)
    assert len({s.flag for s in settings.TABLE}) == len(settings.TABLE)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_variable_sets_its_flag_in_every_command_that_reads_it(command: str) -> None:
    mine = [s for s in settings.for_command(command) if s.env]
    base = parse(command, {})
    got = parse(command, {s.env: SAMPLES[s.env] for s in mine if s.env})
    for s in mine:
        assert s.env is not None
        want = settings.parse_env(s, SAMPLES[s.env])
        assert getattr(got, s.dest) == want != getattr(base, s.dest), s.flag
        flags = parse(command, {}, s.flag, *([] if s.boolean else [SAMPLES[s.env]]))
        assert getattr(flags, s.dest) == want, s.flag


def test_knd_up_hands_each_child_exactly_what_it_reads() -> None:
    up = parse("up", {s.env: SAMPLES[s.env] for s in settings.for_command("up") if s.env})
    for service in cli.SERVICES:
        env = supervisor.child_env(up, Path("/run/creds.json"), service)
        child = parse(service, env)
        for s in settings.for_command(service):
            if s.passed and s.flag != "--metrics-address":
                assert getattr(child, s.dest) == getattr(up, s.dest), (service, s.flag)
        assert child.metrics_address == config.metrics_address(up.metrics_address, service)
        theirs = {s.env for s in settings.for_command(service) if s.env}
        knd_vars = {k for k in env if k in settings.by_env()}
        assert knd_vars <= theirs, (service, knd_vars - theirs)
        assert child.bus_creds == Path("/run/creds.json")
    assert "KND_FILTER" not in supervisor.child_env(up, Path("/c"), "plumber")


def test_an_empty_value_that_turns_a_default_off_reaches_the_child() -> None:
    up = parse("up", {}, "--hook-shell=", "--webhook-url=")
    env = supervisor.child_env(up, Path("/c"), "kubelet-gateway")
    assert env["KND_HOOK_SHELL"] == ""
    assert parse("kubelet-gateway", env).hook_shell == ""
    assert "KND_WEBHOOK_URL" not in supervisor.child_env(up, Path("/c"), "plumber")


def test_the_bus_collects_its_heap_sooner_unless_told_otherwise(monkeypatch) -> None:
    up = parse("up", {})
    assert supervisor.child_env(up, Path("/c"))["GOGC"] == supervisor.NATS_GOGC == "50"
    assert "GOGC" not in supervisor.child_env(up, Path("/c"), "plumber")
    monkeypatch.setenv("GOGC", "200")
    assert supervisor.child_env(up, Path("/c"))["GOGC"] == "200"


def test_every_flag_has_help_naming_its_variable() -> None:
    parser = cli.build_parser()
    problems = []
    for name, sub in parser.commands.items():
        assert sub.allow_abbrev is False, name
        known = {s.dest: s for s in settings.for_command(name)}
        for action in sub._actions:
            if action.dest == "help":
                continue
            text = action.help or ""
            if not text.strip():
                problems.append(f"knd {name} {action.option_strings[0]}: no help")
            s = known.get(action.dest)
            if s is not None and s.env and f"[{s.env}]" not in text:
                problems.append(f"knd {name} {action.option_strings[0]}: help hides {s.env}")
    assert problems == []


def test_no_module_reads_a_setting_variable_itself() -> None:
    """A lookup outside the table would be a second default, read by one command only."""
    lookup = re.compile(r"""(environ(\.get)?\s*[\[(]|getenv\()\s*f?["'](KND_|KUBECONFIG)""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "services").rglob("*.py"))
             if p.name != "settings.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if lookup.search(line)]
    assert found == []
    assert lookup.search('raw = os.environ.get("KND_SYSFS_ROOT", "/sys")')


def test_retired_names_are_told_not_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    one_line(knd("up", "--state-dir", str(state), env=_clean_env(KND_RESYNC_INTERVAL="60")),
             2, "KND_RESYNC_INTERVAL is no longer read", "KND_POOL_RESYNC_INTERVAL")
    one_line(knd("discovery", "--resync-interval=5", "--once"), 2,
             "--resync-interval is no longer a flag", "--rescan-interval")
    assert not state.exists()


@pytest.mark.parametrize("flag", sorted(settings.DRANET_ONLY))
def test_dranets_flags_without_an_equivalent_are_told(flag: str) -> None:
    assert not any(flag in (s.flag, *s.aliases) for s in settings.TABLE)
    one_line(knd("up", f"{flag}=x"), 2, f"{flag} is DRANET's, with no knd equivalent")


def test_the_readme_option_table_is_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings: begin -->\n", "<!-- settings: end -->"
    block = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert block == settings.markdown(), (
        "README.md's option table differs from services/common/settings.py; "
        "rewrite it with: .venv/bin/python scripts/readme_settings.py")
