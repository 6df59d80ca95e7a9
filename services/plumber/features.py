"""ethtool feature names: the ones ``ethtool -K`` takes, resolved to kernel feature bits.

A claim may name a feature as the kernel does (``tx-checksum-ip-generic``,
``rx-gro-hw``) or as ``ethtool -K`` does: a short or long "legacy" name that
covers every kernel feature its pattern matches, as ethtool's own table
(``off_flag_def`` in ethtool's common.c) defines them. ``tx-checksumming`` is
then each ``tx-checksum-*`` bit the device has, ``tcp-segmentation-offload``
each ``tx-tcp*-segmentation`` bit (``tx-tcp-segmentation``, ``-ecn-``,
``-mangleid-``, ``tx-tcp6-``, and newer ones as the kernel adds them).

Names are resolved against the device at prepare, in the host, so a name the
device does not know, or a feature it cannot change from where it is, fails
the claim before anything moves. A legacy name sets the bits of its group that
the device can change and leaves its fixed ones as they are, as ``ethtool -K``
does; a name whose every bit is fixed is accepted only when they already are
what the claim asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from pyroute2.ethtool.ioctl import NoSuchDevice, NotSupportedError

from services.plumber import nsfs
from services.plumber.devconf import DevconfError, open_ethtool

LEGACY: tuple[tuple[str, str, str], ...] = (
    ("rx", "rx-checksumming", "rx-checksum"),
    ("tx", "tx-checksumming", "tx-checksum-*"),
    ("sg", "scatter-gather", "tx-scatter-gather*"),
    ("tso", "tcp-segmentation-offload", "tx-tcp*-segmentation"),
    ("ufo", "udp-fragmentation-offload", "tx-udp-fragmentation"),
    ("gso", "generic-segmentation-offload", "tx-generic-segmentation"),
    ("gro", "generic-receive-offload", "rx-gro"),
    ("lro", "large-receive-offload", "rx-lro"),
    ("rxvlan", "rx-vlan-offload", "rx-vlan-hw-parse"),
    ("txvlan", "tx-vlan-offload", "tx-vlan-hw-insert"),
    ("ntuple", "ntuple-filters", "rx-ntuple-filter"),
    ("rxhash", "receive-hashing", "rx-hashing"),
)
"""(short name, long name, kernel-name pattern): ethtool's legacy offload names."""

PATTERNS = {name: pattern for short, long, pattern in LEGACY for name in (short, long)}


@dataclass(frozen=True)
class Feature:
    active: bool
    changeable: bool
    """In the device's hw_features and not one the kernel never changes."""


def kernel_names(name: str, table: dict[str, Feature]) -> list[str]:
    """The device's kernel features that ``name`` stands for; [] when none."""
    if name in table:
        return [name]
    pattern = PATTERNS.get(name)
    if pattern is None:
        return []
    return sorted(k for k in table if fnmatchcase(k, pattern))


def resolve(ifname: str, wanted: dict[str, bool],
            table: dict[str, Feature]) -> tuple[dict[str, bool], list[str]]:
    """Kernel feature bits to set for ``wanted`` (claim names), and the problems, each
    ``"ethtool.features[<name>]: <why>"``. Bits already as asked are kept in the
    result: they are what a restore gives back."""
    out: dict[str, bool] = {}
    owner: dict[str, str] = {}
    errors: list[str] = []
    for name, on in wanted.items():
        where = f"ethtool.features[{name}]"
        bits = kernel_names(name, table)
        if not bits:
            errors.append(f"{where}: {ifname} has no such feature (neither a kernel feature "
                          "name nor one of ethtool -K's names)")
            continue
        free = [b for b in bits if table[b].changeable]
        if not free:
            wrong = [b for b in bits if table[b].active != on]
            if wrong:
                errors.append(f"{where}: fixed to {'on' if not on else 'off'} on {ifname} "
                              f"({', '.join(wrong)}); the device cannot change it")
            continue
        for bit in free:
            if bit in out and out[bit] != on:
                errors.append(f"{where}: sets {bit} {'on' if on else 'off'}, but "
                              f"ethtool.features[{owner[bit]}] sets it "
                              f"{'on' if out[bit] else 'off'}")
                continue
            out[bit], owner[bit] = on, name
    return out, errors


def _table(ifname: str) -> dict[str, Feature]:
    eth = open_ethtool(ifname)
    try:
        feats = eth.get_features()
        return {name: Feature(active=bool(feats.is_active(name)),
                              changeable=bool(feats.is_available(name))
                              and not feats.is_never_changed(name))
                for name in feats.keys() if name}
    except (NotSupportedError, NoSuchDevice, OSError) as exc:
        raise DevconfError("ethtool.features", f"cannot read features of {ifname}: {exc}")\
            from None
    finally:
        eth.close()


async def table(fd: int, ifname: str) -> dict[str, Feature]:
    """The device's features as ``ethtool -k`` shows them, read inside netns ``fd``."""
    return await nsfs.in_netns(fd, _table, ifname)


async def check(fd: int, ifname: str, wanted: dict[str, bool]) -> list[str]:
    """Prepare's check: the problems of ``wanted`` on ``ifname`` (in netns ``fd``)."""
    return resolve(ifname, wanted, await table(fd, ifname))[1]


async def kernel_bits(fd: int, ifname: str, wanted: dict[str, bool]) -> dict[str, bool]:
    """Attach's resolution: the kernel bits to set; a problem (the device changed since
    prepare) is a DevconfError, so the attach rolls back."""
    bits, errors = resolve(ifname, wanted, await table(fd, ifname))
    if errors:
        field, _, why = errors[0].partition(": ")
        raise DevconfError(field, "; ".join([why, *errors[1:]]))
    return bits
