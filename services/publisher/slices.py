"""Planning a node's ResourceSlice pool: which slices to write and which to delete.

Pure functions, no I/O: given the devices to publish and the slices the API
holds for this node and driver, :func:`plan_pool` says what to create, update
and delete. The reconciler executes the plan; the tests check it directly.

Rules (those of the upstream kubelet-plugin helper, plus write economy):

* one pool per node, named after the node; ``spec.nodeName`` is the node;
* at most 128 devices per slice, 64 when a slice holds a device with taints or
  counters;
* slice names are derived from node, driver and index, so a restarted
  publisher finds and reuses its objects instead of duplicating them;
* placement is sticky: while the pool keeps the same number of slices, a
  device stays in the slice it was published in, new devices fill free room,
  and only slices whose content changed are rewritten, at the same generation;
* when the pool needs a different number of slices, or what the API holds is
  not a consistent pool (mixed generations, a wrong ``resourceSliceCount``,
  slices that are not ours, a device listed twice), the generation is bumped
  and every slice is rewritten with it and the new count; the scheduler only
  looks at the newest generation, so it never mixes the old and new layout;
* slices that are no longer needed are deleted after all writes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import limits
from services.publisher.validation import parse_quantity

API_VERSION = "resource.k8s.io/v1"
KIND = "ResourceSlice"
_INDEX_ROOM = 7  # "-" and up to six digits of index
_NOT_NAME = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True)
class Owner:
    """The Node that owns the slices, so they go away with it."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid,
                "controller": True}


@dataclass(frozen=True)
class Write:
    """Create (``create``) or replace an object; a replace carries the resourceVersion read."""

    obj: dict[str, Any]
    create: bool

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]


@dataclass(frozen=True)
class Delete:
    """Delete a slice only if it is still the object we saw (UID and resourceVersion)."""

    name: str
    uid: str
    resource_version: str


@dataclass
class Plan:
    generation: int
    slice_count: int
    slices: list[dict[str, Any]]
    """The desired slices, index order (what the pool looks like once converged)."""
    writes: list[Write] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    bumped: bool = False
    why: str = ""
    """Why the generation was bumped (empty when not)."""

    @property
    def empty(self) -> bool:
        return not self.writes and not self.deletes


def slice_base(node: str, driver: str) -> str:
    """The common prefix of the pool's slice names, a DNS subdomain with room for an index.

    A name that would be too long is cut and given a short hash of the whole,
    so two long node names that share a beginning still get different slices.
    """
    raw = _NOT_NAME.sub("-", f"{node}-{driver}".lower()).strip(".-") or "knd"
    room = limits.MAX_DNS_SUBDOMAIN - _INDEX_ROOM
    if len(raw) <= room:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    head = raw[: room - len(digest) - 1].rstrip(".-")
    return f"{head}-{digest}"


def slice_name(node: str, driver: str, index: int) -> str:
    return f"{slice_base(node, driver)}-{index}"


def slice_index(base: str, name: str) -> int | None:
    """The index encoded in one of our slice names, or None for a foreign name."""
    if not name.startswith(base + "-"):
        return None
    rest = name[len(base) + 1:]
    if not rest.isdigit() or str(int(rest)) != rest:
        return None
    return int(rest)


FEATURE_FIELDS = frozenset({"allowMultipleAllocations"})
"""Device fields an API server drops when their feature gate (DRAConsumableCapacity) is
off: the device then stays exclusive, and a slice without it is not rewritten forever."""


def is_limited(device: Mapping[str, Any]) -> bool:
    """Taints or counters lower the slice's device limit to 64."""
    return bool(device.get("taints") or device.get("consumesCounters"))


def slice_limit(devices: Sequence[Mapping[str, Any]]) -> int:
    if any(is_limited(d) for d in devices):
        return limits.MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS
    return limits.MAX_DEVICES_PER_SLICE


def fits(devices: Sequence[Mapping[str, Any]]) -> bool:
    return len(devices) <= slice_limit(devices)


