"""The lean rtnetlink reader against a real throwaway netns."""

from __future__ import annotations

import anyio
import pytest

from services.kernel import rtnl
from services.kernel.uplinks import default_route_oifs, excluded_indexes


def by_name(links):
    return {link.name: link for link in links}


def test_links_carry_what_discovery_publishes(node_ns):
    ns = node_ns
    ns.veth("ha", "hb")
    ns.ip("link", "set", "ha", "mtu", "9000")
    ns.ip("link", "set", "ha", "alias", "gpu0 rail")
    ns.ip("addr", "add", "10.1.0.2/24", "dev", "ha")
    ns.ip("addr", "add", "10.1.1.2/24", "dev", "ha")
    ns.ip("addr", "add", "fd00::2/64", "dev", "ha", "nodad")
    ns.ip("link", "add", "mv0", "link", "hb", "type", "macvlan", "mode", "bridge")
    ns.ip("link", "add", "br0", "type", "bridge")
    ns.ip("link", "add", "p0", "type", "veth", "peer", "name", "p1")
    ns.ip("link", "set", "p0", "master", "br0")
    reader = rtnl.Reader(ns.name)
    try:
        links = by_name(reader.links())
    finally:
        reader.close()
    assert {"lo", "ha", "hb", "mv0", "br0", "p0", "p1"} <= links.keys()
    ha = links["ha"]
    assert ha.kind == "veth" and ha.mtu == 9000 and ha.alias == "gpu0 rail"
    assert ha.ipv4 == ("10.1.0.2/24", "10.1.1.2/24")
    assert ha.ipv6 == ("fd00::2/64",)  # link-local fe80:: is not global and is left out
    assert ha.encapsulation == "ether" and ha.state in ("up", "lowerlayerdown", "unknown")
    assert len(ha.mac.split(":")) == 6
    assert links["mv0"].kind == "macvlan" and links["mv0"].parent == links["hb"].index
    assert links["p0"].master == links["br0"].index
    assert links["lo"].encapsulation == "loopback"
    ip_json = ns.ip("-o", "link", "show", "ha")
    assert ha.mac in ip_json


def test_default_route_uplinks_lowest_metric_and_ecmp(node_ns):
    ns = node_ns
    for a, b in (("up0", "up0p"), ("up1", "up1p"), ("bk0", "bk0p"), ("data0", "data0p")):
        ns.veth(a, b)
    ns.ip("addr", "add", "192.0.2.2/24", "dev", "up0")
    ns.ip("addr", "add", "198.51.100.2/24", "dev", "up1")
    ns.ip("addr", "add", "203.0.113.2/24", "dev", "bk0")
    ns.ip("route", "add", "default", "metric", "100",
          "nexthop", "via", "192.0.2.1", "dev", "up0",
          "nexthop", "via", "198.51.100.1", "dev", "up1")
    ns.ip("route", "add", "default", "via", "203.0.113.1", "dev", "bk0", "metric", "500")
    reader = rtnl.Reader(ns.name)
    try:
        links = reader.links()
        routes = reader.routes()
    finally:
        reader.close()
    idx = {link.name: link.index for link in links}
    assert default_route_oifs(routes) == {idx["up0"], idx["up1"]}
    assert idx["bk0"] not in excluded_indexes(links, routes)
    assert idx["data0"] not in excluded_indexes(links, routes)


def test_uplink_bridge_takes_its_ports_along(node_ns):
    ns = node_ns
    ns.ip("link", "add", "br-up", "type", "bridge")
    ns.veth("port0", "port0p")
    ns.ip("link", "set", "port0", "master", "br-up")
    ns.ip("link", "set", "br-up", "up")
    ns.ip("addr", "add", "192.0.2.2/24", "dev", "br-up")
    ns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "br-up")
    ns.veth("vl-lower", "vl-peer")
    ns.ip("link", "add", "link", "vl-lower", "name", "vl-lower.7", "type", "vlan", "id", "7",
          check=False)
    reader = rtnl.Reader(ns.name)
    try:
        links = reader.links()
        excluded = excluded_indexes(links, reader.routes())
    finally:
        reader.close()
    names = {link.index: link.name for link in links}
    assert {names[i] for i in excluded} == {"br-up", "port0"}


@pytest.mark.anyio
async def test_events_are_seen_and_counted(node_ns):
    sock = rtnl.open_socket(node_ns.name, rtnl.EVENT_GROUPS)
    try:
        node_ns.veth("ev0", "ev1")
        with anyio.fail_after(2):
            await anyio.wait_readable(sock)
        ev = rtnl.drain_events(sock)
        assert ev.count >= 2 and not ev.overflow and not ev.unplaced
        index = link_indexes(node_ns.name)
        assert {index["ev0"], index["ev1"]} <= ev.links
        assert rtnl.drain_events(sock) == rtnl.Events()
    finally:
        sock.close()


@pytest.mark.anyio
async def test_events_name_the_interfaces_they_are_about(node_ns):
    node_ns.veth("ab0", "ab1")
    node_ns.veth("cd0", "cd1")
    index = link_indexes(node_ns.name)
    sock = rtnl.open_socket(node_ns.name, rtnl.EVENT_GROUPS)
    try:
        node_ns.ip("addr", "add", "192.0.2.1/24", "dev", "ab0")  # an address and its routes
        node_ns.ip("route", "add", "198.51.100.0/24", "dev", "ab0")
        # the kernel queues an rtnetlink notification before it acks the change: once
        # `ip` has returned, all of its events are in the socket
        ev = rtnl.drain_events(sock)
        assert ev.links == {index["ab0"]} and not ev.unplaced
        node_ns.ip("route", "add", "203.0.113.0/24", "nexthop", "dev", "ab0", "nexthop",
                   "dev", "cd0")  # multipath: every next hop's interface
        node_ns.ip("route", "add", "blackhole", "10.9.9.0/24")  # about no interface
        ev = rtnl.drain_events(sock)
        assert ev.links == {index["ab0"], index["cd0"]} and ev.unplaced
    finally:
        sock.close()


def link_indexes(netns: str) -> dict[str, int]:
    reader = rtnl.Reader(netns)
    try:
        return {link.name: link.index for link in reader.links()}
    finally:
        reader.close()
