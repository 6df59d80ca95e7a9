"""Children of a host interface in a pod (``interface.type: IPVLAN`` or ``MACVLAN``):
made, found and deleted in the pod netns, through rtnetlink.

A child is created by one RTM_NEWLINK sent in the host netns (where its parent is)
with the pod netns as its target, so it never exists in the host netns, not even for
a moment; under a random temporary name first (DRANET: older kernels refuse a name
that is taken in the host netns), then renamed in the pod. Everything that shapes
its behaviour on the wire (GSO/GRO sizes, ARP and IPv6 sysctls) is set while it is
still down; only then does it come up. The parent itself is never changed, except
that it is brought up when it is down (the child has no carrier otherwise), which
:mod:`restore` undoes when the last child of the parent goes.
"""

from __future__ import annotations

import errno
import secrets

from pyroute2.netlink.rtnl.ifinfmsg.plugins import ipvlan as _ipvlan

from schemas.netconfig import IPVLAN, NetworkConfig, child_kind, defaulted, named_sysctls
from services.plumber import devconf
from services.plumber.checkpoint import Checkpoint
from services.plumber.model import Attachment, LinkSnapshot
from services.plumber.netops import KernelError, LinkRec, Rtnl

IPVLAN_MODES = {"L2": 0, "L3": 1, "L3S": 2}
"""linux/if_link.h IPVLAN_MODE_*."""
IPVLAN_FLAGS = {"Bridge": 0, "Private": 1, "VEPA": 2}
"""IPVLAN_F_PRIVATE, IPVLAN_F_VEPA; neither is bridge mode."""
MACVLAN_MODES = {"Private": 1, "VEPA": 2, "Bridge": 4}
"""MACVLAN_MODE_*."""
IFLA_IPVLAN_FLAGS = 2


def _know_ipvlan_flags() -> None:
    """Teach pyroute2's ipvlan link data IFLA_IPVLAN_FLAGS (0.9 stops at the mode), so
    ``ipvlan_flags=`` is encoded: without it a Private or VEPA child came out bridge."""
    names = [item[0] for item in _ipvlan.ipvlan.nla_map]
    if "IFLA_IPVLAN_FLAGS" in names:
        return
    if len(names) != IFLA_IPVLAN_FLAGS:
        raise ImportError("pyroute2's ipvlan attribute map is not the one knd extends")
    _ipvlan.ipvlan.nla_map = (*_ipvlan.ipvlan.nla_map, ("IFLA_IPVLAN_FLAGS", "uint16"))
    _ipvlan.ipvlan._nlmsg_base__compiled_nla = False


_know_ipvlan_flags()


def share_key(cfg: NetworkConfig | None) -> str:
    """What a claim's use of a device must agree on with every other claim that holds
    it: "" (passthrough: nobody else), ``ipvlan L2 Bridge`` (one ipvlan port has one
    mode and flag for all its children: a child of another mode would switch the
    others'), ``macvlan`` (modes are per child; ipvlan and macvlan cannot mix on one
    parent, each needs the parent's receive hook)."""
    if cfg is None:
        return ""
    iface = defaulted(cfg).interface
    kind = child_kind(iface)
    if kind == "ipvlan" and iface.ipvlan is not None:
        return f"ipvlan {iface.ipvlan.mode} {iface.ipvlan.flag}"
    return kind


def temp_name() -> str:
    return f"knd{secrets.token_hex(4)}"


def child_snapshot(parent: LinkRec) -> LinkSnapshot:
    """What an attachment keeps of a child's parent: who it is, never its configuration
    (nothing of the parent moves, so nothing has to come back)."""
    return LinkSnapshot(index=parent.index, name=parent.name, mtu=parent.mtu,
                        kind=parent.kind, mac=parent.mac, up=parent.up)


def _link_kwargs(cfg: NetworkConfig, kind: str) -> dict:
    iface = cfg.interface
    kw: dict = {"kind": kind}
    if kind == "ipvlan":
        assert iface.ipvlan is not None  # defaulted
        kw["ipvlan_mode"] = IPVLAN_MODES[iface.ipvlan.mode]
        kw["ipvlan_flags"] = IPVLAN_FLAGS[iface.ipvlan.flag]
    else:
        assert iface.macvlan is not None
        kw["macvlan_mode"] = MACVLAN_MODES[iface.macvlan.mode]
        if iface.hardwareAddr:
            kw["address"] = iface.hardwareAddr
    if iface.mtu:
        kw["mtu"] = iface.mtu
    return kw


