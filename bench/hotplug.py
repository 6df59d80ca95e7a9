"""Hot-plug benchmark: how fast a new interface reaches the node's ResourceSlices.

Runs as root. It builds a throwaway netns as the node and re-runs itself inside
it (``ip netns exec``), where it starts ``knd up`` (standalone, or against the
test API server over real HTTP) and measures, with the agent's own clock-free
signal (the publisher's ``events.slice.published``, read as the observer user):

- one by one: link created -> slice written, p50 / p99 over N veth pairs;
- burst: 256 interfaces created by one ``ip -batch``: time from the last link to a
  converged pool, and the slice writes the burst cost;
- full scan: one discovery rescan at 1000 interfaces (median of 5), cold (all of sysfs
  reread, as at start and on the periodic resync) and warm (sysfs facts cached, as after
  a link event).

Prints one JSON object; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

NODE = "bench-node"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


async def inner(args: argparse.Namespace) -> dict:
    import nats
    from pyroute2 import AsyncIPRoute

    from schemas.base import decode
    from schemas.inventory import SlicePublished
    from schemas.subjects import Subjects
    from services.common import auth

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    state = Path(tempfile.mkdtemp(prefix="knd-bench-"))
    procs: list[subprocess.Popen] = []
    knd = [sys.executable, "-m", "services.cli", "up", "--node", NODE, "--state-dir",
           str(state), "--kubelet-root", str(state / "kubelet"), "--filter", "true",
           "--log-level", "warning"]
    if args.mode == "api":
        kubeconfig = state / "kubeconfig"
        api = subprocess.Popen([sys.executable, "-m", "tests.kubeapi", "--node", NODE,
                                "--kubeconfig", str(kubeconfig)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
        procs.append(api)
        api.stdout.readline()
        knd += ["--kubeconfig", str(kubeconfig)]
    else:
        knd.append("--standalone")
    procs.append(subprocess.Popen(knd, cwd=ROOT))
    events: list[tuple[float, SlicePublished]] = []
    arrived = asyncio.Event()
    try:
        creds_path = state / "bus" / "creds.json"
        for _ in range(500):
            if creds_path.exists():
                break
            await asyncio.sleep(0.01)
        creds = auth.load(creds_path)
        user, pw = creds.user("observer")
        nc = None
        for _ in range(200):
            try:
                nc = await nats.connect(creds.url, user=user, password=pw,
                                        allow_reconnect=False, connect_timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.05)
        assert nc is not None, "bus did not come up"

        async def on_event(msg) -> None:
            events.append((time.monotonic(), decode(msg.data, SlicePublished)))
            arrived.set()

        await nc.subscribe(Subjects(NODE).event("slice.published"), cb=on_event)

        async def until_devices(n: int, since: int, timeout: float = 30.0) -> float:
            deadline = time.monotonic() + timeout
            while True:
                for t, ev in events[since:]:
                    if ev.devices >= n:
                        return t
                arrived.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"pool never reached {n} devices")
                try:
                    await asyncio.wait_for(arrived.wait(), left)
                except TimeoutError:
                    pass

        ipr = AsyncIPRoute()
        await ipr.link("add", ifname="warm-a", kind="veth", peer="warm-b")
        await until_devices(2, 0, timeout=60)  # the agent is up and publishing
        latencies = []
        base = 2
        for i in range(args.n):
            since = len(events)
            t0 = time.monotonic()
            await ipr.link("add", ifname=f"h{i}a", kind="veth", peer=f"h{i}b")
            t1 = await until_devices(base + 2 * (i + 1), since)
            latencies.append((t1 - t0) * 1000)
            await asyncio.sleep(0.02)
        base += 2 * args.n
        await asyncio.sleep(0.3)
        since = len(events)
        pairs = args.burst // 2
        batch = "\n".join(f"link add b{i}a type veth peer name b{i}b" for i in range(pairs))
        t_start = time.monotonic()
        await asyncio.to_thread(subprocess.run, ["ip", "-batch", "-"], input=batch + "\n",
                                text=True, check=True)
        t_last = time.monotonic()
        t_conv = await until_devices(base + 2 * pairs, since)
        await asyncio.sleep(0.5)  # count writes still in flight
        burst_writes = sum(ev.writes for _, ev in events[since:])
        result = {
            "mode": args.mode,
            "one_by_one": {"n": args.n, "p50_ms": pct(latencies, 0.5),
                           "p99_ms": pct(latencies, 0.99), "max_ms": round(max(latencies), 2)},
            "burst": {"interfaces": 2 * pairs,
                      "create_s": round(t_last - t_start, 3),
                      "converged_after_last_ms": round((t_conv - t_last) * 1000, 1),
                      "slice_writes": burst_writes,
                      "snapshots_published": len(events) - since},
        }
        await nc.close()
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(10)
    result["full_scan"] = full_scan(args.scan)
    return result


def full_scan(total: int) -> dict:
    """Median rescan time at ``total`` interfaces in this netns (sysfs included)."""
    from services.discovery.filter import DeviceFilter
    from services.discovery.service import Scanner
    from services.kernel.sysfs import Sysfs

    have = len(os.listdir("/sys/class/net"))
    missing = max(0, total - have)
    lines = [f"link add s{i}a type veth peer name s{i}b" for i in range((missing + 1) // 2)]
    if lines:
        subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                       check=True)
    scanner = Scanner("knd.dev", Sysfs("/sys"), DeviceFilter("true"))
    times: dict[bool, list[float]] = {True: [], False: []}
    devices = 0
    for fresh in (True, False):  # cold: all of sysfs reread; warm: sysfs facts cached
        for _ in range(5):
            t = time.perf_counter()
            # warm: as after an event about one interface, whose eBPF programs
            # alone are read again (cold reads every interface's, as the resync)
            devices = len(scanner.scan(fresh=fresh, touched=None if fresh else set()))
            times[fresh].append((time.perf_counter() - t) * 1000)
    scanner.close()
    return {"interfaces": len(os.listdir("/sys/class/net")), "devices": devices,
            "median_ms": round(statistics.median(times[True]), 1),
            "min_ms": round(min(times[True]), 1),
            "warm_median_ms": round(statistics.median(times[False]), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["standalone", "api", "both"], default="both")
    p.add_argument("--n", type=int, default=50, help="interfaces pairs created one by one")
    p.add_argument("--burst", type=int, default=256, help="interfaces created in one burst")
    p.add_argument("--scan", type=int, default=1000, help="interfaces for the full-scan figure")
    p.add_argument("--out", type=Path)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        print(json.dumps(asyncio.run(inner(args))))
        return
    results = []
    for mode in (["standalone", "api"] if args.mode == "both" else [args.mode]):
        ns = f"knd-bench-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            out = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, __file__, "--inner", "--mode", mode,
                 "--n", str(args.n), "--burst", str(args.burst), "--scan", str(args.scan)],
                check=True, capture_output=True, text=True, cwd=ROOT)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        except subprocess.CalledProcessError as exc:
            sys.stderr.write(exc.stderr)
            raise
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    report = {"benchmark": "hotplug", "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "results": results}
    emit(report, args.out)


if __name__ == "__main__":
    main()
