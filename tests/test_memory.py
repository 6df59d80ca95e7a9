"""services.common.memory: freed heap pages go back to the system."""

from __future__ import annotations

import gc
from pathlib import Path

from services.common import memory


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_memory_is_given_back() -> None:
    # 40 MB in malloc'd chunks (over pymalloc's 512 bytes, under mmap's threshold), freed
    # with one small survivor in each stretch: glibc keeps the free pages unless trimmed
    chunks = [bytes(1000) + bytes([i % 256]) for i in range(40_000)]
    keep = chunks[::64]
    del chunks
    gc.collect()
    before = rss_kb()
    assert memory.give_back() is True
    assert rss_kb() < before - 10_000, (before, rss_kb())
    assert len(keep) == 625
