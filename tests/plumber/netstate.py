"""Snapshots of a netns as ``ip -j`` reports it, to assert "exactly as before".

Only what the kernel keeps stable is compared: link names, indexes, MTUs,
MACs, admin state and kind; addresses (without transient flags such as
``tentative``); routes of every table (less the IPv6 multicast route that a
veth peer gains when its carrier comes up); rules; permanent neighbours; each
interface's ``net.ipv4|6.conf.<if>`` sysctls (a move to another netns resets them). Peer
details of veths (``link_netnsid``) and counters are left out: the kernel
changes them when a namespace id gets allocated, not because of us.
"""

from __future__ import annotations

import json
import subprocess
import time

from tests.helpers.netns import ip


def _j(netns: str, *args: str) -> list[dict]:
    out = ip("-j", *args, netns=netns)
    return json.loads(out) if out.strip() else []


def links(netns: str) -> dict[str, dict]:
    out = {}
    for link in _j(netns, "-d", "link", "show"):
        out[link["ifname"]] = {
            "ifindex": link["ifindex"], "mtu": link["mtu"], "address": link.get("address"),
            "up": "UP" in link.get("flags", []),
            "kind": (link.get("linkinfo") or {}).get("info_kind", ""),
        }
    return out


def addresses(netns: str) -> dict[str, list[tuple]]:
    out = {}
    for link in _j(netns, "addr", "show"):
        out[link["ifname"]] = sorted(
            (a["family"], a["local"], a["prefixlen"], a.get("scope"), a.get("broadcast", ""),
             a.get("label", ""))
            for a in link.get("addr_info", []))
    return out


def routes(netns: str) -> list[str]:
    rows = []
    for family in ("-4", "-6"):
        for r in _j(netns, family, "route", "show", "table", "all"):
            if r.get("type") == "multicast":
                continue  # ff00::/8 comes and goes with a veth peer's carrier
            r.pop("flags", None)  # linkdown / onlink noise from carrier changes
            r.pop("pref", None)
            rows.append(json.dumps(r, sort_keys=True))
    return sorted(rows)


def rules(netns: str) -> list[str]:
    rows = []
    for family in ("-4", "-6"):
        rows += [json.dumps(r, sort_keys=True) for r in _j(netns, family, "rule", "show")]
    return sorted(rows)


def neighbours(netns: str) -> list[str]:
    return sorted(json.dumps(n, sort_keys=True) for n in _j(netns, "neigh", "show", "nud",
                                                              "permanent"))


def sysctls(netns: str) -> dict[str, dict[str, str]]:
    """Interface -> ``ipv4.<name>``/``ipv6.<name>`` -> value (``all``/``default`` left out)."""
    res = subprocess.run(["ip", "netns", "exec", netns, "grep", "-r", ".",
                          "/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"],
                         capture_output=True, text=True)  # unreadable entries: on stderr
    out: dict[str, dict[str, str]] = {}
    for line in res.stdout.splitlines():
        path, _, value = line.partition(":")
        parts = path.split("/")  # '', proc, sys, net, ipv4, conf, <if>, <name>
        if len(parts) == 8 and parts[6] not in ("all", "default"):
            out.setdefault(parts[6], {})[f"{parts[4]}.{parts[7]}"] = value
    return out


def snapshot(netns: str) -> dict:
    return {"links": links(netns), "addresses": addresses(netns), "routes": routes(netns),
            "rules": rules(netns), "neighbours": neighbours(netns),
            "sysctls": sysctls(netns)}


def wait_equal(netns: str, expected: dict, limit: float = 3.0) -> dict:
    """Poll until the netns matches ``expected`` (IPv6 link-local and carrier settle
    asynchronously after a link comes up); returns the last snapshot either way."""
    deadline = time.monotonic() + limit
    while True:
        got = snapshot(netns)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def diff(expected: dict, got: dict) -> str:
    """What changed between two snapshots, readably (for assertion messages)."""
    out = []
    for key in expected.keys() | got.keys():
        a, b = expected.get(key), got.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(a.keys() | b.keys()):
                if a.get(name) != b.get(name):
                    out.append(f"{key}[{name}]: {a.get(name)} -> {b.get(name)}")
        else:
            a_set, b_set = set(a or ()), set(b or ())
            out += [f"{key}: lost {x}" for x in sorted(a_set - b_set)]
            out += [f"{key}: new {x}" for x in sorted(b_set - a_set)]
    return "\n".join(out)


def assert_same(netns: str, expected: dict, limit: float = 3.0) -> None:
    got = wait_equal(netns, expected, limit)
    assert got == expected, f"{netns} changed:\n{diff(expected, got)}"
