"""DRANET's python_webhook.bats against knd: a webhook of both kinds on the node
(``--cloud-provider-hint=webhook --profile-provider=webhook --webhook-url=...``),
its attribute published and selected on, its device config and profile applied."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kndpeers.nri_runtime import FakeRuntime
from tests.e2e.dranet.cluster import DRIVER, Cluster
from tests.helpers.netns import NetNS
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

PORT = 8081


@pytest.fixture
def webhook(node_ns: NetNS) -> Iterator[subprocess.Popen]:
    """The python webhook daemonset: listening on the node's 127.0.0.1:8081."""
    proc = subprocess.Popen(node_ns.exec_argv([sys.executable, str(
        Path(__file__).with_name("python_webhook.py")), str(PORT)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: f":{PORT} " in subprocess.run(
            node_ns.exec_argv(["ss", "-ltn"]), capture_output=True, text=True).stdout or None,
            10, "the webhook listening")
        yield proc
    finally:
        proc.kill()
        proc.communicate()  # reaps it and closes its stderr pipe


@pytest.fixture
async def cluster(node_ns: NetNS, short_dir: Path, webhook) -> AsyncIterator[Cluster]:
    state = short_dir / "state"
    (state / "nri").mkdir(parents=True, exist_ok=True)
    async with FakeRuntime(state / "nri" / "nri.sock") as runtime:
        c = Cluster(node_ns, state, runtime, extra=(
            "--cloud-provider-hint=webhook", "--profile-provider=webhook",
            f"--webhook-url=http://127.0.0.1:{PORT}"))
        try:
            await c.start()
            yield c
        finally:
            await c.close()


async def test_python_webhook_configuration_integration(cluster: Cluster):
    cluster.dummy("dummy1")
    await cluster.apply("deviceclass")
    attr = await cluster.until(lambda: cluster.devices().get("dummy1", {}).get(
        "attributes", {}).get(f"{DRIVER}/webhook_attr"), 30, "the webhook's attribute")
    assert attr == {"string": "python"}
    await cluster.apply("python_webhook_pod")
    assert "10.200.200.200" in cluster.exec("pod-python-webhook", "ip", "-4", "addr",
                                            "show").stdout
    assert "mtu 1450" in cluster.exec("pod-python-webhook", "ip", "link", "show",
                                      "dummy1").stdout
