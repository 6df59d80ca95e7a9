"""Plumber commands (``knd.<node>.plumber.<verb>``), requested by the kubelet gateway.

Every reply carries ``error`` (empty: success) so one failing claim never hides
the others of a call; errors name the field that was wrong.
"""

from __future__ import annotations

from schemas.base import Message, Strict
from schemas.inventory import Device
from schemas.netconfig import NetworkConfig


class PodRef(Strict):
    uid: str
    namespace: str = ""
    name: str = ""


class DeviceRequest(Strict):
    """One allocation result of this driver, with the configuration that applies to it."""

    request: str
    pool: str
    device: str
    share_id: str = ""
    config: NetworkConfig | None = None
    """Merged claim/class configuration for this request (None: defaults)."""


class Prepare(Message):
    """``plumber.prepare``: validate the claim's devices against the node and save the plan."""

    claim_uid: str
    namespace: str
    name: str
    devices: list[DeviceRequest]
    pods: list[PodRef] = []
    """The pods the claim is reserved for (``status.reservedFor``)."""


class PreparedDevice(Strict):
    request: str
    pool: str
    device: str
    cdi_ids: list[str] = []
    share_id: str = ""


class PrepareReply(Message):
    claim_uid: str
    devices: list[PreparedDevice] = []
    error: str = ""


class Unprepare(Message):
    """``plumber.unprepare``: drop the plan; works from the checkpoint alone."""

    claim_uid: str
    namespace: str = ""
    name: str = ""


class UnprepareReply(Message):
    claim_uid: str
    error: str = ""


class Attach(Message):
    """``plumber.attach`` (NRI RunPodSandbox): move the pod's prepared devices into its netns."""

    pod: PodRef
    sandbox_id: str
    netns: str
    """Path of the pod's network namespace (``/var/run/netns/...`` or ``/proc/<pid>/ns/net``)."""
    deadline: float = 0.0
    """Unix time after which the runtime has given up on the hook (0: none); an attach
    that completes later is rolled back, so the node matches what the runtime believes."""


class AttachedInterface(Strict):
    claim_uid: str
    device: str
    interface: str
    """Name inside the pod."""
    ips: list[str] = []
    mac: str = ""


class AttachReply(Message):
    interfaces: list[AttachedInterface] = []
    error: str = ""
    latency_ms: float = 0.0


class Detach(Message):
    """``plumber.detach`` (NRI StopPodSandbox / RemovePodSandbox): give the devices back."""

    pod: PodRef
    sandbox_id: str = ""
    netns: str = ""


class DetachReply(Message):
    restored: list[str] = []
    """Devices back in the host namespace with their original configuration."""
    error: str = ""


class LinuxDevice(Strict):
    """A device node for the container (NRI's ``LinuxDevice``); ``file_mode`` is the
    host node's permission bits, so that the container's node has the same."""

    path: str
    type: str = "c"
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666


class ContainerDevices(Message):
    """``plumber.container-devices`` (NRI CreateContainer): char devices to inject."""

    pod: PodRef
    container: str = ""


class ContainerDevicesReply(Message):
    devices: list[LinuxDevice] = []
    error: str = ""


# Events: ``knd.<node>.events.device.attached|detached|failed``.


class DeviceAttached(Message):
    node: str
    pod_uid: str
    claim_uid: str
    device: str
    interface: str
    """Name inside the pod."""
    netns: str
    ips: list[str] = []
    mac: str = ""
    latency_ms: float = 0.0


class DeviceDetached(Message):
    node: str
    pod_uid: str
    claim_uid: str
    device: str
    interface: str
    """Name in the host after the detach ("" when the device is gone)."""
    reason: str
    """``detach``, ``unprepare``, ``rollback``, ``reconcile``, ``netns-gone``,
    ``device-deleted`` (a virtual device deleted in a live pod netns)..."""
    gone: bool = False
    """A virtual device destroyed with its pod netns: nothing came back."""
    pod_namespace: str = ""
    pod_name: str = ""
    """The pod as the claim's checkpoint knows it ("" when it does not): the publisher
    needs both to write a Kubernetes Event on the pod."""


class DeviceFailed(Message):
    node: str
    pod_uid: str
    claim_uid: str
    device: str
    step: str
    """What failed: a kernel step (``move``, ``link``, ``routes``...), ``config.<field>``,
    ``attach``, ``deadline`` (finished after the runtime gave up), ``create...`` (a
    child device), ``rdma`` (the RDMA link device; the netdev is attached anyway) or
    ``restore`` (giving the device back to the node; retried in the background)."""
    error: str
    rolled_back: bool = True
    pod_namespace: str = ""
    pod_name: str = ""
    """As in DeviceDetached."""


# Status: ``knd.<node>.plumber.status`` (admin -> plumber), the checkpoint as ``knd status``
# shows it.


class PlumberStatusGet(Message):
    """Request for the plumber's view of its checkpoint."""


class ClaimView(Strict):
    uid: str
    namespace: str = ""
    name: str = ""
    pods: list[PodRef] = []
    devices: list[str] = []
    """The claim's devices on this node."""
    published: list[Device] = []
    """Those devices as discovery published them when the claim was prepared."""


class AttachmentView(Strict):
    """One device of one pod, as the checkpoint records it."""

    claim_uid: str
    device: str
    pod_uid: str
    phase: str
    """``attaching``, ``attached``, ``detaching``, ``gone``..."""
    interface: str = ""
    """Name inside the pod."""
    host_interface: str = ""
    """Name it had (and gets back) in the host."""
    netns: str = ""
    ips: list[str] = []
    mac: str = ""
    reason: str = ""


class PlumberStatus(Message):
    node: str
    ready: bool = True
    """The checkpoint was reconciled with the kernel since start."""
    rdma_mode: str = ""
    claims: list[ClaimView] = []
    attachments: list[AttachmentView] = []
