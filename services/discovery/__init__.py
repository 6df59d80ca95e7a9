"""discovery: the node's network devices and their hardware topology, as an inventory.

``knd discovery``'s entry point (its flags are in services.common.settings); the work
is in service.py.
"""

from __future__ import annotations

import argparse
import functools

import anyio

from services import providers


def once(args: argparse.Namespace) -> int:
    """``knd discovery --once``: what discovery sees, for a person or a bug report."""
    import msgspec

    from services.discovery.filter import device_filter, shared_filter
    from services.discovery.service import Scanner
    from services.kernel.sysfs import Sysfs

    scanner = Scanner(args.driver_name, Sysfs(args.sysfs_root),
                      device_filter(args.filter, args.driver_name), args.netns,
                      shared_filter(args.shared_devices))
    try:
        devices = scanner.scan(fresh=True)
    finally:
        scanner.close()
    # the node's own uplinks are never published; a reader of the report should see why
    uplinks = sorted(link.name for link in scanner.links if link.index in scanner.excluded)
    doc = {"node": args.node, "driver": args.driver_name, "uplinks": uplinks,
           "devices": devices}
    print(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode())
    return 0


async def run(args: argparse.Namespace) -> None:
    """``knd discovery``: ready (``/readyz``) once on the bus with a first snapshot."""
    from services.common.wiring import on_the_bus
    from services.discovery.cloud import CloudAttributes
    from services.discovery.filter import device_filter, shared_filter
    from services.discovery.service import Scanner, Tuning, serve
    from services.kernel.sysfs import Sysfs
    from services.providers.choose import providers_open

    async with on_the_bus(args, "discovery", "discovery", requires=("inventory",)) as on, \
            providers_open(providers.Settings.from_args(args)) as found, \
            anyio.create_task_group() as tg:
        common = on.common
        cloud = CloudAttributes(found.cloud, common.driver_name) if found.cloud else None
        chosen = device_filter(args.filter, common.driver_name)
        # its netlink socket is made by a thread that enters the netns: not on the loop
        scanner = await anyio.to_thread.run_sync(
            Scanner, common.driver_name, Sysfs(args.sysfs_root), chosen, args.netns,
            shared_filter(args.shared_devices))
        discovery = await tg.start(functools.partial(
            serve, on.nc, common, scanner, netns=args.netns,
            tuning=Tuning(resync=args.rescan_interval), cloud=cloud))
        on.health.check("inventory", lambda: discovery.snapshot is not None)
        on.health.info("devices", lambda: len(discovery.snapshot.devices)
                       if discovery.snapshot else 0)
        await on.started()
