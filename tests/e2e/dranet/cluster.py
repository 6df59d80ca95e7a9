"""One node running knd as DRANET (driver ``dra.net``), for DRANET's own e2e scenarios.

DRANET's tests/e2e.bats applies manifests to a kind cluster and asserts what the
pods see. Here the node is a throwaway netns running ``knd up --standalone
--driver-name dra.net``, and the test plays the rest of the cluster over the real
interfaces: the scheduler (each request's DeviceClass and request CEL selectors
evaluated against the devices in the published ResourceSlices, the way the
allocator does), kubelet (NodePrepareResources / NodeUnprepareResources on the DRA
socket) and the container runtime (NRI RunPodSandbox / StopPodSandbox /
RemovePodSandbox, with a pod netns). Manifests are DRANET's, in ``manifests/``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import yaml

from kndpeers import kubelet
from kndpeers.nri_runtime import FakeRuntime, PluginConn, container, pod, run_oci_hooks
from services.common.api.files import FileApi
from services.common.celexpr import compile_expression
from tests.e2e.agent import Agent
from tests.helpers.netns import NetNS
from tests.helpers.wait import until

DRIVER = "dra.net"
NODE = "kind-worker"
MANIFESTS = Path(__file__).parent / "manifests"


def value(attr: dict[str, Any]) -> Any:
    """An API attribute (``{"string": "x"}``) as its plain value."""
    ((_kind, v),) = attr.items()
    return v


@dataclass
class PodRun:
    name: str
    uid: str
    netns: NetNS
    claims: list[dict]
    generated: list[str] = field(default_factory=list)
    """Claims made from templates for this pod, deleted with it."""

    @property
    def sandbox(self):
        return pod(uid=self.uid, name=self.name, netns=f"/var/run/netns/{self.netns.name}")


class Cluster:
    def __init__(self, node: NetNS, state: Path, runtime: FakeRuntime,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 request_timeout_ms: int = 2000) -> None:
        self.node = node
        self.runtime = runtime
        self.agent = Agent(node, state, node=NODE,
                           extra=("--filter", "true", "--driver-name", DRIVER, *extra), env=env)
        self.request_timeout_ms = request_timeout_ms
        """What the runtime tells the plugin at Configure (containerd: 2 s by default)."""
        self.api = FileApi(state)
        self.dra = f"unix://{self.agent.kubelet_root}/plugins/{DRIVER}/dra.sock"
        self.wire = NetNS("knd-wire")
        """Far ends of the veths that stand in for dummy links."""
        self.classes: dict[str, list[str]] = {}
        self.claims: dict[str, dict] = {}
        self.templates: dict[str, dict] = {}
        self.pods: dict[str, PodRun] = {}
        self.conn: PluginConn | None = None
        self._compiled: dict[str, Any] = {}

    # ---- the agent and the runtime -------------------------------------------------------

    async def start(self) -> None:
        self.agent.nri_socket.parent.mkdir(parents=True, exist_ok=True)
        self.agent.start()
        await self.shake_hands()

    async def shake_hands(self) -> None:
        self.conn = await self.runtime.next_plugin(wait=30)
        await self.conn.handshake(request_timeout_ms=self.request_timeout_ms)

    async def close(self) -> None:
        for run in list(self.pods.values()):
            run.netns.delete()
        self.agent.stop()
        self.wire.delete()

    # ---- the node ------------------------------------------------------------------------

    def dummy(self, name: str, *, up: bool = True) -> str:
        """``ip link add NAME type dummy``: a veth whose far end is up in the wire netns;
        returns the far end's name."""
        peer = f"w{uuid.uuid4().hex[:10]}"
        self.node.ip("link", "add", name, "type", "veth", "peer", "name", peer,
                     "netns", self.wire.name)
        self.wire.ip("link", "set", peer, "up")
        if up:
            self.node.ip("link", "set", name, "up")
        return peer

    def sh(self, *argv: str, check: bool = True) -> str:
        """A command on the node (``docker exec $NODE ...``)."""
        res = subprocess.run(self.node.exec_argv(list(argv)), capture_output=True, text=True)
        if check and res.returncode:
            raise AssertionError(f"{' '.join(argv)}: {res.stderr.strip()}")
        return res.stdout

    def exec(self, pod_name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """``kubectl exec POD -- ...``: a command in the pod's netns."""
        ns = self.pods[pod_name].netns
        res = subprocess.run(ns.exec_argv(list(argv)), capture_output=True, text=True)
        if check and res.returncode:
            raise AssertionError(f"{pod_name}: {' '.join(argv)}: {res.stderr.strip()}")
        return res

    def devices(self) -> dict[str, dict]:
        """Device name -> device, in the published slices."""
        return self.agent.devices()

    # ---- the scheduler -------------------------------------------------------------------

    def _matches(self, expressions: list[str], dev: dict) -> bool:
        per_domain: dict[str, dict[str, Any]] = {}
        for qualified, attr in dev.get("attributes", {}).items():
            domain, _, ident = qualified.rpartition("/")
            per_domain.setdefault(domain or DRIVER, {})[ident] = value(attr)
        ctx = {"device": {"driver": DRIVER, "attributes": per_domain,
                          "capacity": {}}}
        for expr in expressions:
            program = self._compiled.get(expr)
            if program is None:
                program = self._compiled[expr] = compile_expression(expr)
            try:
                if program.execute(ctx) is not True:
                    return False
            except Exception:  # a selector that errors does not select (as the allocator)
                return False
        return True

    def _taken(self) -> set[str]:
        return {r["device"] for c in self.claims.values()
                for r in c.get("status", {}).get("allocation", {}).get("devices", {})
                .get("results", [])}

    async def allocate(self, claim: dict, seconds: float = 20.0) -> dict:
        """Fill ``status.allocation`` as the scheduler would, waiting for the devices to be
        published; the claim's configs are copied as ``FromClaim``."""
        results = []
        with anyio.fail_after(seconds):
            while True:
                devices, taken = self.devices(), self._taken()
                results = []
                for req in claim["spec"]["devices"]["requests"]:
                    exactly = req["exactly"]
                    exprs = [*self.classes.get(exactly["deviceClassName"], []),
                             *(s["cel"]["expression"] for s in exactly.get("selectors", []))]
                    # a device with allowMultipleAllocations goes to any number of
                    # claims, each allocation with a shareID of its own (KEP-5075)
                    fits = [n for n, d in sorted(devices.items())
                            if (n not in taken or d.get("allowMultipleAllocations"))
                            and self._matches(exprs, d)]
                    count = exactly.get("count", 1)
                    if len(fits) < count:
                        break
                    for name in fits[:count]:
                        taken.add(name)
                        result = {"request": req["name"], "driver": DRIVER, "pool": NODE,
                                  "device": name}
                        if devices[name].get("allowMultipleAllocations"):
                            result["shareID"] = str(uuid.uuid4())
                        results.append(result)
                else:
                    break
                await anyio.sleep(0.05)
        config = [{"source": "FromClaim", "requests": c.get("requests", []),
                   "opaque": c["opaque"]} for c in claim["spec"]["devices"].get("config", [])]
        claim["status"] = {"allocation": {"devices": {"results": results, "config": config}}}
        return claim

    # ---- kubectl apply / delete ----------------------------------------------------------

    async def apply(self, manifest: str, edit: Callable[[dict], None] | None = None) -> list[str]:
        """Apply one of DRANET's manifests (each object first through ``edit``, for a
        substitution a test documents); returns the names of the pods it started."""
        started = []
        docs = list(yaml.safe_load_all((MANIFESTS / f"{manifest}.yaml").read_text()))
        for doc in docs if edit else ():
            edit(doc)
        # every object is created at once; pods then wait for their claims
        docs.sort(key=lambda d: d["kind"] in ("Pod", "Deployment"))
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "DeviceClass":
                self.classes[name] = [s["cel"]["expression"] for s in doc["spec"]["selectors"]]
            elif kind == "ResourceClaim":
                self.claims[name] = {"apiVersion": "resource.k8s.io/v1",
                                     "kind": "ResourceClaim",
                                     "metadata": {"name": name, "namespace": "default",
                                                  "uid": str(uuid.uuid4())},
                                     "spec": doc["spec"]}
            elif kind == "ResourceClaimTemplate":
                self.templates[name] = doc["spec"]
            elif kind == "Pod":
                await self.run_pod(name, doc["spec"]["resourceClaims"])
                started.append(name)
            elif kind == "Deployment":
                template = doc["spec"]["template"]
                for i in range(doc["spec"].get("replicas", 1)):
                    pod_name = f"{name}-{i}"
                    await self.run_pod(pod_name, template["spec"]["resourceClaims"])
                    started.append(pod_name)
        return started

    async def run_pod(self, name: str, claim_refs: list[dict], sandbox: bool = True) -> PodRun:
        """The pod is scheduled (claims allocated and reserved), kubelet prepares its
        claims, the runtime runs its sandbox and creates its container (unless not
        ``sandbox``: the caller does): the equivalent of "condition=ready"."""
        run = PodRun(name=name, uid=str(uuid.uuid4()), netns=NetNS("knd-pod"), claims=[])
        self.pods[name] = run
        for ref in claim_refs:
            if "resourceClaimTemplateName" in ref:
                claim_name = f"{name}-{ref['name']}-{uuid.uuid4().hex[:5]}"
                self.claims[claim_name] = {
                    "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                    "metadata": {"name": claim_name, "namespace": "default",
                                 "uid": str(uuid.uuid4())},
                    "spec": self.templates[ref["resourceClaimTemplateName"]]["spec"]}
                run.generated.append(claim_name)
            else:
                claim_name = ref["resourceClaimName"]
            claim = self.claims[claim_name]
            if "status" not in claim:
                await self.allocate(claim)
            claim["status"]["reservedFor"] = [{"resource": "pods", "name": name,
                                               "uid": run.uid}]
            stored = await self.api.create_claim(claim)  # the API server's UID from here on
            self.claims[claim_name] = stored
            run.claims.append(stored)
        if run.claims:
            refs = [kubelet.ref(c) for c in run.claims]
            resp = await kubelet.prepare(self.dra, "v1", refs)
            for c in run.claims:
                err = resp.claims[c["metadata"]["uid"]].error
                assert not err, f"pod {name}: claim {c['metadata']['name']}: {err}"
        if sandbox:
            assert self.conn is not None
            await self.conn.run_pod_sandbox(run.sandbox)
            # ready: its container runs, which it does once every device is in (an
            # attach that outlasts RunPodSandbox holds the container in knd's hook)
            await self.create_container(name)
        return run

    async def create_container(self, pod_name: str, name: str = "main") -> list[Any]:
        """The runtime creates one of the pod's containers: NRI CreateContainer, then the
        createRuntime hooks it got, run as runc runs them; returns those hooks. Raises
        (TtrpcError, HookFailed) when the container cannot be created, as the kubelet
        would see it."""
        assert self.conn is not None
        sb = self.pods[pod_name].sandbox
        resp = await self.conn.create_container(sb, container(name, sb))
        hooks = list(resp.adjust.hooks.create_runtime)
        await run_oci_hooks(hooks, {"ociVersion": "1.2.0", "id": f"ctr-{name}",
                                    "status": "creating", "pid": 0,
                                    "bundle": f"/run/containerd/{name}"})
        return hooks

    async def delete_pod(self, name: str) -> None:
        """The runtime stops and removes the sandbox, kubelet unprepares its claims, and
        claims made from templates are deleted."""
        run = self.pods.pop(name)
        assert self.conn is not None
        await self.conn.stop_pod_sandbox(run.sandbox)
        await self.conn.remove_pod_sandbox(run.sandbox)
        if run.claims:
            resp = await kubelet.unprepare(self.dra, "v1", [kubelet.ref(c) for c in run.claims])
            for c in run.claims:
                assert not resp.claims[c["metadata"]["uid"]].error
        for claim_name in run.generated:
            self.claims.pop(claim_name, None)
        run.netns.delete()

    def claim_status(self, name: str) -> dict:
        path = self.agent.state_dir / "api" / "resourceclaims" / "default" / f"{name}.json"
        return json.loads(path.read_text()).get("status", {}) if path.exists() else {}

    async def until(self, probe, seconds: float = 20.0, what: str = ""):
        return await until(probe, seconds, what)
