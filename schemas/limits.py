"""The Kubernetes API limits that a ResourceSlice must respect (resource.k8s.io/v1).

Kept in one place so discovery (device names, attribute values) and the
publisher (slice validation) agree with each other and with the API server.
"""

from __future__ import annotations

import re

MAX_DEVICES_PER_SLICE = 128
MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS = 64
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_ATTRIBUTE_STRING = 64
MAX_DOMAIN = 63
MAX_IDENTIFIER = 32
MAX_DNS_LABEL = 63
MAX_DNS_SUBDOMAIN = 253

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def is_dns_label(s: str) -> bool:
    return len(s) <= MAX_DNS_LABEL and bool(_LABEL.match(s))


def is_dns_subdomain(s: str) -> bool:
    return (0 < len(s) <= MAX_DNS_SUBDOMAIN
            and all(_LABEL.match(part) for part in s.split(".")))


def is_semver(s: str) -> bool:
    return bool(_SEMVER.match(s))


def qualified_name_error(name: str) -> str | None:
    """Why ``name`` is not a valid attribute/capacity name, or None."""
    domain, sep, ident = name.rpartition("/")
    if sep:
        if len(domain) > MAX_DOMAIN or not is_dns_subdomain(domain):
            return f"domain {domain!r} must be a DNS subdomain of at most {MAX_DOMAIN} characters"
    if len(ident) > MAX_IDENTIFIER or not _C_IDENTIFIER.match(ident):
        return f"identifier {ident!r} must be a C identifier of at most {MAX_IDENTIFIER} characters"
    return None
