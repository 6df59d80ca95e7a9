"""Every setting of every knd command, in one table.

A setting is one flag with one environment variable and one meaning. The table
builds each command's parser (``knd up`` takes every service's settings and
hands each child the ones it reads, as ``KND_*`` variables, the way the
DaemonSet and compose configure the sidecars) and renders the README's option
table; the deploy tests check the chart's and compose's variables against it.
People type flags; containers set variables; both mean the same.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.text import q
from services import providers
from services.common import busconfig, config, features, usage

SERVICES = ("discovery", "publisher", "plumber", "kubelet-gateway")
EVERY = frozenset(SERVICES)


@dataclass(frozen=True)
class Setting:
    flag: str
    env: str | None
    """The variable that sets it (None: a flag only, for a person at a terminal)."""
    default: str | Callable[[str], str | None] | None
    """A string as typed on the command line, or one per command (``command -> str``)."""
    help: str
    commands: frozenset[str]
    """The commands that read it; ``knd up`` takes every service's and passes them on."""
    aliases: tuple[str, ...] = ()
    """Other flags for it: DRANET's names, so DRANET's manifests run unchanged."""
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    boolean: bool = False
    many: bool = False
    """Repeatable (``--only a --only b``): a list."""
    passed: bool = True
    """Whether ``knd up`` takes it and passes it on; False where ``knd up`` decides the
    value for each child itself (the bus credentials it generates)."""
    doc_default: str | None = None
    """The default as the README says it, where it is worked out at run time."""

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def default_for(self, command: str) -> str | None:
        return self.default(command) if callable(self.default) else self.default

    def in_command(self, command: str) -> bool:
        if command == "up":
            return "up" in self.commands or bool(self.passed and self.commands & EVERY)
        return command in self.commands


def _s(flag: str, env: str | None, default: Any, help: str, commands: Iterable[str],
       **kw: Any) -> Setting:
    return Setting(flag, env, default, help, frozenset(commands), **kw)


def _hostname(_: str) -> str:
    return socket.gethostname()


def _bus_port(command: str) -> str:
    return "0" if command == "up" else str(busconfig.DEFAULT_PORT)


DISCOVERY_PLUMBER = ("discovery", "plumber")
API_USERS = ("publisher", "kubelet-gateway")
API_READERS = (*API_USERS, "claim explain", "claim align")
"""``knd claim explain`` reads the cluster when its files hold no slices or classes."""

