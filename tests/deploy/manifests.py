"""What the deployment tests read (manifests, compose, the CLI) and the checks they make.

Every check returns a list of problems (empty: fine), so that a test can run it on
the real files and on a deliberately broken copy, to show that it can fail.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "knd"
EXAMPLES = DEPLOY / "examples"
INSTALL = DEPLOY / "install.yaml"
COMPOSE = ROOT / "compose.yaml"

K8S_VERSIONS = ("1.34", "1.37")
"""resource.k8s.io/v1 is GA from 1.34; 1.37 is the newest the validator bundles."""

DRIVER = "knd.dev"
SERVICE_ROLE = {  # `knd <service>` -> the bus role it connects as (its creds folder)
    "discovery": "discovery",
    "publisher": "publisher",
    "plumber": "plumber",
    "kubelet-gateway": "gateway",
}
METRICS_PORT = {"discovery": 9501, "publisher": 9502, "plumber": 9503, "kubelet-gateway": 9504}
BUS_PORT = 9500
OTHER_IMAGES = {"docker.io/library/nats", "docker.io/library/busybox"}
EXTERNAL_CLASSES = {"gpu.nvidia.com"}  # DeviceClasses of other drivers the examples use

SECURITY = {  # container -> (runAsUser, added capabilities)
    "bus-config": (65532, set()),
    "nats": (65532, set()),
    "discovery": (65532, set()),
    "publisher": (65532, set()),
    "plumber": (0, {"NET_ADMIN", "SYS_ADMIN"}),
    "kubelet-gateway": (0, set()),
    "containerd-nri": (0, set()),
}
HOST_PATHS = {  # hostPath -> {container: writable?}: nobody else may mount it
    "/sys": {"discovery": False},
    "/var/lib/knd": {"plumber": True},
    "/var/run/netns": {"plumber": False},
    "/var/run/cdi": {"plumber": True},
    "/dev/infiniband": {"plumber": False},
    "/var/lib/kubelet/plugins": {"kubelet-gateway": True},
    "/var/lib/kubelet/plugins_registry": {"kubelet-gateway": True},
    "/var/run/nri": {"kubelet-gateway": False, "containerd-nri": False},
    "/var/run/knd/attach": {"kubelet-gateway": True},
    "/etc/containerd": {"containerd-nri": False},
    "/etc/containerd/conf.d": {"containerd-nri": True},
}
API_CONTAINERS = {"publisher", "kubelet-gateway"}


# ---- loading ---------------------------------------------------------------------------


@cache
def render_deploy() -> ModuleType:
    """scripts/render_deploy.py: the variants, and where helm and kubectl are."""
    spec = importlib.util.spec_from_file_location("knd_render_deploy",
                                                  ROOT / "scripts" / "render_deploy.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def variants() -> dict[str, Path]:
    """base and the other variants: name -> kustomization folder."""
    return dict(render_deploy().VARIANTS)


def render(name: str) -> list[dict]:
    """What `kubectl kustomize` renders from the variant's folder (a fresh copy: tests
    may change it)."""
    return copy.deepcopy(_rendered(name))


@cache
def _rendered(name: str) -> list[dict]:
    return kustomize(variants()[name])


def kustomize(folder: Path) -> list[dict]:
    """The objects the real `kubectl kustomize <folder>` prints."""
    rd = render_deploy()
    with tempfile.TemporaryDirectory(prefix="knd-kubectl-") as home:
        p = subprocess.run([str(rd.tool("kubectl")), "kustomize", str(folder)],
                           env=rd.tool_env(Path(home)), text=True, capture_output=True,
                           timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d is not None]


def load_yaml(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def all_manifests() -> Iterator[tuple[str, dict]]:
    """(where, document) for everything that is applied to a cluster."""
    for name in variants():
        for d in render(name):
            yield f"{name}:{d['kind']}/{d['metadata']['name']}", d
    for path in example_files():
        for d in load_yaml(path):
            yield f"{path.name}:{d['kind']}/{d['metadata']['name']}", d


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# ---- pods and containers ---------------------------------------------------------------


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def daemonset(docs: list[dict]) -> dict:
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def is_knd_image(image: str) -> bool:
    return re.fullmatch(r"(?:[^/]+/)*knd(?::[\w.-]+|@sha256:[0-9a-f]+)?", image) is not None


def image_repo(image: str) -> str:
    return re.sub(r"(@sha256:[0-9a-f]+|:[\w.-]+)$", "", image)


def env_values(c: dict) -> dict[str, str | None]:
    """name -> value (None for valueFrom)."""
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def knd_command(c: dict) -> str | None:
    """The X of a container that runs `knd X`."""
    cmd = [*c.get("command", []), *c.get("args", [])]
    return cmd[1] if len(cmd) == 2 and cmd[0] == "knd" else None


def address_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ---- checks ----------------------------------------------------------------------------


def check_volume_refs(spec: dict) -> list[str]:
    problems = []
    volumes = [v["name"] for v in spec.get("volumes", [])]
    if len(set(volumes)) != len(volumes):
        problems.append(f"duplicate volume names: {volumes}")
    used = set()
    for c in containers(spec):
        for m in c.get("volumeMounts", []):
            used.add(m["name"])
            if m["name"] not in volumes:
                problems.append(f"{c['name']}: mounts {m['name']!r}, not a volume of the pod")
    problems += [f"volume {v!r} is mounted by no container" for v in set(volumes) - used]
    return problems


def check_service_accounts(docs: list[dict]) -> list[str]:
    problems = []
    accounts = {(d["metadata"].get("namespace"), d["metadata"]["name"])
                for d in docs if d["kind"] == "ServiceAccount"}
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    for d in docs:
        spec = pod_spec(d)
        if spec is not None and "serviceAccountName" in spec:
            key = (d["metadata"].get("namespace"), spec["serviceAccountName"])
            if key not in accounts:
                problems.append(f"{d['kind']}/{d['metadata']['name']}: no ServiceAccount {key}")
        if d["kind"] == "ClusterRoleBinding":
            if d["roleRef"]["name"] not in roles:
                problems.append(f"ClusterRoleBinding {d['metadata']['name']}: no ClusterRole "
                                f"{d['roleRef']['name']}")
            for s in d["subjects"]:
                if s["kind"] == "ServiceAccount" and (s["namespace"], s["name"]) not in accounts:
                    problems.append(f"ClusterRoleBinding: no ServiceAccount {s}")
    return problems


def _probe_port(c: dict, probe: dict) -> int | str | None:
    action = probe.get("httpGet") or probe.get("tcpSocket") or {}
    port = action.get("port")
    if isinstance(port, str):  # a named port
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        return named.get(port, port)
    return port


def check_probes(spec: dict) -> list[str]:
    """Each service's probes and port are those of its KND_METRICS_ADDRESS."""
    problems = []
    for c in containers(spec):
        service = knd_command(c)
        if service not in METRICS_PORT:
            continue
        address = env_values(c).get("KND_METRICS_ADDRESS")
        if not address:
            problems.append(f"{c['name']}: no KND_METRICS_ADDRESS")
            continue
        port = address_port(address)
        if port != METRICS_PORT[service]:
            problems.append(f"{c['name']}: metrics port {port}, not {METRICS_PORT[service]}")
        if [p["containerPort"] for p in c.get("ports", [])] != [port]:
            problems.append(f"{c['name']}: containerPort is not the metrics port {port}")
        for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            probe = c.get(kind)
            if probe is None:
                problems.append(f"{c['name']}: no {kind}")
                continue
            if _probe_port(c, probe) != port:
                problems.append(f"{c['name']}: {kind} port {_probe_port(c, probe)} != {port}")
            if probe.get("httpGet", {}).get("path") != path:
                problems.append(f"{c['name']}: {kind} is not GET {path}")
    return problems


