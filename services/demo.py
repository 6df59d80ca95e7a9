"""``knd demo``: the whole path on one machine, with the embedded defaults.

It builds a throwaway "host" netns with a veth pair and a "pod" netns, runs
``knd up --standalone`` watching that host netns, then plays kubelet (DRA gRPC
over the real socket) and the container runtime (NRI over the real socket):
the device shows up in the slice, an allocated claim is prepared, the pod
sandbox starts and the interface appears in the pod with its address and
routes, a ping goes through it, the pod stops and the device comes back home.
Each step prints its latency; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from kndpeers import kubelet
from kndpeers.nri_runtime import FakeRuntime, pod
from services.common.api.files import FileApi

POD_ADDR, PEER_ADDR = "10.77.0.2/24", "10.77.0.1/24"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", action="store_true", help="leave the state directory behind")


def ip(*args: str, check: bool = True) -> str:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


class Step:
    def __init__(self, title: str) -> None:
        self.title = title

    def __enter__(self) -> Step:
        print(f"\n== {self.title}", flush=True)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            print(f"   ({(time.perf_counter() - self.t0) * 1000:.1f} ms)", flush=True)


def show(text: str) -> None:
    for line in text.strip().splitlines():
        print(f"   {line}")


def attribute(value: object) -> str:
    """An attribute's value as a person reads it: a flag is yes or no, not False."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def attribute_lines(attributes: dict[str, dict[str, object]]) -> list[str]:
    """``knd.dev/rdma = no``: a slice's attributes carry their value under its type."""
    return [f"{name} = {attribute(next(iter(typed.values()), ''))}"
            for name, typed in attributes.items()]


def prepared_lines(resp: Any) -> list[str]:
    """One line per prepared device of a NodePrepareResources answer (or the error)."""
    lines = []
    for uid, answer in sorted(resp.claims.items()):
        if answer.error:
            lines.append(f"claim {uid}: not prepared: {answer.error}")
            continue
        for d in answer.devices:
            cdi = ", ".join(d.cdi_device_ids) or "none"
            lines.append(f"claim {uid}: prepared device {d.device_name} of pool "
                         f"{d.pool_name} for request {', '.join(d.request_names)} "
                         f"(CDI id {cdi})")
        if not answer.devices:
            lines.append(f"claim {uid}: prepared, no device of this driver")
    return lines


def unprepared_lines(resp: Any) -> list[str]:
    return [f"claim {uid}: " + (f"not unprepared: {answer.error}" if answer.error
                                else "unprepared")
            for uid, answer in sorted(resp.claims.items())]


async def wait_for(probe, seconds: float, what: str):
    with anyio.fail_after(seconds):
        while not (value := probe()):
            await anyio.sleep(0.01)
    return value


async def demo(state: Path, host: str, podns: str) -> None:
    node = "demo-node"
    ip("netns", "add", host)
    ip("netns", "add", podns)
    ip("-n", host, "link", "set", "lo", "up")
    ip("-n", host, "link", "add", "demo0", "type", "veth", "peer", "name", "demo0-peer")
    ip("-n", host, "addr", "add", PEER_ADDR, "dev", "demo0-peer")
    ip("-n", host, "link", "set", "demo0-peer", "up")
    kubelet_root, nri_sock = state / "kubelet", state / "nri.sock"
    argv = [sys.executable, "-m", "services.cli", "up", "--standalone", "--node", node,
            "--state-dir", str(state), "--netns", host, "--filter",
            'attributes["knd.dev/ifName"] == "demo0"', "--kubelet-root", str(kubelet_root),
            "--nri-socket", str(nri_sock), "--cdi-root", str(state / "cdi"),
            "--log-level", "warning"]
    async with FakeRuntime(nri_sock) as runtime:
        agent = await anyio.open_process(argv, start_new_session=True, stdout=None,
                                         stderr=None)
        try:
            await run_steps(state, node, host, podns, kubelet_root, runtime)
        finally:
            with anyio.CancelScope(shield=True):
                agent.terminate()
                with anyio.move_on_after(15):
                    await agent.wait()


