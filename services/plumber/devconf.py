"""Per-device settings that live outside rtnetlink: sysctls and ethtool.

Both are namespace-relative (``/proc/sys/net`` shows the reading thread's
netns; an ethtool ioctl finds the interface by name in the socket's netns),
so each call runs on a thread that entered the target netns (:mod:`nsfs`).
Features and private flags go through the ethtool ioctl interface
(``ETHTOOL_[GS]FEATURES`` / ``ETHTOOL_[GS]PFLAGS``), which every kernel and
driver has, rather than the ethtool genetlink family, which some kernels lack.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import threading
import time
from collections.abc import Sequence

from pyroute2.ethtool.ioctl import (
    SIOCETHTOOL,
    EthtoolValue,
    IoctlEthtool,
    NoSuchDevice,
    NotSupportedError,
)

from schemas.text import q
from services.plumber import nsfs

_SYSCTL_KEY = re.compile(r"ipv[46]\.[a-z0-9_]{1,64}")
_SYSCTL_VALUE = re.compile(r"-?[0-9]{1,10}")
ETHTOOL_GPFLAGS, ETHTOOL_SPFLAGS = 0x27, 0x28
ETH_SS_PRIV_FLAGS = 2


class DevconfError(Exception):
    """A setting the device refused; ``str()`` starts with the config field path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# ---- sysctls ---------------------------------------------------------------------------


_OFF_WITHOUT_IPV6 = {("accept_ra", "0"), ("disable_ipv6", "1")}
"""Settings an interface without IPv6 (an MTU below 1280, IPv6 off in the netns) has
already: asking for them there is no error (DRANET's rule)."""


def _write_sysctls(entries: list[tuple[str, str, str]]) -> None:
    for field, rel, value in entries:
        path = f"/proc/sys/{rel}"
        try:
            with open(path, "w") as f:
                f.write(value)
        except FileNotFoundError:
            if rel.startswith("net/ipv6/"):
                if (rel.rsplit("/", 1)[1], value) in _OFF_WITHOUT_IPV6:
                    continue
                raise DevconfError(field, f"no sysctl {rel.replace('/', '.')}: IPv6 is not "
                                          "available on the interface") from None
            raise DevconfError(field, f"no sysctl {rel.replace('/', '.')}") from None
        except OSError as exc:
            raise DevconfError(field, f"cannot set {rel.replace('/', '.')} to {q(value)}: "
                                      f"{exc.strerror}") from None


async def write_sysctls(fd: int, entries: list[tuple[str, str, str]]) -> None:
    """Write ``(field, path under /proc/sys, value)`` entries inside netns ``fd``."""
    if entries:
        await nsfs.in_netns(fd, _write_sysctls, entries)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:  # write-only or refusing entries (stable_secret): not ours to keep
        return None


_UNREAD_SYSCTLS = frozenset({"ipv6.addr_gen_mode", "ipv6.stable_secret"})
"""Not read: the kernel takes RTNL to read them (``addr_gen_mode`` waited out a whole
32-pod storm of moves; the plumber takes it from the link message instead) or
refuses (``stable_secret``)."""


def _conf(family: str, ifname: str) -> dict[str, str | None]:
    base = f"/proc/sys/net/{family}/conf/{ifname}"
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    return {f"{family}.{n}": _read(f"{base}/{n}") for n in names
            if f"{family}.{n}" not in _UNREAD_SYSCTLS}


_DEFAULTS_TTL = 30.0
_defaults: dict[int, tuple[float, dict[str, str | None]]] = {}
_defaults_lock = threading.Lock()


def _netns_defaults() -> dict[str, str | None]:
    """This thread's netns ``conf/default`` values, reread every 30 s: reading them for
    every prepare too cost ~1 ms of its p50 and ~0.5 s of a 32-claim burst here."""
    ns = os.stat("/proc/thread-self/ns/net").st_ino
    now = time.monotonic()
    with _defaults_lock:
        hit = _defaults.get(ns)
        if hit is None or now - hit[0] > _DEFAULTS_TTL:
            hit = _defaults[ns] = (now, {**_conf("ipv4", "default"), **_conf("ipv6", "default")})
        return hit[1]


def _own_sysctls(ifname: str) -> dict[str, str]:
    defaults = _netns_defaults()
    mine = {**_conf("ipv4", ifname), **_conf("ipv6", ifname)}
    return {k: v for k, v in sorted(mine.items())
            if v is not None and _SYSCTL_VALUE.fullmatch(v) and v != defaults.get(k)}


async def own_sysctls(fd: int, ifname: str) -> dict[str, str]:
    """The interface's ``net.ipv4|6.conf.<ifname>`` values that differ from the netns
    defaults, inside netns ``fd``: a move to another netns resets them, so what the
    node set on the interface is kept with its snapshot and given back on return."""
    return await nsfs.in_netns(fd, _own_sysctls, ifname)


def _restore_sysctls(ifname: str, saved: dict[str, str]) -> list[str]:
    refused = []
    for key, value in sorted(saved.items()):
        try:  # one at a time: a refused key must not keep the others from coming back
            _write_sysctls(interface_sysctls(ifname, {key: value}))
        except DevconfError:
            refused.append(key)
    return refused


async def restore_sysctls(fd: int, ifname: str, saved: dict[str, str]) -> list[str]:
    """Write ``saved`` (from :func:`own_sysctls`) back inside netns ``fd``; returns the
    keys the kernel refused (the rest are written regardless)."""
    return await nsfs.in_netns(fd, _restore_sysctls, ifname, saved) if saved else []


