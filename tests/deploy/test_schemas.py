"""Every manifest validates, offline, against the Kubernetes OpenAPI schemas.

kubernetes-validate bundles the JSON schemas generated from each Kubernetes release's
OpenAPI document; "strict" schemas also refuse unknown fields. Validated against
1.34 (resource.k8s.io/v1 GA, the oldest release knd supports) and the newest bundled.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.deploy import manifests as m

DOCS = list(m.all_manifests())


def validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_bundles_the_versions_and_dra_kinds():
    for version in m.K8S_VERSIONS:
        for kind in ("DeviceClass", "ResourceClaimTemplate", "ResourceClaim", "ResourceSlice"):
            doc = {"apiVersion": "resource.k8s.io/v1", "kind": kind,
                   "metadata": {"name": "x"}, "spec": {}}
            if kind == "ResourceClaimTemplate":
                doc["spec"] = {"spec": {}}
            if kind == "ResourceSlice":
                doc["spec"] = {"driver": "knd.dev", "pool": {"name": "n", "generation": 0,
                                                             "resourceSliceCount": 1},
                               "nodeName": "n"}
            validate(doc, version)  # a SchemaNotFoundError would say the kind is unknown


def test_every_kind_of_every_variant_is_covered():
    kinds = {d["kind"] for _, d in DOCS}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet",
            "DeviceClass", "ResourceClaimTemplate", "ResourceClaim", "Pod",
            "ConfigMap"} <= kinds
    where = {w.split(":", 1)[0] for w, _ in DOCS}
    assert {"base", "containerd17-nri", "dranet-compat"} <= where
    assert {p.name for p in m.example_files()} <= where


@pytest.mark.parametrize("version", m.K8S_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_manifest_is_valid(where, doc, version):
    validate(doc, version)


def _daemonset() -> dict:
    return copy.deepcopy(m.daemonset(m.render("base")))


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(bogus=True),
    lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
    lambda d: d["spec"]["template"]["spec"]["containers"][2]["securityContext"].update(
        runAsUser="root"),
    lambda d: d["spec"]["template"]["spec"].update(hostNetwork="yes"),
], ids=["unknown-field", "missing-name", "wrong-type", "wrong-type-pod"])
def test_validation_fails_on_a_broken_manifest(break_it):
    doc = _daemonset()
    break_it(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc, m.K8S_VERSIONS[0])


def test_validation_fails_on_a_broken_device_class():
    (doc,) = [d for d in m.render("base") if d["metadata"]["name"] == "knd-nic"]
    doc["spec"]["selectors"][0]["cel"]["expr"] = doc["spec"]["selectors"][0]["cel"].pop(
        "expression")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(doc, m.K8S_VERSIONS[0])
