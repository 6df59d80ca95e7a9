"""DRANET's cmd/dranet flags on knd: aliases of knd's own flags, the provider flags, and
the mistakes they can hold, each one line before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import cli, supervisor
from tests.test_cli_errors import _clean_env, knd, one_line


def test_dranet_names_are_aliases_of_knd_flags() -> None:
    args = cli.build_parser("up").parse_args([
        "up", "--hostname-override", "node-7", "--bind-address", ":9177",
        "--kubelet-root-dir", "/srv/kubelet", "--inventory-max-poll-interval", "1m30s",
        "--feature-gates", "PersistentResourceSliceAttributes=true",
        "--cloud-provider-hint", "gce", "--profile-provider", "webhook",
        "--webhook-url", "unix:///run/hook.sock", "--filter", "true",
        "--kubeconfig", "/etc/kubeconfig"])
    assert args.node == "node-7" and args.metrics_address == ":9177"
    assert args.kubelet_root == "/srv/kubelet" and args.rescan_interval == 90.0
    assert args.cloud_provider_hint == "GCE" and args.profile_provider == "webhook"
    env = supervisor.child_env(args, Path("/tmp/creds.json"), "discovery")
    assert env["KND_NODE"] == "node-7" and "KND_KUBELET_ROOT" not in env  # not discovery's
    gateway = supervisor.child_env(args, Path("/tmp/creds.json"), "kubelet-gateway")
    assert gateway["KND_KUBELET_ROOT"] == "/srv/kubelet" and "KND_FILTER" not in gateway
    assert env["KND_RESCAN_INTERVAL"] == "90" and env["KND_CLOUD_PROVIDER_HINT"] == "GCE"
    assert env["KND_PROFILE_PROVIDER"] == "webhook"
    assert env["KND_WEBHOOK_URL"] == "unix:///run/hook.sock"


@pytest.mark.parametrize("service", ["discovery", "plumber"])
def test_services_take_the_provider_flags(service: str) -> None:
    args = cli.build_parser(service).parse_args([
        service, "--cloud-provider-hint", "NONE", "--webhook-url", "http://127.0.0.1:8080",
        "--metadata-url", "http://127.0.0.1:1", "--hostname-override", "n"])
    assert (args.cloud_provider_hint, args.webhook_url, args.node) == (
        "NONE", "http://127.0.0.1:8080", "n")


def test_discovery_takes_go_durations() -> None:
    args = cli.build_parser("discovery").parse_args(
        ["discovery", "--inventory-max-poll-interval", "500ms"])
    assert args.rescan_interval == 0.5


@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["--cloud-provider-hint", "webhook"], {}, "webhook needs --webhook-url"),
    ([], {"KND_PROFILE_PROVIDER": "webhook"}, "--profile-provider: webhook needs --webhook-url"),
    (["--cloud-provider-hint", "DigitalOcean"], {}, "expected one of AWS, GCE, AZURE"),
    (["--webhook-url", "ftp://x"], {}, "expected http://host:port"),
    (["--webhook-url", "unix://relative.sock"], {}, "absolute path"),
    (["--feature-gates", "DRAListTypeAttributes=true"], {}, "not supported by knd"),
    (["--feature-gates", "Nope=true"], {}, "unknown feature gate"),
    (["--inventory-max-poll-interval", "soon"], {}, "expected seconds (60) or a duration"),
    (["--webhook-timeout", "0"], {}, "expected seconds, more than 0"),
])
def test_provider_flag_mistakes_are_one_line(tmp_path: Path, argv: list[str], env: dict,
                                             needle: str) -> None:
    res = knd("up", "--state-dir", str(tmp_path / "state"), *argv, env=_clean_env(**env))
    one_line(res, 2, needle)
    assert not (tmp_path / "state").exists()
