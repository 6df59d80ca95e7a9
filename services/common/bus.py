"""Connecting to the bus and serving requests as NATS micro endpoints.

Handlers are typed: the endpoint decodes the request strictly into its schema
and encodes the reply, so a malformed message becomes an error reply and a
counted drop, never an exception that reaches the service.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from prometheus_client.metrics import Counter, Histogram

from schemas.base import DecodeError, ErrorReply, Message, decode, encode
from services.common import auth

log = logging.getLogger("knd.bus")

BUS_DROPS = Counter("knd_bus_dropped_messages", "Bus messages dropped as malformed",
                    ["service", "subject"])
BUS_HANDLER_ERRORS = Counter("knd_bus_handler_errors", "Request handlers that raised",
                             ["service", "endpoint"])

BUS_REQUESTS = Histogram(
    "knd_bus_request_duration_seconds",
    "Time to serve one bus request, by service, endpoint and status (ok; error: the reply "
    "carries an error; bad_request: undecodable; internal: the handler raised)",
    ["service", "endpoint", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
             30))

Req = TypeVar("Req", bound=Message)


class _Reconnects:
    """Wakes the tasks waiting in :func:`reconnected` when their client reconnects."""

    def __init__(self) -> None:
        import anyio

        self._event = anyio.Event()

    def fire(self) -> None:
        import anyio

        event, self._event = self._event, anyio.Event()
        event.set()

    async def wait(self) -> None:
        await self._event.wait()


_RECONNECTS: weakref.WeakKeyDictionary[Client, _Reconnects] = weakref.WeakKeyDictionary()


async def reconnected(nc: Client) -> None:
    """Return once ``nc`` has reconnected after losing the bus (never, for a client not
    made by :func:`connect`). A message published while a subscriber was away is lost:
    whoever keeps state from published messages asks again after this."""
    signal = _RECONNECTS.get(nc)
    if signal is None:
        import anyio

        await anyio.sleep_forever()
    else:
        await signal.wait()


async def open_client(url: str, **options: Any) -> Client:
    """``nats.connect`` that leaves nothing open when it fails: nats-py (2.16) keeps the
    socket of a refused connection (a wrong password) until the garbage collector
    complains about it."""
    import anyio

    nc = Client()
    try:
        await nc.connect(url, **options)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await nc.close()
        raise
    return nc


async def connect(creds: auth.Credentials, role: str, name: str | None = None) -> Client:
    """Connect as ``role``; reconnects forever, since the bus is a sidecar that may restart."""
    user, password = creds.user(role)
    signal = _Reconnects()

    async def on_error(exc: Exception) -> None:
        log.warning("bus error (%s): %s", role, exc)

    async def on_reconnected() -> None:
        log.info("bus reconnected (%s)", role)
        signal.fire()

    nc = await open_client(
        creds.url,
        user=user,
        password=password,
        name=name or f"knd-{role}",
        inbox_prefix=auth.inbox_prefix(role).encode(),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
        error_cb=on_error,
        reconnected_cb=on_reconnected,
    )
    _RECONNECTS[nc] = signal
    return nc


async def connect_once(creds: auth.Credentials, role: str, *, wait: float = 2.0,
                       name: str | None = None,
                       error_cb: Callable[[Exception], Awaitable[None]] | None = None,
                       closed_cb: Callable[[], Awaitable[None]] | None = None) -> Client:
    """Connect as ``role`` for a tool: no reconnects; raises ``BusUnreachable``.

    ``error_cb`` also sees asynchronous errors (a permissions violation); ``closed_cb``
    runs when the connection is gone for good."""
    user, password = creds.user(role)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc) or type(exc).__name__)
        if error_cb is not None:
            await error_cb(exc)

    import anyio

    try:
        # nats-py retries a refused first connection until the server has failed more than
        # max_reconnect_attempts times (0 would mean forever): one retry, within ``wait``
        with anyio.fail_after(wait):
            return await open_client(
                creds.url, user=user, password=password, name=name or f"knd-{role}",
                inbox_prefix=auth.inbox_prefix(role).encode(), allow_reconnect=False,
                max_reconnect_attempts=1, reconnect_time_wait=0.1, connect_timeout=wait,
                error_cb=on_error, **({"closed_cb": closed_cb} if closed_cb else {}))
    except Exception as exc:
        why = errors[-1] if errors else (str(exc) or type(exc).__name__)
        raise BusUnreachable(f"bus {creds.url} unreachable as {role}: {why}") from None


class BusUnreachable(RuntimeError):
    """A tool could not connect to the bus."""


class NotReady(RuntimeError):
    """Raised by a handler that cannot answer yet (starting up); the asker gets an
    ``ErrorReply`` with code ``unavailable`` and no traceback is logged."""


def typed_handler(
    service: str,
    endpoint: str,
    kind: type[Req],
    fn: Callable[[Req], Awaitable[Message]],
    concurrent: TaskGroup | None = None,
) -> Callable[[Request], Awaitable[None]]:
    """Wrap ``fn`` so it receives a decoded ``kind`` and its reply is encoded.

    nats-py delivers one subscription's messages one at a time; with
    ``concurrent`` (the service's task group) each request is served in its
    own task, so one slow request (a pod attach) does not queue the others.
    """

    async def serve_one(req: Request) -> None:
        started = time.perf_counter()
        status = "internal"
        try:
            try:
                msg = decode(req.data, kind)
            except DecodeError as exc:
                status = "bad_request"
                BUS_DROPS.labels(service, req.subject).inc()
                log.warning("%s: rejected request on %s: %s", service, req.subject, exc)
                await req.respond(encode(ErrorReply(error=str(exc))))
                return
            try:
                reply = await fn(msg)
            except NotReady as exc:  # expected while starting: the asker tries again
                status = "error"
                await req.respond(encode(ErrorReply(error=str(exc), code="unavailable")))
                return
            except Exception as exc:  # a handler bug must not take the service down
                BUS_HANDLER_ERRORS.labels(service, endpoint).inc()
                log.exception("%s: handler %s failed", service, endpoint)
                await req.respond(encode(ErrorReply(error=f"{endpoint}: {exc}",
                                                    code="internal")))
                return
            status = "error" if getattr(reply, "error", "") else "ok"
            await req.respond(encode(reply))
        finally:
            BUS_REQUESTS.labels(service, endpoint, status).observe(
                time.perf_counter() - started)

    if concurrent is None:
        return serve_one

    async def guarded(req: Request) -> None:
        try:
            await serve_one(req)
        except Exception as exc:  # e.g. the reply could not be sent: the bus went away
            log.warning("%s: %s: could not answer: %s", service, endpoint, exc)

    async def spawn(req: Request) -> None:
        concurrent.start_soon(guarded, req)

    return spawn


async def serve(nc: Client, name: str, description: str, version: str = "0.1.0") -> Service:
    """Register ``name`` as a NATS micro service so $SRV.PING/INFO/STATS answer for it."""
    return await add_service(nc, name=name, version=version, description=description)


def decode_or_count(service: str, subject: str, data: bytes, kind: type[Req]) -> Req | None:
    """Decode a published (not requested) message; a bad one is logged and counted."""
    try:
        return decode(data, kind)
    except DecodeError as exc:
        BUS_DROPS.labels(service, subject).inc()
        log.warning("%s: dropped message on %s: %s", service, subject, exc)
        return None


def decode_reply(service: str, subject: str, data: bytes, kind: type[Req]) -> Req | None:
    """Decode the reply to a request: ``kind``, or None for an ``ErrorReply`` (logged at
    debug: a service that is starting says so) or a malformed reply (counted)."""
    try:
        return decode(data, kind)
    except DecodeError as exc:
        try:
            err = decode(data, ErrorReply)
        except DecodeError:
            BUS_DROPS.labels(service, subject).inc()
            log.warning("%s: dropped reply on %s: %s", service, subject, exc)
            return None
        log.debug("%s: %s answered %s: %s", service, subject, err.code, err.error)
        return None


FLUSH_SECONDS = 2  # whole seconds: what nats-py types flush(timeout=) as


async def flush(nc: Client) -> None:
    """Return once the server has processed everything sent on ``nc`` so far.

    ``nc.flush()`` alone does not promise that: nats-py (2.15, 2.16) writes its PING
    straight to the socket, ahead of the SUBs and PUBs still queued for its flusher
    task, so a request sent on another connection right after could find no
    subscriber (a NoRespondersError about one start in five). The flusher runs
    before any PONG can be read, so a second PING follows everything queued before
    the first. Shielded, because nats-py keeps the PONG future of a cancelled flush
    queued and its reader then fails on it with an ``InvalidStateError`` traceback
    (seen when Ctrl-C met a starting plumber)."""
    import anyio

    with anyio.CancelScope(shield=True):
        await nc.flush(timeout=FLUSH_SECONDS)
        await nc.flush(timeout=FLUSH_SECONDS)


STOP_SECONDS = 0.5
"""The most each shutdown step on the bus may take. A service stops within about
a second of its signal, whatever the bus does: when ``knd up`` dies, the bus dies
(or hangs) with it, and a stop waiting on it kept services alive for 10 s."""


async def stop_service(nc: Client, svc: Service | None) -> None:
    """Stop serving (shutdown path, even while cancelled). nats-py drains each of a
    micro service's subscriptions with a flush of its own, 10 s each when the bus
    does not answer; a bus that is gone has nothing to drain, a hung one gets
    ``STOP_SECONDS`` in all."""
    import anyio

    if svc is None or not nc.is_connected:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_SECONDS):
        try:
            await svc.stop()
        except Exception as exc:  # the bus went away meanwhile
            log.debug("stopping the bus service: %r", exc)


async def close(nc: Client) -> None:
    """Flush and close even while the caller is being cancelled (shutdown path),
    within ``STOP_SECONDS``."""
    import anyio

    with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_SECONDS):
        try:
            await nc.close()
        except Exception as exc:  # the bus may already be gone; nothing left to flush
            log.debug("bus close: %r", exc)
