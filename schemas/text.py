"""Echoing someone else's text in an error or a log line: quoted, escaped and cut.

Names, paths and expressions come from people, kubelet and the API server. Put
back whole and raw, a 1 MB name makes a 1 MB error (and a 1 MB claim status), and
a NUL or a newline in it forges or breaks log lines. :func:`q` is the one way such
text is echoed.
"""

from __future__ import annotations

import unicodedata

LIMIT = 80
"""Characters of the text kept by default; a name is recognisable well before that."""

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Control, format (bidi overrides, zero-width), surrogate, private, unassigned, and
line/paragraph separators: everything that can hide or move text on a terminal."""

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    if ch.isascii() and ch.isprintable():
        return ch
    if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
            else f"\\U{code:08x}"
    return ch


def q(value: object, limit: int = LIMIT) -> str:
    """``value`` as a double-quoted string safe for one line: ``"eth0"``.

    Control and invisible characters are escaped (``\\x00``, ``\\n``, ``\\u202e``);
    past ``limit`` characters the rest is cut and counted: ``"aaaa..." (+999920 more)``.
    Bytes are decoded as UTF-8 with undecodable bytes escaped."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else str(value)
    head, rest = text[:limit], len(text) - limit
    body = "".join(map(_escape, head))
    return f'"{body}..." (+{rest} more)' if rest > 0 else f'"{body}"'


def one_line(text: str, limit: int = 4096) -> str:
    """``text`` (a whole message) with control characters escaped, cut at ``limit``: what a
    log line or an error line may carry without breaking into several or growing huge."""
    head, rest = text[:limit], len(text) - limit
    body = "".join(ch if ch == '"' or ch == "\\" else _escape(ch) for ch in head)
    return f"{body}... (+{rest} more)" if rest > 0 else body
