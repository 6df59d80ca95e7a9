"""knd events: follow what happens on the node(s), one line per event.

Connects to the bus as the read-only ``observer`` user and prints every
``knd.<node>.events.<kind>`` message: devices found and lost (discovery), slices
published (publisher), devices attached to / detached from pods (plumber), claims
prepared / unprepared and notices for kubectl (gateway). ``--json`` prints one JSON
object a line (the decoded payload, every field, plus ``subject`` and ``event``). A
payload that does not match its schema, or an event kind this build does not know, is
printed raw, counted and reported at the end; it never stops the stream.

Exit status: 0; 1 when ``--count`` events did not come within ``--timeout``;
2 when the bus cannot be used (unreadable credentials, unreachable, not allowed).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from schemas import routes
from schemas.base import DecodeError, Message, decode
from schemas.events import ClaimPrepared, ClaimUnprepared, Notice
from schemas.inventory import DeviceEvent, SlicePublished
from schemas.plumber import DeviceAttached, DeviceDetached, DeviceFailed
from schemas.subjects import Subjects
from services.common import auth, bus, config

KINDS: dict[str, type[Message]] = {
    r.subject.removeprefix("events."): r.schema for r in routes.ROUTES
    if r.subject.startswith("events.") and not isinstance(r.schema, str)}
"""Event kind (the subject after ``events.``) -> its schema."""

_KIND = re.compile(r"[A-Za-z0-9_-]+|\*|>")
RAW_MAX = 2000
"""Characters of a raw payload shown."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=None,
                   help="this node's events (default: the node of the credentials)")
    p.add_argument("--kind", action="append", default=[], metavar="KIND",
                   help="only events of this kind (repeatable; NATS wildcards: device.*): "
                        + ", ".join(KINDS))
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: the payload plus subject and event")
    p.add_argument("--count", type=int, default=0,
                   help="exit after this many events (0: follow until interrupted)")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="exit after this many seconds (0: never); with --count, exit 1 if "
                        "fewer events came")


def matches(pattern: str, kind: str) -> bool:
    """NATS subject matching of ``kind`` (``device.added``) against ``pattern``."""
    want, got = pattern.split("."), kind.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


@dataclass
class Event:
    """One message off the bus, decoded or not."""

    subject: str
    node: str
    kind: str
    received: float
    msg: Message | None = None
    raw: bytes = b""
    error: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def parse(subject: str, data: bytes, received: float | None = None) -> Event:
    """Split the subject, decode the payload by its kind; never raises."""
    parts = subject.split(".", 3)
    token = parts[1] if len(parts) > 1 else ""
    kind = parts[3] if len(parts) == 4 and parts[2] == "events" else subject
    ev = Event(subject=subject, node=token.replace("_", "."), kind=kind,
               received=time.time() if received is None else received)
    schema = KINDS.get(kind)
    if schema is None:
        ev.raw, ev.error = data, f"unknown event kind {kind!r}"
        return ev
    try:
        ev.msg = decode(data, schema)
    except DecodeError as exc:
        ev.raw, ev.error = data, str(exc)
        return ev
    node = getattr(ev.msg, "node", "")
    if node:
        ev.node = node
    return ev


def _raw_text(data: bytes) -> str:
    text = data.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= RAW_MAX else text[:RAW_MAX] + "..."


def _ms(value: float) -> str:
    return f"{value:.1f}ms"


def _ifname(attrs: dict[str, Any]) -> str:
    for key, value in attrs.items():
        if key.endswith("/ifName"):
            return str(value)
    return ""


def _attr(attrs: dict[str, Any], name: str) -> Any:
    for key, value in attrs.items():
        if key.endswith(f"/{name}"):
            return value
    return None


def summary(msg: Message) -> list[tuple[str, Any]]:
    """The interesting fields of one event, in reading order (empty ones are skipped)."""
    if isinstance(msg, DeviceEvent):
        return [("device", msg.device), ("if", _ifname(msg.attributes)),
                ("type", _attr(msg.attributes, "type")),
                ("pci", _attr(msg.attributes, "pciAddress")),
                ("rdma", _attr(msg.attributes, "rdma") or None)]
    if isinstance(msg, SlicePublished):
        return [("pool", msg.pool), ("generation", msg.generation), ("slices", msg.slices),
                ("devices", msg.devices), ("writes", msg.writes),
                ("latency", _ms(msg.latency_ms)),
                ("dropped", "; ".join(msg.dropped))]
    if isinstance(msg, DeviceAttached):
        return [("device", msg.device), ("pod", msg.pod_uid), ("claim", msg.claim_uid),
                ("if", msg.interface), ("ips", ",".join(msg.ips)), ("mac", msg.mac),
                ("netns", msg.netns), ("latency", _ms(msg.latency_ms))]
    if isinstance(msg, DeviceDetached):
        return [("device", msg.device), ("pod", msg.pod_uid), ("claim", msg.claim_uid),
                ("if", msg.interface), ("reason", msg.reason), ("gone", msg.gone or None)]
    if isinstance(msg, DeviceFailed):
        return [("device", msg.device), ("pod", msg.pod_uid), ("claim", msg.claim_uid),
                ("step", msg.step), ("rolled_back", msg.rolled_back),
                ("error", msg.error)]
    if isinstance(msg, ClaimPrepared):
        return [("claim", f"{msg.namespace}/{msg.name}" if msg.name else ""),
                ("uid", msg.claim_uid), ("devices", ",".join(msg.devices)),
                ("latency", _ms(msg.latency_ms)), ("error", msg.error)]
    if isinstance(msg, Notice):
        return [("object", f"{msg.kind.lower()}/{msg.namespace}/{msg.name}"), ("uid", msg.uid),
                ("type", msg.type), ("reason", msg.reason), ("message", msg.message)]
    if isinstance(msg, ClaimUnprepared):
        return [("claim", f"{msg.namespace}/{msg.name}" if msg.name else ""),
                ("uid", msg.claim_uid), ("latency", _ms(msg.latency_ms)),
                ("error", msg.error)]
    return [(k, v) for k, v in msgspec.structs.asdict(msg).items() if k != "v"]


