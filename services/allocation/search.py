"""One claim on one node: the devices the scheduler's allocator would pick.

The search is the stable allocator's (k8s.io/dynamic-resource-allocation/structured):
requests in order, each ``firstAvailable`` subrequest in order until the rest of the
claim fits, each device slot tried with the node's devices in pool, slice and device
order, backtracking on failure. Per request the first solution of the upstream search
is the first combination in that order, so slots are filled as combinations.

A device is taken for a request when it is not in use (another claim holds it, unless
the request has admin access), the class's selectors and then the request's accept it
(lazily, as upstream: a selector is evaluated only when reached, and an error in one
aborts the allocation), and every constraint over the request still holds: under
``matchAttribute`` the first device bound sets the value the others must have, under
``distinctAttribute`` every device must have a value no other has. The latter is
upstream's only with the DRAConsumableCapacity feature; without it the scheduler
refuses such a claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.allocation.celenv import Selector, SelectorError, device_value
from services.allocation.objects import AttrValue, Claim, Constraint, Device, Request
from services.allocation.pools import Pool

MAX_DEVICES = 32
"""Devices one claim may be allocated (resource.k8s.io/v1 AllocationResultsMaxSize)."""


class AllocationError(Exception):
    """Where the scheduler would abort, not just find no room: the text says why."""


@dataclass(frozen=True)
class Pick:
    request: str
    device: Device


@dataclass
class _Bound:
    """A constraint during the search: the values its devices hold."""

    constraint: Constraint
    values: list[AttrValue] = field(default_factory=list)

    @property
    def attribute(self) -> str:
        return self.constraint.match_attribute or self.constraint.distinct_attribute

    def admits(self, value: AttrValue | None) -> bool:
        if value is None:
            return False
        if self.constraint.match_attribute:
            return not self.values or (type(value) is type(self.values[0])
                                       and value == self.values[0])
        return all(type(value) is not type(v) or value != v for v in self.values)


@dataclass
class Matcher:
    """Selectors compiled once per class and request, results kept per device."""

    classes: dict[str, list[Selector]]
    requests: dict[str, list[Selector]]
    _seen: dict[tuple[str, str], bool] = field(default_factory=dict)
    _values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, device: Device) -> dict[str, Any]:
        v = self._values.get(device.id)
        if v is None:
            v = self._values[device.id] = device_value(device)
        return v

    def first_rejection(self, req: Request, device: Device) -> tuple[str, int] | None:
        """None if ``device`` fits ``req``'s selectors, else ("class" | "request", index)
        of the first that says no. Raises SelectorError as upstream would abort."""
        for where, selectors in (("class", self.classes.get(req.class_name, [])),
                                 ("request", self.requests.get(req.name, []))):
            for i, sel in enumerate(selectors):
                if not sel.matches(device, self.value(device)):
                    return where, i
        return None

    def selectable(self, req: Request, device: Device) -> bool:
        key = (req.name, device.id)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = self.first_rejection(req, device) is None
        return seen


def compile_claim(claim: Claim, classes: dict[str, list[Selector]],
                  known_classes: Callable[[str], list[str] | None]) -> dict[str, list[Selector]]:
    """The claim's request selectors, compiled; the classes it names, compiled into
    ``classes``. Raises SelectorError (a compile error) or AllocationError (no class)."""
    out: dict[str, list[Selector]] = {}
    for req in claim.requests:
        for r in req.subrequests or (req,):
            if not r.class_name:
                raise AllocationError(f"claim {claim.name}, request {r.name}: missing device "
                                      "class name")
            if r.class_name not in classes:
                exprs = known_classes(r.class_name)
                if exprs is None:
                    raise AllocationError(f"claim {claim.name}, request {r.name}: could not "
                                          f"retrieve device class {r.class_name}")
                classes[r.class_name] = [Selector(e, f"class {r.class_name}", i)
                                         for i, e in enumerate(exprs)]
            out[r.name] = [Selector(e, f"claim {claim.name}, request {r.name}", i)
                           for i, e in enumerate(r.selectors)]
    return out


class Search:
    def __init__(self, claim: Claim, pools: list[Pool], devices: list[Device],
                 in_use: set[str], matcher: Matcher) -> None:
        self.claim, self.pools, self.devices = claim, pools, devices
        self.in_use, self.m = in_use, matcher
        self.picks: list[Pick] = []
        self.taken: set[str] = set()
        self.bound = [_Bound(c) for c in claim.constraints]
        self.chosen: dict[str, str] = {}
        """Request -> the subrequest that was used (``firstAvailable``)."""

    def run(self) -> list[Pick] | None:
        """The devices picked, or None when the claim does not fit on this node."""
        for i, c in enumerate(self.claim.constraints):
            if bool(c.match_attribute) == bool(c.distinct_attribute):
                raise AllocationError(f"claim {self.claim.name}, constraint #{i}: expected "
                                      "exactly one of matchAttribute, distinctAttribute")
        least = sum(min(self._least(s) for s in r.subrequests) if r.subrequests
                    else self._least(r) for r in self.claim.requests)
        if least > MAX_DEVICES:
            raise AllocationError(f"claim {self.claim.name}: number of requested devices "
                                  f"{least} exceeds the claim limit of {MAX_DEVICES}")
        return list(self.picks) if self._request(0) else None

    def _least(self, r: Request) -> int:
        return len(self.all_of(r)) if r.all else r.count

    def all_of(self, r: Request) -> list[Device]:
        """An ``All`` request's devices: every selectable one on the node."""
        for p in self.pools:
            if p.incomplete:
                raise AllocationError(f"claim {self.claim.name}, request {r.name}: asks for "
                                      f"all devices, but resource pool {p.id} is currently "
                                      "being updated")
            if p.invalid:
                raise AllocationError(f"claim {self.claim.name}, request {r.name}: asks for "
                                      f"all devices, but resource pool {p.id} is currently "
                                      f"invalid ({p.invalid})")
        return [d for d in self.devices if self.m.selectable(r, d)]

    def _request(self, ri: int) -> bool:
        if ri == len(self.claim.requests):
            return True
        req = self.claim.requests[ri]
        for sub in req.subrequests or (req,):
            if sub.all:
                ok = self._all(sub, ri)
            elif sub.count + len(self.picks) > MAX_DEVICES:
                continue
            else:
                ok = self._slot(sub, ri, 0, 0)
            if ok:
                if req.subrequests:
                    self.chosen[req.name] = sub.name
                return True
        return False

    def _slot(self, req: Request, ri: int, slot: int, start: int) -> bool:
        if slot == req.count:
            return self._request(ri + 1)
        for i in range(start, len(self.devices)):
            d = self.devices[i]
            if not self._free(req, d) or not self.m.selectable(req, d):
                continue
            if not self._take(req, d):
                continue
            if self._slot(req, ri, slot + 1, i + 1):
                return True
            self._undo(req, d)
        return False

    def _all(self, req: Request, ri: int) -> bool:
        wanted = self.all_of(req)
        if not wanted:
            return False
        done: list[Device] = []
        for d in wanted:
            if not self._free(req, d):
                break
            if not self._take(req, d):
                for x in reversed(done):
                    self._undo(req, x)
                raise AllocationError(f"claim {self.claim.name}, request {req.name}: cannot "
                                      f"add device {d.id} because a claim constraint would "
                                      "not be satisfied")
            done.append(d)
        else:
            if self._request(ri + 1):
                return True
        for x in reversed(done):
            self._undo(req, x)
        return False

    def _free(self, req: Request, d: Device) -> bool:
        if d.id in self.taken:
            return False
        return req.admin_access or d.shared or d.id not in self.in_use

    def _take(self, req: Request, d: Device) -> bool:
        mine = [b for b in self.bound if b.constraint.covers(req.name)]
        values = [d.attribute(b.attribute) for b in mine]
        if not all(b.admits(v) for b, v in zip(mine, values, strict=True)):
            return False
        for b, v in zip(mine, values, strict=True):
            assert v is not None
            b.values.append(v)
        self.taken.add(d.id)
        self.picks.append(Pick(req.name, d))
        return True

    def _undo(self, req: Request, d: Device) -> None:
        for b in self.bound:
            if b.constraint.covers(req.name):
                b.values.pop()
        self.taken.discard(d.id)
        self.picks.pop()


def run(claim: Claim, pools: list[Pool], devices: list[Device], in_use: set[str],
        matcher: Matcher) -> tuple[list[Pick] | None, str]:
    """(picks or None, the error that aborts the allocation or "")."""
    try:
        return Search(claim, pools, devices, in_use, matcher).run(), ""
    except (AllocationError, SelectorError) as exc:
        return None, str(exc)
    except RecursionError:
        return None, f"claim {claim.name}: too many devices to search"
