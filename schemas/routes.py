"""Who publishes, subscribes, serves and asks each bus subject: the one table.

Every bus user's permissions (``services.common.auth.permissions``), and so the
nats-server config of ``knd up`` and of ``knd bus-config``, and the README's bus
table (:func:`markdown`) come from :data:`ROUTES`. A user gets what its role uses
and nothing more, so one sidecar cannot forge another's messages (the publisher
once could publish ``events.claim.unprepared``, which made discovery drop a
device that was in a pod).

A plain subject has publishers and subscribers. A request subject has servers
(they subscribe, and answer through ``allow_responses``) and askers (they
publish, and read their answers on their own inbox ``_INBOX_<role>.>``).

Print the README table with ``python -m schemas.routes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.base import Message
from schemas.claims import ClaimStatus, ClaimStatusReply
from schemas.events import ClaimPrepared, ClaimUnprepared, Notice
from schemas.inventory import DeviceEvent, InventoryGet, InventorySnapshot, SlicePublished
from schemas.plumber import (
    Attach,
    AttachReply,
    ContainerDevices,
    ContainerDevicesReply,
    Detach,
    DetachReply,
    DeviceAttached,
    DeviceDetached,
    DeviceFailed,
    PlumberStatus,
    PlumberStatusGet,
    Prepare,
    PrepareReply,
    Unprepare,
    UnprepareReply,
)
from schemas.publisher import PublisherStatus, StatusGet
from schemas.subjects import Subjects

DISCOVERY, PUBLISHER, PLUMBER, GATEWAY = "discovery", "publisher", "plumber", "gateway"
OBSERVER = "observer"
"""``knd events``: reads events, nothing else."""
ADMIN = "admin"
"""``knd status``: asks the read-only status requests and ``$SRV``, nothing else."""
ROLES = (DISCOVERY, PUBLISHER, PLUMBER, GATEWAY, OBSERVER, ADMIN)

MICRO = {DISCOVERY: "discovery", PUBLISHER: "publisher", PLUMBER: "plumber",
         GATEWAY: "kubelet-gateway"}
"""Roles that register a NATS micro service, and its name in ``$SRV.<VERB>.<name>``."""
MICRO_VERBS = ("PING", "INFO", "STATS")
"""What nats-py's micro library serves (and subscribes to, whether or not anyone asks)."""

SRV_SCHEMA = "NATS micro JSON"


@dataclass(frozen=True)
class Route:
    subject: str
    """Under ``knd.<node>.`` unless it starts with ``$``; ``*`` stands for one token."""
    schema: type[Message] | str
    reply: type[Message] | str | None = None
    """Set for a request: the answer's schema."""
    publishers: tuple[str, ...] = ()
    subscribers: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    askers: tuple[str, ...] = ()
    why: str = ""

    @property
    def request(self) -> bool:
        return self.reply is not None

    def full(self, node: str) -> str:
        if self.subject.startswith("$"):
            return self.subject
        return f"{Subjects(node).root}.{self.subject}"

    def senders(self) -> tuple[str, ...]:
        return self.askers if self.request else self.publishers

    def receivers(self) -> tuple[str, ...]:
        return self.servers if self.request else self.subscribers


def _event(kind: str, schema: type[Message], publisher: str, *readers: str,
           why: str = "") -> Route:
    # the observer (knd events) reads every event; so far no admin tool does
    return Route(f"events.{kind}", schema, publishers=(publisher,),
                 subscribers=(*readers, OBSERVER), why=why)


def _ask(verb: str, schema: type[Message], reply: type[Message], server: str,
         *askers: str, why: str = "") -> Route:
    return Route(verb, schema, reply, servers=(server,), askers=askers, why=why)


def _micro() -> list[Route]:
    rows = [Route(f"$SRV.{verb}", SRV_SCHEMA, SRV_SCHEMA, servers=tuple(MICRO),
                  why="subscribed by every micro service; nobody asks")
            for verb in MICRO_VERBS]
    for role, name in MICRO.items():
        rows += [Route(f"$SRV.{verb}.{name}", SRV_SCHEMA, SRV_SCHEMA, servers=(role,),
                       askers=(ADMIN,), why="knd status") for verb in MICRO_VERBS]
        rows += [Route(f"$SRV.{verb}.{name}.*", SRV_SCHEMA, SRV_SCHEMA, servers=(role,),
                       why="one instance by id; subscribed, nobody asks")
                 for verb in MICRO_VERBS]
    return rows


