"""Test-owned HTTP servers standing in for a cloud's metadata service or a webhook:
real aiohttp servers on loopback (port 0) or a unix socket, recording every request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def bodies(self, path: str) -> list[Any]:
        return [s.body for s in self.seen if s.path == path]


@asynccontextmanager
async def serve(routes: dict[tuple[str, str], Handler | Any], *,
                unix: Path | None = None) -> AsyncIterator[Server]:
    """``routes``: (method, path with query) -> a handler or a JSON-able answer (200)."""
    server = Server(url="")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        server.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body))
        route = routes.get((request.method, request.path_qs))
        if route is None:
            route = routes.get((request.method, request.path))
        if route is None:
            return web.Response(status=404, text="no such route")
        if callable(route):
            return await route(request)
        if isinstance(route, str):
            return web.Response(text=route)
        return web.json_response(route)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site: web.BaseSite
    if unix is not None:
        site = web.UnixSite(runner, str(unix))
        await site.start()
        server.url = f"unix://{unix}"
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()
