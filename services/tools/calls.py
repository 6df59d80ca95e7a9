"""What kubelet and the container runtime asked the kubelet-gateway, from its /metrics.

``knd status`` reads bus requests from ``$SRV.STATS``; the gateway's other callers
are not on the bus: kubelet's DRA gRPC calls (``knd_gateway_dra_requests_total``,
by method, API version and status) and the runtime's NRI calls
(``knd_nri_requests_total``, by method and ttrpc status) are counted only there.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from services.common.address import format_address, parse_address

DRA, NRI = "knd_gateway_dra_requests", "knd_nri_requests"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
OK = {DRA: "ok", NRI: "OK"}
"""The status label of a call that went well; a DRA ``claim_error`` is an error too."""


def parse(text: str) -> list[dict[str, Any]]:
    """One row per API, method and version: requests and errors, since start."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in OK:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # the _created timestamps
            labels = sample.labels
            key = ("DRA" if family.name == DRA else "NRI", labels.get("method", ""),
                   labels.get("version", ""))
            row = rows.setdefault(key, {"api": key[0], "method": key[1], "version": key[2],
                                        "requests": 0, "errors": 0})
            row["requests"] += int(sample.value)
            if labels.get("status") != OK[family.name]:
                row["errors"] += int(sample.value)
    return [rows[k] for k in sorted(rows)]


def service_url(address: str, path: str) -> str:
    """``http://host:port<path>`` of a service's ``--metrics-address``; a wildcard
    listen address is reached on loopback."""
    host, port = parse_address(address) or ("127.0.0.1", 0)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{format_address(host, port)}{path}"


def get_calls(address: str, timeout: float) -> dict[str, Any]:
    """``{"calls": [...]}`` from the service at ``address``, or ``{"error": ...}``."""
    url = service_url(address, "/metrics")
    try:
        # OpenMetrics: the format the service writes without loading another writer
        req = urllib.request.Request(url, headers={"Accept": OPENMETRICS})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        return {"error": str(getattr(exc, "reason", exc))}
    try:
        return {"calls": parse(text)}
    except ValueError as exc:
        return {"error": f"unreadable metrics: {exc}"}


def lines(calls: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows (with a header) for the text view."""
    return [["API", "METHOD", "VERSION", "REQUESTS", "ERRORS"]] + [
        [c["api"], c["method"], c["version"] or "-", str(c["requests"]), str(c["errors"])]
        for c in calls]
