"""deploy/'s manifests are the Helm chart rendered (scripts/render_deploy.py, real helm),
and the real `kubectl kustomize` installs from each variant's folder what its
install.yaml holds."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess

import pytest

from tests.deploy import manifests as m

RD = m.render_deploy()


def _key(d: dict) -> tuple[str, str, str]:
    return d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]


def test_rendered_files_are_fresh(capsys):
    assert RD.main(["--check"]) == 0, capsys.readouterr().err


def test_a_stale_file_is_noticed_and_rewritten(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "dranet-compat"
    shutil.copytree(RD.VARIANTS["dranet-compat"], folder)
    target = folder / "install.yaml"
    fresh = target.read_text()
    target.write_text(fresh.replace("maxSurge: 0", "maxSurge: 1"))
    monkeypatch.setattr(RD, "VARIANTS", {"dranet-compat": folder})
    assert RD.main(["--check"]) == 1
    assert "install.yaml is stale" in capsys.readouterr().err
    assert RD.main([]) == 0
    assert target.read_text() == fresh


@pytest.mark.parametrize("variant", list(m.variants()))
def test_kustomize_installs_what_install_yaml_holds(variant):
    """`kubectl apply -k <folder>` and `kubectl apply -f <folder>/install.yaml` are one."""
    rendered = m.load_yaml(m.variants()[variant] / "install.yaml")
    kustomized = m.render(variant)
    assert sorted(map(_key, kustomized)) == sorted(map(_key, rendered))
    assert {_key(d): d for d in kustomized} == {_key(d): d for d in rendered}


def test_the_namespace_comes_first_in_install_yaml():
    kinds = [d["kind"] for d in m.load_yaml(m.INSTALL)]
    assert kinds[:2] == ["Namespace", "ServiceAccount"]  # kubectl apply -f applies in order
    assert kinds.count("DaemonSet") == 1


def test_variants_change_only_what_their_values_say():
    base, compat = m.render("base"), m.render("dranet-compat")
    assert sorted(map(_key, compat)) == sorted([*map(_key, base), ("DeviceClass", "", "dranet")])
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
    # the NRI drop-in runs after the bus is up, before the services
    nri = m.pod_spec(m.daemonset(m.render("containerd17-nri")))
    assert [c["name"] for c in nri["initContainers"]] == ["bus-config", "nats", "containerd-nri"]
    assert [c["name"] for c in nri["containers"]] == \
        [c["name"] for c in m.pod_spec(b)["containers"]]
    assert sorted(map(_key, m.render("containerd17-nri"))) == sorted(
        [*map(_key, base), ("ConfigMap", "knd-system", "knd-containerd-nri")])


def test_a_kustomization_of_ones_own_over_a_variant(tmp_path):
    """deploy/README.md's example: a variant as the base of the user's kustomization."""
    base = os.path.relpath(m.variants()["base"], tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{base}]\n"
        "images: [{name: knd, newName: registry.example.com/knd, newTag: 0.1.0}]\n")
    spec = m.pod_spec(m.daemonset(m.kustomize(tmp_path)))
    images = {c["name"]: c["image"] for c in m.containers(spec)}
    assert images["plumber"] == "registry.example.com/knd:0.1.0"
    assert images["nats"].startswith("docker.io/library/nats:")


def test_the_readmes_privileged_plumber_patch(tmp_path):
    """deploy/README.md's kustomization for a privileged plumber renders a plumber
    Kubernetes admits (privileged, and no allowPrivilegeEscalation: false)."""
    readme = (m.DEPLOY / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(patches:\n.*?)```", readme, re.S)
    base = os.path.relpath(m.variants()["base"], tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{base}]\n{block}")
    spec = m.pod_spec(m.daemonset(m.kustomize(tmp_path)))
    problems = m.check_security(spec)
    assert problems == ["plumber: privileged", "plumber: allowPrivilegeEscalation is not false"]


def _version(*args: str) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_tools_are_the_pinned_official_binaries():
    try:
        importlib.metadata.distribution(RD.TOOLS_DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"helm and kubectl from PATH, not {RD.TOOLS_DIST}")
    helm = _version(str(RD.tool("helm")), "version", "--template", "{{ .Version }}")
    assert helm == "v4.3.1"
    kubectl = _version(str(RD.tool("kubectl")), "version", "--client")
    assert "Client Version: v1.37.1" in kubectl and "Kustomize Version: v5.8.1" in kubectl