ROUTES: tuple[Route, ...] = (
    Route("inventory.snapshot", InventorySnapshot, publishers=(DISCOVERY,),
          subscribers=(PUBLISHER, PLUMBER, GATEWAY),
          why="the gateway: DRA health of present devices"),
    _ask("inventory.get", InventoryGet, InventorySnapshot, DISCOVERY,
         PUBLISHER, PLUMBER, GATEWAY, ADMIN, why="the first snapshot; knd status"),
    _event("device.added", DeviceEvent, DISCOVERY),
    _event("device.removed", DeviceEvent, DISCOVERY),
    _event("device.changed", DeviceEvent, DISCOVERY),
    _event("slice.published", SlicePublished, PUBLISHER),
    _ask("publisher.status", StatusGet, PublisherStatus, PUBLISHER, ADMIN, why="knd status"),
    _ask("publisher.claim-status", ClaimStatus, ClaimStatusReply, PUBLISHER, PLUMBER,
         why="the plumber reports a claim's devices for its status"),
    _ask("plumber.prepare", Prepare, PrepareReply, PLUMBER, GATEWAY),
    _ask("plumber.unprepare", Unprepare, UnprepareReply, PLUMBER, GATEWAY),
    _ask("plumber.attach", Attach, AttachReply, PLUMBER, GATEWAY),
    _ask("plumber.detach", Detach, DetachReply, PLUMBER, GATEWAY),
    _ask("plumber.container-devices", ContainerDevices, ContainerDevicesReply, PLUMBER,
         GATEWAY),
    _ask("plumber.status", PlumberStatusGet, PlumberStatus, PLUMBER, DISCOVERY, GATEWAY, ADMIN,
         why="discovery keeps prepared claims' devices; the gateway counts a deferred "
             "attach's progress; knd status"),
    _event("device.attached", DeviceAttached, PLUMBER),
    _event("device.detached", DeviceDetached, PLUMBER, PUBLISHER,
           why="the publisher: Kubernetes Events for devices that did not come back"),
    _event("device.failed", DeviceFailed, PLUMBER, PUBLISHER,
           why="the publisher: Kubernetes Events on the pod"),
    _event("claim.prepared", ClaimPrepared, GATEWAY, DISCOVERY, PUBLISHER,
           why="discovery keeps a prepared claim's devices published; the publisher: "
               "Kubernetes Events for a failed prepare"),
    _event("claim.unprepared", ClaimUnprepared, GATEWAY, DISCOVERY,
           why="discovery lets them go"),
    _event("notice", Notice, GATEWAY, PUBLISHER,
           why="what a user should see: the publisher writes it as a Kubernetes Event"),
    *_micro(),
)


def inbox(role: str) -> str:
    """Each asker reads answers on its own inbox, so no user can read another's replies."""
    return f"_INBOX_{role}"


def event_kinds() -> list[str]:
    """``device.added`` and the like: the kinds of ``knd.<node>.events.<kind>``."""
    return [r.subject.removeprefix("events.") for r in ROUTES if r.subject.startswith("events.")]


def _check(routes: tuple[Route, ...]) -> None:
    seen: set[str] = set()
    for r in routes:
        if r.subject in seen:
            raise ValueError(f"bus subject {r.subject} is in the table twice")
        seen.add(r.subject)
        if r.request != bool(r.servers) or (r.request and r.publishers + r.subscribers) or (
                not r.request and r.servers + r.askers):
            raise ValueError(f"bus subject {r.subject}: a request has servers and askers, "
                             "anything else publishers and subscribers")
        if not set(r.senders() + r.receivers()) <= set(ROLES):
            raise ValueError(f"bus subject {r.subject}: unknown role")


_check(ROUTES)


# ---- the README's table ---------------------------------------------------------------


def _name(schema: type[Message] | str | None) -> str:
    return schema if isinstance(schema, str) else schema.__name__ if schema else ""


def _row(r: Route) -> tuple[str, str, str, str]:
    schema = _name(r.schema)
    if r.request and r.reply != r.schema:
        schema += f" -> {_name(r.reply)}"
    return (schema, ", ".join(r.senders()) or "nobody", ", ".join(r.receivers()),
            "request" if r.request else "publish")


def _merged() -> list[tuple[str, tuple[str, str, str, str], str]]:
    """Rows that differ in one subject token only become one ``a.{x,y}.b`` row."""
    groups: list[tuple[list[list[str]], int | None, tuple[str, str, str, str], str]] = []
    for r in ROUTES:
        tokens, cols = r.subject.split("."), _row(r)
        for i, (members, pos, gcols, why) in enumerate(groups):
            first = members[0]
            if gcols != cols or why != r.why or len(first) != len(tokens):
                continue
            diff = [k for k, (a, b) in enumerate(zip(first, tokens, strict=True)) if a != b]
            if len(diff) == 1 and pos in (None, diff[0]):
                members.append(tokens)
                groups[i] = (members, diff[0], gcols, why)
                break
        else:
            groups.append(([tokens], None, cols, r.why))
    out = []
    for members, pos, cols, why in groups:
        tokens = list(members[0])
        if pos is not None:
            tokens[pos] = "{" + ",".join(m[pos] for m in members) + "}"
        subject = ".".join(tokens)
        out.append((subject if subject.startswith("$") else f"knd.<node>.{subject}", cols, why))
    return out


def markdown() -> str:
    lines = ["| subject | kind | schema | sent by | received by | why |",
             "|---|---|---|---|---|---|"]
    for subject, (schema, senders, receivers, kind), why in _merged():
        lines.append(f"| `{subject}` | {kind} | {schema} | {senders} | {receivers} | {why} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
