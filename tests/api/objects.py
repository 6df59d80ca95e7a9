"""Builders for the API objects the tests write, valid unless a test breaks them."""

from __future__ import annotations

import copy
from typing import Any

DRIVER = "knd.dev"


def make_slice(name: str | None = "node-a-knd.dev-0", *, node: str = "node-a",
               driver: str = DRIVER, devices: int = 1, generation: int = 1,
               count: int = 1) -> dict:
    """A ResourceSlice in the shape the publisher writes; ``name=None`` uses generateName."""
    meta: dict[str, Any] = {"name": name} if name else {"generateName": f"{node}-{driver}-"}
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": meta,
        "spec": {
            "driver": driver, "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": count},
            "devices": [make_device(f"eth{i}") for i in range(devices)],
        },
    }


def make_device(name: str) -> dict:
    return {
        "name": name,
        "attributes": {
            f"{DRIVER}/ifName": {"string": name},
            f"{DRIVER}/mtu": {"int": 1500},
            f"{DRIVER}/rdma": {"bool": False},
            f"{DRIVER}/driverVersion": {"version": "1.2.3-rc.1+build.5"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"},
        },
        "capacity": {f"{DRIVER}/bandwidth": {"value": "10G"}},
    }


def make_claim(name: str = "claim-1", namespace: str = "default") -> dict:
    """An allocated ResourceClaim as the scheduler leaves it, before the driver writes status."""
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {
            "deviceClassName": "knd.dev"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": "nic", "driver": DRIVER, "pool": "node-a", "device": "eth0"}]}}},
    }


def device_status(ip: str = "10.0.0.5/24") -> list[dict]:
    """``status.devices`` as the publisher will write it for one attached interface."""
    return [{
        "driver": DRIVER, "pool": "node-a", "device": "eth0",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Attached",
                        "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
        "networkData": {"interfaceName": "net1", "ips": [ip],
                        "hardwareAddress": "02:00:00:00:00:01"},
    }]


def with_status(claim: dict, devices: list[dict]) -> dict:
    out = copy.deepcopy(claim)
    out.setdefault("status", {})["devices"] = devices
    return out
