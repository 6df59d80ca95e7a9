"""What the plumber keeps about claims and moved interfaces.

These structs are the rows of the checkpoint (JSON inside sqlite), so they are
versioned with the checkpoint, not with the bus: they never cross the bus.
Everything needed to give an interface back exactly as it was is in
:class:`LinkSnapshot`, taken from the kernel just before the move.
"""

from __future__ import annotations

from schemas.base import Strict
from schemas.inventory import Device
from schemas.netconfig import NetworkConfig, RuleConfig
from schemas.plumber import PodRef, PreparedDevice

FOREVER = 0xFFFFFFFF
"""An address lifetime that never ends (the kernel's INFINITY_LIFE_TIME)."""

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3




class AddrRec(Strict):
    """One address of an interface, as the kernel reported it."""

    cidr: str
    scope: int = 0
    broadcast: str = ""
    label: str = ""
    """Only when it differs from the interface name (``eth0:1`` style labels)."""
    flags: int = 0
    """IFA_F_* bits worth restoring (nodad, noprefixroute, ...)."""
    valid: int = FOREVER
    preferred: int = FOREVER


class RouteRec(Strict):
    """One single-path route through an interface (kernel-made routes are not kept)."""

    family: int
    dst: str
    """CIDR; ``0.0.0.0/0`` or ``::/0`` for a default route."""
    gateway: str = ""
    prefsrc: str = ""
    priority: int = 0
    table: int = RT_TABLE_MAIN
    scope: int = 0
    proto: int = RTPROT_BOOT
    type: int = 1
    onlink: bool = False


class NeighRec(Strict):
    """A permanent neighbour of an interface (the kernel drops it when the link leaves)."""

    dst: str
    lladdr: str


class RuleRec(Strict):
    """A host policy rule copied into a pod: what DRANET copies of one (priority,
    ``from``, ``to``, table), with its family (a rule without prefixes has one too)."""

    family: int
    table: int
    priority: int = 0
    src: str = ""
    """CIDR, "" for ``from all``."""
    dst: str = ""

    def describe(self) -> str:
        fam = "-6 " if self.family == 10 else ""
        sel = " ".join(f"{k} {v}" for k, v in (("from", self.src), ("to", self.dst)) if v)
        return f"{fam}{self.priority}: {sel or 'from all'} lookup {self.table}"


class LinkSnapshot(Strict):
    """An interface's host configuration, taken before it is moved."""

    index: int
    name: str
    mtu: int
    kind: str = ""
    """IFLA_INFO_KIND: "" for a physical device, ``veth``, ``macvlan``... otherwise."""
    mac: str = ""
    up: bool = False
    addresses: list[AddrRec] = []
    routes: list[RouteRec] = []
    """In every table but local (DRANET copies them all into the pod)."""
    neighbours: list[NeighRec] = []
    """Permanent ones: they go into the pod, and come back."""
    gso_max_size: int = 0
    gro_max_size: int = 0
    gso_ipv4_max_size: int = 0
    gro_ipv4_max_size: int = 0
    sysctls: dict[str, str] = {}
    """``ipv4.rp_filter``-style keys the node had set on the interface (see
    :func:`services.plumber.devconf.own_sysctls`)."""

    @property
    def virtual(self) -> bool:
        """A virtual device dies with a pod netns; a physical one comes back to the host."""
        return bool(self.kind)


class PlannedDevice(Strict):
    """One device of a prepared claim, resolved against the node."""

    request: str
    pool: str
    device: str
    share_id: str = ""
    ifname: str = ""
    """Host interface name at prepare time ("" for an RDMA device without netdev)."""
    pod_ifname: str = ""
    rdma_device: str = ""
    config: NetworkConfig | None = None
    asked: NetworkConfig | None = None
    """With ``provided``: the claim's own configuration, before the providers' were
    merged into ``config`` (what a kubelet retry is compared with)."""
    provided: bool = False
    cdi_id: str = ""
    host_sysctls: dict[str, str] = {}
    """The node's own sysctls on the interface at prepare (see
    :func:`services.plumber.devconf.own_sysctls`), given back after the pod."""
    published: Device | None = None
    """The device as discovery published it at prepare time: a discovery that
    restarts while the device is in a pod keeps publishing it from this."""

    def prepared(self) -> PreparedDevice:
        return PreparedDevice(request=self.request, pool=self.pool, device=self.device,
                              cdi_ids=[self.cdi_id] if self.cdi_id else [],
                              share_id=self.share_id)


class ClaimPlan(Strict):
    """A prepared claim: what kubelet asked for and how it maps onto this node."""

    uid: str
    namespace: str
    name: str
    pods: list[PodRef] = []
    devices: list[PlannedDevice] = []


ATTACHING = "attaching"
"""Recorded before the first kernel change; reconcile rolls it back."""
ATTACHED = "attached"
"""Fully configured in the pod; reconcile keeps it while the pod netns lives."""
DETACHING = "detaching"
"""Giving it back; reconcile (and the sweeper) finish the job."""
GONE = "gone"
"""A virtual device that died with its pod netns; nothing is left to restore."""
PHASES = (ATTACHING, ATTACHED, DETACHING, GONE)


class Attachment(Strict):
    """One device of one pod: where it went and how to give it back."""

    claim_uid: str
    device: str
    pod_uid: str
    phase: str
    netns: str
    """Path of the pod netns at attach time."""
    ns_dev: int = 0
    ns_ino: int = 0
    """Identity of that netns (nsfs inode), to tell it from a later one at the same path."""
    sandbox_id: str = ""
    host: LinkSnapshot | None = None
    """None for an RDMA device without netdev. For a child: its parent, identity only."""
    child: str = ""
    """``ipvlan`` or ``macvlan``: a child of ``host`` was made in the pod (the device
    stays on the host, shared); "": the device itself moved."""
    temp_name: str = ""
    """The child's name between its creation and its rename (to find it after a crash)."""
    parent_raised: bool = False
    """This attach brought the child's parent up: the last child to go takes it down."""
    pod_ifname: str = ""
    pod_index: int = 0
    rules: list[RuleConfig] = []
    """Policy rules this attach adds in the pod netns (removed on rollback / detach)."""
    host_rules: list[RuleRec] = []
    """The host's rules that look up a table of the device's routes, copied into the pod
    by this attach (not those the pod had already); removed with the device."""
    features: dict[str, bool] = {}
    """Original values of the ethtool features this attach changes."""
    private_flags: dict[str, bool] = {}
    vrf: str = ""
    """A VRF device this attach may have created in the pod (deleted on the way out
    when no link is left in it)."""
    rdma_device: str = ""
    rdma_moved: bool = False
    rdma_error: str = ""
    """Why the best-effort move of the RDMA link device into the pod failed."""
    ips: list[str] = []
    mac: str = ""
    reason: str = ""
