"""Server-side printing (``Accept: ...;as=Table``) of events, as kubectl shows them.

kubectl asks the API server for a Table and prints its columns. Only events get one here
(the columns of the real server's event printer); for other kinds kubectl gets the list
and prints names. Durations are rounded like the real ones (``42s``, ``5m``, ``3h``).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime

COLUMNS = [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1),
           ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _since(stamp: str, now: datetime) -> str:
    if not stamp:
        return "<unknown>"
    try:
        then = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    s = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size or (unit == "m" and s >= 120):
            return f"{s // size}{unit}"
    return f"{s}s"


def event_table(body: dict) -> dict:
    """The Table of an EventList ``body``."""
    now = datetime.now(UTC)
    rows = []
    for ev in body["items"]:
        inv = ev.get("involvedObject") or {}
        src = ev.get("source") or {}
        source = ", ".join(x for x in (src.get("component"), src.get("host")) if x)
        rows.append({"cells": [
            _since(ev.get("lastTimestamp") or ev.get("eventTime") or "", now),
            ev.get("type", ""), ev.get("reason", ""),
            f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
            inv.get("fieldPath", ""), source, ev.get("message", ""),
            _since(ev.get("firstTimestamp") or "", now), ev.get("count", 1),
            ev["metadata"]["name"]],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": copy.deepcopy(ev["metadata"])}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": body["metadata"],
            "columnDefinitions": [{"name": n, "type": "integer" if n == "Count" else "string",
                                   "format": "", "description": "", "priority": p}
                                  for n, p in COLUMNS],
            "rows": rows}
