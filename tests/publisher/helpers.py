"""Device and slice builders shared by the publisher tests."""

from __future__ import annotations

from typing import Any

from schemas.inventory import Device

DRIVER = "knd.dev"


def device(i: int, **attrs: Any) -> Device:
    """A realistic inventory device ``eth<i>`` with a few attributes."""
    base: dict[str, Any] = {
        f"{DRIVER}/ifName": f"eth{i}",
        f"{DRIVER}/mtu": 1500,
        f"{DRIVER}/rdma": i % 2 == 0,
        "resource.kubernetes.io/pcieRoot": f"pci0000:{i % 4:02x}",
    }
    base.update(attrs)
    return Device(name=f"eth{i}", attributes=base, capacity={f"{DRIVER}/bandwidth": "10G"})


def devices(n: int, start: int = 0) -> list[Device]:
    return [device(i) for i in range(start, start + n)]


def slice_devices(obj: dict) -> list[str]:
    return [d["name"] for d in obj["spec"].get("devices") or []]


def pool_state(slices: list[dict]) -> tuple[set[int], set[int], int]:
    """(generations, counts, number of slices) of a list of slices."""
    gens = {s["spec"]["pool"]["generation"] for s in slices}
    counts = {s["spec"]["pool"]["resourceSliceCount"] for s in slices}
    return gens, counts, len(slices)
