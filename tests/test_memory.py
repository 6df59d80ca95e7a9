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


def test_one_arena_keeps_every_thread_in_the_main_arena() -> None:
    """A fresh process: after one_arena(), threads that allocate add no arena (each
    would otherwise map a heap of its own, 64 MiB of address space)."""
    from tests.helpers.fresh import python

    code = ("import sys, threading\n"
            "from services.common import memory\n"
            "def heaps():  # an arena's heap: anonymous, aligned to its 64 MiB maximum\n"
            "    return sum(1 for line in open('/proc/self/maps') if len(line.split()) < 6"
            " and int(line.split('-')[0], 16) % (64 << 20) == 0)\n"
            "if sys.argv[1] == 'one': assert memory.one_arena()\n"
            "before = heaps()\n"
            "def work(): [bytearray(3000) for _ in range(2000)]\n"
            "ts = [threading.Thread(target=work) for _ in range(4)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "print(heaps() - before)\n")
    many, one = python(code, "many"), python(code, "one")
    assert int(many) > 0 and int(one) == 0, (many, one)


def test_every_service_gives_back_what_starting_freed() -> None:
    """Each service's run() calls Wired.started() once its serve() answers."""
    import ast

    root = Path(__file__).resolve().parents[1] / "services"
    for service in ("discovery", "publisher", "plumber", "kubelet_gateway"):
        tree = ast.parse((root / service / "__init__.py").read_text())
        run = next(n for n in ast.walk(tree)
                   if isinstance(n, ast.AsyncFunctionDef) and n.name == "run")
        calls = [n for n in ast.walk(run) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "started"]
        assert len(calls) == 1, service
