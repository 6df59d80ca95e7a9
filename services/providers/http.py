"""HTTP to a provider: a cloud's metadata service or a webhook, over TCP or a unix socket.

One small client so every provider gets the same deadline handling and the same error
shape: a :class:`ProviderError` whose text names the endpoint, so a log line or a
claim error says which webhook or metadata service misbehaved. It is the standard
library's ``http.client`` on a worker thread: a provider is asked a few times at start
and once per prepare, and aiohttp would cost discovery and the plumber 20 MB each on
every node (they have no other use for it).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import anyio

from services.providers.target import ProviderError, Target

__all__ = ["Client", "ProviderError", "Target"]

MAX_BODY = 1 << 20
"""Bytes of one answer read at most: a provider that streams forever must not eat memory."""

TOKEN_TTL = "21600"
"""Seconds a metadata session token lives (the longest both clouds allow)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """Requests to one :class:`Target`, each bounded by ``timeout`` seconds."""

    def __init__(self, target: Target, name: str, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.name = name
        """How errors name this provider (``webhook unix:///run/x.sock``)."""
        self.timeout = timeout
        self._ssl = ssl_context
        parts = urlsplit(target.base)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "localhost", parts.port
        self._prefix = parts.path.rstrip("/")

    def _connection(self) -> http.client.HTTPConnection:
        # no proxy from the environment: metadata and node-local webhooks are direct
        if self.target.socket:
            return _UnixConnection(self.target.socket, self.timeout)
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout,
                context=self._ssl or ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _exchange(self, method: str, path: str, data: bytes | None,
                  headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(MAX_BODY + 1)
        finally:
            conn.close()

    async def close(self) -> None:
        """Nothing is held between requests (one connection each)."""

    async def request(self, method: str, path: str, *, body: Any = None,
                      headers: dict[str, str] | None = None, what: str = "") -> tuple[int, bytes]:
        """(status, body) of one request; raises ProviderError when there is no answer."""
        where = f"{self.name} {method} {path}" if not what else f"{self.name} {what}"
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            # the caller goes on at the deadline; the thread ends at its socket's timeout
            with anyio.fail_after(self.timeout):
                status, raw = await anyio.to_thread.run_sync(
                    self._exchange, method, path, data, hdrs, abandon_on_cancel=True)
        except TimeoutError:
            raise ProviderError(where, f"no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ProviderError(where, f"cannot reach it: {exc}") from None
        if len(raw) > MAX_BODY:
            raise ProviderError(where, f"answer larger than {MAX_BODY} bytes", status)
        return status, raw

    async def json(self, method: str, path: str, *, body: Any = None,
                   headers: dict[str, str] | None = None, what: str = "") -> Any:
        """The decoded JSON of a 200 answer; anything else raises ProviderError."""
        where = f"{self.name} {method} {path}" if not what else f"{self.name} {what}"
        status, raw = await self.request(method, path, body=body, headers=headers, what=what)
        if status != 200:
            text = raw[:200].decode(errors="replace").strip()
            raise ProviderError(where, f"HTTP {status}" + (f": {text}" if text else ""), status)
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise ProviderError(where, f"answer is not JSON ({exc})", status) from None

    async def text(self, method: str, path: str, *, headers: dict[str, str] | None = None) -> str:
        status, raw = await self.request(method, path, headers=headers)
        if status != 200:
            raise ProviderError(f"{self.name} {method} {path}", f"HTTP {status}", status)
        return raw.decode(errors="replace").strip()

    async def session_token(self, header: str) -> dict[str, str]:
        """An IMDSv2-style session token (AWS, Alibaba): ``PUT /latest/api/token`` with
        ``<header>-ttl-seconds``; returns the ``<header>`` to send with each read."""
        token = await self.text("PUT", "/latest/api/token",
                                headers={f"{header}-ttl-seconds": TOKEN_TTL})
        return {header: token}
