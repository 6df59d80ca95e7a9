"""Which devices each claim would get on each node, and if none, what ruled each out.

For a node where the claim does not fit, every device of the node is listed per
request (per subrequest for ``firstAvailable``) with the first thing that excludes
it, in the scheduler's order of checks: already allocated to another claim, a class
selector, a request selector, a ``matchAttribute`` constraint (the device lacks the
attribute, or no device another request of the constraint could take shares its
value). A device that passes all of them on its own is listed as usable, with the
reason the claim as a whole still does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.allocation.celenv import Selector, SelectorError
from services.allocation.objects import Claim, Device, Inputs, Node, Request
from services.allocation.pools import Pool, SliceIndex, devices, gather, nodes_of
from services.allocation.search import (
    AllocationError,
    Matcher,
    Pick,
    compile_claim,
    run,
)


@dataclass
class NodeResult:
    node: str
    allocatable: bool
    devices: list[dict[str, str]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    error: str = ""

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "allocatable": self.allocatable,
                               "devices": self.devices, "excluded": self.excluded}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class ClaimResult:
    name: str
    nodes: list[NodeResult] = field(default_factory=list)
    error: str = ""

    @property
    def allocatable(self) -> bool:
        return any(n.allocatable for n in self.nodes)

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "allocatable": self.allocatable,
                               "nodes": [n.wire() for n in self.nodes]}
        if self.error:
            out["error"] = self.error
        return out


def _entry(request: str, d: Device, reason: str) -> dict[str, str]:
    return {"request": request, "device": d.name, "driver": d.driver, "pool": d.pool,
            "reason": reason}


def _holders(inputs: Inputs) -> dict[str, str]:
    """Device id -> the claim whose status holds it."""
    return {dev: c.name for c in (*inputs.others, *inputs.claims) for dev in c.allocated}


class Explainer:
    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.holders = _holders(inputs)
        self.classes: dict[str, list[Selector]] = {}
        self.slices = SliceIndex(inputs.slices)

    def _class(self, name: str) -> list[str] | None:
        c = self.inputs.classes.get(name)
        return list(c.selectors) if c is not None else None

    def compile(self, claim: Claim) -> Matcher:
        """Raises SelectorError for an expression that does not compile (bad input)."""
        return Matcher(self.classes, compile_claim(claim, self.classes, self._class))

    def claim(self, claim: Claim, nodes: list[Node]) -> ClaimResult:
        out = ClaimResult(claim.name)
        try:
            requests = compile_claim(claim, self.classes, self._class)
        except AllocationError as exc:  # an unknown class: nothing to try on any node
            out.error = str(exc)
            return out
        in_use = {d for d, holder in self.holders.items() if holder != claim.name}
        for node in nodes:
            out.nodes.append(self.node(claim, node, Matcher(self.classes, requests), in_use))
        return out

    def node(self, claim: Claim, node: Node, matcher: Matcher | None = None,
             in_use: set[str] | None = None) -> NodeResult:
        pools = gather(self.slices, node)
        devs = devices(pools, node)
        if in_use is None:
            in_use = {d for d, holder in self.holders.items() if holder != claim.name}
        matcher = self.compile(claim) if matcher is None else matcher
        picks, error = run(claim, pools, devs, in_use, matcher)
        if picks is not None:
            return NodeResult(node.name, True, devices=picks_wire(picks))
        result = NodeResult(node.name, False, error=error)
        result.excluded = self._excluded(claim, pools, devs, in_use, matcher)
        return result

    def _excluded(self, claim: Claim, pools: list[Pool], devs: list[Device],
                  in_use: set[str], m: Matcher) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for p in pools:
            if p.incomplete or p.invalid:
                why = (f"resource pool {p.id} is being updated (not all of its "
                       f"{p.slices[0].slice_count} slices are published)" if p.incomplete
                       else f"resource pool {p.id} is invalid: {p.invalid}")
                for req in _leaves(claim):
                    out += [_entry(req.name, d, why) for s in p.slices for d in s.devices]
        fits: dict[str, list[Device]] = {}
        for req in _leaves(claim):
            fits[req.name] = []
            for d in devs:
                ruled = self._why(req, d, in_use, m)
                if ruled is None:
                    fits[req.name].append(d)
                else:
                    out.append(_entry(req.name, d, ruled))
        for req in _leaves(claim):
            for d in fits[req.name]:
                why = self._constraint(claim, req, d, fits) or ""
                if not why:
                    need = "all matching" if req.all else str(req.count)
                    why = (f"usable, but the claim does not fit as a whole: request {req.name} "
                           f"needs {need} of {len(fits[req.name])} usable device(s)"
                           + (" and the other requests and constraints must fit too"
                              if len(claim.requests) > 1 or claim.constraints else ""))
                out.append(_entry(req.name, d, why))
        return out

    def _why(self, req: Request, d: Device, in_use: set[str], m: Matcher) -> str | None:
        if d.id in in_use and not req.admin_access and not d.shared:
            return f"already allocated to claim {self.holders.get(d.id, '?')}"
        try:
            rejected = m.first_rejection(req, d)
        except SelectorError as exc:
            return str(exc)
        if rejected is None:
            return None
        where, i = rejected
        if where == "class":
            return f"class {req.class_name} selector #{i}: " \
                   f"{_flat(self.classes[req.class_name][i].expression)}"
        return f"request {req.name} selector #{i}: {_flat(m.requests[req.name][i].expression)}"

    def _constraint(self, claim: Claim, req: Request, d: Device,
                    fits: dict[str, list[Device]]) -> str | None:
        for c in claim.constraints:
            if not c.covers(req.name):
                continue
            if c.distinct_attribute:
                if d.attribute(c.distinct_attribute) is None:
                    return (f"constraint distinctAttribute {c.distinct_attribute}: the device "
                            f"has no {c.distinct_attribute}")
                continue
            attr = c.match_attribute
            value = d.attribute(attr)
            if value is None:
                return f"constraint matchAttribute {attr}: the device has no {attr}"
            for other in _leaves(claim):
                if other.parent == req.parent or not c.covers(other.name):
                    continue
                if not any(o.id != d.id and o.attribute(attr) == value
                           for o in fits.get(other.name, [])):
                    return f"constraint matchAttribute {attr} with request {other.name}"
        return None


def _flat(expression: str) -> str:
    """An expression on one line, as a reason quotes it."""
    return " ".join(expression.split())


def _leaves(claim: Claim) -> list[Request]:
    return [r for req in claim.requests for r in (req.subrequests or (req,))]


def explain(inputs: Inputs, node: str | None = None) -> list[ClaimResult]:
    """Every claim against every node (``node``: that one only)."""
    known = nodes_of(inputs.slices, inputs.nodes)
    if node is not None:
        nodes = [known.get(node, Node(node))]
    else:
        nodes = list(known.values())
    ex = Explainer(inputs)
    return [ex.claim(c, nodes) for c in inputs.claims]


def picks_wire(picks: list[Pick]) -> list[dict[str, str]]:
    return [{"request": p.request, "driver": p.device.driver, "pool": p.device.pool,
             "device": p.device.name} for p in picks]