async def create(host: Rtnl, pod: Rtnl, fd: int, cfg: NetworkConfig, att: Attachment,
                 store: Checkpoint) -> LinkRec:
    """Make ``att``'s child in the pod (netns ``fd``), configured up to its link state
    (see the module doc), and up. ``cfg`` is defaulted. What a rollback needs to find
    it (its index) is in the checkpoint before anything else happens to it."""
    parent = att.host
    assert parent is not None
    kind, iface = att.child, cfg.interface
    now = await host.link(index=parent.index)
    if now is None or now.name != parent.name:
        raise KernelError("device", errno.ENODEV, f"parent {parent.name} is gone from the host")
    if not now.up:  # no carrier for the child otherwise; restore takes it down again
        att.parent_raised = True
        store.put_attachment(att)
        await host.set_link(f"parent {parent.name} up", parent.index, state="up")
    try:
        await host.add_link("config.interface.type", ifname=att.temp_name, link=parent.index,
                            net_ns_fd=fd, **_link_kwargs(cfg, kind))
    except KernelError as exc:
        raise KernelError(exc.step, exc.code, _why_not(exc, kind, parent.name)) from None
    link = await pod.link(name=att.temp_name)
    if link is None:
        raise KernelError("config.interface.type", errno.ENODEV,
                          f"the {kind} child of {parent.name} is not in the pod")
    att.pod_index = link.index
    store.put_attachment(att)
    await pod.set_link("config.interface.name", link.index, ifname=att.pod_ifname)
    sizes = {k: v for k, v in (("gso_max_size", iface.gsoMaxSize),
                               ("gro_max_size", iface.groMaxSize),
                               ("gso_ipv4_max_size", iface.gsoIPv4MaxSize),
                               ("gro_ipv4_max_size", iface.groIPv4MaxSize)) if v}
    if sizes:
        await pod.set_link("config.interface.gso/gro sizes", link.index, **sizes)
    # before the link is up: it must never answer ARP or take an RA with other settings
    await devconf.write_sysctls(fd, devconf.interface_sysctls(
        att.pod_ifname, cfg.sysctls, named_sysctls(iface)))
    await pod.set_link("link up", link.index, state="up")
    up = await pod.link(index=link.index)
    if up is None:
        raise KernelError("link up", errno.ENODEV, f"{att.pod_ifname} vanished from the pod")
    return up


def _why_not(exc: KernelError, kind: str, parent: str) -> str:
    text = str(exc).split(": ", 1)[-1]
    if exc.code == errno.EOPNOTSUPP and kind == IPVLAN.lower():
        return (f"this kernel cannot make ipvlan interfaces (no CONFIG_IPVLAN): {parent} "
                f"cannot host an ipvlan child ({text})")
    if exc.code == errno.EOPNOTSUPP:
        return f"this kernel cannot make {kind} interfaces: {text}"
    if exc.code == errno.EBUSY:
        return (f"{parent} cannot host a {kind} child: another driver holds its receive "
                f"path (a bridge or bond port, or children of the other kind) ({text})")
    return f"{parent} cannot host a {kind} child: {text}"


async def find(pod: Rtnl, att: Attachment) -> LinkRec | None:
    """``att``'s child in the pod: by index, else by its pod or temporary name, and
    always of its kind (a link of another kind under that name is not ours)."""
    if att.pod_index:
        link = await pod.link(index=att.pod_index)
        if link and link.kind == att.child and link.name in (att.pod_ifname, att.temp_name):
            return link
    for name in (att.pod_ifname, att.temp_name):
        link = await pod.link(name=name) if name else None
        if link and link.kind == att.child and (not att.pod_index
                                                or link.index == att.pod_index):
            return link
    return None


async def delete(pod: Rtnl, att: Attachment) -> bool:
    """Delete ``att``'s child; False when it was not there (any more)."""
    link = await find(pod, att)
    if link is None:
        return False
    try:
        await pod.del_link("delete child", link.index)
    except KernelError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True
