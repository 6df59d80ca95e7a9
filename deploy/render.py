#!/usr/bin/env python3
"""Render knd's kustomizations without kustomize, and keep deploy/install.yaml in sync.

    python deploy/render.py                 # rewrite deploy/install.yaml from the base
    python deploy/render.py --check         # exit 1 if deploy/install.yaml is stale
    python deploy/render.py deploy/kubernetes/overlays/dranet-compat   # print an overlay

knd's kustomizations use only what this file implements, and it refuses anything
else, so what it renders is what ``kubectl kustomize`` renders (up to key order
and YAML formatting):

- ``resources``: YAML files (one or more documents) and folders holding a
  kustomization, rendered recursively, in the order listed;
- ``patches``: strategic merge patches, each one document in a file (``path``)
  or inline (``patch``), applied to the resource of the same apiVersion, kind,
  name and namespace; maps merge, ``null`` deletes a key, the list fields below
  merge by their key, every other list is replaced, as Kubernetes' strategic merge
  does for lists without a merge key;
- ``sortOptions: {order: fifo}``: output in input order (kustomize's default
  "legacy" order would move kinds around).

No ``namespace``, ``namePrefix``, ``labels``, ``images``, generators or JSON 6902
patches: write them into the manifests instead, or teach this file and its tests.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
BASE = HERE / "kubernetes" / "base"
INSTALL = HERE / "install.yaml"
HEADER = ("# knd: everything `kubectl apply -f` needs (namespace knd-system).\n"
          "# Generated from deploy/kubernetes/base by `python deploy/render.py`; do not edit.\n")

ALLOWED_KEYS = {"apiVersion", "kind", "resources", "patches", "sortOptions"}
MERGE_KEYS = {  # list field -> merge key, as in the Kubernetes API's patchMergeKey
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
UNSUPPORTED_LISTS = {  # lists Kubernetes merges by key, which this renderer does not
    "ports", "finalizers", "ownerReferences", "imagePullSecrets", "hostAliases",
    "ephemeralContainers", "resourceClaims", "conditions", "topologySpreadConstraints",
    "volumeDevices", "envFrom",
}


class RenderError(ValueError):
    pass


def _load_docs(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"{path}: {exc}") from None
    for d in docs:
        if not isinstance(d, dict) or not {"apiVersion", "kind", "metadata"} <= d.keys():
            raise RenderError(f"{path}: every document needs apiVersion, kind and metadata")
    return docs


def _ident(obj: dict) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("name", ""),
            meta.get("namespace", ""))


def merge(target: Any, patch: Any, path: str = "") -> Any:
    """Strategic merge of ``patch`` into ``target`` (a new value; inputs untouched)."""
    if isinstance(patch, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in patch):
            raise RenderError(f"{path}: patch directives ($patch, ...) are not supported")
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _merge_field(key, out[key], value, f"{path}.{key}")
            else:
                out[key] = _merge_field(key, None, value, f"{path}.{key}")
        return out
    return copy.deepcopy(patch)


def _merge_field(key: str, target: Any, patch: Any, path: str) -> Any:
    if not isinstance(patch, list):
        return merge(target, patch, path)
    if key in UNSUPPORTED_LISTS:
        raise RenderError(f"{path}: merging the list {key!r} is not supported")
    mkey = MERGE_KEYS.get(key)
    if mkey is None:
        return copy.deepcopy(patch)  # no merge key: the patch's list replaces the target's
    out = copy.deepcopy(target) if isinstance(target, list) else []
    for item in patch:
        if not isinstance(item, dict) or mkey not in item:
            raise RenderError(f"{path}: every item needs its merge key {mkey!r}")
        at = next((i for i, t in enumerate(out) if t.get(mkey) == item[mkey]), None)
        if at is None:
            out.append(merge(None, item, f"{path}[{item[mkey]}]"))
        else:
            out[at] = merge(out[at], item, f"{path}[{item[mkey]}]")
    return out


def render(folder: Path) -> list[dict]:
    """The resources of the kustomization in ``folder``, patched, in fifo order."""
    folder = Path(folder)
    kfile = folder / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{folder}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    extra = set(k) - ALLOWED_KEYS
    if extra:
        raise RenderError(f"{kfile}: unsupported kustomization fields {sorted(extra)}")
    if k.get("kind") != "Kustomization":
        raise RenderError(f"{kfile}: kind must be Kustomization")
    if k.get("sortOptions") != {"order": "fifo"}:
        raise RenderError(f"{kfile}: needs sortOptions: {{order: fifo}} (input order)")
    docs: list[dict] = []
    for entry in k.get("resources") or []:
        p = folder / entry
        docs.extend(render(p) if p.is_dir() else _load_docs(p))
    seen: set[tuple[str, str, str, str]] = set()
    for d in docs:
        if _ident(d) in seen:
            raise RenderError(f"{kfile}: {_ident(d)} appears twice")
        seen.add(_ident(d))
    for n, spec in enumerate(k.get("patches") or []):
        if not isinstance(spec, dict) or set(spec) - {"path", "patch"} or len(spec) != 1:
            raise RenderError(f"{kfile}: patches[{n}]: give exactly one of path or patch "
                              "(no target, options: the patch names its resource)")
        if "path" in spec:
            pdocs = _load_docs(folder / spec["path"])
        else:
            pdocs = [d for d in yaml.safe_load_all(spec["patch"]) if d is not None]
        if len(pdocs) != 1:
            raise RenderError(f"{kfile}: patches[{n}]: one document per patch")
        patch = pdocs[0]
        matches = [i for i, d in enumerate(docs) if _ident(d) == _ident(patch)]
        if len(matches) != 1:
            raise RenderError(f"{kfile}: patches[{n}]: no resource {_ident(patch)}")
        docs[matches[0]] = merge(docs[matches[0]], patch)
    return docs


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(docs: list[dict]) -> str:
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=1 << 16,
                                  default_flow_style=False) for d in docs)


def install_yaml() -> str:
    """What deploy/install.yaml must contain."""
    return HEADER + dump(render(BASE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path,
                    help="print this kustomization instead of writing install.yaml")
    ap.add_argument("--check", action="store_true",
                    help="only check that deploy/install.yaml is up to date")
    args = ap.parse_args(argv)
    try:
        if args.folder:
            sys.stdout.write(dump(render(args.folder)))
            return 0
        want = install_yaml()
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if not INSTALL.exists() or INSTALL.read_text() != want:
            print(f"{INSTALL} is stale: run python deploy/render.py", file=sys.stderr)
            return 1
        return 0
    INSTALL.write_text(want)
    print(f"wrote {INSTALL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
