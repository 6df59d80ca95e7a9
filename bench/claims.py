"""Claims benchmark: prepare, attach, detach and unprepare through the whole agent.

Runs as root. Like ``knd demo`` it runs ``knd up --standalone --netns <host>`` and
plays kubelet (DRA gRPC on dra.sock, one persistent channel as kubelet keeps) and
the container runtime (NRI on a real socket). Measures: N single-device rounds
(fresh pod netns, a claim with an address and two routes, checked in the pod each
round); the kernel floor for the same netlink work by ``ip -batch`` in a netns the
agent does not watch, beside a no-op ``ip -batch`` start; 32 pods x 2 devices at
once, and the same 64 moves by ``ip -batch``. Prints one JSON object (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

NODE = "bench-node"
PODS, TARGET_WALL_MS = 32, 1000.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "max": round(max(values), 2)}


def ip(*args: str, check: bool = True) -> str:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def timed_batch(ns: str | None, lines: list[str]) -> float:
    """ms for one ``ip [-n ns] -batch -`` process (start, netlink work, exit)."""
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    t = time.perf_counter()
    res = subprocess.run(argv, input="".join(f"{x}\n" for x in lines), capture_output=True,
                         text=True)
    ms = (time.perf_counter() - t) * 1000
    if res.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return ms


def pod_config(ifname: str, net: str, routes: list[str]) -> dict:
    return {"interface": {"name": ifname, "addresses": [f"{net}.2/24"]},
            "routes": [{"destination": r, "gateway": f"{net}.1"} for r in routes]}


def config_lines(ifname: str, net: str, routes: list[str]) -> list[str]:
    return [f"addr add {net}.2/24 dev {ifname}",
            *(f"route add {r} via {net}.1 dev {ifname}" for r in routes)]


def configured(ns: str, ifname: str, net: str, routes: list[str]) -> bool:
    """The interface is up in ``ns`` with its address and gateway routes."""
    info = json.loads(ip("-n", ns, "-j", "addr", "show", "dev", ifname, check=False) or "[]")
    got = {f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])}
    table = ip("-n", ns, "route", "show", "dev", ifname, check=False)
    return (bool(info) and "UP" in info[0].get("flags", []) and f"{net}.2/24" in got
            and all(f"{r} via {net}.1" in table for r in routes))


class Bench:
    def __init__(self, args: argparse.Namespace, state: Path, tag: str) -> None:
        self.args, self.state, self.tag = args, state, tag
        self.host, self.fhost = f"kndb-h-{tag}", f"kndb-f-{tag}"
        self.wire, self.fwire = f"kndb-w-{tag}", f"kndb-v-{tag}"
        self.netns: list[str] = []
        self.agent: subprocess.Popen | None = None
        self.filter: str | None = 'attributes["knd.dev/ifName"].startsWith("kb")'
        """``--filter``: the bench's veths only (None: knd's default, which hides veths)."""

    def netns_add(self, name: str) -> str:
        ip("netns", "add", name)
        self.netns.append(name)
        return name

    def netns_del(self, name: str) -> None:
        ip("netns", "del", name, check=False)
        if name in self.netns:
            self.netns.remove(name)

    def cleanup(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()  # the supervisor stops its children
            try:
                self.agent.wait(15)
            except subprocess.TimeoutExpired:
                self.agent.kill()  # they die with it (parent-death signal)
                self.agent.wait()
        for name in reversed(self.netns[:]):
            self.netns_del(name)

    def pairs(self, pairs: list[tuple[str, str, str]]) -> None:
        """Veth pairs standing in for NICs: the claimed end (``kb*``, the only ones
        published) in the host netns, its peer (the network, with the gateway address)
        in the wire netns, as a NIC's other end is a switch; plus as many idle host
        interfaces (``kx*``, peers in the wire netns) to keep the host as full as a
        node's. The floor's copies live in fhost and fwire."""
        for ns, wire, pre in ((self.host, self.wire, ""), (self.fhost, self.fwire, "f")):
            timed_batch(ns, [line for dev, peer, _ in pairs for line in (
                f"link add {pre}{dev} type veth peer name {pre}{peer} netns {wire}",
                f"link add {pre}kx{dev[2:]} type veth peer name {pre}px{dev[2:]} netns {wire}")])
            timed_batch(wire, [line for _, peer, net in pairs for line in (
                f"addr add {net}.1/24 dev {pre}{peer}", f"link set dev {pre}{peer} up")])

    def host_links(self) -> set[str]:
        return {x["ifname"] for x in json.loads(ip("-n", self.host, "-j", "link", "show"))}

    def start_agent(self, kubeconfig: Path | None = None) -> None:
        """``knd up`` standalone, or against the API server of ``kubeconfig``."""
        s = self.state
        api = ["--kubeconfig", str(kubeconfig)] if kubeconfig else ["--standalone"]
        argv = [sys.executable, "-m", "services.cli", "up", *api, "--node", NODE,
                "--state-dir", str(s), "--netns", self.host,
                *(["--filter", self.filter] if self.filter else []),
                "--kubelet-root", str(s / "kubelet"), "--nri-socket", str(s / "nri.sock"),
                "--cdi-root", str(s / "cdi"), "--log-level", self.args.log_level]
        with (s / "agent.log").open("ab") as log:
            self.agent = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    def published(self) -> set[str]:
        names: set[str] = set()
        for f in (self.state / "api" / "resourceslices").glob("*.json"):
            try:
                names |= {d["name"] for d in json.loads(f.read_text())["spec"].get("devices", [])}
            except (OSError, ValueError):
                pass
        return names

    def log_problems(self) -> dict[str, int]:
        """Warning-or-worse agent log lines, counted by shape (names and numbers as #)."""
        log = self.state / "agent.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        marks = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        shapes = [re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", x.split(" ", 2)[-1])
                  for x in text.splitlines() if any(m in x for m in marks)]
        return dict(collections.Counter(shapes).most_common(20))


