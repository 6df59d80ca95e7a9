"""``knd up``: the embedded bus plus every service as a supervised child process.

Children get their settings through ``KND_*`` environment variables, the same
way the DaemonSet's sidecars and compose get theirs, so there is one
configuration path. A child that dies is restarted with exponential backoff;
SIGTERM / Ctrl-C stops the services first, then the bus.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
from anyio.abc import Process

from services.common import config, natsd, usage

log = logging.getLogger("knd.up")

MIN_BACKOFF, MAX_BACKOFF, STABLE_AFTER = 0.5, 30.0, 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from services.cli import SERVICES

    p.add_argument("--standalone", action="store_true", default=usage.env_flag("STANDALONE"),
                   help="no cluster: write API objects as JSON files under <state-dir>/api "
                        "[KND_STANDALONE]")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                   help="kubeconfig of the cluster (default: in-cluster) [KUBECONFIG]")
    p.add_argument("--sysfs-root", default=config.env("SYSFS_ROOT", "/sys"),
                   help="sysfs to read hardware topology from [KND_SYSFS_ROOT]")
    p.add_argument("--filter", default=os.environ.get("KND_FILTER"),
                   help='device filter (CEL); "true" publishes every device [KND_FILTER]')
    p.add_argument("--netns", default=os.environ.get("KND_NETNS"),
                   help="treat this named netns as the node (tests, demos) [KND_NETNS]")
    p.add_argument("--kubelet-root", default=config.env("KUBELET_ROOT", "/var/lib/kubelet"),
                   help="kubelet's root dir, where the DRA and registration sockets go "
                        "[KND_KUBELET_ROOT]")
    p.add_argument("--nri-socket", default=config.env("NRI_SOCKET", "/var/run/nri/nri.sock"),
                   help="the container runtime's NRI socket [KND_NRI_SOCKET]")
    p.add_argument("--cdi-root", default=config.env("CDI_ROOT", "/var/run/cdi"),
                   help="where the plumber writes CDI specs for kubelet [KND_CDI_ROOT]")
    p.add_argument("--bus-port", type=int, default=config.env("BUS_PORT", "0"),
                   help="loopback port of the embedded bus (0: any free port) [KND_BUS_PORT]")
    p.add_argument("--only", action="append", default=None, choices=list(SERVICES),
                   metavar="SERVICE",
                   help=f"run only this service (repeatable): {', '.join(SERVICES)}")


def child_env(args: argparse.Namespace, creds_path: Path,
              service: str | None = None) -> dict[str, str]:
    """The environment of one child. Each service gets its own ``KND_METRICS_ADDRESS``
    (``--metrics-address`` is discovery's; the others follow at +1..+3), never one
    shared address that only the first could bind."""
    env = dict(os.environ)
    env.pop("KND_METRICS_ADDRESS", None)
    settings = {
        "KND_NODE": args.node,
        "KND_STATE_DIR": str(args.state_dir),
        "KND_BUS_CREDS": str(creds_path),
        "KND_DRIVER_NAME": args.driver_name,
        "KND_LOG_LEVEL": args.log_level,
        "KND_LOG_JSON": "1" if args.log_json else "",
        "KND_SYSFS_ROOT": args.sysfs_root,
        "KND_KUBELET_ROOT": args.kubelet_root,
        "KND_NRI_SOCKET": args.nri_socket,
        "KND_CDI_ROOT": args.cdi_root,
        "KND_STANDALONE": "1" if args.standalone else "",
    }
    for key, value in (("KND_FILTER", args.filter), ("KND_NETNS", args.netns),
                       ("KUBECONFIG", args.kubeconfig)):
        if value:
            settings[key] = value
    if service is not None:
        settings["KND_METRICS_ADDRESS"] = config.metrics_address(args.metrics_address, service)
    env.update(settings)
    return env


class Child:
    """One supervised process: restarted with backoff whenever it exits."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.restarts = 0
        self.proc: Process | None = None

    async def supervise(self, started: anyio.Event | None = None) -> None:
        backoff = MIN_BACKOFF
        while True:
            began = time.monotonic()
            self.proc = await anyio.open_process(
                [sys.executable, "-m", "services.common.pdeathsig", str(os.getpid()),
                 *self.argv],
                env=self.env, stdin=subprocess.DEVNULL, stdout=None, stderr=None,
                start_new_session=True)
            if started is not None:
                started.set()
                started = None
            try:
                code = await self.proc.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop()
            if time.monotonic() - began > STABLE_AFTER:
                backoff = MIN_BACKOFF
            self.restarts += 1
            log.warning("%s exited with %s; restarting in %.1fs", self.name, code, backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(5):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()


async def run(args: argparse.Namespace) -> None:
    from services.cli import available_services

    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds, nats_argv = natsd.prepare(state_dir, args.node, args.bus_port)
    creds_path = state_dir / "bus" / "creds.json"
    env = child_env(args, creds_path)
    names = [n for n in available_services() if not args.only or n in args.only]
    log.info("knd up: node %s, bus %s, services %s%s; metrics %s", args.node, creds.url,
             ", ".join(names), " (standalone)" if args.standalone else "",
             ", ".join(f"{n} {config.metrics_address(args.metrics_address, n)}"
                       for n in names))
    bus = Child("nats-server", nats_argv, env)
    services = [Child(n, [sys.executable, "-m", "services.cli", n],
                      child_env(args, creds_path, n)) for n in names]
    # The bus runs shielded so that, on SIGTERM, it outlives the services and they
    # can flush their last messages; it is stopped explicitly once they are gone.
    bus_scope = anyio.CancelScope(shield=True)

    async def run_bus() -> None:
        with bus_scope:
            await bus.supervise()

    async with anyio.create_task_group() as outer:
        outer.start_soon(run_bus)
        try:
            host, port = creds.url.rsplit("/", 1)[1].split(":")
            await anyio.to_thread.run_sync(natsd.wait_listening, host, int(port))
            async with anyio.create_task_group() as inner:
                for child in services:
                    inner.start_soon(child.supervise)
        finally:
            bus_scope.cancel()