TABLE: tuple[Setting, ...] = (
    # -- every service --
    _s("--node", "KND_NODE", _hostname, "node name: the pool's name and the bus subjects' "
       "prefix", (*SERVICES, "bus-config"), aliases=("--hostname-override",),
       doc_default="the host name"),
    _s("--state-dir", "KND_STATE_DIR", config.DEFAULT_STATE_DIR, "credentials, "
       "checkpoints and standalone API objects", (*SERVICES, "status", "events"), type=Path),
    _s("--bus-creds", "KND_BUS_CREDS", None, "bus credentials file (default "
       "<state-dir>/bus/creds.json; `knd up` writes its own)", (*SERVICES, "status", "events"),
       type=Path, passed=False),
    _s("--driver-name", "KND_DRIVER_NAME", config.DEFAULT_DRIVER, "DRA driver name and "
       "attribute domain", (*SERVICES, "claim align")),
    _s("--log-level", "KND_LOG_LEVEL", "info", "debug, info, warning or error", SERVICES,
       type=config.log_level),
    _s("--log-json", "KND_LOG_JSON", None, "one JSON object per log line (claim, pod, "
       "device, service fields)", SERVICES, boolean=True),
    _s("--metrics-address", "KND_METRICS_ADDRESS", config.metrics_default,
       'host:port of /metrics, /healthz and /readyz; "off" serves none; for `knd up`, '
       "discovery's, the others' at +1..+3", SERVICES, aliases=("--bind-address",),
       type=usage.address, doc_default="127.0.0.1:9501 (discovery) to :9504 (gateway)"),
    _s("--feature-gates", "KND_FEATURE_GATES", "", "DRANET's feature gates, "
       f"Name=true|false,... ({', '.join(features.GATES)}); checked, knd's behaviour is "
       "fixed", SERVICES, type=features.feature_gates),
    # -- discovery, and what the plumber shares with it --
    _s("--sysfs-root", "KND_SYSFS_ROOT", "/sys", "sysfs to read hardware topology and RDMA "
       "devices from (`knd topology`: also a capture written by --save-sysfs)",
       (*DISCOVERY_PLUMBER, "topology", "claim align")),
    _s("--netns", "KND_NETNS", None, "treat this named network namespace as the node "
       "instead of our own (tests, demos)", DISCOVERY_PLUMBER),
    _s("--filter", "KND_FILTER", None, 'CEL expression choosing the published devices; '
       '"true" publishes every device (default: all but veth host ends)', ("discovery",)),
    _s("--shared-devices", "KND_SHARED_DEVICES", None, "CEL expression (as --filter) "
       "choosing the devices published with allowMultipleAllocations, so several claims "
       "may hold one, each for an ipvlan or macvlan child (DRA consumable capacity; "
       "default: none)", ("discovery",)),
    _s("--rescan-interval", "KND_RESCAN_INTERVAL", "60", "seconds (or a Go duration: 90s, "
       "1m) between discovery's rescans without kernel events", ("discovery",),
       aliases=("--inventory-max-poll-interval",), type=usage.duration),
    _s("--once", None, None, "scan once, print the devices this node would publish (JSON) "
       "and exit; needs no bus", ("discovery",), boolean=True, passed=False),
    _s("--cloud-provider-hint", "KND_CLOUD_PROVIDER_HINT", "", "where device attributes "
       f"and baseline configs come from: {', '.join(providers.HINTS)}; unset: detect the "
       "cloud from its metadata service", DISCOVERY_PLUMBER, type=providers.hint),
    _s("--profile-provider", "KND_PROFILE_PROVIDER", "cloud", "who resolves a claim's "
       "`profile`: cloud (the cloud provider's, if it has one), webhook or none",
       DISCOVERY_PLUMBER, type=providers.profile),
    _s("--webhook-url", "KND_WEBHOOK_URL", "", "the webhook provider: http://host:port, "
       "https://host:port or unix:///path", DISCOVERY_PLUMBER, type=providers.url),
    _s("--webhook-timeout", "KND_WEBHOOK_TIMEOUT", "10", "seconds one webhook request may "
       "take", DISCOVERY_PLUMBER, type=usage.timeout),
    _s("--metadata-url", "KND_METADATA_URL", "", "the cloud metadata service's address "
       "instead of the cloud's own (169.254.169.254, metadata.google.internal, "
       "100.100.100.200)", DISCOVERY_PLUMBER, type=providers.url),
    _s("--metadata-timeout", "KND_METADATA_TIMEOUT", "5", "seconds to detect the cloud "
       "(its metadata is then read for up to three times as long)", DISCOVERY_PLUMBER,
       type=usage.timeout),
    # -- publisher and gateway: the Kubernetes API --
    _s("--standalone", "KND_STANDALONE", None, "no cluster: API objects are JSON files "
       "under <state-dir>/api", API_USERS, boolean=True),
    _s("--kubeconfig", "KUBECONFIG", None, "kubeconfig of the cluster (default: "
       "in-cluster service account)", API_READERS),
    _s("--api-timeout", "KND_API_TIMEOUT", "10", "seconds one API call may take",
       API_READERS, type=usage.timeout),
    _s("--pool-resync-interval", "KND_POOL_RESYNC_INTERVAL", "300", "seconds (or a Go "
       "duration) between the publisher's re-reads of its pool from the API, repairing "
       "what others changed (0: never)", ("publisher",), type=usage.duration),
    # -- plumber --
    _s("--dev-root", "KND_DEV_ROOT", "/dev", "where the RDMA device nodes live "
       "(infiniband/uverbsN...)", ("plumber",)),
    _s("--cdi-root", "KND_CDI_ROOT", "/var/run/cdi", "folder for the per-claim CDI spec "
       "files (RDMA devices)", ("plumber",)),
    _s("--rdma-netns-mode", "KND_RDMA_NETNS_MODE", "auto", "RDMA subsystem netns mode; "
       "auto asks `rdma system show`", ("plumber",), choices=("auto", "shared", "exclusive")),
    _s("--sweep-interval", "KND_SWEEP_INTERVAL", "10", "seconds between checks for "
       "vanished pod network namespaces (0: never)", ("plumber",), type=usage.duration),
    # -- kubelet gateway --
    _s("--kubelet-root", "KND_KUBELET_ROOT", "/var/lib/kubelet", "kubelet's root dir: the "
       "DRA and registration sockets go in plugins/ and plugins_registry/",
       ("kubelet-gateway",), aliases=("--kubelet-root-dir",)),
    _s("--nri-socket", "KND_NRI_SOCKET", "/var/run/nri/nri.sock", "the container "
       "runtime's NRI socket", ("kubelet-gateway",)),
    _s("--nri-index", "KND_NRI_INDEX", "10", "two-digit NRI plugin index (ordering among "
       "plugins)", ("kubelet-gateway",), type=usage.plugin_index),
    _s("--device-attach-timeout", "KND_DEVICE_ATTACH_TIMEOUT", "30", "seconds (or a Go "
       "duration, at most 60) a pod's attach may go on after RunPodSandbox had to answer "
       "the runtime; its containers wait for it (0: fail the sandbox instead)",
       ("kubelet-gateway",), type=usage.attach_timeout),
    _s("--hook-shell", "KND_HOOK_SHELL", "/bin/sh", "the node's shell that runs the hook "
       "holding a container until its pod's devices are attached (empty: no hook; the "
       "container's creation fails until then and the kubelet retries)",
       ("kubelet-gateway",), type=usage.hook_shell),
    _s("--hook-dir", "KND_HOOK_DIR", None, "host folder where the hook reads how a pod's "
       "attach ended (the same path on the node and in the gateway)", ("kubelet-gateway",),
       type=Path, doc_default="<state-dir>/attach"),
    _s("--plumber-timeout", "KND_PLUMBER_TIMEOUT", "40", "seconds to wait for the plumber "
       "on prepare and unprepare", ("kubelet-gateway",), type=usage.timeout),
    # -- the bus: `knd up`'s embedded one, or the DaemonSet's from `knd bus-config` --
    _s("--bus-port", "KND_BUS_PORT", _bus_port, "loopback port of the bus (`knd up`: 0, "
       "any free port)", ("up", "bus-config"), type=usage.port,
       doc_default="0 (`knd up`), 9500 (`knd bus-config`)"),
    _s("--only", None, None, "run only this service (repeatable)", ("up",), choices=SERVICES,
       many=True),
    _s("--bus-host", "KND_BUS_HOST", "127.0.0.1", "loopback address the bus listens on",
       ("bus-config",)),
    _s("--out", "KND_BUS_DIR", busconfig.DEFAULT_DIR, "folder to fill with the bus's config and "
       "each service's credentials", ("bus-config",), type=Path),
)