async def gather(fns: list[Callable[[], Awaitable[Any]]]) -> tuple[list[Any], list[float]]:
    """Run together; results (or the exception) and each one's end time."""
    out: list[Any] = [None] * len(fns)
    ends = [0.0] * len(fns)

    async def one(i: int) -> None:
        try:
            out[i] = await fns[i]()
        except Exception as exc:
            out[i] = exc
        ends[i] = time.perf_counter()

    async with anyio.create_task_group() as tg:
        for i in range(len(fns)):
            tg.start_soon(one, i)
    return out, ends


def conc_net(j: int, k: int) -> tuple[str, str, list[str]]:
    """Pod j's interface k of the concurrency phase: name, /24 prefix, routes."""
    return f"net{k + 1}", f"10.{90 + k}.{j}", [f"10.{92 + k}.{j}.0/24"]


async def run(b: Bench) -> dict:
    from kndpeers import kubelet
    from kndpeers.nri_runtime import FakeRuntime, HookFailed, container, pod, run_oci_hooks
    from services.common.api.files import FileApi
    from services.kubelet_gateway.nri.ttrpc import TtrpcError

    args, api = b.args, FileApi(b.state)
    for ns in (b.host, b.fhost, b.wire, b.fwire):
        b.netns_add(ns)
        ip("-n", ns, "link", "set", "lo", "up")
    b.pairs([(f"kbs{i}", f"ps{i}", f"10.80.{i}") for i in range(args.n)])

    async def published(names: set[str]) -> None:
        with anyio.fail_after(60):
            while not names <= b.published():
                await anyio.sleep(0.05)

    # containerd's default: 2 s a request, and a plugin that answers late is disconnected
    async with FakeRuntime(b.state / "nri.sock", deadline=2.0) as runtime:
        b.start_agent()
        await published({f"kbs{i}" for i in range(args.n)})
        plugin = await runtime.next_plugin(wait=30)
        await plugin.handshake()
        dra = kubelet.Kubelet(f"unix://{b.state}/kubelet/plugins/knd.dev/dra.sock")
        kubelet_call = dra.call

        async def timed(fn: Awaitable[Any]) -> float:
            t = time.perf_counter()
            await fn
            return (time.perf_counter() - t) * 1000

        routes = ["10.81.0.0/16", "10.82.0.0/16"]
        lat: dict[str, list[float]] = {k: [] for k in (
            "prepare", "attach", "detach", "unprepare", "floor_attach", "floor_detach",
            "noop", "noop_n")}
        verified, host_links = 0, len(b.host_links())
        for i in range(args.n):
            net, uid = f"10.80.{i}", str(uuid.uuid4())
            podns = b.netns_add(f"kndb-p{i}-{b.tag}")
            claim = await api.create_claim(kubelet.make_claim(
                f"s{i}", results=[kubelet.result("nic", f"kbs{i}", pool=NODE)],
                config=[kubelet.opaque(pod_config("net1", net, routes))],
                pods=[(f"pod{i}", uid)]))
            sandbox = pod(uid=uid, name=f"pod{i}", netns=f"/var/run/netns/{podns}")
            lat["prepare"].append(await timed(kubelet_call("Prepare", claim)))
            lat["attach"].append(await timed(plugin.run_pod_sandbox(sandbox)))
            verified += configured(podns, "net1", net, routes)
            lat["detach"].append(await timed(plugin.stop_pod_sandbox(sandbox)))
            await plugin.remove_pod_sandbox(sandbox)
            lat["unprepare"].append(await timed(kubelet_call("Unprepare", claim)))
            ip("-n", b.host, "link", "show", "dev", f"kbs{i}")  # back home, or this raises
            b.netns_del(podns)
            # the floor, same round, in a netns the agent does not watch
            fpod = b.netns_add(f"kndb-q{i}-{b.tag}")
            lat["noop"].append(timed_batch(None, []))
            lat["noop_n"].append(timed_batch(fpod, []))
            lat["floor_attach"].append(
                timed_batch(b.fhost, [f"link set dev fkbs{i} netns {fpod} name net1 mtu 1500 up"])
                + timed_batch(fpod, config_lines("net1", net, routes)))
            if not configured(fpod, "net1", net, routes):
                raise RuntimeError("floor: net1 not configured")
            lat["floor_detach"].append(timed_batch(fpod, [
                "link set dev net1 down", f"link set dev net1 netns {b.fhost} name fkbs{i}"]))
            b.netns_del(fpod)
            await anyio.sleep(0.05)  # the next pod comes a moment later

        # ---- 32 pods x 2 devices, all at once --------------------------------------------
        b.pairs([(f"kbc{j}{x}", f"pc{j}{x}", conc_net(j, k)[1])
                 for j in range(PODS) for k, x in enumerate("ab")])
        await published({f"kbc{j}{x}" for j in range(PODS) for x in "ab"})
        pods, claims, sandboxes = [], [], []
        for j in range(PODS):
            uid, podns = str(uuid.uuid4()), b.netns_add(f"kndb-c{j}-{b.tag}")
            claims.append(await api.create_claim(kubelet.make_claim(
                f"c{j}", pods=[(f"cpod{j}", uid)],
                results=[kubelet.result(f"nic-{x}", f"kbc{j}{x}", pool=NODE) for x in "ab"],
                config=[kubelet.opaque(pod_config(*conc_net(j, k)), requests=[f"nic-{x}"])
                        for k, x in enumerate("ab")])))
            sandboxes.append(pod(uid=uid, name=f"cpod{j}", netns=f"/var/run/netns/{podns}"))
            pods.append(podns)

        def count_configured() -> int:
            return sum(configured(pods[j], *conc_net(j, k)) for j in range(PODS) for k in (0, 1))

        conc: dict[str, Any] = {"pods": PODS, "devices": 2 * PODS,
                                "host_interfaces": len(b.host_links())}
        started: dict[int, float] = {}
        early: list[int] = []

        async def start_pod(j: int) -> None:
            """The runtime's RunPodSandbox, then the kubelet's first container: created
            with knd's hooks run as runc runs them, again on failure (0.1 s later)."""
            sb = sandboxes[j]
            await plugin.run_pod_sandbox(sb)
            while True:
                try:
                    resp = await plugin.create_container(sb, container("main", sb))
                    await run_oci_hooks(resp.adjust.hooks.create_runtime, {"id": f"c{j}"})
                    break
                except (TtrpcError, HookFailed):
                    await anyio.sleep(0.1)
            started[j] = time.perf_counter()
            if not all(configured(pods[j], *conc_net(j, k)) for k in (0, 1)):
                early.append(j)

        for step, fn, items in (
                ("prepare", lambda c: kubelet_call("Prepare", c), claims),
                ("attach", start_pod, list(range(PODS))),
                ("detach", plugin.stop_pod_sandbox, sandboxes),
                ("remove", plugin.remove_pod_sandbox, sandboxes),
                ("unprepare", lambda c: kubelet_call("Unprepare", c), claims)):
            t0 = time.perf_counter()
            out, ends = await gather([lambda x=x, fn=fn: fn(x) for x in items])
            conc[f"{step}_wall_ms"] = round((max(ends) - t0) * 1000, 1)
            conc[f"{step}_reply_ms"] = stats([(e - t0) * 1000 for e in ends])
            errs = [repr(x) for x in out if isinstance(x, Exception)]
            conc[f"{step}_errors"] = {"count": len(errs), "first": errs[:3]}
            if step == "attach":
                # ends: each pod's first container started (its devices all in)
                conc["pods_started"] = len(started)
                conc["started_early"] = len(early)
                conc["configured_at_start"] = count_configured()
                conc["all_configured"] = conc["configured_at_start"] == 2 * PODS
                conc["plugin_timed_out"] = len(plugin.timed_out)
                conc["plugin_connections"] = runtime.connections
        await dra.aclose()
    home = b.host_links()
    conc["devices_back_home"] = sum(f"kbc{j}{x}" in home for j in range(PODS) for x in "ab")
    for podns in pods:
        b.netns_del(podns)
    # the floor for 64 moves: one batch from the host, then 32 config batches together
    fpods = [b.netns_add(f"kndb-r{j}-{b.tag}") for j in range(PODS)]
    move = [f"link set dev fkbc{j}{x} netns {fpods[j]} name net{k + 1} mtu 1500 up"
            for j in range(PODS) for k, x in enumerate("ab")]
    t0 = time.perf_counter()
    conc["floor_move_ms"] = round(timed_batch(b.fhost, move), 1)
    await gather([lambda j=j: anyio.to_thread.run_sync(timed_batch, fpods[j], [
        line for k in (0, 1) for line in config_lines(*conc_net(j, k))]) for j in range(PODS)])
    conc["floor_wall_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    conc["floor_configured"] = sum(configured(fpods[j], *conc_net(j, k))
                                   for j in range(PODS) for k in (0, 1))
    conc["attach_over_floor"] = round(conc["attach_wall_ms"] / conc["floor_wall_ms"], 2)
    single = {"rounds": args.n, "host_interfaces": host_links, "verified_in_pod": verified,
              **{f"{k}_ms": stats(lat[k]) for k in ("prepare", "attach", "detach", "unprepare")}}
    floor = {"attach_ms": stats(lat["floor_attach"]), "detach_ms": stats(lat["floor_detach"]),
             "noop_ip_batch_ms": stats(lat["noop"]), "noop_ip_n_batch_ms": stats(lat["noop_n"]),
             "attach_p50_over_floor_p50": round(pct(lat["attach"], .5)
                                                / pct(lat["floor_attach"], .5), 2)}
    return {"single": single, "floor": floor, "concurrent": conc}