def check_commands(spec: dict, services: Iterable[str], tools: Iterable[str]) -> list[str]:
    """knd containers run `knd <service>` (init containers may run a tool); other
    images are the known ones; each service runs exactly once."""
    problems = []
    services, tools = set(services), set(tools)
    init = {c["name"] for c in spec.get("initContainers", [])}
    ran = []
    for c in containers(spec):
        if not is_knd_image(c["image"]):
            if image_repo(c["image"]) not in OTHER_IMAGES:
                problems.append(f"{c['name']}: unexpected image {c['image']}")
            continue
        what = knd_command(c)
        allowed = services | tools if c["name"] in init else services
        if what not in allowed:
            problems.append(f"{c['name']}: command {c.get('command')} is not `knd <one of "
                            f"{sorted(allowed)}>`")
        elif c["name"] not in init:
            ran.append(what)
    if sorted(ran) != sorted(services):
        problems.append(f"services run: {sorted(ran)}, want each of {sorted(services)} once")
    return problems


def selector_drivers(expression: str) -> set[str]:
    """Driver names a CEL selector names: device.driver == "x", device.attributes["x"]."""
    return set(re.findall(r'device\.driver\s*==\s*"([^"]+)"', expression)) | set(
        re.findall(r'device\.attributes\["([^"]+)"\]', expression))


