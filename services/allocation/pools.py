"""Which devices a node can be given: its slices gathered into pools as the scheduler
gathers them.

A slice counts for a node through ``nodeName``, ``allNodes`` or a ``nodeSelector``
the node's labels match (``perDeviceNodeSelection``: through its devices' own). Only a
pool's newest generation counts; a pool whose slices are not all there
(``resourceSliceCount``) is being updated and gives nothing, and one that is newer
elsewhere is obsolete here. A pool with two devices of one name is invalid. Pools are
tried in (driver, pool) order and slices by name: the scheduler's order is a Go map's,
unspecified, so this is one order it may use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.allocation.objects import Device, Node, Slice


@dataclass
class Pool:
    driver: str
    name: str
    generation: int
    slices: list[Slice] = field(default_factory=list)
    incomplete: bool = False
    invalid: str = ""
    """Why the pool cannot be used, if it cannot (duplicate device names)."""

    @property
    def id(self) -> str:
        return f"{self.driver}/{self.name}"


def _requirement(req: dict[str, Any], value: str | None) -> bool:
    op, values = req.get("operator"), [str(v) for v in req.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def selector_matches(selector: dict[str, Any] | None, node: Node) -> bool:
    """A core/v1 NodeSelector: terms ORed, a term's requirements ANDed."""
    if not isinstance(selector, dict):
        return False
    for term in selector.get("nodeSelectorTerms") or []:
        if not isinstance(term, dict):
            continue
        exprs = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            continue  # an empty term matches nothing
        if all(_requirement(r, node.labels.get(str(r.get("key")))) for r in exprs) and all(
                _requirement(r, node.name if r.get("key") == "metadata.name" else None)
                for r in fields):
            return True
    return False


def node_matches(node: Node, node_name: str, all_nodes: bool,
                 selector: dict[str, Any] | None) -> bool:
    if node_name:
        return node.name == node_name
    if all_nodes:
        return True
    return selector is not None and selector_matches(selector, node)


def _for_node(s: Slice, node: Node) -> bool:
    if s.node_name or s.all_nodes or s.node_selector is not None:
        return node_matches(node, s.node_name, s.all_nodes, s.node_selector)
    if s.per_device_node_selection:
        return any(device_for_node(d, node) for d in s.devices)
    return False


def device_for_node(d: Device, node: Node) -> bool:
    return node_matches(node, d.node_name, d.all_nodes, d.node_selector)


class SliceIndex:
    """Slices by the node they name, so that a thousand nodes are not each checked
    against every slice; the pool's slices for the completeness check."""

    def __init__(self, slices: Iterable[Slice]) -> None:
        self.local: dict[str, list[Slice]] = {}
        self.shared: list[Slice] = []
        self.by_pool: dict[tuple[str, str], list[Slice]] = {}
        for s in slices:
            self.by_pool.setdefault((s.driver, s.pool), []).append(s)
            if s.node_name:
                self.local.setdefault(s.node_name, []).append(s)
            else:
                self.shared.append(s)

    def candidates(self, node: Node) -> list[Slice]:
        """The slices that may count for ``node``."""
        return self.local.get(node.name, []) + self.shared


def gather(index: SliceIndex, node: Node) -> list[Pool]:
    """The node's pools, in the order they are tried."""
    pools: dict[tuple[str, str], Pool] = {}
    for s in index.candidates(node):
        if not _for_node(s, node):
            continue
        key = (s.driver, s.pool)
        pool = pools.get(key)
        if pool is None or s.generation > pool.generation:
            pools[key] = Pool(s.driver, s.pool, s.generation, [s])
        elif s.generation == pool.generation:
            pool.slices.append(s)
    out = []
    for key in sorted(pools):
        pool = pools[key]
        pool.slices.sort(key=lambda s: s.name)
        if len(pool.slices) != pool.slices[0].slice_count:
            same = index.by_pool.get(key, [])
            if any(s.generation > pool.generation for s in same):
                continue  # obsolete: a newer generation is being published elsewhere
            pool.incomplete = sum(s.generation == pool.generation for s in same) \
                != pool.slices[0].slice_count
        names: set[str] = set()
        for s in pool.slices:
            for d in s.devices:
                if d.name in names:
                    pool.invalid = f"duplicate device name {d.name}"
                names.add(d.name)
        out.append(pool)
    return out


def devices(pools: list[Pool], node: Node) -> list[Device]:
    """The devices of usable pools in the order they are tried."""
    return [d for p in pools if not p.incomplete and not p.invalid for s in p.slices
            for d in s.devices if not s.per_device_node_selection or device_for_node(d, node)]


def nodes_of(slices: Iterable[Slice], known: dict[str, Node]) -> dict[str, Node]:
    """Every node that slices name, plus the Node objects given (for their labels)."""
    out = dict(known)
    for s in slices:
        names = [s.node_name] + [d.node_name for d in s.devices]
        for name in names:
            if name and name not in out:
                out[name] = Node(name)
    return dict(sorted(out.items()))
