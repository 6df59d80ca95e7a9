"""Every bus user, against the real nats-server: each subject the table of
``schemas.routes`` gives its role works, every other subject of the table (and a few
outside it) is refused, publishing and subscribing alike."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client

from schemas import routes
from schemas.base import encode
from schemas.events import ClaimUnprepared
from schemas.subjects import Subjects
from services.common import auth, busconfig
from services.common import bus as busmod
from services.common.auth import Credentials
from tests.conftest import NODE

pytestmark = pytest.mark.anyio

ROOT = Subjects(NODE).root
VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)
SETTLE = 0.3
"""Seconds for a message that should not come to have had its chance."""


def concrete(subject: str) -> str:
    """One subject a wildcard row stands for."""
    return ".".join("x1" if t == "*" else t for t in subject.split("."))


TABLE = {concrete(r.full(NODE)): r for r in routes.ROUTES}
OUTSIDE = [f"{ROOT}.events.claim.forged", f"{ROOT}.inventory.put", f"{ROOT}.plumber.wipe",
           "knd.other_node.inventory.snapshot", "knd.other_node.events.device.added",
           "$SRV.PING.nosuch", "$SRV.SCHEMA.plumber", "foo.bar"]
WILDCARDS = [">", f"{ROOT}.>", "knd.*.events.>", "$SRV.>", f"{ROOT}.plumber.*"]


class User:
    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.got: list[str] = []

    def refused(self, what: str) -> set[str]:
        """Subjects the server refused, lower case as nats-py reports them."""
        return {m.group(2) for e in self.errors if (m := VIOLATION.search(e))
                and m.group(1).lower() == what}

    async def record(self, msg) -> None:
        self.got.append(msg.subject)


@asynccontextmanager
async def users(creds: Credentials, *roles: str) -> AsyncIterator[dict[str, User]]:
    out: dict[str, User] = {}
    try:
        for role in dict.fromkeys(roles):
            errors: list[str] = []

            async def on_error(exc: Exception, errors: list[str] = errors) -> None:
                errors.append(str(exc))

            name, password = creds.user(role)
            nc = await busmod.open_client(creds.url, user=name, password=password,
                                    inbox_prefix=auth.inbox_prefix(role).encode(),
                                    error_cb=on_error, allow_reconnect=False)
            out[role] = User(nc, errors)
        yield out
    finally:
        for u in out.values():
            await u.nc.close()


async def settle(*us: User) -> None:
    """Every refusal of what ``us`` did so far is recorded once each flush returns (the
    server answers in order, and nats.py awaits the error callback before it reads the
    PONG). SETTLE stays a bounded wait on purpose: the tests assert that nothing *else*
    is delivered, and a message the server forwarded may still be on its way to a
    witness's callback."""
    for u in us:
        await busmod.flush(u.nc)
    await anyio.sleep(SETTLE)


def lower(subjects: set[str]) -> set[str]:
    return {s.lower() for s in subjects}


def asks(role: str) -> bool:
    return any(role in r.askers for r in routes.ROUTES)


@pytest.mark.parametrize("role", routes.ROLES)
async def test_publishes_only_what_its_role_sends(bus: Credentials, role: str) -> None:
    witnesses = {s: r.receivers()[0] for s, r in TABLE.items()}
    async with users(bus, role, *witnesses.values()) as u:
        for subject, witness in witnesses.items():
            await u[witness].nc.subscribe(subject, cb=u[witness].record)
        await settle(*u.values())
        me = u[role]
        for subject in [*TABLE, *OUTSIDE]:
            await me.nc.publish(subject, b"{}")
        await settle(me)
        allowed = {s for s, r in TABLE.items() if role in r.senders()}
        with anyio.fail_after(5):
            while not allowed <= {s for w in u.values() for s in w.got}:
                await anyio.sleep(0.02)
        await settle(*u.values())
        delivered = {s for w in u.values() for s in w.got}
        assert delivered == allowed
        assert me.refused("publish") == lower(set(TABLE) - allowed | set(OUTSIDE))
        assert all(not w.errors for name, w in u.items() if name != role)