def targets(r: dict) -> list[dict]:
    s, f, c = r["single"], r["floor"], r["concurrent"]
    rows = [("prepare p50 <= 15 ms", s["prepare_ms"]["p50"], s["prepare_ms"]["p50"] <= 15),
            ("attach p50 <= 30 ms", s["attach_ms"]["p50"], s["attach_ms"]["p50"] <= 30),
            ("attach p99 <= 100 ms", s["attach_ms"]["p99"], s["attach_ms"]["p99"] <= 100),
            ("attach p50 <= 2x ip -batch floor p50", f["attach_p50_over_floor_p50"],
             f["attach_p50_over_floor_p50"] <= 2),
            (f"{PODS}x2 all attached within 1 s", c["attach_wall_ms"],
             c["attach_wall_ms"] <= TARGET_WALL_MS and c["all_configured"]),
            # the kernel's floor for the same 64 moves and configurations, this run
            # containerd's 2 s a request: every pod runs, none before its devices are in,
            # and the plugin is never disconnected for a late answer
            (f"{PODS}x2 every pod started with all its devices, none early, plugin "
             "never late", c["pods_started"],
             c["all_configured"] and c["pods_started"] == PODS and not c["started_early"]
             and not c["attach_errors"]["count"] and not c["plugin_timed_out"]),
            (f"{PODS}x2 wall <= 1.5x the ip -batch floor's", c["attach_over_floor"],
             c["all_configured"] and c["attach_over_floor"] <= 1.5)]
    return [{"target": t, "value": v, "pass": bool(ok)} for t, v, ok in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30, help="single-device rounds (at most 250)")
    p.add_argument("--log-level", default="warning", help="the agent's log level")
    p.add_argument("--keep", action="store_true", help="leave the state directory behind")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if not 1 <= args.n <= 250:
        p.error("--n must be within 1..250")
    state = Path(tempfile.mkdtemp(prefix="knd-bench-"))  # short: unix socket paths
    b = Bench(args, state, uuid.uuid4().hex[:6])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill too
    try:
        results = anyio.run(run, b)
    except BaseException:
        sys.stderr.write(f"agent log problems: {json.dumps(b.log_problems(), indent=2)}\n")
        raise
    finally:
        b.cleanup()
        problems = b.log_problems()
        log = state / "agent.log"
        if not args.keep and log.exists() and any(
                " ERROR " in k or "exited" in k or "Traceback" in k for k in problems):
            kept = Path(tempfile.gettempdir()) / f"knd-bench-agent-{b.tag}.log"
            shutil.copy(log, kept)  # the whole story of a crash outlives the state dir
            sys.stderr.write(f"agent log kept: {kept}\n")
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    report = {"benchmark": "claims", "cpus": os.cpu_count(), "kernel": os.uname().release,
              "date": time.strftime("%Y-%m-%d"), **results, "targets": targets(results),
              "agent_log_problems": problems}
    emit(report, args.out)


if __name__ == "__main__":
    main()
