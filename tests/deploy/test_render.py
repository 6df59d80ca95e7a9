"""deploy/install.yaml is the base rendered; the small renderer does what kustomize does
for the features knd's kustomizations use, and refuses the others."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy import manifests as m

R = m.renderer()


def test_install_yaml_is_the_rendered_base():
    assert m.INSTALL.read_text() == R.install_yaml(), (
        "deploy/install.yaml is stale: run `python deploy/render.py`")
    assert m.load_yaml(m.INSTALL) == m.render("base")


def test_render_check_mode(tmp_path, monkeypatch, capsys):
    assert R.main(["--check"]) == 0
    stale = tmp_path / "install.yaml"
    stale.write_text(R.install_yaml().replace("maxUnavailable: 1", "maxUnavailable: 2"))
    monkeypatch.setattr(R, "INSTALL", stale)
    assert R.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert R.main([]) == 0
    assert stale.read_text() == R.install_yaml()


def test_base_order_is_the_listed_order():
    kinds = [d["kind"] for d in m.render("base")]
    assert kinds[:2] == ["Namespace", "ServiceAccount"]  # applied first by kubectl apply -f
    assert kinds.count("DaemonSet") == 1


def test_overlays_keep_the_base_and_change_only_what_they_say():
    base = m.render("base")
    compat = m.render("dranet-compat")
    assert [d["metadata"]["name"] for d in compat] == \
        [d["metadata"]["name"] for d in base] + ["dranet"]
    b, c = m.daemonset(base), m.daemonset(compat)
    for bc, cc in zip(m.containers(m.pod_spec(b)), m.containers(m.pod_spec(c)), strict=True):
        benv, cenv = m.env_values(bc), m.env_values(cc)
        if "KND_DRIVER_NAME" in benv:
            assert cenv.pop("KND_DRIVER_NAME") == "dra.net"
            benv.pop("KND_DRIVER_NAME")
        assert list(benv) == list(cenv) and benv == cenv  # order kept, nothing else changed
        bc.pop("env", None)
        cc.pop("env", None)
        assert bc == cc
    nri = m.pod_spec(m.daemonset(m.render("containerd17-nri")))
    assert [c["name"] for c in nri["initContainers"]] == ["bus-config", "nats", "containerd-nri"]
    assert [c["name"] for c in nri["containers"]] == \
        [c["name"] for c in m.pod_spec(b)["containers"]]


def _kustomization(tmp: Path, resources: list[str], patches: list[dict] | None = None,
                   **extra) -> Path:
    k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "sortOptions": {"order": "fifo"}, "resources": resources, **extra}
    if patches is not None:
        k["patches"] = patches
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return tmp


DS = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "a", "namespace": "n"},
      "spec": {"template": {"spec": {
          "tolerations": [{"operator": "Exists"}],
          "containers": [
              {"name": "x", "image": "i", "env": [{"name": "A", "value": "1"},
                                                   {"name": "B", "value": "2"}],
               "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
              {"name": "y", "image": "i", "args": ["1", "2"]}],
          "volumes": [{"name": "v", "emptyDir": {}}]}}}}


def test_strategic_merge(tmp_path):
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(DS))
    patch = {"apiVersion": "apps/v1", "kind": "DaemonSet",
             "metadata": {"name": "a", "namespace": "n"},
             "spec": {"template": {"spec": {
                 "tolerations": [{"key": "k", "operator": "Exists"}],
                 "containers": [
                     {"name": "y", "args": ["3"]},
                     {"name": "x", "env": [{"name": "B", "value": "two"},
                                           {"name": "C", "value": "3"}],
                      "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": True}],
                      "image": None},
                     {"name": "z", "image": "j"}]}}}}
    _kustomization(tmp_path, ["ds.yaml"], [{"patch": yaml.safe_dump(patch)}])
    (out,) = R.render(tmp_path)
    spec = out["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"key": "k", "operator": "Exists"}]  # no merge key: replaced
    x, y, z = spec["containers"]
    assert x == {"name": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "two"},
                                      {"name": "C", "value": "3"}],
                 "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": True}]}
    assert y == {"name": "y", "image": "i", "args": ["3"]}
    assert z == {"name": "z", "image": "j"}
    assert R.render(tmp_path) == [out]  # inputs untouched: rendering twice is the same


def test_nested_kustomizations_and_added_resources(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "ds.yaml").write_text(yaml.safe_dump(DS))
    _kustomization(base, ["ds.yaml"])
    over = tmp_path / "over"
    over.mkdir()
    (over / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    _kustomization(over, ["../base", "cm.yaml"])
    assert [d["kind"] for d in R.render(over)] == ["DaemonSet", "ConfigMap"]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda t: _kustomization(t, ["ds.yaml"], namespace="other"), "unsupported kustomization"),
    (lambda t: _kustomization(t, ["ds.yaml"], images=[{"name": "i"}]), "unsupported"),
    (lambda t: _kustomization(t, ["ds.yaml"], sortOptions={"order": "legacy"}), "fifo"),
    (lambda t: _kustomization(t, ["ds.yaml", "ds.yaml"]), "appears twice"),
    (lambda t: _kustomization(t, ["ds.yaml"], [{"path": "p.yaml", "target": {"kind": "X"}}]),
     "exactly one of path or patch"),
    (lambda t: _kustomization(t, ["ds.yaml"], [{"patch": yaml.safe_dump(
        {**DS, "metadata": {"name": "b", "namespace": "n"}})}]), "no resource"),
    (lambda t: _kustomization(t, ["ds.yaml"], [{"patch": yaml.safe_dump(
        {**DS, "spec": {"template": {"spec": {"containers": [
            {"name": "x", "ports": [{"containerPort": 1}]}]}}}})}]), "'ports' is not supported"),
    (lambda t: _kustomization(t, ["ds.yaml"], [{"patch": yaml.safe_dump(
        {**DS, "spec": {"$patch": "replace"}})}]), "directives"),
    (lambda t: _kustomization(t, ["ds.yaml"], [{"patch": yaml.safe_dump(
        {**DS, "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})}]),
     "merge key 'name'"),
])
def test_unsupported_kustomize_features_are_refused(tmp_path, setup, message):
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(DS))
    setup(tmp_path)
    with pytest.raises(R.RenderError, match=message):
        R.render(tmp_path)


def test_every_kustomization_renders_and_multiline_strings_stay_readable():
    for name in m.variants():
        text = R.dump(m.render(name))
        assert list(yaml.safe_load_all(text)) == m.render(name)
    assert "install.sh: |" in R.dump(m.render("containerd17-nri"))
