"""knd status: one screen about a node: services, bus, devices, pods, slices.

Connects to the bus as the ``admin`` user and asks, all at once: discovery for the
inventory (``inventory.get``), the plumber for its checkpoint (``plumber.status``:
claims, which device is in which pod under which name), the publisher for the pool
(``publisher.status``), every service for ``$SRV.PING`` / ``$SRV.INFO`` /
``$SRV.STATS``, and each service's HTTP ``/readyz`` when it can be reached. The
kubelet-gateway's REQUESTS also count kubelet's DRA and the runtime's NRI calls,
read from its ``/metrics`` (:mod:`services.tools.calls`).
``--json`` prints the same as one JSON object.

Exit status: 0 every service answers and is ready; 1 some service is missing,
not ready or did not answer; 2 the bus cannot be used (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import anyio
import msgspec

from schemas.base import DecodeError, ErrorReply, Message, decode, encode
from schemas.inventory import InventoryGet, InventorySnapshot
from schemas.plumber import PlumberStatus, PlumberStatusGet
from schemas.publisher import PublisherStatus, StatusGet
from schemas.subjects import Subjects
from services.common import auth, bus, config
from services.common.address import parse_address
from services.tools import calls

SERVICES = ("discovery", "publisher", "plumber", "kubelet-gateway")
"""The services, by their ``$SRV`` and CLI name, in their port order."""
GATEWAY = "kubelet-gateway"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=None,
                   help="node to ask about (default: the node of the credentials)")
    p.add_argument("--json", action="store_true", help="one JSON object, for machines")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for each answer")
    p.add_argument("--metrics-address", default=config.metrics_default("discovery"),
                   help="discovery's HTTP endpoint; the other services are at port +1..+3, "
                        "as `knd up` places them; \"off\": do not ask /readyz "
                        "(default %(default)s)")


def http_addresses(base: str) -> dict[str, str | None]:
    try:
        if parse_address(base) is None:
            return dict.fromkeys(SERVICES)
    except ValueError:
        return dict.fromkeys(SERVICES)
    return {s: config.metrics_address(base, s) for s in SERVICES}


def get_readyz(address: str, timeout: float) -> dict[str, Any]:
    """``/readyz`` of one service: its JSON body with ``http_status``, or ``error``."""
    url = calls.service_url(address, "/readyz")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            code, data = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, data = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"url": url, "error": str(reason)}
    try:
        body = json.loads(data)
    except ValueError:
        body = {"body": data[:200].decode(errors="replace")}
    if not isinstance(body, dict):
        body = {"body": body}
    return {"url": url, "http_status": code, **body}


class Asker:
    def __init__(self, nc: Any, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout

    async def typed(self, subject: str, msg: Message, kind: type[Message]) -> Any:
        """The decoded reply, or ``{"error": ...}``."""
        try:
            reply = await self.nc.request(subject, encode(msg), timeout=self.timeout)
        except Exception as exc:
            return {"error": _bus_error(exc)}
        try:
            return decode(reply.data, kind)
        except DecodeError as exc:
            try:
                return {"error": decode(reply.data, ErrorReply).error}
            except DecodeError:
                return {"error": str(exc)}

    async def srv(self, verb: str, name: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            reply = await self.nc.request(f"$SRV.{verb}.{name}", b"", timeout=self.timeout)
        except Exception as exc:
            return {"error": _bus_error(exc)}
        try:
            out = json.loads(reply.data)
        except ValueError as exc:
            return {"error": f"unreadable $SRV.{verb} answer: {exc}"}
        if isinstance(out, dict):
            out["rtt_ms"] = round((time.perf_counter() - started) * 1000, 3)
            return out
        return {"error": f"unexpected $SRV.{verb} answer"}


def _bus_error(exc: Exception) -> str:
    name = type(exc).__name__
    if "NoResponders" in name:
        return "no responder (not running?)"
    if "Timeout" in name:
        return "no answer (timeout)"
    return str(exc) or name


def _builtins(value: Any) -> Any:
    """Plain data with every field (bus messages leave defaults out of their JSON)."""
    if isinstance(value, msgspec.Struct):
        return {f: _builtins(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, list | tuple):
        return [_builtins(v) for v in value]
    if isinstance(value, dict):
        return {k: _builtins(v) for k, v in value.items()}
    return value


async def collect(args: argparse.Namespace, creds: auth.Credentials) -> dict[str, Any]:
    """Everything ``knd status`` shows, as plain data. Raises BusUnreachable."""
    node = args.node or creds.node
    s = Subjects(node)
    nc = await bus.connect_once(creds, "admin", wait=args.timeout, name="knd-status")
    out: dict[str, Any] = {"node": node}
    try:
        ask = Asker(nc, args.timeout)
        results: dict[str, Any] = {}
        https = http_addresses(args.metrics_address)

        async def put(key: str, coro: Any) -> None:
            results[key] = await coro

        async def readyz(name: str, address: str) -> None:
            results[f"http:{name}"] = await anyio.to_thread.run_sync(
                get_readyz, address, args.timeout)

        async def gateway_calls(address: str) -> None:
            results["calls"] = await anyio.to_thread.run_sync(
                calls.get_calls, address, args.timeout)

        async with anyio.create_task_group() as tg:
            tg.start_soon(put, "inventory",
                          ask.typed(s.inventory_get, InventoryGet(), InventorySnapshot))
            tg.start_soon(put, "publisher",
                          ask.typed(f"{s.publisher_group}.status", StatusGet(),
                                    PublisherStatus))
            tg.start_soon(put, "plumber",
                          ask.typed(s.plumber("status"), PlumberStatusGet(), PlumberStatus))
            for name in SERVICES:
                for verb in ("PING", "INFO", "STATS"):
                    tg.start_soon(put, f"{verb}:{name}", ask.srv(verb, name))
                if address := https[name]:
                    tg.start_soon(readyz, name, address)
            if address := https[GATEWAY]:
                tg.start_soon(gateway_calls, address)
        info = getattr(nc, "_server_info", None) or {}
        out["bus"] = {"url": creds.url, "connected": nc.is_connected,
                      "server": info.get("server_name", ""),
                      "version": info.get("version", "")}
    finally:
        await bus.close(nc)
    out["services"] = {name: _service(name, results, https[name]) for name in SERVICES}
    if "calls" in results:
        # kubelet's DRA and the runtime's NRI calls: the gateway's requests off the bus
        got = results["calls"]
        out["services"][GATEWAY].update(
            {"calls": got["calls"]} if "calls" in got else {"calls_error": got["error"]})
    inv, pub, plb = results["inventory"], results["publisher"], results["plumber"]
    out["inventory"] = (_builtins(inv) if isinstance(inv, dict) else
                        {"epoch": inv.epoch, "seq": inv.seq, "taken_at": inv.taken_at,
                         "devices": len(inv.devices)})
    out["pool"] = _builtins(pub)
    out["plumber"] = ({"error": plb["error"]} if isinstance(plb, dict) else
                      {"rdma_mode": plb.rdma_mode, "claims": _builtins(plb.claims),
                       "attachments": _builtins(plb.attachments)})
    out["devices"] = _devices(inv if isinstance(inv, InventorySnapshot) else None,
                              plb if isinstance(plb, PlumberStatus) else None)
    out["healthy"] = all(v["healthy"] for v in out["services"].values())
    return out


def _service(name: str, results: dict[str, Any], address: str | None) -> dict[str, Any]:
    ping, info, stats = (results.get(f"{v}:{name}", {}) for v in ("PING", "INFO", "STATS"))
    http = results.get(f"http:{name}") if address else None
    svc: dict[str, Any] = {"bus": "error" not in ping}
    if "error" in ping:
        svc["error"] = ping["error"]
    else:
        svc.update(id=ping.get("id", ""), version=ping.get("version", ""),
                   ping_ms=ping.get("rtt_ms"))
    if "error" not in info:
        svc["description"] = info.get("description", "")
    if "error" not in stats:
        svc["started"] = stats.get("started", "")
        svc["endpoints"] = [
            {"name": e.get("name", ""), "subject": e.get("subject", ""),
             "requests": e.get("num_requests", 0), "errors": e.get("num_errors", 0),
             "average_ms": round((e.get("average_processing_time") or 0) / 1e6, 3)}
            for e in stats.get("endpoints") or []]
    if http is not None:
        svc["http"] = http
        svc["ready"] = http.get("ready") if "http_status" in http else None
    else:
        svc["ready"] = None
    svc["healthy"] = svc["bus"] and svc["ready"] is not False
    return svc


def _devices(inv: InventorySnapshot | None, plb: PlumberStatus | None) -> list[dict]:
    """Each device with where it is: the inventory's, plus those that left with a pod."""
    pods: dict[str, str] = {}
    atts: dict[str, list] = {}
    if plb is not None:
        for c in plb.claims:
            for ref in c.pods:
                if ref.name:
                    pods[ref.uid] = f"{ref.namespace}/{ref.name}"
        for a in plb.attachments:
            atts.setdefault(a.device, []).append(a)
    rows = []
    seen = set()

    def attached(name: str) -> list[dict]:
        return [{"pod_uid": a.pod_uid, "pod": pods.get(a.pod_uid, ""),
                 "claim_uid": a.claim_uid, "phase": a.phase, "interface": a.interface,
                 "host_interface": a.host_interface, "netns": a.netns, "ips": list(a.ips)}
                for a in atts.get(name, [])]

    def attr(attrs: dict[str, Any], key: str) -> Any:
        for k, v in attrs.items():
            if k.endswith(f"/{key}") and not k.startswith("resource.kubernetes.io/"):
                return v
        return None

    for d in inv.devices if inv is not None else []:
        seen.add(d.name)
        rows.append({"name": d.name, "interface": attr(d.attributes, "ifName"),
                     "type": attr(d.attributes, "type"),
                     "pci": attr(d.attributes, "pciAddress"),
                     "numa": attr(d.attributes, "numaNode"),
                     "rdma": bool(attr(d.attributes, "rdma")),
                     "in_inventory": True, "attached": attached(d.name)})
    for name in sorted(atts.keys() - seen):  # in a pod: gone from the host's inventory
        a = atts[name][0]
        rows.append({"name": name, "interface": a.host_interface, "type": None, "pci": None,
                     "numa": None, "rdma": None, "in_inventory": False,
                     "attached": attached(name)})
    return rows


