"""The discovery service: kernel events in, inventory snapshots out.

Netlink events only mark the inventory dirty; a burst of them (a hundred
links created by a script) is coalesced into one rescan once the kernel has
been quiet for a few milliseconds, or at the latest ``max_delay`` after the
first event, so a long burst still shows progress. A snapshot is published
only when the devices really changed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import anyio
import msgspec
from anyio.abc import TaskStatus
from nats.aio.client import Client
from prometheus_client.metrics import Counter, Gauge, Histogram

from schemas.base import encode
from schemas.inventory import Device, DeviceEvent, InventoryGet, InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus
from services.common.config import Common
from services.discovery.attributes import build_devices
from services.discovery.claimed import ClaimedDevices
from services.discovery.cloud import CloudAttributes
from services.discovery.ebpf import EbpfReader
from services.discovery.filter import DefaultFilter, DeviceFilter
from services.kernel import rtnl
from services.kernel.links import LinkInfo
from services.kernel.sysfs import NetdevHw, RdmaHw, Sysfs
from services.kernel.uplinks import excluded_indexes

log = logging.getLogger("knd.discovery")

NETLINK_EVENTS = Counter("knd_discovery_netlink_events", "Relevant netlink messages received")
NETLINK_OVERFLOWS = Counter("knd_discovery_netlink_overflows",
                            "Netlink event queue overflows (a full rescan recovers)")
NETLINK_SKIPPED = Counter(
    "knd_discovery_netlink_events_skipped",
    "Netlink messages that caused no rescan: only about claimed devices' interfaces")
RESCANS = Counter("knd_discovery_rescans", "Full inventory rescans")
SNAPSHOTS = Counter("knd_discovery_snapshots", "Snapshots published (inventory changed)")
SCAN_SECONDS = Histogram("knd_discovery_scan_seconds", "Time of one full rescan",
                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
DEVICES = Gauge("knd_discovery_devices", "Devices in the current inventory")
HELD = Gauge("knd_discovery_held_devices",
             "Devices gone from the host but kept published until the plumber says "
             "whether a claim holds them")

GET_WAIT = 0.5
"""How long ``inventory.get`` waits for the first snapshot before saying it has none."""
HOLD_RETRY = 1.0
"""Seconds before a rescan asks the plumber again about devices it is holding."""


@dataclass(frozen=True)
class Tuning:
    quiet: float = 0.005
    """Rescan once the kernel has been quiet this long..."""
    max_delay: float = 0.1
    """...or this long after the first event of a burst, whichever comes first."""
    resync: float = 60.0
    """Rescan this often without events, for changes netlink does not announce (sysfs)."""


class HardwareCache:
    """sysfs facts of the links seen so far, reused across rescans.

    Reading sysfs is most of a rescan (~150 us a link), yet a link's hardware does
    not change while it exists. A new (ifindex, name) is read afresh; if it is an
    SR-IOV VF the whole cache is dropped, since its PF's counts changed with it.
    """

    def __init__(self, sysfs: Sysfs) -> None:
        self.sysfs = sysfs
        self._netdev: dict[str, NetdevHw | None] = {}
        self._rdma: list[RdmaHw] | None = None
        self._seen: set[tuple[int, str]] = set()

    def refresh(self, links: list[LinkInfo], force: bool = False) -> None:
        keys = {(link.index, link.name) for link in links}
        new = keys - self._seen
        self._seen = keys
        if force:
            self._netdev.clear()
            self._rdma = None
            return
        if not new:
            return
        self._rdma = None  # a link coming back may bring its RDMA device with it
        for _, name in new:
            self._netdev.pop(name, None)
            hw = self.netdev(name)
            if hw is not None and hw.pci is not None and hw.pci.is_vf:
                self._netdev.clear()
                return

    def netdev(self, ifname: str) -> NetdevHw | None:
        if ifname not in self._netdev:
            self._netdev[ifname] = self.sysfs.netdev(ifname)
        return self._netdev[ifname]

    def rdma_devices(self) -> list[RdmaHw]:
        if self._rdma is None:
            self._rdma = self.sysfs.rdma_devices()
        return self._rdma


class Scanner:
    """One full rescan: links, routes and sysfs -> the devices to publish."""

    def __init__(self, driver: str, sysfs: Sysfs, device_filter: DeviceFilter | DefaultFilter,
                 netns: str | None = None, shared: DeviceFilter | None = None) -> None:
        self.driver = driver
        self.hardware = HardwareCache(sysfs)
        self.filter = device_filter
        self.shared = shared
        """``--shared-devices``: the published devices several claims may hold at once."""
        self.reader = rtnl.Reader(netns)
        self.ebpf = EbpfReader(netns)
        self.links: list[LinkInfo] = []
        """The node's links at the last scan."""
        self.excluded: set[int] = set()
        """Their indexes that the last scan held back: uplinks and their ports."""

    def scan(self, fresh: bool = False, touched: set[int] | None = None) -> list[Device]:
        """``fresh`` rereads all of sysfs (the periodic resync). ``touched``: the
        interfaces netlink events named since the last scan, whose eBPF programs are
        read again with those of new ones; None (and ``fresh``) reads every one's."""
        return self.select(self.collect(fresh, touched))

    def collect(self, fresh: bool = False, touched: set[int] | None = None) -> list[Device]:
        """The node's devices before the filter (provider attributes go on in between,
        so a filter can select on them)."""
        started = time.perf_counter()
        links = self.links = self.reader.links()
        self.hardware.refresh(links, force=fresh)
        excluded = self.excluded = excluded_indexes(links, self.reader.routes())
        candidates = [link for link in links
                      if link.index not in excluded and link.encapsulation != "loopback"]
        programs = self.ebpf.read(self.reader, [link.index for link in candidates],
                                  None if fresh else touched)
        candidates = [replace(link, programs=programs[link.index])
                      if link.index in programs else link for link in candidates]
        devices = build_devices(candidates, self.hardware, self.driver)
        RESCANS.inc()
        SCAN_SECONDS.observe(time.perf_counter() - started)
        return devices

    def select(self, devices: list[Device]) -> list[Device]:
        chosen = [d for d in devices if self.filter(d)]
        if self.shared is None:
            return chosen
        return [msgspec.structs.replace(d, shared=True) if self.shared(d) else d
                for d in chosen]

    def close(self) -> None:
        self.reader.close()


