"""``knd claim explain`` at cluster scale: one aligned GPU+NIC claim against N nodes of
16 devices (8 GPUs from the NVIDIA driver, 8 NICs from knd, pcieRoot-paired), every
node busy but the last, so the explainer searches and explains everywhere.

Prints one JSON object; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from services.allocation.explain import explain  # noqa: E402
from services.allocation.objects import read  # noqa: E402

ROOTS = 4


def _device(name: str, root: int, **attrs: Any) -> dict[str, Any]:
    a = {"resource.kubernetes.io/pcieRoot": {"string": f"pci0000:{root:02x}"}}
    a.update({k: ({"string": v} if isinstance(v, str) else {"bool": v}) for k, v in attrs.items()})
    return {"name": name, "attributes": a}


def objects(nodes: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
         "metadata": {"name": "gpu.nvidia.com"}, "spec": {"selectors": [{"cel": {"expression":
             "device.driver == 'gpu.nvidia.com' && "
             "device.attributes['gpu.nvidia.com'].type == 'gpu'"}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
         "metadata": {"name": "rdma.knd.dev"}, "spec": {"selectors": [{"cel": {"expression":
             "device.driver == 'knd.dev' && device.attributes['knd.dev'].rdma"}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
         "metadata": {"name": "aligned", "namespace": "ml"}, "spec": {"spec": {"devices": {
             "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}},
                          {"name": "nic", "exactly": {"deviceClassName": "rdma.knd.dev"}}],
             "constraints": [{"matchAttribute": "resource.kubernetes.io/pcieRoot"}]}}}}]
    held = []
    for n in range(nodes):
        node = f"node-{n:04d}"
        for driver, devices in (
                ("gpu.nvidia.com", [_device(f"gpu-{i}", i % ROOTS, type="gpu") for i in range(8)]),
                ("knd.dev", [_device(f"pci-0000-{i:02x}-00-0", i % ROOTS, rdma=True)
                             for i in range(8)])):
            out.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                        "metadata": {"name": f"{node}-{driver}"},
                        "spec": {"driver": driver, "nodeName": node, "devices": devices,
                                 "pool": {"name": node, "generation": 1,
                                          "resourceSliceCount": 1}}})
            if n < nodes - 1:  # all GPUs taken: nothing fits but on the last node
                held += [{"request": "x", "driver": driver, "pool": node, "device": d["name"]}
                         for d in devices if driver == "gpu.nvidia.com"]
    out.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": "busy", "namespace": "ml"},
                "spec": {"devices": {"requests": [{"name": "x", "exactly": {
                    "deviceClassName": "gpu.nvidia.com"}}]}},
                "status": {"allocation": {"devices": {"results": held}}}})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    docs = [("bench", o) for o in objects(args.nodes)]
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()  # reading the objects included: explain does it too
        results = explain(read(docs))
        times.append(time.perf_counter() - t)
    aligned = next(c for c in results if c.name == "ml/aligned")
    fits = [n.node for n in aligned.nodes if n.allocatable]
    return {"nodes": args.nodes, "devices_per_node": 16, "seconds": round(min(times), 3),
            "seconds_all": [round(t, 3) for t in times], "fits_on": fits,
            "excluded_entries": sum(len(n.excluded) for n in aligned.nodes),
            "target_seconds": 2.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    emit(run(args), args.out)


if __name__ == "__main__":
    main()
