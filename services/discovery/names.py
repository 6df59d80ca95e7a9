"""Device names: DNS labels that stay the same for the same hardware.

A ResourceSlice device name must be a DNS-1123 label, unique in the pool, and a
claim's allocation refers to it by name, so a name that changed between two
rescans (or two restarts of discovery) would orphan allocations. Names are
therefore pure functions of stable identifiers: the PCI address for PCI
hardware, else the interface or RDMA device name. Nothing random, no ifindex,
no dependence on the order in which devices are listed.

The three families never overlap, which is what makes the names unique:

- ``pci-<address>`` (``pci-0000-3b-00-0``; a second port of a function gets
  ``-p<dev_port>``) for anything with a PCI address;
- ``rdma-<name>`` for an RDMA device without a PCI address;
- the interface name itself when it is already a valid label, else an encoded
  form ``<stem>-<hash8>`` (``eth0.100`` -> ``eth0-100-<8 hex>``). Interface names
  that could be mistaken for another family or for an encoded form (those
  starting with ``pci-`` / ``rdma-``, or ending in ``-`` + 8 hex digits) are
  encoded too, and an encoded form whose stem would start with a reserved
  prefix gets ``if-`` in front, so the passthrough and encoded sets are
  disjoint and two distinct names collide only if their stems *and* 32-bit
  hashes do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from schemas.limits import MAX_DNS_LABEL, is_dns_label

if TYPE_CHECKING:
    from services.kernel.sysfs import RdmaHw

_RESERVED = ("pci-", "rdma-")
_ENCODED_TAIL = re.compile(r"-[0-9a-f]{8}$")
_INVALID = re.compile(r"[^a-z0-9]+")
_HASH_LEN = 8


def short_hash(text: str) -> str:
    """8 hex digits of SHA-256: stable across processes (unlike ``hash()``)."""
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:_HASH_LEN]


def _encode(text: str, prefix: str = "") -> str:
    """``<prefix><stem>-<hash>``: lower-case, invalid runs -> ``-``, trimmed to fit 63."""
    stem = _INVALID.sub("-", text.lower()).strip("-")
    if not prefix and (not stem or stem.startswith(_RESERVED)):
        prefix = "if-"
    room = MAX_DNS_LABEL - len(prefix) - 1 - _HASH_LEN
    stem = stem[:room].rstrip("-")
    head = f"{prefix}{stem}" if stem else prefix.rstrip("-") or "if"
    return f"{head}-{short_hash(text)}"


def pci_device_name(address: str) -> str:
    """``0000:3b:00.0`` -> ``pci-0000-3b-00-0``."""
    name = "pci-" + address.lower().replace(":", "-").replace(".", "-")
    if is_dns_label(name) and not _ENCODED_TAIL.search(name):
        return name
    return _encode(address, "pci-")


def pci_port_name(address: str, dev_port: int) -> str:
    """The name of a further port (``dev_port``) of a multi-port PCI function."""
    return f"{pci_device_name(address)}-p{dev_port}"


def netdev_device_name(ifname: str) -> str:
    """The name of an interface without a PCI function (veth, macvlan, virtio-less...)."""
    if is_dns_label(ifname) and not ifname.startswith(_RESERVED) \
            and not _ENCODED_TAIL.search(ifname):
        return ifname
    return _encode(ifname)


def rdma_device_name(rdma: RdmaHw) -> str:
    """PCI-based when the RDMA device has a PCI function, else ``rdma-<name>``."""
    if rdma.pci is not None:
        return pci_device_name(rdma.pci.address)
    label = "rdma-" + rdma.name
    if is_dns_label(label) and not _ENCODED_TAIL.search(label):
        return label
    return _encode(rdma.name, "rdma-")


def assign_pci_port_names(address: str,
                          ports: Sequence[tuple[str, int | None]]) -> dict[str, str]:
    """Names for the interfaces ``(ifname, dev_port)`` that share PCI function ``address``.

    The interface with the lowest ``dev_port`` (ties: lowest name) gets the plain
    PCI name, the others ``-p<dev_port>``; two interfaces with the same
    dev_port (e.g. switchdev representors) fall back to a hash of the interface
    name. The result depends only on the set of ports, not on their order.
    """
    ordered = sorted(set(ports), key=lambda p: (p[1] if p[1] is not None else 0, p[0]))
    out: dict[str, str] = {}
    taken: set[str] = set()
    for i, (ifname, dev_port) in enumerate(ordered):
        if i == 0:
            name = pci_device_name(address)
        else:
            name = pci_port_name(address, dev_port or 0)
            if name in taken:
                name = f"{pci_device_name(address)}-{short_hash(ifname)}"
        taken.add(name)
        out[ifname] = name
    return out
