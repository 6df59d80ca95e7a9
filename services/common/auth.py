"""Bus credentials and per-service permissions.

Each service has its own NATS user that may publish and subscribe only on its
own subjects, so a compromised or buggy sidecar cannot forge inventory or ask
the plumber to move interfaces. Credentials are generated per start of the
pod (per ``knd up``) and written with mode 0600.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from schemas import routes
from schemas.subjects import Subjects
from services.common.files import write_atomic

ROLES = routes.ROLES


def inbox_prefix(role: str) -> str:
    """Each role gets its own reply inbox so no user can read another's replies."""
    return routes.inbox(role)


def permissions(role: str, node: str) -> dict:
    """The nats-server permissions of ``role``, from the table of ``schemas.routes``."""
    if role not in ROLES:
        raise KeyError(f"no bus role {role!r}")
    pub: list[str] = []
    sub: list[str] = []
    serves = asks = False
    for r in routes.ROUTES:
        subject = r.full(node)
        if role in r.senders():
            pub.append(subject)
        if role in r.receivers():
            sub.append(subject)
        serves = serves or role in r.servers
        asks = asks or role in r.askers
    if asks:
        sub.append(f"{inbox_prefix(role)}.>")
    perms: dict = {
        "publish": {"allow": pub} if pub else {"deny": [">"]},
        "subscribe": {"allow": sub} if sub else {"deny": [">"]},
    }
    if serves:
        # a server answers on the asker's reply subject, whatever its inbox is called
        perms["allow_responses"] = True
    return perms


@dataclass(frozen=True)
class Credentials:
    url: str
    node: str
    passwords: dict[str, str]

    def user(self, role: str) -> tuple[str, str]:
        if role not in self.passwords:
            raise KeyError(f"no bus credentials for role {role!r}")
        return role, self.passwords[role]


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to a file readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, text, 0o600, fsync=False)


def server_config(node: str, host: str, port: int, passwords: dict[str, str]) -> dict:
    """The nats-server config, for ``knd up`` and ``knd bus-config`` alike: loopback only,
    one user per role with the permissions of :func:`permissions`."""
    return {
        "host": host,
        "port": port,
        "server_name": f"knd-{Subjects(node).root.split('.', 1)[1]}",
        "max_payload": 8 * 1024 * 1024,
        "authorization": {"users": [
            {"user": role, "password": pw, "permissions": permissions(role, node)}
            for role, pw in passwords.items()
        ]},
    }


def generate(bus_dir: Path, node: str, host: str, port: int) -> tuple[Credentials, Path]:
    """Create fresh credentials and a nats-server config; return both paths' contents."""
    import secrets  # here: it loads OpenSSL (hmac), which the services start without

    passwords = {role: secrets.token_urlsafe(24) for role in ROLES}
    creds = Credentials(url=f"nats://{host}:{port}", node=node, passwords=passwords)
    conf = server_config(node, host, port, passwords)
    # the server's own log goes beside its config, not into the agent's output
    conf["log_file"] = str(bus_dir / "nats.log")
    _write_private(bus_dir / "creds.json", json.dumps(
        {"url": creds.url, "node": node, "passwords": passwords}, indent=2))
    conf_path = bus_dir / "nats.conf"
    _write_private(conf_path, json.dumps(conf, indent=2))
    return creds, conf_path


def load(path: Path) -> Credentials:
    try:
        raw = json.loads(Path(path).read_text())
        return Credentials(url=raw["url"], node=raw["node"], passwords=dict(raw["passwords"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"cannot read bus credentials {path}: {exc}") from exc
