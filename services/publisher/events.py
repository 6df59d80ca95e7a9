"""Kubernetes Events for ``kubectl describe``: correlated and written as client-go does.

DRANET records through client-go's EventRecorder and adds no limits of its own, so a
user of either driver sees the same thing when knd keeps client-go's defaults
(record.EventCorrelator):

- dedupe: the same event again (object, type, reason, message) bumps ``count`` and
  ``lastTimestamp`` of the Event already written (a merge patch) instead of adding one;
- aggregate: once 10 different messages of one object, type and reason came within 10
  minutes, further ones go into one Event whose message starts
  ``(combined from similar events):``, itself deduplicated;
- spam filter: per source and object a token bucket of 25 that gets one token back every
  5 minutes; an event without a token is dropped.

All state is in LRU maps of at most 4096 keys each (client-go's size), and time comes
from an injectable clock, so tests are deterministic. Writes run on one task from a
bounded queue: whoever records never waits on the API server, and a refused, lost or
timed-out write is logged and counted (``knd_publisher_events_written_total``), never
raised.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

import anyio

from schemas.limits import is_dns_label, is_dns_subdomain
from schemas.text import one_line, q
from services.common.api import ApiPort, NotFound
from services.publisher import metrics

log = logging.getLogger("knd.publisher.events")

API_VERSIONS = {"Pod": "v1", "ResourceClaim": "resource.k8s.io/v1"}
TYPES = ("Normal", "Warning")
MAX_KEYS = 4096
AGGREGATE_MAX = 10
AGGREGATE_WINDOW = 600.0
SPAM_BURST = 25
SPAM_REFILL = 300.0
"""Seconds for one token to come back."""
QUEUE = 1000
MAX_REASON = 128
MAX_MESSAGE = 1024
"""Bytes: the API server's limit for new-style events; kept for all, so a stack trace
in an error cannot make a megabyte Event."""
MAX_NAME_BASE = 220
"""Characters of the object's name in an Event's name (``<name>.<hex time>``), so the
name also fits a standalone event file's name."""
COMBINED = "(combined from similar events): "
_REASON = re.compile(r"[A-Z][A-Za-z0-9]*")

V = TypeVar("V")


@dataclass(frozen=True)
class Involved:
    """The object an event is about (its ``involvedObject``)."""

    kind: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class Occurrence:
    """One thing that happened, before correlation."""

    obj: Involved
    type: str
    reason: str
    message: str


def checked(occ: Occurrence) -> Occurrence:
    """``occ`` with its message made one safe line of at most MAX_MESSAGE bytes, or
    ValueError naming the field that the API server would refuse (or kubectl mangle)."""
    obj = occ.obj
    if obj.kind not in API_VERSIONS:
        raise ValueError(f"kind: {q(obj.kind)} is not one of {', '.join(API_VERSIONS)}")
    if not obj.namespace or not is_dns_label(obj.namespace):
        raise ValueError(f"namespace: {q(obj.namespace)} is not a DNS label")
    if not is_dns_subdomain(obj.name):
        raise ValueError(f"name: {q(obj.name)} is not a DNS subdomain")
    if not obj.uid or len(obj.uid) > 128 or not obj.uid.isprintable():
        raise ValueError(f"uid: {q(obj.uid)} must be 1 to 128 printable characters")
    if occ.type not in TYPES:
        raise ValueError(f"type: {q(occ.type)} is not one of {', '.join(TYPES)}")
    if len(occ.reason) > MAX_REASON or not _REASON.fullmatch(occ.reason):
        raise ValueError(f"reason: {q(occ.reason)} must be CamelCase letters and digits, "
                         f"at most {MAX_REASON}")
    return Occurrence(obj, occ.type, occ.reason, cut(one_line(occ.message, MAX_MESSAGE)))


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """At most ``limit`` UTF-8 bytes (the API server counts bytes), marked when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit - 3].decode(errors="ignore") + "..."


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Lru(Generic[V]):
    """A map that forgets its least recently used key beyond ``size`` keys."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


@dataclass
class _Similar:
    messages: dict[str, None] = field(default_factory=dict)
    """Distinct messages seen (insertion ordered, so which one is let go is defined)."""
    last: float = 0.0


@dataclass
class _Written:
    name: str
    count: int
    first: str


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class Write:
    """What correlation decided for one occurrence: create ``event``, or apply ``patch``
    to the Event of that name (and create ``event`` if it expired meanwhile)."""

    event: dict
    patch: dict | None


