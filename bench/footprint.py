"""Footprint benchmark: what knd costs a node.

Runs as root. Like bench/claims.py it runs ``knd up --standalone --netns <host>`` with
a throwaway host netns holding ``--devices`` macvlan NICs (64) and no ``--filter``,
plays kubelet (DRA gRPC) and the container runtime (NRI) itself, and measures:

- start-up: ``knd up`` started -> every service's ``/readyz`` 200 (median of
  ``--starts``), ``knd --help`` and ``knd status`` wall time (median of 5);
- memory, idle: RSS and PSS of the supervisor, nats-server and each service (the
  DaemonSet pod is the last five);
- idle CPU of all of them together over ``--idle`` seconds, in % of one core;
- a soak: ``--cycles`` rounds of 8 claims prepared, attached, detached and unprepared
  (after ``--warmup`` rounds), sampling every process's RSS, open fds and threads and
  the checkpoint's rows every ``--every`` rounds: growth is the last sample less the
  first, and, for what settles slowly, the last less the middle one.

Prints one JSON object; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.claims import NODE, Bench, ip, timed_batch  # noqa: E402
from bench.report import emit  # noqa: E402

KND = [sys.executable, "-m", "services.cli"]
SERVICES = ("discovery", "publisher", "plumber", "kubelet-gateway")
PORTS = {"discovery": 9501, "publisher": 9502, "plumber": 9503, "kubelet-gateway": 9504}
CLAIMS = 8

TARGETS = {"pod_rss_mb": 160.0, "supervisor_rss_mb": 20.0, "ready_s": 1.5, "help_s": 0.3,
           "status_s": 0.5, "idle_cpu_pct": 0.3, "growth_mb": 2.0}


# ---- reading /proc ------------------------------------------------------------------------


def children(pid: int) -> dict[str, int]:
    """The supervisor's children: service name (or nats-server) -> pid."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid != pid:
            continue
        args = [w.decode() for w in words if w]
        name = args[-1] if "services.cli" in args else Path(args[0]).name
        out[name] = int(entry.name)
    return out


def memory_kb(pid: int) -> dict[str, int]:
    """RSS and PSS (a shared page counted once across processes) in kB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Rss":
            rss = int(value.split()[0])
        elif key == "Pss":
            pss = int(value.split()[0])
    return {"rss": rss, "pss": pss}


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def counts(pid: int) -> dict[str, int]:
    threads = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text()
                       .splitlines() if line.startswith("Threads:")))
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


# ---- the agent -------------------------------------------------------------------------------


def ready(state: Path) -> bool:
    for port in PORTS.values():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
    return True


def timed_cmd(argv: list[str], runs: int = 5) -> float:
    took = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=False)
        took.append(time.perf_counter() - t)
    return round(statistics.median(took), 3)


def start_timed(b: Bench, kubeconfig: Path | None = None) -> float:
    """Start the agent; seconds until every service is ready."""
    t = time.perf_counter()
    b.start_agent(kubeconfig)
    deadline = t + 60
    while not ready(b.state):
        if time.perf_counter() > deadline or (b.agent and b.agent.poll() is not None):
            raise RuntimeError("the agent did not get ready within 60 s")
        time.sleep(0.02)
    return time.perf_counter() - t


def stop(b: Bench) -> None:
    if b.agent is not None and b.agent.poll() is None:
        b.agent.terminate()
        b.agent.wait(20)
    b.agent = None


def snapshot(b: Bench) -> dict[str, dict[str, int]]:
    assert b.agent is not None
    pids = {"supervisor": b.agent.pid, **children(b.agent.pid)}
    return {name: {**memory_kb(pid), **counts(pid)} for name, pid in pids.items()}


def checkpoint_rows(state: Path) -> int:
    db = sqlite3.connect(f"file:{state / 'plumber' / 'checkpoint.db'}?mode=ro", uri=True)
    try:
        return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                   for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    finally:
        db.close()


def idle_cpu(b: Bench, seconds: float) -> tuple[float, dict[str, float]]:
    """% of one core all processes used together over ``seconds``, and each one's."""
    assert b.agent is not None
    pids = {"supervisor": b.agent.pid, **children(b.agent.pid)}
    before = {n: cpu_ticks(p) for n, p in pids.items()}
    time.sleep(seconds)
    tck = os.sysconf("SC_CLK_TCK")
    each = {n: round(100 * (cpu_ticks(p) - before[n]) / tck / seconds, 3)
            for n, p in pids.items()}
    return round(sum(each.values()), 3), each


