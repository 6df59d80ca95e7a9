"""The ``knd`` command: ``knd up`` runs the whole agent; ``knd <service>`` runs one;
``knd <tool>`` (demo, events, status, topology) helps a person look at a node.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import NoReturn

from services.common import lean, logs, runner, settings, usage

SERVICES = {
    "discovery": "services.discovery",
    "publisher": "services.publisher",
    "plumber": "services.plumber",
    "kubelet-gateway": "services.kubelet_gateway",
}

HELP = {
    "up": "run the bus and every service, supervised",
    "discovery": "the node's network devices and their hardware topology, as an inventory",
    "publisher": "the only writer of the node's ResourceSlices",
    "plumber": "moves allocated interfaces into pods and gives them back",
    "kubelet-gateway": "the kubelet DRA gRPC plugin and the container runtime's NRI plugin",
    "demo": "the whole path on one machine: a claim into a pod and back",
    "events": "follow what happens on the node, one line per event",
    "status": "one screen about a node: services, bus, devices, pods, slices",
    "topology": "which NIC sits next to which GPU (PIX/PXB/PHB/NODE/SYS), from sysfs",
    "claim": "explain: which devices each claim would get on each node, and why not",
    "bus-config": "write the bus configuration and one credentials file per service",
}
"""Each command's line in ``knd --help``: listing the commands loads none of them (their
modules import nats, pyroute2, grpc...: most of a second)."""

TOOLS = {
    "demo": "services.demo",
    "events": "services.tools.events",
    "status": "services.tools.status",
    "topology": "services.tools.topology",
    "claim": "services.tools.claim",
    "bus-config": "services.common.busconfig",
}
"""Tools expose ``add_arguments(parser)`` and ``main(args) -> int`` (synchronous)."""


def _load(path: str, *attrs: str) -> ModuleType | None:
    try:
        mod = importlib.import_module(path)
    except ImportError:
        return None
    return mod if all(hasattr(mod, a) for a in attrs) else None


def load_service(name: str) -> ModuleType | None:
    """The service's module if it provides the CLI contract (``run(args)``)."""
    return _load(SERVICES[name], "run")


def available_services() -> list[str]:
    return [name for name in SERVICES if load_service(name) is not None]


def build_parser(only: str | None = None) -> usage.Parser:
    """The whole command line, or with ``only`` just that command's: every process
    ``knd up`` starts parses its own flags, and importing all the others' modules
    (pyroute2, grpc, kubernetes) cost each of them most of a second."""
    parser = usage.Parser(prog="knd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=usage.Parser)
    parser.commands = sub.choices
    for name in ("up", *SERVICES, *TOOLS):
        if only not in (None, name):
            continue
        p = sub.add_parser(name, help=HELP[name])
        settings.add_to(p, name)
        if name in TOOLS and only == name:  # a tool's own flags: only for that tool
            mod = _load(TOOLS[name], "add_arguments", "main")
            if mod is not None:
                mod.add_arguments(p)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed and checked (:func:`usage.preflight`); a mistake exits with one line."""
    known = {"up", *SERVICES, *TOOLS}
    only = argv[0] if argv and argv[0] in known else None  # else: full help / usage error
    try:
        retired = settings.retired_flag(argv)
        if retired:
            raise usage.UsageError(retired)
        parser = build_parser(only)
        args, extra = parser.parse_known_args(argv)
        if extra:  # the sub-command's own parser says so, with its own name
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
        usage.preflight(args)
    except (usage.UsageError, usage.Refused) as exc:
        prog = f"knd {only}" if only else "knd"
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(exc.status)
    return args


def _up(args: argparse.Namespace, argv: list[str]) -> NoReturn:
    """``knd up``: plans, then becomes the keeper (services.supervisor, services.keeper);
    what stops it before that is one line and status 1."""
    import logging

    from services import supervisor

    try:
        supervisor.start(args, argv)
    except runner.Refused as exc:
        logging.getLogger("knd.up").error("knd up: %s", exc)
    except Exception as exc:  # a bug report needs the traceback
        logging.getLogger("knd.up").error("knd up: failed: %s", runner.summary(exc),
                                          exc_info=exc)
    sys.exit(1)


def tls_unused(args: argparse.Namespace) -> str | None:
    """Why a service process needs no TLS (None when it does): it reads no API server
    (discovery, the plumber, or --standalone) and no https webhook or metadata URL."""
    if args.command in settings.API_USERS and not args.standalone:
        return None
    urls = (getattr(args, "webhook_url", ""), getattr(args, "metadata_url", ""))
    if any(str(u).startswith("https:") for u in urls):
        return None
    talks = "no API server (--standalone)" if args.command in settings.API_USERS else \
        "no API server"
    return f"knd {args.command} talks to {talks} and no https webhook or metadata URL"


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command in TOOLS:
        mod = _load(TOOLS[args.command], "add_arguments", "main")
        assert mod is not None
        logs.setup("warning", False, service=args.command)
        sys.exit(mod.main(args))
    logs.setup(args.log_level, args.log_json, service=args.command)
    if args.command == "up":
        _up(args, sys.argv[1:] if argv is None else argv)
    why = tls_unused(args)
    if why:
        lean.without_tls(why)
    mod = load_service(args.command)
    assert mod is not None
    once = getattr(mod, "once", None)
    if once is not None and getattr(args, "once", False):
        sys.exit(once(args))  # a one-shot report, not a service: done is done
    runner.run(lambda: mod.run(args), args.command)


if __name__ == "__main__":
    main()
