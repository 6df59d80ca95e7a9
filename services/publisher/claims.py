"""``publisher.claim-status``: write a claim's per-device status (KEP-4817).

The plumber reports, per claim, the devices it attached (conditions and
``networkData``); the publisher, the only API writer, records them in the
claim's ``status.devices``. One request replaces all of this driver's entries
(key: driver, pool, device, shareID) and keeps every other driver's. A request
is checked whole before anything is written: the claim must still be the one
the plumber saw (UID), every device must be allocated to it, and the API's
limits must hold; a request that breaks one gets an error reply naming the
field and writes nothing. Writes go through the status subresource with the
resourceVersion read; a 409 means someone else wrote in between, so the claim
is read again and the write retried a bounded number of times. A condition
keeps its ``lastTransitionTime`` while its status stays the same, and a
request that changes nothing writes nothing.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
from prometheus_client.metrics import Counter

from schemas.claims import ClaimStatus, ClaimStatusReply, Condition, DeviceStatus
from schemas.text import one_line
from services.common.api import ApiError, ApiPort, Conflict, NotFound, decode

log = logging.getLogger("knd.publisher.claims")

CLAIM_STATUS_WRITES = Counter(
    "knd_publisher_claim_status_writes",
    "claim-status requests, by result (written, unchanged, invalid, replaced, not_found, "
    "conflict, error)", ["result"])

MAX_CONDITIONS = 8
MAX_IPS = 16
MAX_INTERFACE_NAME = 256
MAX_HARDWARE_ADDRESS = 128
MAX_REASON = 1024
MAX_MESSAGE = 32768
MAX_CONDITION_TYPE = 316
STATUSES = ("True", "False", "Unknown")
RETRIES = 5
"""Writes tried per request when they keep hitting 409 Conflict."""

_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")
_TYPE_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

Key = tuple[str, str, str, str]


class StatusRejected(ValueError):
    """A claim-status request that must not be written; the message names the field."""


class ClaimReplaced(StatusRejected):
    """The claim under that name has another UID: the plumber's claim is gone."""


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(entry: dict) -> Key:
    return (entry.get("driver") or "", entry.get("pool") or "", entry.get("device") or "",
            entry.get("shareID") or "")


def _type_error(kind: str) -> str | None:
    """Why ``kind`` is not a condition type (a qualified name), or None."""
    prefix, sep, name = kind.rpartition("/")
    if len(kind) > MAX_CONDITION_TYPE or len(name) > 63 or not _TYPE_NAME.fullmatch(name):
        return f"{kind!r} is not a qualified name"
    if sep and (not prefix or len(prefix) > 253
                or not all(_DNS_LABEL.fullmatch(p) for p in prefix.split("."))):
        return f"{kind!r} has an invalid prefix"
    return None


def _conditions(dev: DeviceStatus, where: str) -> list[tuple[Condition, str]]:
    if len(dev.conditions) > MAX_CONDITIONS:
        raise StatusRejected(f"{where}.conditions: {len(dev.conditions)} conditions, more "
                             f"than the {MAX_CONDITIONS} allowed")
    seen: set[str] = set()
    out = []
    for k, cond in enumerate(dev.conditions):
        at = f"{where}.conditions[{k}]"
        bad = _type_error(cond.type)
        if bad:
            raise StatusRejected(f"{at}.type: {bad}")
        if cond.type in seen:
            raise StatusRejected(f"{at}.type: {cond.type!r} is listed twice")
        seen.add(cond.type)
        if cond.status not in STATUSES:
            raise StatusRejected(f"{at}.status: {cond.status!r} is not one of "
                                 f"{', '.join(STATUSES)}")
        if not cond.reason:
            raise StatusRejected(f"{at}.reason: required (the API refuses a condition "
                                 "without one)")
        if len(cond.reason) > MAX_REASON or not _REASON.fullmatch(cond.reason):
            raise StatusRejected(f"{at}.reason: {cond.reason!r} must be a CamelCase word of at "
                                 f"most {MAX_REASON} characters (letters, digits, _ , :)")
        if len(cond.message) > MAX_MESSAGE:
            raise StatusRejected(f"{at}.message: longer than {MAX_MESSAGE} characters")
        out.append((cond, at))
    return out


