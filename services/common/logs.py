"""Logging set-up: readable text by default, one JSON object a line with --log-json.

Log calls about a claim, pod or device pass them as fields:
``log.info("...", extra=fields(claim=uid, pod=pod_uid, device=name))``; every line
carries ``service`` (the ``knd`` sub-command). A message is one line, cut at
:data:`MAX_MESSAGE` characters, whatever the text it echoes (a name with a NUL or a
newline in it, a megabyte of it).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from schemas.text import one_line

_FIELDS = ("claim", "pod", "device", "node", "service")
MAX_MESSAGE = 8192


def _message(record: logging.LogRecord) -> str:
    return one_line(record.getMessage(), MAX_MESSAGE)


class TextFormatter(logging.Formatter):
    """The text format, with the message made safe for one line (tracebacks keep theirs)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        for f in _FIELDS:
            if hasattr(record, f):
                out[f] = one_line(str(getattr(record, f)), 256)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def fields(**values: str | None) -> dict[str, str]:
    """``extra=`` for a log call: the non-empty ones of claim, pod, device, node."""
    unknown = values.keys() - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown log fields {sorted(unknown)}")
    return {k: v for k, v in values.items() if v}


class ServiceFilter(logging.Filter):
    """Stamps every record with the service that wrote it (unless the call set one)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "service"):
            record.service = self.service
        return True


def setup(level: str = "info", as_json: bool = False, service: str = "knd",
          stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ServiceFilter(service))
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(
            f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