def driver_names(docs: list[dict]) -> dict[str, set[str]]:
    """Where each driver name is used: place -> names."""
    found: dict[str, set[str]] = {}
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        spec = pod_spec(d)
        for c in containers(spec) if spec else []:
            if knd_command(c) in SERVICE_ROLE:
                found[f"{where}/{c['name']}"] = {env_values(c).get("KND_DRIVER_NAME") or ""}
        if d["kind"] == "DeviceClass":
            found[where] = set().union(*(selector_drivers(s["cel"]["expression"])
                                         for s in d["spec"].get("selectors", [])))
        devices = None
        if d["kind"] == "ResourceClaimTemplate":
            devices = d["spec"]["spec"].get("devices", {})
        elif d["kind"] == "ResourceClaim":
            devices = d["spec"].get("devices", {})
        if devices is not None:
            names = {c["opaque"]["driver"] for c in devices.get("config", []) if "opaque" in c}
            for r in devices.get("requests", []):
                for s in (r.get("exactly") or {}).get("selectors", []):
                    names |= selector_drivers(s["cel"]["expression"])
            found[where] = names
    return found


def check_driver_name(docs: list[dict], want: str) -> list[str]:
    places = driver_names(docs)
    problems = [f"{where}: driver {sorted(names)}, not {want!r}"
                for where, names in places.items() if names != {want}]
    if not places:
        problems.append("no driver name found anywhere")
    return problems


def check_security(spec: dict) -> list[str]:
    problems = []
    for c in containers(spec):
        name = c["name"]
        if name not in SECURITY:
            problems.append(f"{name}: no expected security posture for this container")
            continue
        uid, caps = SECURITY[name]
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root file system is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: does not drop ALL capabilities")
        if set((sc.get("capabilities") or {}).get("add", [])) != caps:
            problems.append(f"{name}: adds {(sc.get('capabilities') or {}).get('add')}, "
                            f"want {sorted(caps)}")
        if sc.get("runAsUser") != uid:
            problems.append(f"{name}: runAsUser {sc.get('runAsUser')}, want {uid}")
        if uid != 0 and sc.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not set")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(spec):
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if "hostPath" in v:
                allowed = HOST_PATHS.get(v["hostPath"]["path"], {})
                if c["name"] not in allowed:
                    problems.append(f"{c['name']}: mounts host path {v['hostPath']['path']}")
                elif not allowed[c["name"]] and not m.get("readOnly"):
                    problems.append(f"{c['name']}: {v['hostPath']['path']} is not read-only")
            if m["name"] == "api-token" and c["name"] not in API_CONTAINERS:
                problems.append(f"{c['name']}: gets the service account token")
    return problems