def _value(v: Any) -> str:
    text = str(v)
    return repr(text) if (not text or any(c.isspace() for c in text)) else text


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def text_line(ev: Event) -> str:
    head = f"{stamp(ev.received)} {ev.node} {ev.kind:<16}"
    if ev.msg is None:
        return f"{head} RAW {_raw_text(ev.raw)}  ({ev.error})"
    parts = [f"{k}={_value(v)}" for k, v in summary(ev.msg) if v not in (None, "", [])]
    return f"{head} {' '.join(parts)}"


def json_line(ev: Event) -> str:
    out: dict[str, Any] = {"subject": ev.subject, "event": ev.kind}
    if ev.msg is None:
        out.update(node=ev.node, raw=_raw_text(ev.raw), error=ev.error)
    else:
        out.update(msgspec.structs.asdict(ev.msg))
    return msgspec.json.encode(out).decode()


@dataclass
class Follow:
    args: argparse.Namespace
    printed: int = 0
    malformed: int = 0
    fatal: str = ""
    done: anyio.Event = field(default_factory=anyio.Event)

    def wanted(self, kind: str) -> bool:
        return not self.args.kind or any(matches(p, kind) for p in self.args.kind)

    def show(self, ev: Event) -> None:
        if ev.msg is None:
            self.malformed += 1
        line = json_line(ev) if self.args.json else text_line(ev)
        print(line, flush=True)
        self.printed += 1
        if self.args.count and self.printed >= self.args.count:
            self.done.set()


def _fail(text: str) -> int:
    print(f"knd events: {text}", file=sys.stderr, flush=True)
    return 2


async def follow(args: argparse.Namespace) -> int:
    for kind in args.kind:
        if not all(_KIND.fullmatch(t) for t in kind.split(".")):
            return _fail(f"--kind {kind!r}: expected dot-separated names like device.added")
    path = config.bus_creds_path(args)
    try:
        creds = auth.load(path)
    except RuntimeError as exc:
        return _fail(str(exc))
    try:
        subjects = Subjects(args.node or creds.node)
    except ValueError as exc:
        return _fail(f"--node: {exc}")
    state = Follow(args)
    kinds = [k for k in KINDS if state.wanted(k)]
    if not kinds:
        return _fail(f"--kind {' '.join(args.kind)}: no such event ({', '.join(KINDS)})")

    async def on_error(exc: Exception) -> None:
        if "ermissions" in str(exc) or "uthorization" in str(exc):
            state.fatal = f"bus refused: {exc}"
            state.done.set()

    async def on_closed() -> None:
        if not state.done.is_set():
            state.fatal = state.fatal or f"lost the bus connection to {creds.url}"
            state.done.set()

    try:
        nc = await bus.connect_once(creds, "observer", name="knd-events", error_cb=on_error,
                                    closed_cb=on_closed)
    except (bus.BusUnreachable, KeyError) as exc:
        return _fail(str(exc).strip("'\""))

    async def on_msg(msg: Any) -> None:
        ev = parse(msg.subject, msg.data)
        if state.done.is_set() or not state.wanted(ev.kind):
            return
        state.show(ev)

    timed_out = False
    try:
        # the observer may subscribe to each event of the bus table, not to a wildcard;
        # asking the server only for the wanted kinds also spares it the rest
        for kind in kinds:
            await nc.subscribe(subjects.event(kind), cb=on_msg)
        await bus.flush(nc)
        if not state.done.is_set():
            print(f"knd events: following {subjects.events}.{{{','.join(kinds)}}} on "
                  f"{creds.url}", file=sys.stderr, flush=True)
        async with anyio.create_task_group() as tg:

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for _ in sigs:
                        state.done.set()
                        return

            tg.start_soon(signals)
            with anyio.move_on_after(args.timeout or float("inf")) as scope:
                await state.done.wait()
            timed_out = scope.cancelled_caught
            tg.cancel_scope.cancel()
    except Exception as exc:  # the bus went away while subscribing
        state.fatal = state.fatal or f"bus error: {exc}"
    finally:
        state.done.set()  # from here on, the connection closing is ours
        if not nc.is_closed:
            await bus.close(nc)
    if state.malformed:
        print(f"knd events: {state.malformed} malformed or unknown event(s) printed raw",
              file=sys.stderr, flush=True)
    if state.fatal:
        return _fail(state.fatal)
    if timed_out and args.count and state.printed < args.count:
        print(f"knd events: {state.printed} of {args.count} event(s) within "
              f"{args.timeout:g} s", file=sys.stderr, flush=True)
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return anyio.run(follow, args)
    except KeyboardInterrupt:
        return 0