def interface_sysctls(ifname: str, sysctls: dict[str, str],
                      named: Sequence[tuple[str, str, str]] = ()) -> list[tuple[str, str, str]]:
    """The writes a config asks for: key ``ipv4.arp_ignore`` is
    ``net.ipv4.conf.<ifname>.arp_ignore``. The key is checked again here, whatever
    validated it before, because it becomes a path under /proc/sys. The named fields
    (``named``: ``(field, key, value)`` from :func:`schemas.netconfig.named_sysctls`,
    DRANET's ``arpIgnore``, ``acceptRA``...) come last, in their order: they win over
    ``sysctls``."""
    out: list[tuple[str, str, str]] = []
    for field, key, value in [*((f"sysctls[{k}]", k, v) for k, v in sysctls.items()),
                              *named]:
        if not _SYSCTL_KEY.fullmatch(key):
            raise DevconfError(field, "not an ipv4.<name> or ipv6.<name> key")
        if not _SYSCTL_VALUE.fullmatch(value):
            raise DevconfError(field, f"{q(value)} is not an integer")
        family, _, name = key.partition(".")
        out.append((field, f"net/{family}/conf/{ifname}/{name}", value))
    return out


# ---- ethtool ---------------------------------------------------------------------------


def open_ethtool(ifname: str) -> IoctlEthtool:
    eth = IoctlEthtool()
    eth.change_ifname(ifname)
    return eth


def _feature_values(ifname: str, names: list[str]) -> dict[str, bool]:
    eth = open_ethtool(ifname)
    try:
        feats = eth.get_features()
        out = {}
        for name in names:
            if name not in feats:
                raise DevconfError(f"ethtool.features[{name}]",
                                   f"{ifname} has no such feature")
            out[name] = bool(feats[name])
        return out
    except (NotSupportedError, NoSuchDevice, OSError) as exc:
        raise DevconfError("ethtool.features", f"cannot read features of {ifname}: {exc}")\
            from None
    finally:
        eth.close()


def _set_features(ifname: str, wanted: dict[str, bool]) -> None:
    eth = open_ethtool(ifname)
    try:
        feats = eth.get_features()
        for name, value in wanted.items():
            if name not in feats:
                raise DevconfError(f"ethtool.features[{name}]", f"{ifname} has no such feature")
            if bool(feats[name]) == value:
                continue
            if not feats.is_available(name):
                raise DevconfError(f"ethtool.features[{name}]",
                                   f"fixed to {'on' if feats[name] else 'off'} on {ifname}")
            feats[name] = value
        eth.set_features(feats)
        now = eth.get_features()
        for name, value in wanted.items():
            if bool(now[name]) != value:
                raise DevconfError(f"ethtool.features[{name}]",
                                   f"the driver of {ifname} did not apply it")
    except (NotSupportedError, NoSuchDevice, OSError) as exc:
        raise DevconfError("ethtool.features", f"cannot set features of {ifname}: {exc}")\
            from None
    finally:
        eth.close()


async def feature_values(fd: int, ifname: str, names: list[str]) -> dict[str, bool]:
    """Current values of the named features (to restore them later)."""
    return await nsfs.in_netns(fd, _feature_values, ifname, names)


async def set_features(fd: int, ifname: str, wanted: dict[str, bool]) -> None:
    if wanted:
        await nsfs.in_netns(fd, _set_features, ifname, wanted)


def _pflags_io(eth: IoctlEthtool, cmd: int, data: int = 0) -> int:
    value = EthtoolValue(cmd=cmd, data=data)
    eth.ifreq.value = ctypes.pointer(value)
    fcntl.ioctl(eth.sock, SIOCETHTOOL, eth.ifreq)
    return value.data


def _private_flags(ifname: str, wanted: dict[str, bool] | None,
                   names: list[str]) -> dict[str, bool]:
    """Read (and with ``wanted``, change) private flags; returns the values before."""
    eth = open_ethtool(ifname)
    try:
        try:
            known = eth.get_stringset(set_id=ETH_SS_PRIV_FLAGS)
        except NotSupportedError:
            known = []  # the driver has no private flags at all
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP):
                raise
            known = []
        bits = {name: i for i, name in enumerate(known)}
        for name in names:
            if name not in bits:
                raise DevconfError(f"ethtool.privateFlags[{name}]",
                                   f"{ifname} has no such private flag")
        current = _pflags_io(eth, ETHTOOL_GPFLAGS) if names else 0
        before = {name: bool(current >> bits[name] & 1) for name in names}
        if wanted:
            new = current
            for name, on in wanted.items():
                new = new | (1 << bits[name]) if on else new & ~(1 << bits[name])
            if new != current:
                _pflags_io(eth, ETHTOOL_SPFLAGS, new)
        return before
    except OSError as exc:
        raise DevconfError("ethtool.privateFlags",
                           f"cannot use private flags of {ifname}: {exc.strerror}") from None
    finally:
        eth.close()


async def private_flag_values(fd: int, ifname: str, names: list[str]) -> dict[str, bool]:
    return await nsfs.in_netns(fd, _private_flags, ifname, None, names)


async def set_private_flags(fd: int, ifname: str, wanted: dict[str, bool]) -> None:
    if wanted:
        await nsfs.in_netns(fd, _private_flags, ifname, wanted, list(wanted))