def check_bus_wiring(spec: dict, bus_dir: str = "/run/knd/bus") -> list[str]:
    """bus-config fills the volume; nats reads nats/nats.conf; each service mounts only
    its role's folder and its KND_BUS_CREDS is the creds.json there."""
    problems = []
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    if volumes.get("bus", {}).get("emptyDir", {}).get("medium") != "Memory":
        problems.append("the bus volume is not an in-memory emptyDir")
    for c in containers(spec):
        mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "bus"]
        what = knd_command(c)
        if what == "bus-config":
            env = env_values(c)
            if [(m["mountPath"], m.get("subPath"), m.get("readOnly", False)) for m in mounts] \
                    != [(env.get("KND_BUS_DIR"), None, False)]:
                problems.append("bus-config does not fill the whole bus volume at KND_BUS_DIR")
            if env.get("KND_BUS_PORT") != str(BUS_PORT):
                problems.append(f"bus-config: KND_BUS_PORT is not {BUS_PORT}")
        elif what in SERVICE_ROLE:
            want = (bus_dir, SERVICE_ROLE[what], True)
            if [(m["mountPath"], m.get("subPath"), m.get("readOnly")) for m in mounts] != [want]:
                problems.append(f"{c['name']}: bus mount is not {want}")
            if env_values(c).get("KND_BUS_CREDS") != f"{bus_dir}/creds.json":
                problems.append(f"{c['name']}: KND_BUS_CREDS is not {bus_dir}/creds.json")
        elif image_repo(c["image"]).endswith("/nats"):
            args = c.get("args", [])
            conf = args[args.index("-c") + 1] if "-c" in args else None
            if [(m["mountPath"], m.get("subPath"), m.get("readOnly")) for m in mounts] \
                    != [(bus_dir, "nats", True)] or conf != f"{bus_dir}/nats.conf":
                problems.append("nats does not read nats/nats.conf of the bus volume")
            for kind in ("startupProbe", "livenessProbe"):
                tcp = (c.get(kind) or {}).get("tcpSocket", {})
                if (tcp.get("host"), tcp.get("port")) != ("127.0.0.1", BUS_PORT):
                    problems.append(f"nats: {kind} is not tcp 127.0.0.1:{BUS_PORT}")
        elif mounts:
            problems.append(f"{c['name']}: mounts the bus volume")
    return problems


def tolerates(tolerations: list[dict], key: str, effect: str, value: str = "") -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", effect):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", key):
            return True
        if t.get("operator", "Equal") == "Equal" and t.get("key") == key \
                and t.get("value", "") == value:
            return True
    return False


# ---- the CLI ---------------------------------------------------------------------------


def cli_names() -> tuple[set[str], set[str]]:
    from services import cli

    return set(cli.SERVICES), set(cli.TOOLS)


def env_problems(command: str, env: dict[str, str | None]) -> list[str]:
    """What is wrong with the variables a container running ``knd <command>`` sets,
    judged by the settings table: a ``KND_*`` (or ``KUBECONFIG``) name that command
    does not read, or a value its flag would refuse (``valueFrom``: not known here)."""
    from services.common import settings, usage

    mine = {s.env: s for s in settings.for_command(command) if s.env}
    problems = []
    for name, value in sorted(env.items()):
        if not (name.startswith("KND_") or name == "KUBECONFIG"):
            continue
        setting = mine.get(name)
        if setting is None:
            problems.append(f"`knd {command}` does not read {name}")
        elif value is not None:
            try:
                settings.parse_env(setting, value)
            except usage.UsageError as exc:
                problems.append(f"`knd {command}`: {exc}")
    return problems
