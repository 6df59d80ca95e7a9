"""sysfs facts are reused across rescans until a new link appears."""

from __future__ import annotations

from services.discovery.service import HardwareCache
from services.kernel.links import LinkInfo
from services.kernel.sysfs import Sysfs
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
    cache.refresh(links)  # both new: read once each
    first = [cache.netdev(x.name) for x in links]
    assert sysfs.reads == 2
    cache.refresh(links[:1])  # b left (moved into a pod): nothing new, all cached
    assert [cache.netdev(x.name) for x in links] == first and sysfs.reads == 2
    cache.refresh([*links, link(3, "c")])  # b came back and c is new: only they are read
    cache.netdev("a")
    assert sysfs.reads == 4
    cache.refresh([*links, link(3, "c")], force=True)  # the resync rereads everything
    cache.netdev("a")
    assert sysfs.reads == 5


def test_a_new_vf_drops_the_whole_cache(tmp_path):
    sriov_nic(tmp_path)
    sysfs = CountingSysfs(tmp_path)
    cache = HardwareCache(sysfs)
    pf = next(n for n in (tmp_path / "class" / "net").iterdir()
              if (sysfs.netdev(n.name) or None) and sysfs.netdev(n.name).pci
              and not sysfs.netdev(n.name).pci.is_vf)
    vf = next(n for n in (tmp_path / "class" / "net").iterdir()
              if sysfs.netdev(n.name).pci and sysfs.netdev(n.name).pci.is_vf)
    cache.refresh([link(1, pf.name)])
    before = sysfs.reads
    cache.netdev(pf.name)
    assert sysfs.reads == before  # cached
    cache.refresh([link(1, pf.name), link(2, vf.name)])  # a VF appears: the PF is reread
    cache.netdev(pf.name)
    assert sysfs.reads == before + 2
