"""Who may import whom: the kernel is read through services/kernel only, and the
stand-in peers (kndpeers) stay out of the services."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (lazy imports in functions too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def modules(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def offenders(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        bad = sorted(i for i in imports(path)
                     if any(i == f or i.startswith(f + ".") for f in forbidden))
        if bad:
            found[path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT)
                  else str(path)] = bad
    return found


def test_the_kernel_layer_depends_on_no_service() -> None:
    kernel = modules(SERVICES / "kernel")
    assert {p.stem for p in kernel} >= {"rtnl", "uplinks", "sysfs", "pciids", "netns", "bpf"}
    others = tuple(f"services.{p.name}" for p in SERVICES.iterdir()
                   if p.is_dir() and p.name not in ("kernel", "__pycache__"))
    assert "services.discovery" in others
    assert offenders(kernel, (*others, "kndpeers")) == {}


# discovery's own modules (its filter, its attributes) may be shared; its kernel
# readers were, and now live in services/kernel, where these services find them
@pytest.mark.parametrize("service", ["plumber", "topology", "tools", "publisher",
                                     "kubelet_gateway"])
def test_no_service_reads_the_kernel_through_discovery(service: str) -> None:
    assert offenders(modules(SERVICES / service), ("services.discovery",)) == {}


def test_only_the_demo_command_imports_the_stand_in_peers() -> None:
    assert not (SERVICES / "peers").exists()
    found = offenders(modules(SERVICES), ("kndpeers", "services.peers"))
    assert set(found) == {"services/demo.py"}, found


@pytest.mark.parametrize("service", ["discovery", "publisher", "plumber", "kubelet_gateway"])
def test_no_service_imports_the_allocation_explainer(service: str) -> None:
    """services/allocation is for `knd claim`: a service on every node never loads it."""
    assert offenders(modules(SERVICES / service), ("services.allocation",)) == {}


def test_the_check_can_tell(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from services.discovery import sysfs\n")
    assert offenders([bad], ("services.discovery",)) != {}
