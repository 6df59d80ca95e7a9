"""``host:port`` as the flags spell it: parsed and written back (no imports of weight:
the CLI reads addresses before any service starts)."""

from __future__ import annotations


def parse_address(text: str | None, default_port: int = 0) -> tuple[str, int] | None:
    """``host:port``, ``:port`` (every interface), ``[v6]:port`` or ``host`` -> (host, port);
    ``off`` or empty -> None. Raises ValueError with a readable reason."""
    text = (text or "").strip()
    if not text or text.lower() in ("off", "none", "false", "disabled"):
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:  # a bare IPv6 address
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not port_text:
        port = default_port
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number 0-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"