RETIRED = {
    "KND_RESYNC_INTERVAL": "it meant two things; set KND_RESCAN_INTERVAL (discovery's "
                           "rescans, 60 s) or KND_POOL_RESYNC_INTERVAL (the publisher's "
                           "re-reads of its pool, 300 s)",
    "--resync-interval": "it meant two things; use --rescan-interval (discovery's rescans) "
                         "or --pool-resync-interval (the publisher's re-reads of its pool)",
}
"""Names knd no longer reads, and what to use: an old manifest gets told, not ignored."""


def for_command(command: str) -> list[Setting]:
    return [s for s in TABLE if s.in_command(command)]


def by_env() -> dict[str, Setting]:
    return {s.env: s for s in TABLE if s.env}


def parse_env(s: Setting, raw: str) -> Any:
    """The setting's value from its variable set to ``raw``, checked as its flag's
    would be, or a usage error naming the variable."""
    assert s.env is not None
    if s.boolean:
        return usage.parse_flag(s.env, raw)
    try:
        value = s.type(raw) if s.type else raw
    except (argparse.ArgumentTypeError, ValueError) as exc:
        reason = str(exc)
        for quoted in (repr(raw), q(raw)):  # the checks name the value; we name it first
            reason = reason.removeprefix(f"{quoted}: ")
        raise usage.UsageError(f"{s.env}={q(raw)}: {reason}") from None
    if s.choices and value not in s.choices:
        raise usage.UsageError(f"{s.env}={q(raw)}: expected one of {', '.join(s.choices)}")
    return value


