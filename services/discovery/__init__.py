"""discovery: the node's network devices and their hardware topology, as an inventory.

``knd discovery``'s entry point (its flags are in services.common.settings); the work
is in service.py.
"""

from __future__ import annotations

import argparse

from services import providers


def once(args: argparse.Namespace) -> int:
    """``knd discovery --once``: what discovery sees, for a person or a bug report."""
    import msgspec

    from services.discovery.filter import DeviceFilter, default_expression
    from services.discovery.service import Scanner
    from services.kernel.sysfs import Sysfs

    device_filter = DeviceFilter(args.filter or default_expression(args.driver_name))
    scanner = Scanner(args.driver_name, Sysfs(args.sysfs_root), device_filter, args.netns)
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
    from services.common import auth, bus
    from services.common.config import Common
    from services.common.httpserver import Health, serving
    from services.discovery.cloud import CloudAttributes
    from services.discovery.filter import DeviceFilter, default_expression
    from services.discovery.service import Discovery, Scanner, Tuning
    from services.kernel.sysfs import Sysfs
    from services.providers.choose import open_providers

    common = Common.from_args(args)
    health = Health("discovery", requires=("bus", "inventory"))
    async with serving(args.metrics_address, health):
        found = await open_providers(providers.Settings.from_args(args))
        cloud = CloudAttributes(found.cloud, common.driver_name) if found.cloud else None
        device_filter = DeviceFilter(args.filter or default_expression(common.driver_name))
        scanner = Scanner(common.driver_name, Sysfs(args.sysfs_root), device_filter, args.netns)
        nc = await bus.connect(auth.load(common.bus_creds), "discovery")
        health.check("bus", lambda: nc.is_connected)
        try:
            discovery = Discovery(nc, common.node, scanner, args.netns,
                                  Tuning(resync=args.rescan_interval), cloud=cloud)
            health.check("inventory", lambda: discovery.snapshot is not None)
            health.info("devices", lambda: len(discovery.snapshot.devices)
                        if discovery.snapshot else 0)
            await discovery.run()
        finally:
            await bus.close(nc)
            await found.aclose()