class Discovery:
    """Holds the current snapshot, publishes changes and answers ``inventory.get``."""

    def __init__(self, nc: Client, node: str, scanner: Scanner,
                 netns: str | None = None, tuning: Tuning | None = None,
                 cloud: CloudAttributes | None = None) -> None:
        self.nc = nc
        self.cloud = cloud
        self.node = node
        self.subjects = Subjects(node)
        self.scanner = scanner
        self.netns = netns
        self.tuning = tuning or Tuning()
        self.epoch = time.time_ns()
        self.seq = 0
        self.snapshot: InventorySnapshot | None = None
        self._dirty = anyio.Event()
        self._first_event = 0.0
        self._last_event = 0.0
        self._scan_lock = anyio.Lock()
        self._touched: set[int] | None = set()
        """Interfaces named by netlink events since the last scan; None: unknown (an
        overflow), every interface is read again."""
        self.claimed = ClaimedDevices(nc, self.subjects, self._poke, self._last_published)
        self._first = anyio.Event()
        self._retry_at = 0.0
        """Set with the first snapshot, which waits for the plumber's claims."""
        self._scanned: list[Device] = []
        """The devices of the last scan, before claimed ones were kept."""

    async def run(self, *, task_status: TaskStatus[Discovery] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled; ``task_status`` reports us once ``inventory.get``
        answers (with "unavailable" until the first scan)."""
        # made by a thread that enters the netns, joined: not on the loop
        events = await anyio.to_thread.run_sync(rtnl.open_socket, self.netns, rtnl.EVENT_GROUPS)
        service = await bus.serve(self.nc, "discovery", "node network inventory")
        group = service.add_group(name=self.subjects.inventory_group)
        await group.add_endpoint(name="get", handler=bus.typed_handler(
            "discovery", "inventory.get", InventoryGet, self._get))
        await bus.flush(self.nc)
        task_status.started(self)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.claimed.follow)
                await self.claimed.wait_known()
                await self.rescan(trigger_at=0.0)
                tg.start_soon(self._watch, events)
                tg.start_soon(self._rescan_loop)
                tg.start_soon(self._after_reconnects)
        finally:
            events.close()
            self.scanner.close()
            await bus.stop_service(self.nc, service)

    async def _after_reconnects(self) -> None:
        """Claim events sent while we were off the bus are lost: ask the plumber again."""
        while True:
            await bus.reconnected(self.nc)
            await self.claimed.refresh()

    async def _get(self, _: InventoryGet) -> InventorySnapshot:
        """The current snapshot. Before the first one (discovery waits for the plumber's
        claims) the asker is told so and asks again: answering with a scan made
        without them could hand the publisher a pool that lacks devices in pods."""
        with anyio.move_on_after(GET_WAIT):
            await self._first.wait()
        if self.snapshot is None:
            raise bus.NotReady("no inventory yet: waiting for the plumber's prepared claims")
        return self.snapshot

    async def _watch(self, sock) -> None:
        """Rescan on netlink events, except those only about claimed devices.

        The plumber moves a claimed device into its pod and back; the slices keep
        it as it was meanwhile (:meth:`_with_claimed`), so the events of a move
        change nothing published. Rescanning for them anyway dumped the whole
        node's links, addresses and routes every few moves of a 32-pod storm, and
        those dumps slowed the moves themselves by about a third.
        """
        while True:
            await anyio.wait_readable(sock)
            ev = rtnl.drain_events(sock)
            if ev.overflow:
                NETLINK_OVERFLOWS.inc()
                log.warning("netlink event queue overflowed; rescanning")
                self._touched = None
            elif not ev.count:
                continue
            if self._touched is not None:
                self._touched |= ev.links
            NETLINK_EVENTS.inc(ev.count)
            if ev.links and not (ev.overflow or ev.unplaced) and (
                    ev.links <= self._links_of_claimed()):
                NETLINK_SKIPPED.inc(ev.count)
                continue
            self._poke()

    def _poke(self) -> None:
        """Something changed: rescan soon (bursts coalesce)."""
        now = time.time()
        if not self._dirty.is_set():
            self._first_event = now
            self._dirty.set()
        self._last_event = now

    async def _rescan_loop(self) -> None:
        t = self.tuning
        while True:
            wait = t.resync
            if self._retry_at:  # devices are held: ask the plumber again soon
                wait = max(0.0, min(wait, self._retry_at - time.monotonic()))
            with anyio.move_on_after(wait):
                await self._dirty.wait()
            retry, self._retry_at = bool(self._retry_at), 0.0
            first = self._first_event if self._dirty.is_set() else 0.0
            if first:
                # coalesce the burst: wait for quiet, bounded by max_delay
                while True:
                    now = time.time()
                    quiet_left = self._last_event + t.quiet - now
                    cap_left = first + t.max_delay - now
                    wait = min(quiet_left, cap_left)
                    if wait <= 0:
                        break
                    await anyio.sleep(wait)
            self._dirty = anyio.Event()
            await self.rescan(trigger_at=first, fresh=not first and not retry, events=True)

    async def rescan(self, trigger_at: float, fresh: bool = False, events: bool = False) -> None:
        """Scan; publish a snapshot if the devices changed. ``fresh`` (the periodic
        resync) also rereads sysfs and asks the plumber again, in case a claim event
        was lost. ``events``: only the interfaces events named may have new eBPF
        programs (else every interface's are read)."""
        async with self._scan_lock:
            touched, self._touched = self._touched, set()
            try:
                devices = await anyio.to_thread.run_sync(
                    self.scanner.collect, fresh, touched if events else None)
            except OSError as exc:
                log.error("rescan failed, keeping the last inventory: %s", exc)
                self._touched = None  # what the events named was not read: read all
                return
            if self.cloud is not None:
                devices = await self.cloud.decorate(devices, fresh)
            devices = self.scanner.select(devices)
            self._scanned = devices
            devices = await self._with_claimed(devices, ask=fresh)
            old = self.snapshot
            if old is not None and old.devices == devices:
                return
            self.seq += 1
            self.snapshot = InventorySnapshot(
                node=self.node, epoch=self.epoch, seq=self.seq, devices=devices,
                taken_at=time.time(), trigger_at=trigger_at)
            DEVICES.set(len(devices))
            SNAPSHOTS.inc()
            self._first.set()
            await self.nc.publish(self.subjects.inventory_snapshot, encode(self.snapshot))
            await self._announce(old.devices if old else [], devices)

    def _links_of_claimed(self) -> set[int]:
        """Interface indexes of claimed devices, as the last scan saw them."""
        pinned = self.claimed.pinned()
        if not pinned:
            return set()
        key = f"{self.scanner.driver}/ifName"
        names = {d.attributes.get(key) for d in self._scanned if d.name in pinned}
        return {link.index for link in self.scanner.links if link.name in names}

    def _last_published(self, name: str) -> Device | None:
        if self.snapshot is not None:
            for dev in self.snapshot.devices:
                if dev.name == name:
                    return dev
        return None

    async def _with_claimed(self, live: list[Device], ask: bool = False) -> list[Device]:
        """The devices to publish: ``live`` with every claimed device as it was frozen
        (home or in a pod); and any other device the last snapshot had, gone now, kept
        until the plumber says no claim holds it. The plumber is asked after the scan
        (what it says then covers every move the scan saw) when a device vanished, or
        with ``ask`` (the periodic resync, in case a claim event was lost)."""
        by_name = {d.name: d for d in live}
        last = {d.name: d for d in self.snapshot.devices} if self.snapshot else {}
        vanished = last.keys() - by_name.keys() - self.claimed.pinned()
        held: set[str] = set()
        answered = await self.claimed.refresh() if vanished or ask else True
        if vanished and not answered:
            held = vanished - self.claimed.pinned()
            log.warning("the plumber does not answer: keeping %s published until it says "
                        "whether a claim holds %s", ", ".join(sorted(held)),
                        "it" if len(held) == 1 else "them")
            self._retry_at = time.monotonic() + HOLD_RETRY
        HELD.set(len(held))
        for name in held:
            by_name[name] = last[name]
        for name in self.claimed.pinned():
            dev = self.claimed.frozen(name, by_name.get(name) or last.get(name))
            if dev is not None:
                by_name[name] = dev
        return [by_name[name] for name in sorted(by_name)]

    async def _announce(self, before: list[Device], after: list[Device]) -> None:
        old = {d.name: d for d in before}
        new = {d.name: d for d in after}
        for name, dev in new.items():
            kind = "added" if name not in old else "changed" if old[name] != dev else None
            if kind:
                await self._event(kind, dev)
        for name in old.keys() - new.keys():
            await self._event("removed", old[name])

    async def _event(self, kind: str, dev: Device) -> None:
        msg = DeviceEvent(node=self.node, device=dev.name, kind=kind, attributes=dev.attributes)
        await self.nc.publish(self.subjects.event(f"device.{kind}"), encode(msg))


async def serve(nc: Client, common: Common, scanner: Scanner, *, netns: str | None = None,
                tuning: Tuning | None = None, cloud: CloudAttributes | None = None,
                task_status: TaskStatus[Discovery] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run discovery on ``nc`` until cancelled (services.common.wiring's shape)."""
    await Discovery(nc, common.node, scanner, netns, tuning, cloud).run(
        task_status=task_status)
