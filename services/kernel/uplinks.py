"""Which links carry the node's own traffic and must never be handed to a pod.

The uplinks are the output interfaces of the default routes with the lowest
metric, per address family (every next hop of an ECMP route counts). With them
go the links they depend on or that depend on them: ports enslaved to an uplink
bridge or bond, the bond or bridge an uplink is enslaved to, and the lower
device of an uplink VLAN or macvlan. Recomputed on every rescan, so a route
change moves the boundary at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.kernel.links import LinkInfo
from services.kernel.rtnl import RT_TABLE_MAIN, RTN_UNICAST, Route


def default_route_oifs(routes: Iterable[Route]) -> set[int]:
    best: dict[int, tuple[int, set[int]]] = {}
    for r in routes:
        if r.dst_len != 0 or r.table != RT_TABLE_MAIN or r.type != RTN_UNICAST or not r.oifs:
            continue
        cur = best.get(r.family)
        if cur is None or r.priority < cur[0]:
            best[r.family] = (r.priority, set(r.oifs))
        elif r.priority == cur[0]:
            cur[1].update(r.oifs)
    return {i for _, oifs in best.values() for i in oifs}


def excluded_indexes(links: Sequence[LinkInfo], routes: Iterable[Route]) -> set[int]:
    """ifindexes of the uplinks and everything tied to them."""
    by_index = {link.index: link for link in links}
    out: set[int] = set()
    todo = list(default_route_oifs(routes))
    while todo:
        i = todo.pop()
        if i in out or i not in by_index:
            continue
        out.add(i)
        link = by_index[i]
        related = [link.master, link.parent if link.kind not in ("veth", "") else None]
        related += [x.index for x in links if x.master == i]
        todo.extend(r for r in related if r is not None)
    return out
