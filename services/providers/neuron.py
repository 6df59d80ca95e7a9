"""Which EFA adapters of an AWS Trainium instance sit with which Neuron devices.

DRANET publishes these as ``resource.aws.com/devicegroup{1,4,8,16}_id`` through AWS's
Go lookup library (aws-neuron/connected-device-maps-over-efa-for-neuron); the tables
below are that library's facts, the PCI address of the EFA adapter wired to each
Neuron device, per instance family. A claim that asks for a Neuron device and EFA
adapters with matching group ids gets adapters on the same part of the fabric.
"""

from __future__ import annotations

import hashlib

PREFIX = "resource.aws.com"
GROUP_SIZES = (4, 8, 16)

# The instance types the library maps, and the table each one uses.
FAMILIES = {"trn1": "trn1", "trn1n": "trn1n", "trn2": "trn2", "trn2e": "trn2", "trn2u": "trn2",
            "trn3": "trn3", "trn3p": "trn3", "trn3pd98": "trn3", "trn3s": "trn3",
            "trn3-dev0": "trn3pds", "trn3-dev1": "trn3pds"}
EFA_ENABLED = {"trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge", "trn2e.48xlarge",
               "trn2u.48xlarge", "trn3.48xlarge", "trn3p.48xlarge", "trn3pd98.48xlarge",
               "trn3s.48xlarge", "trn3-dev0.48xlarge", "trn3-dev1.48xlarge"}


def _table(bus_devfn: str) -> tuple[str, ...]:
    """Neuron device i -> the EFA adapter at ``0000:<item i>`` (bus:dev.fn)."""
    return tuple(f"0000:{x}" for x in bus_devfn.split())


# Neuron device index -> EFA adapter. On trn1 two Neuron devices share one adapter.
EFA_OF_NEURON: dict[str, tuple[str, ...]] = {
    "trn1": _table("10:1a.0 10:1a.0 a0:1a.0 a0:1a.0 20:19.0 20:19.0 90:19.0 90:19.0 "
                   "20:1a.0 20:1a.0 90:1a.0 90:1a.0 10:19.0 10:19.0 a0:19.0 a0:19.0"),
    "trn1n": _table("10:17.0 10:1a.0 a0:17.0 a0:1a.0 20:19.0 20:18.0 90:19.0 90:18.0 "
                    "20:17.0 20:1a.0 90:17.0 90:1a.0 10:19.0 10:18.0 a0:19.0 a0:18.0"),
    "trn2": _table("c9:00.0 b4:00.0 b3:00.0 ca:00.0 6c:00.0 57:00.0 56:00.0 6d:00.0 "
                   "98:00.0 83:00.0 82:00.0 99:00.0 f5:00.0 e0:00.0 df:00.0 f6:00.0"),
    "trn3": _table("be:00.0 a9:00.0 a8:00.0 bf:00.0 61:00.0 4c:00.0 4b:00.0 62:00.0 "
                   "8d:00.0 78:00.0 77:00.0 8e:00.0 ea:00.0 d5:00.0 d4:00.0 eb:00.0"),
    "trn3pds": _table("a9:00.0 a8:00.0 bf:00.0 be:00.0 d5:00.0 d4:00.0 eb:00.0 ea:00.0 "
                      "4c:00.0 4b:00.0 62:00.0 61:00.0 78:00.0 77:00.0 8e:00.0 8d:00.0"),
}


def is_neuron_type(instance_type: str) -> bool:
    """Trainium or Inferentia, by the letters before the generation digit (as DRANET)."""
    letters = ""
    for c in instance_type.lower():
        if c.isdigit():
            break
        letters += c
    return letters in ("trn", "inf")


def table_for(instance_type: str) -> tuple[str, ...]:
    """The adapter of each Neuron device on this instance type; empty when the type is
    not one the library maps (not an error: such instances get no groups)."""
    if instance_type not in EFA_ENABLED:
        return ()
    return EFA_OF_NEURON.get(FAMILIES.get(instance_type.split(".")[0], ""), ())


def _group_id(table: tuple[str, ...], neuron: int, size: int) -> str:
    """One id for every adapter wired to the ``size`` Neuron devices around ``neuron``:
    the first 16 hex digits of the SHA-256 of their sorted, distinct addresses."""
    start = neuron // size * size
    members = sorted(set(table[start:start + size]))
    return hashlib.sha256(",".join(members).encode()).hexdigest()[:16] if members else ""


def device_groups(table: tuple[str, ...], efa_pci_address: str) -> dict[str, str]:
    """The group attributes of the EFA adapter at ``efa_pci_address`` ({} if unmapped)."""
    if efa_pci_address not in table:
        return {}
    neuron = table.index(efa_pci_address)
    out = {f"{PREFIX}/devicegroup1_id": efa_pci_address}
    for size in GROUP_SIZES:
        out[f"{PREFIX}/devicegroup{size}_id"] = _group_id(table, neuron, size)
    return out