def _network_data(dev: DeviceStatus, where: str) -> dict | None:
    nd = dev.network_data
    if nd is None:
        return None
    where = f"{where}.network_data"
    if len(nd.interface_name) > MAX_INTERFACE_NAME:
        raise StatusRejected(f"{where}.interface_name: longer than {MAX_INTERFACE_NAME} "
                             "characters")
    if len(nd.hardware_address) > MAX_HARDWARE_ADDRESS:
        raise StatusRejected(f"{where}.hardware_address: longer than {MAX_HARDWARE_ADDRESS} "
                             "characters")
    if len(nd.ips) > MAX_IPS:
        raise StatusRejected(f"{where}.ips: {len(nd.ips)} addresses, more than the {MAX_IPS} "
                             "allowed")
    ips: list[str] = []
    for k, text in enumerate(nd.ips):
        addr, sep, prefix = text.partition("/")
        try:
            if not sep or not prefix.isascii() or not prefix.isdigit() or "%" in addr:
                raise ValueError
            canonical = str(ipaddress.ip_interface(text))
        except ValueError:
            raise StatusRejected(f"{where}.ips[{k}]: {text!r} is not a CIDR "
                                 "(address/prefix length)") from None
        if canonical in ips:
            raise StatusRejected(f"{where}.ips[{k}]: {text!r} is listed twice")
        ips.append(canonical)
    out: dict = {}
    if nd.interface_name:
        out["interfaceName"] = nd.interface_name
    if ips:
        out["ips"] = ips
    if nd.hardware_address:
        out["hardwareAddress"] = nd.hardware_address
    return out


