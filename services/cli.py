"""The ``knd`` command: ``knd up`` runs the whole agent; ``knd <service>`` runs one.

Services are found by name; one not built yet is simply absent from ``knd up``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from services.common import config, logs, runner

SERVICES = {
    "discovery": "services.discovery",
    "publisher": "services.publisher",
    "plumber": "services.plumber",
    "kubelet-gateway": "services.kubelet_gateway",
}


def load_service(name: str) -> ModuleType | None:
    """The service's module if it provides the CLI contract (add_arguments, run)."""
    try:
        mod = importlib.import_module(SERVICES[name])
    except ImportError:
        return None
    if hasattr(mod, "add_arguments") and hasattr(mod, "run"):
        return mod
    return None


def available_services() -> list[str]:
    return [name for name in SERVICES if load_service(name) is not None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from services import supervisor

    up = sub.add_parser("up", help="run the bus and every service, supervised")
    config.add_common(up)
    supervisor.add_arguments(up)
    from services import demo

    demo_p = sub.add_parser("demo", help="show the whole path on this machine (needs root)")
    demo.add_arguments(demo_p)
    for name in SERVICES:
        mod = load_service(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        config.add_common(p)
        mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from services import demo

        logs.setup("warning", False, service="demo")
        demo.run(args)
        return
    logs.setup(args.log_level, args.log_json, service=args.command)
    if args.command == "up":
        from services import supervisor

        runner.run(lambda: supervisor.run(args))
        return
    mod = load_service(args.command)
    assert mod is not None
    try:
        runner.run(lambda: mod.run(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