class Correlator:
    """client-go's EventCorrelator, for one source (component + host)."""

    def __init__(self, component: str, host: str, *, clock: Callable[[], float] = time.time,
                 max_keys: int = MAX_KEYS, aggregate_max: int = AGGREGATE_MAX,
                 aggregate_window: float = AGGREGATE_WINDOW, burst: int = SPAM_BURST,
                 refill: float = SPAM_REFILL) -> None:
        self.component, self.host, self.clock = component, host, clock
        self.aggregate_max, self.aggregate_window = aggregate_max, aggregate_window
        self.burst, self.refill = burst, refill
        self._similar: Lru[_Similar] = Lru(max_keys)
        self._written: Lru[_Written] = Lru(max_keys)
        self._buckets: Lru[_Bucket] = Lru(max_keys)
        self._last_nanos = 0

    def correlate(self, occ: Occurrence) -> Write | None:
        """The write for ``occ`` (already :func:`checked`), or None: spam, dropped."""
        now = self.clock()
        obj = occ.obj
        source = (obj.kind, obj.namespace, obj.name, obj.uid)
        similar_key = (*source, occ.type, occ.reason)
        similar = self._similar.get(similar_key)
        if similar is None or now - similar.last > self.aggregate_window:
            similar = _Similar()
        similar.messages[occ.message] = None
        similar.last = now
        self._similar.put(similar_key, similar)
        if len(similar.messages) < self.aggregate_max:
            key: tuple = (*similar_key, occ.message)
            message = occ.message
        else:  # one Event for all further messages; the set stays at its limit
            del similar.messages[next(iter(similar.messages))]
            key, message = similar_key, cut(COMBINED + occ.message)
        # dedupe: counted even when the spam filter drops it, as client-go does
        seen = self._written.get(key)
        when = stamp(now)
        if seen is None:
            seen = _Written(self._name(obj.name, now), 0, when)
        seen.count += 1
        self._written.put(key, seen)
        if not self._take_token(source, now):
            return None
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": seen.name, "namespace": obj.namespace},
            "involvedObject": {"apiVersion": API_VERSIONS[obj.kind], "kind": obj.kind,
                               "namespace": obj.namespace, "name": obj.name, "uid": obj.uid},
            "type": occ.type, "reason": occ.reason, "message": message,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component, "reportingInstance": self.host,
            "firstTimestamp": seen.first, "lastTimestamp": when, "count": seen.count,
        }
        patch = None if seen.count == 1 else {"count": seen.count, "lastTimestamp": when,
                                              "message": message}
        return Write(event, patch)

    def _name(self, base: str, now: float) -> str:
        """client-go's ``<name>.<unix nanoseconds in hex>``, never the same one twice."""
        self._last_nanos = max(int(now * 1e9), self._last_nanos + 1)
        return f"{base[:MAX_NAME_BASE]}.{self._last_nanos:x}"

    def _take_token(self, source: tuple, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst),
                            bucket.tokens + max(0.0, now - bucket.at) / self.refill)
        bucket.at = now
        self._buckets.put(source, bucket)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class EventRecorder:
    """Queue occurrences (:meth:`record`) and write them (:meth:`run`, one task)."""

    def __init__(self, api: ApiPort, component: str, host: str, *,
                 clock: Callable[[], float] = time.time, queue: int = QUEUE,
                 call_timeout: float = 10.0) -> None:
        self.api = api
        self.correlator = Correlator(component, host, clock=clock)
        self.call_timeout = call_timeout
        self.queue = queue
        self._queue: deque[Occurrence] = deque()
        self._wake = anyio.Event()

    def record(self, occ: Occurrence) -> bool:
        """Queue ``occ`` without waiting; False (logged and counted) if it is invalid or
        the queue is full (the API server is slow or down)."""
        try:
            occ = checked(occ)
        except ValueError as exc:
            metrics.EVENTS_WRITTEN.labels(cut(occ.reason, MAX_REASON), "invalid").inc()
            log.warning("event %s not written: %s", q(occ.reason), exc)
            return False
        if len(self._queue) >= self.queue:
            metrics.EVENTS_WRITTEN.labels(occ.reason, "dropped").inc()
            log.warning("event %s on %s %s/%s not written: %d events wait for the API "
                        "server already", occ.reason, occ.obj.kind, occ.obj.namespace,
                        occ.obj.name, len(self._queue))
            return False
        self._queue.append(occ)
        self._wake.set()
        return True

    async def run(self) -> None:
        """Write what is queued, in order, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queue:
                await self.write(self._queue.popleft())

    async def write(self, occ: Occurrence) -> str:
        """Correlate and write one occurrence; the result as counted: ``created``,
        ``patched``, ``spam`` or ``error``."""
        w = self.correlator.correlate(occ)
        if w is None:
            result = "spam"
        else:
            try:
                with anyio.fail_after(self.call_timeout):
                    result = await self._write(w)
            except Exception as exc:  # the API refused it, or is away: never the caller's
                result = "error"
                meta = w.event["metadata"]
                log.warning("event %s %s/%s (%s on %s %s) not written: %s", occ.reason,
                            meta["namespace"], meta["name"], occ.type, occ.obj.kind,
                            occ.obj.name, one_line(str(exc) or repr(exc), 500))
        metrics.EVENTS_WRITTEN.labels(occ.reason, result).inc()
        return result

    async def _write(self, w: Write) -> str:
        meta = w.event["metadata"]
        if w.patch is not None:
            try:
                await self.api.patch_event(meta["namespace"], meta["name"], w.patch)
                return "patched"
            except NotFound:  # expired (an hour by default): write it again, count kept
                pass
        await self.api.create_event(w.event)
        return "created"
