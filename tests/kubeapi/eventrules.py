"""core/v1 Event validation as the API server does it for a core/v1 request.

The rules (kubernetes pkg/apis/core/validation/events.go ``legacyValidateEvent``, plus
the generic object-meta check every create runs, ``rest.BeforeCreate``):

- ``metadata.name`` is required and must be a path segment (not ``.``/``..``, no ``/``
  or ``%``): core/v1 events are not held to DNS names.
- ``metadata.namespace`` must be a DNS subdomain.
- Without ``eventTime`` (a client-go style event): the event's namespace must be its
  ``involvedObject.namespace`` ("" or ``default`` for a cluster-scoped object).
- With ``eventTime`` (a new-style event): ``reportingComponent`` required and a
  qualified name, ``reportingInstance`` and ``action`` required and at most 128
  characters, ``reason`` required and at most 128, ``message`` at most 1024, and
  ``involvedObject.namespace`` may be empty only in ``default`` or ``kube-system``.

``type`` and ``count`` are not checked for core/v1 requests (the strict checks are the
events.k8s.io/v1 API's); a client must keep to Normal/Warning and count >= 1 itself.
Updates and patches run the same rules on the new object.
"""

from __future__ import annotations

import re
from typing import Any

from tests.kubeapi.validation import Cause, is_subdomain

REASON_LIMIT = 128
NOTE_LIMIT = 1024
REPORTING_INSTANCE_LIMIT = 128
ACTION_LIMIT = 128
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _qualified_name_error(value: str) -> str | None:
    prefix, sep, name = value.rpartition("/")
    if sep and not is_subdomain(prefix):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                "must start and end with an alphanumeric character, at most 63 characters")
    return None


def validate_event(obj: dict) -> list[Cause]:
    causes: list[Cause] = []
    meta = obj.get("metadata") or {}
    name, ns = meta.get("name") or "", meta.get("namespace") or ""

    def invalid(field: str, value: Any, why: str) -> None:
        causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {value!r}: {why}"))

    def required(field: str) -> None:
        causes.append(Cause(field, "FieldValueRequired", "Required value"))

    involved = obj.get("involvedObject") if isinstance(obj.get("involvedObject"), dict) else {}
    theirs = involved.get("namespace") or ""
    if not obj.get("eventTime"):
        if (theirs == "" and ns not in ("", "default")) or (theirs and theirs != ns):
            invalid("involvedObject.namespace", theirs, "does not match event.namespace")
    else:
        if theirs == "" and ns not in ("default", "kube-system"):
            invalid("involvedObject.namespace", theirs, "does not match event.namespace")
        controller = obj.get("reportingComponent") or ""
        if not controller:
            required("reportingController")
        elif (why := _qualified_name_error(controller)) is not None:
            invalid("reportingController", controller, why)
        for field, key, limit in (("reportingInstance", "reportingInstance",
                                   REPORTING_INSTANCE_LIMIT),
                                  ("action", "action", ACTION_LIMIT),
                                  ("reason", "reason", REASON_LIMIT)):
            value = obj.get(key) or ""
            if not value:
                required(field)
            elif len(value) > limit:
                invalid(field, "", f"can have at most {limit} characters")
        if len(obj.get("message") or "") > NOTE_LIMIT:
            invalid("message", "", f"can have at most {NOTE_LIMIT} characters")
    if not is_subdomain(ns):
        invalid("namespace", ns, "a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.'")
    if name in (".", "..") or any(c in name for c in "/%"):
        invalid("metadata.name", name, "may not be '.' or '..' and may not contain '/' or '%'")
    return causes