@pytest.mark.parametrize("role", routes.ROLES)
async def test_subscribes_only_to_what_its_role_receives(bus: Credentials, role: str) -> None:
    senders = {s: r.senders()[0] for s, r in TABLE.items() if r.senders()}
    inboxes = {f"{routes.inbox(r)}.x1": r for r in routes.ROLES}
    async with users(bus, role, *senders.values()) as u:
        me = u[role]
        for subject in [*TABLE, *OUTSIDE, *WILDCARDS, *inboxes]:
            await me.nc.subscribe(subject, cb=me.record)
        await settle(me)
        for subject, sender in senders.items():
            await u[sender].nc.publish(subject, b"{}")
        allowed = {s for s, r in TABLE.items() if role in r.receivers()}
        mine = {f"{routes.inbox(role)}.x1"} if asks(role) else set()
        await settle(*u.values())
        # (answers on its inbox: test_every_request_it_asks_is_answered)
        assert set(me.got) == {s for s in allowed if s in senders}
        assert me.refused("subscription") == lower(
            set(TABLE) - allowed | set(OUTSIDE) | set(WILDCARDS) | set(inboxes) - mine)


@pytest.mark.parametrize("role", [r for r in routes.ROLES if asks(r)])
async def test_every_request_it_asks_is_answered(bus: Credentials, role: str) -> None:
    asked = {s: r.servers[0] for s, r in TABLE.items() if role in r.askers}
    async with users(bus, role, *asked.values()) as u:
        for subject, server in asked.items():
            async def answer(msg, server: str = server) -> None:
                await msg.respond(f"{server}:{msg.subject}".encode())

            await u[server].nc.subscribe(subject, cb=answer)
        await settle(*u.values())
        for subject, server in asked.items():
            reply = await u[role].nc.request(subject, b"{}", timeout=2)
            assert reply.data == f"{server}:{subject}".encode()
        assert not any(w.errors for w in u.values())


async def test_publisher_cannot_forge_a_claim_unprepared(bus: Credentials) -> None:
    """A forged claim.unprepared from the publisher once made discovery drop a device
    that was in a pod."""
    subject = Subjects(NODE).event("claim.unprepared")
    forged = encode(ClaimUnprepared(node=NODE, claim_uid="claim-in-a-pod"))
    async with users(bus, routes.DISCOVERY, routes.PUBLISHER, routes.GATEWAY) as u:
        discovery = u[routes.DISCOVERY]
        await discovery.nc.subscribe(subject, cb=discovery.record)
        await settle(discovery)
        await u[routes.PUBLISHER].nc.publish(subject, forged)
        await settle(*u.values())
        assert discovery.got == []
        assert u[routes.PUBLISHER].refused("publish") == {subject}
        await u[routes.GATEWAY].nc.publish(subject, forged)
        with anyio.fail_after(2):
            while discovery.got != [subject]:
                await anyio.sleep(0.02)


def test_both_generated_configs_carry_the_tables_permissions(tmp_path: Path) -> None:
    _, conf = auth.generate(tmp_path / "up", NODE, "127.0.0.1", 9999)
    busconfig.write(tmp_path / "pod", NODE, "127.0.0.1", 9999)
    for path in (conf, tmp_path / "pod" / "nats" / "nats.conf"):
        users = json.loads(path.read_text())["authorization"]["users"]
        assert {u["user"]: u["permissions"] for u in users} == {
            role: auth.permissions(role, NODE) for role in routes.ROLES}


def test_every_subject_is_in_the_table_once() -> None:
    subjects = [r.subject for r in routes.ROUTES]
    assert len(subjects) == len(set(subjects))
    with pytest.raises(ValueError, match="twice"):
        routes._check((routes.ROUTES[0], routes.ROUTES[0]))


def test_knd_events_knows_every_event_of_the_table() -> None:
    from services.tools.events import KINDS
    assert set(KINDS) == set(routes.event_kinds())
    for r in routes.ROUTES:
        if r.subject.startswith("events."):
            assert KINDS[r.subject.removeprefix("events.")] is r.schema


def test_the_readme_lists_the_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert routes.markdown() in readme, "README's bus table: python -m schemas.routes"
