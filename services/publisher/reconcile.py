"""Making the API hold the node's pool: execute plans, absorb conflicts, learn from 422s.

:class:`PoolReconciler` owns one pool (one node, one driver). It keeps what it
last read or wrote (with resourceVersions) so that a sync with nothing new
costs no API call at all, and forgets it after any conflict or error so that
the next attempt starts from what the API really holds.

Order matters for the scheduler: all slices of the new layout are written
before obsolete ones are deleted, so the pool is never empty while it
converges, and an error stops the sync before any delete, so an API failure
never takes devices off the cluster.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from schemas.inventory import Device
from services.common.api.port import ApiError, ApiPort, Conflict, Invalid, NotFound
from services.publisher import metrics
from services.publisher.slices import Delete, Owner, Write, plan_pool
from services.publisher.validation import to_wire, validate

log = logging.getLogger("knd.publisher.reconcile")

T = TypeVar("T")
_DEVICE_FIELD = re.compile(r"spec\.devices\[(\d+)\]")
_CAUSE_SPLIT = re.compile(r", (?=(?:spec|metadata)\.)")


class SliceRejected(ApiError):
    """The API server refused a slice and no single device could be blamed.

    Retrying the same content cannot help; the service waits for new
    inventory (or its periodic resync) instead of looping.
    """

    status = 422


@dataclass
class SyncResult:
    """What one successful sync did and what the pool looks like afterwards."""

    writes: int
    generation: int
    slices: int
    devices: int
    rdma: int
    dropped: list[str] = field(default_factory=list)
    last_write_at: float | None = None
    """Unix time at which the last API write of this sync ended (None: no write)."""
    bumped: bool = False


def _fingerprint(device: Mapping[str, Any]) -> str:
    return json.dumps(device, sort_keys=True, default=str)


def _causes(exc: ApiError) -> list[str]:
    """The server's field causes, one string each.

    The port carries the Status message, which lists them as
    ``... "name" is invalid: [field: message, field: message]``; a port that
    keeps the structured ``causes`` is read directly.
    """
    out: list[str] = []
    for cause in getattr(exc, "causes", None) or []:
        if isinstance(cause, Mapping):
            out.append(f"{cause.get('field', '')}: {cause.get('message', '')}".strip(": "))
        else:
            out.append(str(cause))
    if out:
        return out
    text = str(exc)
    m = re.search(r"is invalid: \[(.*)\]\s*$", text, re.S)
    if m:
        return [c.strip() for c in _CAUSE_SPLIT.split(m.group(1)) if c.strip()]
    return [text]


class PoolReconciler:
    """Converge the pool of ``driver`` on ``node`` to a list of inventory devices."""

    def __init__(self, api: ApiPort, node: str, driver: str, *,
                 call_timeout: float | None = None, max_attempts: int = 5) -> None:
        self.api = api
        self.node = node
        self.driver = driver
        self.call_timeout = call_timeout
        self.max_attempts = max_attempts
        self._owner: Owner | None = None
        self._known: dict[str, dict[str, Any]] | None = None
        self._rejected: dict[str, tuple[str, str]] = {}
        """device name -> (fingerprint of the refused content, the server's reason)"""

    def invalidate(self) -> None:
        """Forget what the API holds (slices, the Node's uid); the next sync reads it again."""
        self._known = None
        self._owner = None

    async def sync(self, devices: Iterable[Device | Mapping[str, Any]]) -> SyncResult:
        """Publish ``devices`` (invalid ones are dropped); return what was done.

        Raises ApiError when the API fails (other than a conflict, which is
        retried from a fresh read up to ``max_attempts`` times).
        """
        wire = [to_wire(d) for d in devices]
        names = {d.get("name") for d in wire}
        self._rejected = {n: r for n, r in self._rejected.items() if n in names}
        writes = 0
        last_write: float | None = None
        checked = validate(wire, rejected=self._still_rejected(wire))
        for _attempt in range(self.max_attempts):
            owner = await self._get_owner()
            existing = await self._existing()
            plan = plan_pool(node=self.node, driver=self.driver, owner=owner,
                             devices=checked.devices, existing=existing)
            if plan.bumped:
                log.info("pool %s: generation %d, %d slice(s): %s", self.node, plan.generation,
                         plan.slice_count, plan.why)
            current: Write | None = None
            try:
                for current in plan.writes:
                    await self._write(current)
                    writes += 1
                    last_write = time.time()
                current = None
                for gone in plan.deletes:
                    await self._delete(gone)
                    writes += 1
                    last_write = time.time()
            except (Conflict, NotFound) as exc:
                log.info("pool %s: %s; reading the pool again", self.node, exc)
                self.invalidate()
                continue
            except Invalid as exc:
                self._known = None
                metrics.INVALID.inc()
                self._blame(exc, current)
                checked = validate(wire, rejected=self._still_rejected(wire))
                continue
            except BaseException:
                self._known = None  # a write may or may not have happened
                raise
            rdma_key = f"{self.driver}/rdma"
            published = checked.devices
            return SyncResult(
                writes=writes, generation=plan.generation, slices=plan.slice_count,
                devices=len(published),
                rdma=sum(1 for d in published
                         if (d.get("attributes") or {}).get(rdma_key) == {"bool": True}),
                dropped=checked.dropped, last_write_at=last_write, bumped=plan.bumped)
        raise ApiError(f"pool {self.node} did not converge in {self.max_attempts} attempts",
                       status=409, reason="Conflict")

    # ---- writes ------------------------------------------------------------------------

    async def _write(self, w: Write) -> None:
        if w.create:
            obj = await self._call("create", self.api.create_slice(w.obj))
        else:
            obj = await self._call("update", self.api.update_slice(w.obj))
        if self._known is not None:
            self._known[w.name] = obj

    async def _delete(self, d: Delete) -> None:
        try:
            await self._call("delete", self.api.delete_slice(d.name, d.uid, d.resource_version))
        except NotFound:
            pass  # already gone: that is what we wanted
        if self._known is not None:
            self._known.pop(d.name, None)

    async def _call(self, verb: str, op: Awaitable[T]) -> T:
        """One API call, bounded by ``call_timeout`` and counted."""
        scope = anyio.fail_after(self.call_timeout) if self.call_timeout else nullcontext()
        try:
            with scope:
                result = await op
        except TimeoutError:
            metrics.API_ERRORS.labels("0").inc()
            raise ApiError(f"{verb}: no answer from the API within {self.call_timeout}s",
                           status=0, reason="Timeout") from None
        except ApiError as exc:
            if not (verb == "delete" and isinstance(exc, NotFound)):
                metrics.API_ERRORS.labels(str(exc.status)).inc()
            raise
        if verb in ("create", "update", "delete"):
            metrics.API_WRITES.labels(verb).inc()
        return result

    # ---- reads ---------------------------------------------------------------------------

    async def _get_owner(self) -> Owner | None:
        """The Node's uid for the owner reference; a missing Node is asked again next time."""
        if self._owner is None:
            try:
                node = await self._call("get", self.api.get_node(self.node))
            except NotFound:
                log.warning("node %s not found: slices are written without an owner",
                            self.node)
                return None
            uid = (node.get("metadata") or {}).get("uid")
            if uid:
                self._owner = Owner(name=self.node, uid=uid)
        return self._owner

    async def _existing(self) -> list[dict[str, Any]]:
        if self._known is None:
            items = await self._call("list", self.api.list_slices(self.driver, self.node))
            self._known = {(o.get("metadata") or {}).get("name", ""): o for o in items}
        return list(self._known.values())

    # ---- 422 -----------------------------------------------------------------------------

    def _still_rejected(self, wire: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Refused devices stay out while their content is unchanged."""
        out: dict[str, str] = {}
        for dev in wire:
            seen = self._rejected.get(dev.get("name", ""))
            if seen and seen[0] == _fingerprint(dev):
                out[dev["name"]] = seen[1]
        return out

    def _blame(self, exc: Invalid, write: Write | None) -> None:
        """Keep the devices the server's causes point at out from now on.

        Raises SliceRejected when no device of the refused slice is named:
        the same content would be refused again, so retrying cannot help.
        """
        causes = _causes(exc)
        log.error("pool %s: the API server refused %s: %s", self.node,
                  write.name if write else "a write", "; ".join(causes))
        devs = (write.obj["spec"].get("devices") or []) if write else []
        blamed = 0
        for cause in causes:
            for m in _DEVICE_FIELD.finditer(cause):
                index = int(m.group(1))
                if index < len(devs):
                    dev = devs[index]
                    reason = f"devices[{dev['name']}]: refused by the API server: {cause}"
                    self._rejected[dev["name"]] = (_fingerprint(dev), reason)
                    blamed += 1
        if not blamed:
            raise SliceRejected(f"pool {self.node}: slice refused: {'; '.join(causes)}",
                                reason="Invalid")
