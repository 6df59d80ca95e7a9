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
from typing import TYPE_CHECKING, Any

from schemas.text import one_line
from services.common import settings, usage

if TYPE_CHECKING:
    from services.allocation.objects import Inputs

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
    al = sub.add_parser("align", help="ResourceClaimTemplates pairing each GPU of a node "
                                      "with its nearest NIC(s)")
    al.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                    help="files or folders with the node's ResourceSlices (none: the "
                         "cluster's)")
    al.add_argument("--node", required=True, help="the node whose devices are paired")
    al.add_argument("--gpu-driver", default="gpu.nvidia.com", help="the GPUs' DRA driver "
                    "(default: gpu.nvidia.com)")
    al.add_argument("--nics-per-gpu", type=int, default=1, metavar="N",
                    help="NICs in each template (default: 1)")
    al.add_argument("--gpu-class", default="", help="the GPUs' DeviceClass (default: "
                    "the GPU driver's name, as NVIDIA's chart names it)")
    al.add_argument("--nic-class", default="knd-nic", help="the NICs' DeviceClass "
                    "(default: knd-nic, from knd's chart)")
    al.add_argument("--topology", action="store_true", help="also read this machine's "
                    "PCIe tree (--sysfs-root): run on the node itself for PIX/PXB/PHB")
    settings.add_to(al, "claim align")


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
            lines += _grouped(node.excluded)
    return "\n".join(lines)


def _grouped(excluded: list[dict[str, str]]) -> list[str]:
    """Per request, the devices that one reason rules out together: a class selector
    rules out every device of the other drivers, and a list per device hides that."""
    groups: dict[tuple[str, str], list[str]] = {}
    for e in excluded:
        groups.setdefault((e["request"], e["reason"]), []).append(
            f"{e['driver']}/{e['pool']}/{e['device']}")
    lines = []
    for (request, reason), devices in groups.items():
        lines.append(f"    {request}: {reason}")
        lines += [f"      {d}" for d in devices]
    return lines


def _with_cluster(inputs: Inputs, args: argparse.Namespace) -> Inputs:
    """The files' claims explained against the cluster's slices, classes, nodes and the
    devices its claims hold."""
    import anyio

    from services.allocation.cluster import read_cluster
    from services.allocation.objects import read

    docs = anyio.run(read_cluster, args.kubeconfig, args.api_timeout)
    return read(docs, into=inputs, explain=False)


def align(args: argparse.Namespace) -> int:
    """``knd claim align``: the templates on stdout (YAML, commented), each checked with
    the explainer: it must allocate the pair it was written for."""
    import yaml

    from services.allocation import align as al
    from services.allocation.explain import explain
    from services.allocation.objects import ObjectError, read
    from services.common.api.port import ApiError

    if args.nics_per_gpu < 1:
        print("knd claim align: --nics-per-gpu: expected at least 1", file=sys.stderr)
        return 2
    try:
        inputs = read(documents(args.paths))
        if not inputs.slices:
            inputs = _with_cluster(inputs, args)
        pairs = al.pair(inputs, args.node, args.gpu_driver, args.driver_name,
                        args.nics_per_gpu, _topology(args) if args.topology else None)
    except ApiError as exc:
        print(f"knd claim align: no slices in the files, and the cluster cannot be read: "
              f"{one_line(str(exc), 1000)}", file=sys.stderr)
        return 2
    except (ValueError, ObjectError) as exc:
        print(f"knd claim align: {one_line(str(exc), 2000)}", file=sys.stderr)
        return 2
    gpu_class = args.gpu_class or args.gpu_driver
    templates = [al.template(p, gpu_class, args.nic_class, args.driver_name) for p in pairs]
    # the check: every template allocates exactly its GPU and NICs on the node, given
    # classes that select by driver (the real ones may select more narrowly)
    classes = [{"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                "metadata": {"name": name},
                "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{drv}"'}}]}}
               for name, drv in ((gpu_class, args.gpu_driver), (args.nic_class, args.driver_name))]
    check = read([("templates", t) for t in templates] + [("classes", c) for c in classes])
    check.slices, check.nodes = inputs.slices, inputs.nodes
    failed = []
    for p, result in zip(pairs, explain(check, args.node), strict=True):
        got = {(d["driver"], d["device"]) for n in result.nodes for d in n.devices}
        want = {(p.gpu.driver, p.gpu.name), *((n.driver, n.name) for n in p.nics)}
        if got != want:
            failed.append(f"{p.gpu.name}: explain allocates {sorted(got)}, not {sorted(want)}")
    out = []
    for p, t in zip(pairs, templates, strict=True):
        out.append("\n".join(f"# {line}" for line in al.comments(p, args.driver_name))
                   + "\n" + yaml.safe_dump(t, sort_keys=False, width=1000))
    print("---\n".join(out), end="")
    for line in failed:
        print(f"knd claim align: check failed: {line}", file=sys.stderr)
    return 1 if failed else 0


def _topology(args: argparse.Namespace) -> dict[tuple[str, str], Any]:
    from services.kernel.sysfs import Sysfs
    from services.topology.affinity import compute
    from services.topology.pci import read_tree

    return compute(read_tree(Sysfs(args.sysfs_root))).relations


def main(args: argparse.Namespace) -> int:
    if args.action == "align":
        return align(args)
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
            inputs = _with_cluster(inputs, args)
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
