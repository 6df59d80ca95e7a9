"""Shared helper for the topology tests: a reader that never sees this machine's pci.ids."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from services.kernel.sysfs import Sysfs
from services.topology import affinity, pci
from services.topology.affinity import Affinity


@pytest.fixture
def analyse(tmp_path: Path) -> Callable[..., Affinity]:
    """``analyse(tree_root, include_vfs=..., gpu_vendors=...) -> Affinity``."""
    def run(root: Path, *, include_vfs: bool = False,
            gpu_vendors: Collection[str] | None = None) -> Affinity:
        sysfs = Sysfs(root, pci_ids=tmp_path / "absent-pci.ids")
        return affinity.compute(pci.read_tree(sysfs, include_vfs=include_vfs,
                                              gpu_vendors=gpu_vendors))
    return run
