"""sysfs facts are reused across rescans until a new link appears."""

from __future__ import annotations

from services.discovery.model import LinkInfo
from services.discovery.service import HardwareCache
from services.discovery.sysfs import Sysfs
from tests.helpers.sysfs_tree import sriov_nic


class CountingSysfs(Sysfs):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.reads = 0

    def netdev(self, ifname):
        self.reads += 1
        return super().netdev(ifname)


def link(index: int, name: str) -> LinkInfo:
    return LinkInfo(index=index, name=name, kind="", mac="", mtu=1500, state="up", alias="",
                    encapsulation="ether")


def test_cache_until_a_new_link_or_a_forced_refresh(tmp_path):
    sriov_nic(tmp_path)
    sysfs = CountingSysfs(tmp_path)
    cache = HardwareCache(sysfs)
    links = [link(1, "a"), link(2, "b")]
    cache.refresh(links)
    first = [cache.netdev(x.name) for x in links]
    cache.refresh(links[:1])  # b left (moved into a pod): nothing new, all cached
    assert [cache.netdev(x.name) for x in links] == first and sysfs.reads == 2
    cache.refresh([*links, link(3, "c")])  # a new link (maybe a VF): reread everything
    cache.netdev("a")
    assert sysfs.reads == 3
    cache.refresh([*links, link(3, "c")], force=True)
    cache.netdev("a")
    assert sysfs.reads == 4
