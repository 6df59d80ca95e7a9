"""Where a provider listens, and how its failures are told: no I/O, cheap to import
(every ``knd`` command checks ``--webhook-url`` before it starts)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


class ProviderError(Exception):
    """A provider could not be reached or answered something unusable."""

    def __init__(self, where: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where a provider listens: ``http(s)://host[:port][/base]`` or ``unix:///path``."""

    url: str
    base: str
    """The HTTP base URL requests go to (``http://localhost`` for a unix socket)."""
    socket: str | None = None

    @classmethod
    def parse(cls, url: str, what: str = "URL") -> Target:
        """Raises ValueError naming ``what`` for a URL knd cannot use."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = parts.path or parts.netloc
            if not path.startswith("/"):
                raise ValueError(f"{what} {url!r}: a unix socket needs an absolute path "
                                 "(unix:///run/provider.sock)")
            return cls(url=url, base="http://localhost", socket=path)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{what} {url!r}: expected http://host:port, https://host:port "
                             "or unix:///path")
        return cls(url=url, base=url.rstrip("/"))