# ---- text ----------------------------------------------------------------------------------


def _ago(t: float) -> str:
    if not t:
        return "never"
    d = max(0.0, time.time() - t)
    return f"{d:.0f} s ago" if d < 120 else f"{d / 60:.0f} min ago"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def render(st: dict[str, Any]) -> str:
    b = st["bus"]
    lines = [f"node {st['node']}  bus {b['url']} "
             f"({'connected' if b['connected'] else 'not connected'}"
             f"{', ' + b['server'] if b['server'] else ''}"
             f"{' ' + b['version'] if b['version'] else ''})", "", "services"]
    rows = [["SERVICE", "BUS", "READY", "REQUESTS", "ERRORS", "HTTP"]]
    for name, svc in st["services"].items():
        eps = svc.get("endpoints") or []
        http = svc.get("http") or {}
        ready = {True: "yes", False: "NO", None: "?"}[svc["ready"]]
        if http and "http_status" not in http:
            where = f"unreachable ({http.get('error', '')})"
        else:
            where = http.get("url", "off").removesuffix("/readyz").removeprefix("http://")
            reasons = http.get("reasons") or {}
            failing = [f"{k}: {reasons[k]}" if k in reasons else k
                       for k, ok in (http.get("checks") or {}).items() if not ok]
            if failing:
                where += f" (waiting: {', '.join(failing)})"
        rows.append([name, f"{svc['ping_ms']:.1f} ms" if svc["bus"] else svc.get("error", "-"),
                     ready, str(sum(e["requests"] for e in [*eps, *svc.get("calls", [])])),
                     str(sum(e["errors"] for e in [*eps, *svc.get("calls", [])])), where])
    lines += _table(rows)
    gw = st["services"].get(GATEWAY, {})
    if gw.get("calls"):
        lines += ["", f"{GATEWAY} calls (kubelet DRA, runtime NRI; counted in REQUESTS)"]
        lines += _table(calls.lines(gw["calls"]))
    elif gw.get("calls_error"):
        lines += ["", f"{GATEWAY} calls (kubelet DRA, runtime NRI): {gw['calls_error']}"]
    pool = st["pool"]
    lines.append("")
    if "error" in pool:
        lines.append(f"pool: publisher: {pool['error']}")
    else:
        lines.append(f"pool {pool['pool']}: generation {pool['generation']}, "
                     f"{pool['slices']} slice(s), {pool['devices']} device(s) "
                     f"({pool['rdma']} RDMA), last sync {_ago(pool['last_sync_at'])}"
                     f"{', pending' if pool['pending'] else ''}")
        if pool.get("last_error"):
            lines.append(f"  last error: {pool['last_error']}")
        for why in pool.get("dropped") or []:
            lines.append(f"  dropped: {why}")
    inv = st["inventory"]
    lines.append("")
    if "error" in inv:
        lines.append(f"devices: discovery: {inv['error']}")
    else:
        lines.append(f"devices ({inv['devices']} in the inventory, "
                     f"snapshot {inv['seq']} taken {_ago(inv['taken_at'])})")
    if st["devices"]:
        rows = [["DEVICE", "INTERFACE", "TYPE", "PCI", "NUMA", "RDMA", "POD", "CLAIM",
                 "POD IFNAME", "PHASE"]]
        for d in st["devices"]:
            base = [d["name"], str(d["interface"] or "-"), str(d["type"] or "-"),
                    str(d["pci"] or "-"), "-" if d["numa"] is None else str(d["numa"]),
                    {True: "yes", False: "-", None: "?"}[d["rdma"]]]
            if not d["attached"]:
                rows.append([*base, "-", "-", "-", "-"])
            for a in d["attached"]:
                rows.append([*base, a["pod"] or a["pod_uid"], a["claim_uid"],
                             a["interface"] or "-", a["phase"]])
        lines += _table(rows)
    plb = st["plumber"]
    lines.append("")
    if "error" in plb:
        lines.append(f"claims: plumber: {plb['error']}")
    else:
        lines.append(f"claims prepared: {len(plb['claims'])}")
        for c in plb["claims"]:
            pods = ", ".join(f"{p.get('namespace', '')}/{p.get('name', '')}".strip("/")
                             or p["uid"] for p in c.get("pods", []))
            lines.append(f"  {c.get('namespace', '')}/{c.get('name', '')} ({c['uid']}): "
                         f"{', '.join(c.get('devices', [])) or 'no device'}"
                         f"{' for ' + pods if pods else ''}")
    return "\n".join(lines)


def _fail(text: str) -> int:
    print(f"knd status: {text}", file=sys.stderr, flush=True)
    return 2


def main(args: argparse.Namespace) -> int:
    try:
        creds = auth.load(config.bus_creds_path(args))
    except RuntimeError as exc:
        return _fail(str(exc))
    try:
        st = anyio.run(collect, args, creds)
    except (bus.BusUnreachable, KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True), flush=True)
    else:
        print(render(st), flush=True)
    return 0 if st["healthy"] else 1
