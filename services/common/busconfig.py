"""bus-config: write the bus configuration and one credentials file per service.

``knd up`` generates the bus credentials itself; in a DaemonSet pod (and under
compose) the bus and each service run in their own container, so an init
container runs ``knd bus-config`` once per pod start and the containers mount
only their own part of the folder it fills::

    <out>/nats/nats.conf          the nats-server config: every user and its permissions
    <out>/<role>/creds.json       {url, node, passwords: {<role>: ...}}: one role only

Roles are those of :mod:`services.common.auth` (``gateway`` is the
kubelet-gateway's). A container that mounts ``<out>/publisher`` cannot read
the plumber's or the gateway's password, so it cannot ask the plumber to move
interfaces. Files are 0640 and folders 0750: the containers share the group
(``fsGroup`` in Kubernetes, ``group_add`` under compose), and the mounts, not
the file modes, keep the roles apart. Fresh passwords on every run.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path

from services.common import auth
from services.common.files import write_atomic

DEFAULT_DIR = "/run/knd/bus"
DEFAULT_PORT = 9500
"""Beside the services' metrics ports (9501-9504); away from NATS's usual 4222,
since with hostNetwork the bus shares the node's loopback."""
FILE_MODE, DIR_MODE = 0o640, 0o750


def add_arguments(p: argparse.ArgumentParser) -> None:
    """None of its own: ``--node``, ``--out``, ``--bus-host`` and ``--bus-port`` are in
    services.common.settings."""


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a FILE_MODE file (whatever the umask)."""
    write_atomic(path, text, FILE_MODE, fsync=False)


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def write(out: Path, node: str, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT) -> auth.Credentials:
    """Fill ``out`` with fresh credentials; return them (every role)."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the bus listens on loopback only, not {host}")
    if not 0 < port < 65536:
        raise ValueError(f"bus port {port} is out of range (1..65535)")
    import secrets  # here: it loads OpenSSL (hmac), which the services start without

    url_host = f"[{host}]" if ":" in host else host
    creds = auth.Credentials(url=f"nats://{url_host}:{port}", node=node,
                             passwords={r: secrets.token_urlsafe(24) for r in auth.ROLES})
    out.mkdir(parents=True, exist_ok=True)  # an emptyDir's root is not ours to chmod
    for role in auth.ROLES:
        _write(_folder(out / role) / "creds.json", json.dumps(
            {"url": creds.url, "node": node, "passwords": {role: creds.passwords[role]}},
            indent=2))
    _write(_folder(out / "nats") / "nats.conf",
           json.dumps(auth.server_config(node, host, port, creds.passwords), indent=2))
    return creds


def main(args: argparse.Namespace) -> int:
    try:
        creds = write(args.out, args.node, args.bus_host, args.bus_port)
    except (ValueError, OSError) as exc:
        print(f"knd bus-config: {exc}", file=sys.stderr)
        return 1
    print(f"knd bus-config: {creds.url} for node {creds.node}: {args.out}/nats/nats.conf, "
          f"{args.out}/<role>/creds.json for {', '.join(auth.ROLES)}")
    return 0
