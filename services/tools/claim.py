"""``knd claim explain``: which devices each claim would get on each node, and why not.

Reads files and folders of YAML or JSON documents (ResourceClaims, templates,
DeviceClasses, ResourceSlices, Nodes; ``kind: List`` too) and runs the scheduler's
allocation for every claim on every node that has slices (services.allocation).
Exit status: 0 when every claim fits on at least one node, 1 when one does not, 2
for input that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.text import one_line
from services.common import settings, usage

SUFFIXES = (".yaml", ".yml", ".json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           parser_class=usage.Parser)
    ex = sub.add_parser("explain", help="which devices each claim would get on each node, "
                                        "and what ruled each device out where it fits nowhere")
    ex.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                    help="a YAML/JSON file or a folder of them")
    ex.add_argument("--node", help="only this node")
    ex.add_argument("--json", action="store_true", help="print JSON")
    # the cluster's API, read when the files hold no ResourceSlice and no DeviceClass
    settings.add_to(ex, "claim explain")


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.exists():
            yield path
        else:
            raise ValueError(f"{path}: no such file or folder")


def documents(paths: list[Path]) -> list[tuple[str, Any]]:
    """(file, document) for every document in ``paths``; raises ValueError naming the
    file for one that is not YAML or JSON."""
    import yaml

    out = []
    for f in _files(paths):
        try:
            text = f.read_text()
            docs = [json.loads(text)] if f.suffix == ".json" else list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{f}: {first}") from None
        out += [(str(f), d) for d in docs]
    return out


def _table(results: list[Any]) -> str:
    lines = []
    for claim in results:
        lines.append(f"claim {claim.name}: "
                     + ("allocatable" if claim.allocatable else "NOT allocatable")
                     + (f" ({claim.error})" if claim.error else ""))
        if not claim.nodes and not claim.error:
            lines.append("  no node has slices")
        for node in claim.nodes:
            if node.allocatable:
                picks = ", ".join(f"{d['request']} -> {d['driver']}/{d['pool']}/{d['device']}"
                                  for d in node.devices)
                lines.append(f"  {node.node}: yes: {picks}")
                continue
            lines.append(f"  {node.node}: no" + (f": {node.error}" if node.error else ""))
            for e in node.excluded:
                lines.append(f"    {e['request']}: {e['driver']}/{e['pool']}/{e['device']}: "
                             f"{e['reason']}")
    return "\n".join(lines)


def _with_cluster(inputs: Any, args: argparse.Namespace, read: Any) -> Any:
    """The files' claims explained against the cluster's slices, classes, nodes and the
    devices its claims hold."""
    import anyio

    from services.allocation.cluster import read_cluster

    docs = anyio.run(read_cluster, args.kubeconfig, args.api_timeout)
    return read(docs, into=inputs, explain=False)


def main(args: argparse.Namespace) -> int:
    from services.allocation.celenv import SelectorError
    from services.allocation.explain import explain
    from services.allocation.objects import ObjectError, read
    from services.common.api.port import ApiError

    try:
        inputs = read(documents(args.paths))
        if not inputs.claims:
            raise ValueError("no ResourceClaim or ResourceClaimTemplate in "
                             + ", ".join(map(str, args.paths)))
        if not inputs.slices and not inputs.classes:
            inputs = _with_cluster(inputs, args, read)
        results = explain(inputs, args.node)
    except ApiError as exc:
        print(f"knd claim explain: the files hold no ResourceSlice or DeviceClass, and the "
              f"cluster cannot be read: {one_line(str(exc), 1000)}", file=sys.stderr)
        return 2
    except (ValueError, ObjectError, SelectorError) as exc:
        print(f"knd claim explain: {one_line(str(exc), 2000)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"claims": [c.wire() for c in results]}, indent=2))
    else:
        print(_table(results))
    return 0 if results and all(c.allocatable for c in results) else 1