# ---- the soak ------------------------------------------------------------------------------


async def soak(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    from kndpeers import kubelet
    from kndpeers.nri_runtime import FakeRuntime, pod
    from services.common.api.files import FileApi

    api = FileApi(b.state)
    samples: list[dict[str, Any]] = []
    async with FakeRuntime(b.state / "nri.sock", deadline=30.0) as runtime:
        if b.agent is None:
            b.start_agent()
        plugin = await runtime.next_plugin(wait=60)
        await plugin.handshake()
        dra = kubelet.Kubelet(f"unix://{b.state}/kubelet/plugins/knd.dev/dra.sock")
        call = dra.call

        pods = [b.netns_add(f"kndf-p{i}-{b.tag}") for i in range(CLAIMS)]
        t0 = time.perf_counter()
        for cycle in range(args.warmup + args.cycles):
            round_ = []
            for i in range(CLAIMS):
                uid = str(uuid.uuid4())
                claim = await api.create_claim(kubelet.make_claim(
                    f"c{cycle}-{i}", results=[kubelet.result("nic", f"kbs{i}", pool=NODE)],
                    config=[kubelet.opaque({"interface": {"name": "net1",
                                                          "addresses": [f"10.70.{i}.2/24"]}})],
                    pods=[(f"pod{i}", uid)]))
                sandbox = pod(uid=uid, name=f"pod{i}", netns=f"/var/run/netns/{pods[i]}")
                round_.append((claim, sandbox))
            for claim, _ in round_:
                await call("Prepare", claim)
            async with anyio.create_task_group() as tg:
                for _, sandbox in round_:
                    tg.start_soon(plugin.run_pod_sandbox, sandbox)
            async with anyio.create_task_group() as tg:
                for _, sandbox in round_:
                    tg.start_soon(plugin.stop_pod_sandbox, sandbox)
            for claim, sandbox in round_:
                await plugin.remove_pod_sandbox(sandbox)
                await call("Unprepare", claim)
                meta = claim["metadata"]  # standalone claims are files: a cycle leaves none
                (b.state / "api" / "resourceclaims" / meta["namespace"]
                 / f"{meta['name']}.json").unlink(missing_ok=True)
            done = cycle + 1 - args.warmup
            if done >= 0 and done % args.every == 0:
                samples.append({"cycle": done, "seconds": round(time.perf_counter() - t0, 1),
                                "rows": checkpoint_rows(b.state), "procs": snapshot(b)})
        await dra.aclose()
    first, last = samples[0], samples[-1]
    growth = {name: {"rss_mb": mb(last["procs"][name]["rss"] - first["procs"][name]["rss"]),
                     "fds": last["procs"][name]["fds"] - first["procs"][name]["fds"],
                     "threads": last["procs"][name]["threads"] - first["procs"][name]["threads"]}
              for name in first["procs"] if name in last["procs"]}
    rss = {name: [mb(s["procs"][name]["rss"]) for s in samples if name in s["procs"]]
           for name in first["procs"]}
    return {"cycles": args.cycles, "warmup": args.warmup, "claims_per_cycle": CLAIMS,
            "growth": growth, "growth_second_half_mb": second_half(rss),
            "rows": [s["rows"] for s in samples], "rss_mb": rss, "seconds": last["seconds"]}


def second_half(rss: dict[str, list[float]]) -> dict[str, float]:
    """Per process, RSS at the last sample less at the middle one: whether memory still
    grows once the first half of the soak has settled it."""
    return {name: round(v[-1] - v[len(v) // 2], 1) for name, v in rss.items() if v}


def against_api(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Ready time and idle memory with the test API server (tests/kubeapi) as the cluster."""
    kubeconfig = b.state / "kubeconfig"
    api = subprocess.Popen([*KND[:1], "-m", "tests.kubeapi", "--node", NODE, "--kubeconfig",
                            str(kubeconfig)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert api.stdout is not None
        api.stdout.readline()  # listening
        ready_s = start_timed(b, kubeconfig)
        time.sleep(args.settle)
        idle = snapshot(b)
        stop(b)
    finally:
        api.terminate()
        api.communicate(timeout=10)
    pod = {k: v for k, v in idle.items() if k != "supervisor"}
    return {"ready_s": round(ready_s, 3), "rss_mb": {k: mb(v["rss"]) for k, v in idle.items()},
            "pod_rss_mb": mb(sum(v["rss"] for v in pod.values())),
            "pod_pss_mb": mb(sum(v["pss"] for v in pod.values()))}


# ---- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="knd-footprint-"))
    b = Bench(argparse.Namespace(log_level="warning"), state, uuid.uuid4().hex[:6])
    try:
        for ns in (b.host, b.wire):
            b.netns_add(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        # NICs as a node has them, and knd as it runs by default (no --filter, so no
        # CEL): macvlans on one uplink-like veth, which the default filter hides
        b.filter = None
        timed_batch(b.host, [f"link add kbup type veth peer name pup netns {b.wire}",
                             "link set dev kbup up",
                             *(f"link add kbs{i} link kbup type macvlan mode bridge"
                               for i in range(args.devices))])
        # the agent serves /readyz on this netns' loopback: run from inside it
        starts = []
        for _ in range(args.starts):
            starts.append(start_timed(b))
            stop(b)
        ready_s = start_timed(b)
        starts.append(ready_s)
        time.sleep(args.settle)
        idle = snapshot(b)
        cpu, per_process = idle_cpu(b, args.idle)
        help_s = timed_cmd([*KND, "--help"])
        status_s = timed_cmd([*KND, "status", "--state-dir", str(state)])
        pod = {k: v for k, v in idle.items() if k != "supervisor"}
        result: dict[str, Any] = {
            "devices": args.devices,
            "ready_s": round(statistics.median(starts), 3),
            "ready_s_all": [round(s, 3) for s in starts],
            "help_s": help_s, "status_s": status_s,
            "idle_cpu_pct": cpu, "idle_seconds": args.idle, "idle_cpu_pct_by": per_process,
            "rss_mb": {k: mb(v["rss"]) for k, v in idle.items()},
            "pss_mb": {k: mb(v["pss"]) for k, v in idle.items()},
            "pod_rss_mb": mb(sum(v["rss"] for v in pod.values())),
            "pod_pss_mb": mb(sum(v["pss"] for v in pod.values())),
            "supervisor_rss_mb": mb(idle["supervisor"]["rss"]),
        }
        stop(b)
        result["api"] = against_api(b, args)
        if args.cycles:
            start_timed(b)
            result["soak"] = anyio.run(soak, b, args)
        result["targets"] = targets(result)
        return result
    finally:
        b.cleanup()
        shutil.rmtree(state, ignore_errors=True)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in ("pod_rss_mb", "supervisor_rss_mb", "ready_s", "help_s", "status_s",
                "idle_cpu_pct"):
        out.append({"what": key, "target": TARGETS[key], "got": r[key],
                    "met": r[key] <= TARGETS[key]})
    if "soak" in r:
        worst = max(g["rss_mb"] for g in r["soak"]["growth"].values())
        out.append({"what": "growth_mb", "target": TARGETS["growth_mb"], "got": worst,
                    "met": worst <= TARGETS["growth_mb"]})
        late = max(r["soak"]["growth_second_half_mb"].values())
        out.append({"what": "growth_second_half_mb", "target": TARGETS["growth_mb"],
                    "got": late, "met": late <= TARGETS["growth_mb"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=64)
    p.add_argument("--starts", type=int, default=4, help="extra cold starts for ready_s")
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/footprint.py: run as root (it builds network namespaces)")
    if not os.environ.get("KND_FOOTPRINT_INNER"):
        # the agent's HTTP endpoints live on a loopback of our own
        ns = f"kndf-{uuid.uuid4().hex[:6]}"
        ip("netns", "add", ns)
        try:
            ip("-n", ns, "link", "set", "lo", "up")
            code = subprocess.run(["ip", "netns", "exec", ns, sys.executable, *sys.argv],
                                  env={**os.environ, "KND_FOOTPRINT_INNER": "1"}).returncode
        finally:
            ip("netns", "del", ns, check=False)
        sys.exit(code)
    result = run(args)
    emit(result, args.out)


if __name__ == "__main__":
    main()
