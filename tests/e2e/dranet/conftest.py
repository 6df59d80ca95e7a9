"""The one-node cluster DRANET's scenarios run on (cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kndpeers.nri_runtime import FakeRuntime
from tests.e2e.dranet.cluster import Cluster
from tests.helpers.netns import NetNS


@pytest.fixture
async def cluster(node_ns: NetNS, short_dir: Path) -> AsyncIterator[Cluster]:
    state = short_dir / "state"
    (state / "nri").mkdir(parents=True, exist_ok=True)
    async with FakeRuntime(state / "nri" / "nri.sock") as runtime:
        c = Cluster(node_ns, state, runtime)
        try:
            await c.start()
            yield c
        finally:
            await c.close()
