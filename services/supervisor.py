"""``knd up``: the embedded bus plus every service as a supervised child process.

This module plans: it takes the agent locks, writes the bus config and works out
each child's command and environment, then hands the plan to services.keeper by
replacing this process with it (same pid, the locks' files inherited), so what
planning loaded is not kept for the agent's life.

Children get their settings through ``KND_*`` environment variables, the same
way the DaemonSet's sidecars and compose get theirs, so there is one
configuration path. Before it changes anything ``knd up`` takes the state dir's
and the kubelet root's agent locks (services.common.agentlock) and passes them to
its services, so a second agent on the same node refuses to start.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from services.common import agentlock, config, natsd, settings
from services.keeper import Plan, Spec

log = logging.getLogger("knd.up")

NATS_GOGC = "50"
"""The bus's Go heap grows to half its live size before a collection instead of all
of it: over 150 attach cycles nats-server grew 0.4 MB instead of 2.1 MB (17.6 MB at
the end instead of 19.6), for no idle CPU that 60 s could measure."""


def child_env(args: argparse.Namespace, creds_path: Path,
              service: str | None = None) -> dict[str, str]:
    """The environment of one child (``service``; None: the nats-server): ours, less
    every knd setting, plus the settings that service reads as ``knd up`` was given
    them. Each service gets its own ``KND_METRICS_ADDRESS`` (``--metrics-address`` is
    discovery's; the others follow at +1..+3), never one that only the first could
    bind."""
    env = {k: v for k, v in os.environ.items() if k not in settings.by_env()}
    if service is None:
        env.setdefault("GOGC", NATS_GOGC)
    else:
        env.update(settings.child_env(args, service))
        env["KND_BUS_CREDS"] = str(creds_path)
        env["KND_METRICS_ADDRESS"] = config.metrics_address(args.metrics_address, service)
    return env


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


def plan(args: argparse.Namespace, state_dir: Path, locks: tuple[int, ...]) -> Plan:
    """The bus (its config written now) and the services ``knd up`` runs."""
    from services.cli import available_services

    creds, nats_argv = natsd.prepare(state_dir, args.node, args.bus_port)
    creds_path = state_dir / "bus" / "creds.json"
    names = [n for n in available_services() if not args.only or n in args.only]
    log.info("knd up: node %s, bus %s, services %s%s; metrics %s", args.node, creds.url,
             ", ".join(names), " (standalone)" if args.standalone else "",
             ", ".join(f"{n} {config.metrics_address(args.metrics_address, n)}"
                       for n in names))
    host, port = creds.url.rsplit("/", 1)[1].split(":")
    services = [Spec(n, [sys.executable, "-m", "services.cli", n],
                     {**child_env(args, creds_path, n),
                      agentlock.FDS_ENV: ",".join(map(str, locks))},
                     keep_fds=locks, last_words=True) for n in names]
    return Plan(bus=Spec("nats-server", nats_argv, child_env(args, creds_path)),
                bus_address=(host, int(port)), services=services,
                log_level=args.log_level, log_json=args.log_json)


def start(args: argparse.Namespace, argv: list[str]) -> NoReturn:
    """Plan, then become the keeper. Raises Refused (one line) when another agent holds
    this node; returns never."""
    state_dir = Path(args.state_dir)
    with _locked(state_dir, Path(args.kubelet_root), args.driver_name) as locks:
        the_plan = plan(args, state_dir, locks)
        for fd in locks:
            os.set_inheritable(fd, True)
        carrier = os.memfd_create("knd-up-plan", 0)  # inherited: no MFD_CLOEXEC
        data = the_plan.encode()
        while data:
            data = data[os.write(carrier, data):]
        os.lseek(carrier, 0, os.SEEK_SET)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "services.keeper", str(carrier),
                                  "knd", *argv])
    raise AssertionError("unreachable")  # pragma: no cover