class ClaimStatusWriter:
    """Serves ``claim-status`` for one driver through ``api``."""

    def __init__(self, api: ApiPort, driver: str, *, retries: int = RETRIES,
                 clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.driver = driver
        self.retries = max(1, retries)
        self.clock = clock

    async def handle(self, req: ClaimStatus) -> ClaimStatusReply:
        """The endpoint: write, count and log; every failure becomes the reply's error."""
        claim = one_line(f"{req.namespace}/{req.name}", 160)
        try:
            result = await self.write(req)
        except ClaimReplaced as exc:
            return self._failed("replaced", f"claim {claim}: {exc}; nothing written")
        except StatusRejected as exc:
            return self._failed("invalid", f"claim {claim}: {exc}; nothing written")
        except NotFound:
            return self._failed("not_found", f"claim {claim} not found; nothing written")
        except Conflict as exc:
            return self._failed("conflict", f"claim {claim}: still conflicting after "
                                f"{self.retries} tries: {exc}")
        except ApiError as exc:
            return self._failed("error", f"claim {claim}: {exc}")
        CLAIM_STATUS_WRITES.labels(result).inc()
        if result == "written":
            log.info("claim %s: status of %d device(s) written", claim, len(req.devices))
        return ClaimStatusReply()

    def _failed(self, result: str, error: str) -> ClaimStatusReply:
        CLAIM_STATUS_WRITES.labels(result).inc()
        log.warning("claim-status: %s", error)
        return ClaimStatusReply(error=error)

    def _check(self, req: ClaimStatus) -> None:
        """What can be checked without the claim: fields and limits."""
        if not req.uid:
            raise StatusRejected("uid: required")
        keys: set[Key] = set()
        for i, dev in enumerate(req.devices):
            where = f"devices[{i}]"
            if dev.driver != self.driver:
                raise StatusRejected(f"{where}.driver: {dev.driver!r} is not this driver "
                                     f"({self.driver})")
            for field in ("pool", "device"):
                if not getattr(dev, field):
                    raise StatusRejected(f"{where}.{field}: required")
            key = (dev.driver, dev.pool, dev.device, dev.share_id)
            if key in keys:
                raise StatusRejected(f"{where}: device {dev.pool}/{dev.device} is listed twice")
            keys.add(key)
            _conditions(dev, where)
            _network_data(dev, where)

    def entries(self, req: ClaimStatus, claim: dict) -> list[dict]:
        """``claim``'s new ``status.devices``: others' entries, then ours from ``req``."""
        status = decode.field(claim, "status", dict, "") or {}
        allocation = decode.field(status, "allocation", dict, "status")
        if allocation is None:
            raise StatusRejected("the claim is not allocated")
        found = decode.field(allocation, "devices", dict, "status.allocation") or {}
        results = decode.field(found, "results", list, "status.allocation.devices") or []
        allocated = {_key(decode.expect(r, dict, f"status.allocation.devices.results[{i}]"))
                     for i, r in enumerate(results)}
        old = [decode.expect(e, dict, f"status.devices[{i}]")
               for i, e in enumerate(decode.field(status, "devices", list, "status") or [])]
        previous = {_key(e): e for e in old if e.get("driver") == self.driver}
        now = rfc3339(self.clock())
        ours = []
        for i, dev in enumerate(req.devices):
            where = f"devices[{i}]"
            key = (dev.driver, dev.pool, dev.device, dev.share_id)
            if key not in allocated:
                share = f" (shareID {dev.share_id})" if dev.share_id else ""
                raise StatusRejected(f"{where}: device {dev.pool}/{dev.device}{share} is not "
                                     "allocated to this claim")
            kept = decode.field(previous.get(key) or {}, "conditions", list,
                                f"status.devices[{dev.pool}/{dev.device}]") or []
            before = {c.get("type"): c for c in kept if isinstance(c, dict)}
            entry: dict = {"driver": dev.driver, "pool": dev.pool, "device": dev.device}
            if dev.share_id:
                entry["shareID"] = dev.share_id
            conditions = []
            for cond, _ in _conditions(dev, where):
                was = before.get(cond.type) or {}
                since = was.get("lastTransitionTime") if was.get("status") == cond.status \
                    else None
                conditions.append({"type": cond.type, "status": cond.status,
                                   "reason": cond.reason, "message": cond.message,
                                   "lastTransitionTime": since or now})
            if conditions:
                entry["conditions"] = conditions
            if "data" in (previous.get(key) or {}):  # not ours to drop: kept as it was
                entry["data"] = previous[key]["data"]
            network = _network_data(dev, where)
            if network is not None:
                entry["networkData"] = network
            ours.append(entry)
        return [e for e in old if e.get("driver") != self.driver] + ours

    async def write(self, req: ClaimStatus) -> str:
        """Write ``req``; return "written" or "unchanged", or raise StatusRejected/ApiError.

        The request is checked before the first read, and against each claim read
        (UID, allocation) before its write, so a rejected request writes nothing.
        """
        self._check(req)
        for attempt in range(1, self.retries + 1):
            claim = await self.api.get_claim(req.namespace, req.name)
            try:
                uid = decode.metadata(claim, "uid")["uid"]
                if uid != req.uid:
                    raise ClaimReplaced(f"UID {one_line(uid, 80)} differs from the UID the "
                                        f"plumber sent ({req.uid}): the claim was replaced")
                devices = self.entries(req, claim)
            except decode.ObjectError as exc:
                raise StatusRejected(f"the API served a malformed claim: {exc}") from None
            status = claim.get("status") or {}
            if devices == (status.get("devices") or []):
                return "unchanged"
            new = copy.deepcopy(claim)
            if devices:
                new.setdefault("status", {})["devices"] = devices
            else:
                new["status"].pop("devices", None)
            try:
                await self.api.update_claim_status(new)
            except Conflict:
                if attempt == self.retries:
                    raise
                log.debug("claim %s/%s: conflict on try %d; reading it again", req.namespace,
                          req.name, attempt)
                await anyio.sleep(random.uniform(0, 0.01 * attempt))
                continue
            return "written"
        raise AssertionError("unreachable")
