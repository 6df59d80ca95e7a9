"""Base class and strict codec for bus messages.

Every message carries a schema version ``v`` so that a sidecar of an older
image can tell a newer message from a malformed one. Decoding is strict:
unknown fields and missing required fields are errors, never silent.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

SCHEMA_VERSION = 1


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Every knd struct: unknown fields are errors and defaults are left out when encoding.
    (msgspec applies ``kw_only`` to the fields of the class that says it only: a subclass
    whose required fields follow defaults says it again.)"""


class Message(Strict, kw_only=True):
    """A bus message. Subclasses are JSON-encoded msgspec structs."""

    v: int = SCHEMA_VERSION


class DecodeError(ValueError):
    """A bus payload that does not match its schema; the text names the field."""


M = TypeVar("M", bound=Message)

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder] = {}


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes, kind: type[M]) -> M:
    """Decode ``data`` as ``kind`` or raise DecodeError with the offending field path."""
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        msg = dec.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(f"invalid {kind.__name__}: {exc}") from None
    if msg.v != SCHEMA_VERSION:
        raise DecodeError(
            f"invalid {kind.__name__}: `$.v` is {msg.v}, this build speaks {SCHEMA_VERSION}"
        )
    return msg


class ErrorReply(Message):
    """The reply to a request that could not be served."""

    error: str
    code: str = "bad_request"