async def run_steps(state: Path, node: str, host: str, podns: str, kubelet_root: Path,
                    runtime: FakeRuntime) -> None:
    slices = state / "api" / "resourceslices"

    def device():
        for f in slices.glob("*.json") if slices.exists() else []:
            for d in json.loads(f.read_text())["spec"].get("devices", []):
                if d["name"] == "demo0":
                    return d
        return None

    with Step("agent up: demo0 published in the node's ResourceSlice"):
        dev = await wait_for(device, 20, "demo0 in a slice")
        show("\n".join(attribute_lines(dev["attributes"])))
    claim = kubelet.make_claim(
        "demo-claim", results=[kubelet.result("nic", "demo0", pool=node)],
        config=[kubelet.opaque({"interface": {"name": "net1", "addresses": [POD_ADDR]},
                                "routes": [{"destination": "10.78.0.0/16",
                                            "gateway": "10.77.0.1"}]})],
        pods=[("demo-pod", pod_uid := str(uuid.uuid4()))])
    with Step("scheduler (played): an allocated ResourceClaim for demo0"):
        claim = await FileApi(state).create_claim(claim)  # the store assigns the UID
        show(f"claim default/demo-claim uid {claim['metadata']['uid']}")
    dra = f"unix://{kubelet_root}/plugins/knd.dev/dra.sock"
    with Step("kubelet: NodePrepareResources over dra.sock (v1)"):
        with anyio.fail_after(30):
            while not (kubelet_root / "plugins" / "knd.dev" / "dra.sock").exists():
                await anyio.sleep(0.02)
        resp = await kubelet.prepare(dra, "v1", [kubelet.ref(claim)])
        show("\n".join(prepared_lines(resp)))
        if resp.claims[claim["metadata"]["uid"]].error:
            raise RuntimeError(resp.claims[claim["metadata"]["uid"]].error)
    plugin = await runtime.next_plugin(wait=30)
    await plugin.handshake()
    sandbox = pod(uid=pod_uid, name="demo-pod", netns=f"/var/run/netns/{podns}")
    with Step("runtime: RunPodSandbox over the NRI socket -> demo0 moves into the pod"):
        await plugin.run_pod_sandbox(sandbox)
    with Step("inside the pod"):
        show(ip("-n", podns, "-br", "addr", "show", "net1"))
        show(ip("-n", podns, "route"))
    with Step("ping from the host netns through the pod's interface"):
        res = await anyio.run_process(["ip", "netns", "exec", host, "ping", "-c1", "-W2",
                                       POD_ADDR.split("/")[0]], check=False)
        out = res.stdout.decode()
        show(out.splitlines()[1] if res.returncode == 0 else out + res.stderr.decode())
    with Step("runtime: StopPodSandbox -> demo0 goes back home"):
        await plugin.stop_pod_sandbox(sandbox)
        await plugin.remove_pod_sandbox(sandbox)
    with Step("back in the host netns"):
        show(ip("-n", host, "-br", "addr", "show", "demo0"))
    with Step("kubelet: NodeUnprepareResources"):
        resp = await kubelet.unprepare(dra, "v1", [kubelet.ref(claim)])
        show("\n".join(unprepared_lines(resp)))


def main(args: argparse.Namespace) -> int:
    tag = uuid.uuid4().hex[:6]
    host, podns = f"knd-demo-host-{tag}", f"knd-demo-pod-{tag}"
    state = Path(tempfile.mkdtemp(prefix="knd-demo-"))
    try:
        anyio.run(demo, state, host, podns)
        print("\ndemo complete")
        return 0
    finally:
        ip("netns", "del", podns, check=False)
        ip("netns", "del", host, check=False)
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"state kept in {state}")