def pack(devices: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The fewest slices that hold ``devices``; always at least one (maybe empty).

    Limited devices (taints, counters) go together into 64-device slices,
    whose spare room takes plain devices; the remaining plain devices fill
    128-device slices. Order is kept within each group, so packing is
    deterministic.
    """
    small = limits.MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS
    big = limits.MAX_DEVICES_PER_SLICE
    limited = [d for d in devices if is_limited(d)]
    plain = [d for d in devices if not is_limited(d)]
    out = [limited[i:i + small] for i in range(0, len(limited), small)]
    if out and len(out[-1]) < small:
        take = small - len(out[-1])
        out[-1] = out[-1] + plain[:take]
        plain = plain[take:]
    out += [plain[i:i + big] for i in range(0, len(plain), big)]
    return out or [[]]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _pool(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _spec(obj).get("pool") or {}


def _subset(want: Any, have: Any) -> bool:
    """``have`` says at least what ``want`` says (the server may add defaults)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(_subset(v, have.get(k)) for k, v in
                                                 want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(want) == len(have)
                and all(_subset(w, h) for w, h in zip(want, have, strict=True)))
    return want == have


def same_device(want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    """Whether the API's copy of a device is what we would write now.

    Attribute and capacity maps must have the same keys (a removed attribute
    is a change); capacities compare by value since the server re-spells
    quantities; other fields compare as "the server says at least this".
    """
    if want.get("name") != have.get("name"):
        return False
    if (want.get("attributes") or {}) != (have.get("attributes") or {}):
        return False
    wcap, hcap = want.get("capacity") or {}, have.get("capacity") or {}
    if wcap.keys() != hcap.keys():
        return False
    for key, w in wcap.items():
        h = hcap[key]
        if not isinstance(h, Mapping):
            return False
        if parse_quantity(w.get("value")) != parse_quantity(h.get("value")):
            return False
        rest_w = {k: v for k, v in w.items() if k != "value"}
        if not _subset(rest_w, h):
            return False
    for key in set(want) | set(have):
        if key in ("name", "attributes", "capacity"):
            continue
        if key in FEATURE_FIELDS and key not in have:
            continue  # the API server's feature is off: it dropped the field, as it will again
        w, h = want.get(key), have.get(key)
        if w in (None, [], {}) and h in (None, [], {}, False):
            continue
        if not _subset(w, h):
            return False
    return True


def same_slice(want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    """Whether the slice ``have`` read from the API needs no rewrite to become ``want``."""
    ws, hs = _spec(want), _spec(have)
    for key in ("driver", "nodeName", "pool"):
        if ws.get(key) != hs.get(key):
            return False
    wdev, hdev = ws.get("devices") or [], hs.get("devices") or []
    if len(wdev) != len(hdev) or not all(same_device(w, h) for w, h in zip(wdev, hdev,
                                                                           strict=True)):
        return False
    wrefs = _meta(want).get("ownerReferences")
    if wrefs and not _subset(wrefs, _meta(have).get("ownerReferences")):
        return False
    return _subset(_meta(want).get("labels") or {}, _meta(have).get("labels") or {})


def build_slice(node: str, driver: str, owner: Owner | None, index: int, generation: int,
                count: int, devices: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": slice_name(node, driver, index)}
    if owner is not None:
        metadata["ownerReferences"] = [owner.reference()]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": count},
            "devices": devices,
        },
    }


def _delete_of(obj: Mapping[str, Any]) -> Delete:
    m = _meta(obj)
    return Delete(name=m.get("name", ""), uid=m.get("uid", ""),
                  resource_version=str(m.get("resourceVersion", "")))


def _inconsistency(ours: dict[int, dict[str, Any]], foreign: list[dict[str, Any]]) -> str:
    """Why the slices we hold are not one complete pool (empty when they are)."""
    if foreign:
        return f"{len(foreign)} slice(s) of the pool that are not ours"
    if not ours:
        return ""
    if set(ours) != set(range(len(ours))):
        return f"slice indices {sorted(ours)} are not 0..{len(ours) - 1}"
    generations = {_pool(o).get("generation") for o in ours.values()}
    if len(generations) != 1:
        return f"mixed generations {sorted(generations, key=str)}"
    counts = {_pool(o).get("resourceSliceCount") for o in ours.values()}
    if counts != {len(ours)}:
        return f"resourceSliceCount {sorted(counts, key=str)} but {len(ours)} slices"
    seen: set[str] = set()
    for i in sorted(ours):
        for dev in _spec(ours[i]).get("devices") or []:
            if dev.get("name") in seen:
                return f"device {dev.get('name')} listed twice"
            seen.add(dev.get("name"))
    return ""


def _sticky(ours: dict[int, dict[str, Any]],
            devices: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]] | None:
    """Keep each device where it is published; place new ones in free room.

    None when the devices cannot be placed that way (a slice would go over
    its limit), which makes the caller repack under a new generation.
    """
    by_name = {d["name"]: d for d in devices}
    layout: list[list[dict[str, Any]]] = []
    for i in range(len(ours)):
        names = [d.get("name") for d in _spec(ours[i]).get("devices") or []]
        layout.append([by_name[n] for n in names if n in by_name])
    placed = {d["name"] for group in layout for d in group}
    for dev in devices:
        if dev["name"] in placed:
            continue
        for group in layout:
            if fits([*group, dev]):
                group.append(dev)
                break
        else:
            return None
    return layout if all(fits(group) for group in layout) else None


def plan_pool(*, node: str, driver: str, owner: Owner | None,
              devices: Sequence[dict[str, Any]], existing: Sequence[dict[str, Any]]) -> Plan:
    """What to write and delete so the API holds exactly ``devices`` in node's pool.

    ``devices`` must be valid and uniquely named (see validation.validate);
    ``existing`` is every slice of ``driver`` on ``node`` as the API returned it.
    """
    base = slice_base(node, driver)
    ours: dict[int, dict[str, Any]] = {}
    foreign: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    for obj in existing:
        if _pool(obj).get("name") != node:
            stale.append(obj)  # an old pool of this node (renamed): not part of ours
            continue
        index = slice_index(base, _meta(obj).get("name", ""))
        if index is None:
            foreign.append(obj)
        else:
            ours[index] = obj
    generations = [g for g in (_pool(o).get("generation") for o in [*ours.values(), *foreign])
                   if isinstance(g, int)]
    current = max(generations, default=-1)
    needed = len(pack(devices))
    why = _inconsistency(ours, foreign)
    layout = None
    if not why and not ours:
        why = "no slices yet"
    elif not why and len(ours) != needed:
        why = f"pool needs {needed} slice(s), has {len(ours)}"
    elif not why:
        layout = _sticky(ours, devices)
        if layout is None:
            why = "devices no longer fit their slices"
    if layout is None:
        layout = pack(devices)
        generation = current + 1  # 0 for a new pool
    else:
        generation = current
    count = len(layout)
    plan = Plan(generation=generation, slice_count=count, slices=[], bumped=bool(why), why=why)
    for index, group in enumerate(layout):
        want = build_slice(node, driver, owner, index, generation, count, list(group))
        plan.slices.append(want)
        have = ours.get(index)
        if have is None:
            plan.writes.append(Write(obj=want, create=True))
        elif not same_slice(want, have):
            metadata = dict(want["metadata"])
            for key in ("resourceVersion", "uid", "labels", "annotations"):
                if _meta(have).get(key) and key not in metadata:
                    metadata[key] = _meta(have)[key]  # carry preconditions, keep others' marks
            if _meta(have).get("ownerReferences") and "ownerReferences" not in metadata:
                metadata["ownerReferences"] = _meta(have)["ownerReferences"]
            obj = {**want, "metadata": metadata}
            plan.writes.append(Write(obj=obj, create=False))
    plan.deletes = [_delete_of(o) for i, o in sorted(ours.items()) if i >= count]
    plan.deletes += [_delete_of(o) for o in [*foreign, *stale]]
    return plan
