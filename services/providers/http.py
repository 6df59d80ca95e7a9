"""HTTP to a provider: a cloud's metadata service or a webhook, over TCP or a unix socket.

One small client over aiohttp (already installed with kubernetes-asyncio) so every
provider gets the same deadline handling and the same error shape: a
:class:`ProviderError` whose text names the endpoint, so a log line or a claim
error says which webhook or metadata service misbehaved.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from services.providers.target import ProviderError, Target

__all__ = ["Client", "ProviderError", "Target"]

MAX_BODY = 1 << 20
"""Bytes of one answer read at most: a provider that streams forever must not eat memory."""

TOKEN_TTL = "21600"
"""Seconds a metadata session token lives (the longest both clouds allow)."""


class Client:
    """Requests to one :class:`Target`, each bounded by ``timeout`` seconds."""

    def __init__(self, target: Target, name: str, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.name = name
        """How errors name this provider (``webhook unix:///run/x.sock``)."""
        self.timeout = timeout
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self.target.socket:
                connector = aiohttp.UnixConnector(path=self.target.socket)
            else:
                connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True)
            # no proxy from the environment: metadata and node-local webhooks are direct
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, body: Any = None,
                      headers: dict[str, str] | None = None, what: str = "") -> tuple[int, bytes]:
        """(status, body) of one request; raises ProviderError when there is no answer."""
        where = f"{self.name} {method} {path}" if not what else f"{self.name} {what}"
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._open().request(
                    method, self.target.base + path, data=data, headers=hdrs,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_BODY + 1)
                if len(raw) > MAX_BODY:
                    raise ProviderError(where, f"answer larger than {MAX_BODY} bytes",
                                        resp.status)
                return resp.status, raw
        except TimeoutError:
            raise ProviderError(where, f"no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ProviderError(where, f"cannot reach it: {exc}") from None
        except OSError as exc:
            raise ProviderError(where, f"cannot reach it: {exc}") from None

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