def add_to(parser: argparse.ArgumentParser, command: str,
           environ: Mapping[str, str] | None = None) -> None:
    """``command``'s settings as flags of ``parser``, defaulting to their variables."""
    environ = os.environ if environ is None else environ
    for name, why in RETIRED.items():
        if name.startswith("KND_") and name in environ:
            raise usage.UsageError(f"{name} is no longer read: {why}")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in for_command(command):
        title = _group_title(s, command)
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        default = (parse_env(s, environ[s.env]) if s.env and s.env in environ
                   else s.default_for(command))
        names = (s.flag, *s.aliases)
        shown = f" [{s.env}]" if s.env else ""
        if s.aliases:
            shown = f" ({', '.join(s.aliases)}: DRANET's name){shown}"
        if s.boolean:
            group.add_argument(*names, dest=s.dest, action="store_true", default=bool(default),
                               help=s.help + shown)
            continue
        if s.many:
            group.add_argument(*names, dest=s.dest, action="append", default=None,
                               choices=s.choices, metavar=s.dest.upper(),
                               help=f"{s.help}: {', '.join(s.choices or ())}{shown}")
            continue
        described = f" (default {default})" if isinstance(default, str) and default else ""
        group.add_argument(*names, dest=s.dest, default=default, type=s.type or str,
                           choices=s.choices, help=s.help + described + shown)


def _group_title(s: Setting, command: str) -> str:
    if command != "up" or "up" in s.commands:
        return "options"
    if s.commands >= EVERY:
        return "every service"
    return " and ".join(c for c in SERVICES if c in s.commands)


DRANET_ONLY = {
    "--hook-path": "knd's hook is the node's own shell (--hook-shell, empty for no hook) "
                   "waiting on files in --hook-dir: there is no hook binary to install",
    "--db-path": "the plumber's checkpoint is always <state-dir>/plumber/checkpoint.db",
    "--inventory-min-poll-interval": "knd does not poll: netlink events trigger rescans",
    "--inventory-poll-burst": "knd does not poll: netlink events trigger rescans",
    "--move-ib-interfaces": "knd always moves an IPoIB netdev with its device",
}
"""DRANET's flags that knd has no use for, and why: a DRANET command line gets told."""


def retired_flag(argv: Iterable[str]) -> str | None:
    """A usage error's text for the first retired flag (or DRANET-only one) in ``argv``,
    or None."""
    for word in argv:
        flag = word.split("=", 1)[0]
        if flag in RETIRED:
            return f"{flag} is no longer a flag: {RETIRED[flag]}"
        if flag in DRANET_ONLY:
            return f"{flag} is DRANET's, with no knd equivalent: {DRANET_ONLY[flag]}"
    return None


def show(value: Any) -> str:
    """A parsed value as its variable spells it."""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ",".join(f"{k}={'true' if v else 'false'}" for k, v in value.items())
    return str(value)


def child_env(args: argparse.Namespace, service: str) -> dict[str, str]:
    """The variables ``knd up`` gives the child running ``service``: each setting that
    service reads, as ``knd up`` was given it (unset ones stay unset)."""
    env = {}
    for s in TABLE:
        if s.env and s.passed and service in s.commands:
            value = getattr(args, s.dest, None)
            # "" is unset, unless it turns off what the default turns on (--hook-shell=)
            if value is not None and (value != "" or s.default_for(service)):
                env[s.env] = show(value)
    return env


def markdown() -> str:
    """The README's option table."""
    rows = ["| option | variable | default | read by | meaning |", "|---|---|---|---|---|"]
    for s in TABLE:
        flags = ", ".join(f"`{f}`" for f in (s.flag, *s.aliases))
        default = s.doc_default or (f"`{s.default}`" if isinstance(s.default, str)
                                    and s.default else "")
        others = [c for c in ("up", *sorted(s.commands - EVERY - {"up"})) if c in s.commands]
        who = ", ".join((["every service"] if s.commands >= EVERY
                         else [c for c in SERVICES if c in s.commands]) + others)
        meaning = s.help + (f": {', '.join(f'`{c}`' for c in s.choices)}" if s.choices else "")
        meaning = meaning.replace("|", "&#124;").replace("<", "&lt;")
        rows.append(f"| {flags} | {f'`{s.env}`' if s.env else ''} | {default} | {who} | "
                    f"{meaning} |")
    return "\n".join(rows) + "\n"
