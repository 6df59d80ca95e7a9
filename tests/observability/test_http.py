"""Each service's /metrics, /healthz and /readyz, served from its own thread."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import anyio
import pytest

from schemas.base import encode
from schemas.inventory import Device, InventorySnapshot
from schemas.publisher import StatusGet
from schemas.subjects import Subjects
from services import discovery, publisher
from services.cli import SERVICES, build_parser
from services.common import bus as busmod
from services.common.httpserver import Health, parse_address, serving
from services.common.natsd import free_port
from services.supervisor import child_env
from tests.conftest import NODE
from tests.helpers.netns import NetNS
from tests.helpers.plumber import StatusOnlyPlumber
from tests.observability.conftest import get, poll

pytestmark = pytest.mark.anyio


def readyz(base: str) -> tuple[int, dict]:
    code, body = get(f"{base}/readyz")
    return code, (json.loads(body) if code else {})


def test_addresses() -> None:
    assert parse_address("127.0.0.1:9501") == ("127.0.0.1", 9501)
    assert parse_address(":9502") == ("", 9502)
    assert parse_address("[::1]:9503") == ("::1", 9503)
    assert parse_address("0.0.0.0", 9504) == ("0.0.0.0", 9504)
    assert parse_address("off") is None and parse_address("") is None
    with pytest.raises(ValueError, match="port"):
        parse_address("host:http")


def test_each_service_has_its_own_default_and_knd_up_spreads_them(monkeypatch) -> None:
    monkeypatch.delenv("KND_METRICS_ADDRESS", raising=False)
    parse = build_parser().parse_args
    own = {name: parse([name]).metrics_address for name in SERVICES}
    assert own == {"discovery": "127.0.0.1:9501", "publisher": "127.0.0.1:9502",
                   "plumber": "127.0.0.1:9503", "kubelet-gateway": "127.0.0.1:9504"}

    def children(*argv: str) -> dict[str, str]:
        args = build_parser().parse_args(["up", *argv])  # defaults read the environment
        return {n: child_env(args, Path("/c"), n)["KND_METRICS_ADDRESS"] for n in SERVICES}

    assert children() == own
    # one KND_METRICS_ADDRESS in knd up's environment is a base, never passed on as is
    monkeypatch.setenv("KND_METRICS_ADDRESS", "0.0.0.0:9600")
    assert children() == {"discovery": "0.0.0.0:9600", "publisher": "0.0.0.0:9601",
                          "plumber": "0.0.0.0:9602", "kubelet-gateway": "0.0.0.0:9603"}
    assert set(children("--metrics-address", "off").values()) == {"off"}


async def test_healthz_fails_while_the_event_loop_is_stuck() -> None:
    health = Health("t", requires=(), stale_after=0.3)
    async with serving("127.0.0.1:0", health) as ep:
        assert ep is not None
        base = f"http://{ep.address}"
        code, body = get(f"{base}/healthz")
        assert code == 200 and json.loads(body)["live"] is True
        time.sleep(0.6)  # noqa: ASYNC251 -- a stuck loop: no heartbeat; the thread answers
        code, body = get(f"{base}/healthz")
        assert code == 503 and json.loads(body)["live"] is False
        assert readyz(base)[0] == 503
        with anyio.fail_after(5):
            while get(f"{base}/healthz")[0] != 200:
                await anyio.sleep(0.05)
        assert get(f"{base}/nothing")[0] == 404
    assert get(f"{base}/healthz") == (0, b"")  # closed with the service


async def test_metrics_in_openmetrics_when_accepted_else_in_the_text_format() -> None:
    """Prometheus asks for OpenMetrics; curl and older scrapers get the text format."""
    import urllib.request

    from prometheus_client.metrics import Counter
    Counter("knd_bus_test_scrapes", "a counter of this test", ["service"]).labels("t").inc(3)
    async with serving("127.0.0.1:0", Health("t", requires=())) as ep:
        assert ep is not None

        def scrape(accept: str | None) -> tuple[str, str]:
            req = urllib.request.Request(f"http://{ep.address}/metrics",
                                         headers={"Accept": accept} if accept else {})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.headers["Content-Type"], resp.read().decode()

        prometheus = ("application/openmetrics-text;version=1.0.0,text/plain;"
                      "version=0.0.4;q=0.5,*/*;q=0.1")
        kind, om = await anyio.to_thread.run_sync(scrape, prometheus)
        assert kind.startswith("application/openmetrics-text; version=1.0.0")
        assert 'knd_bus_test_scrapes_total{service="t"} 3.0' in om
        assert om.endswith("# EOF\n") and "process_start_time_seconds" in om
        kind, text = await anyio.to_thread.run_sync(scrape, None)
        assert kind.startswith("text/plain; version=")
        assert 'knd_bus_test_scrapes_total{service="t"} 3.0' in text
        assert "# EOF" not in text and "process_start_time_seconds" in text


async def test_a_busy_port_or_off_does_not_stop_the_service(caplog) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with serving(f"127.0.0.1:{port}", Health("t")) as ep:
            assert ep is None
    assert any("cannot serve metrics" in r.getMessage() for r in caplog.records)
    async with serving("off", Health("t")) as ep:
        assert ep is None


async def test_publisher_is_ready_once_it_published(bus, bus_state: Path, tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = build_parser().parse_args([
        "publisher", "--standalone", "--node", NODE, "--state-dir", str(tmp_path),
        "--bus-creds", str(bus_state / "bus" / "creds.json"), "--pool-resync-interval", "0",
        "--metrics-address", f"127.0.0.1:{port}"])
    disc = await busmod.connect(bus, "discovery")
    admin = await busmod.connect(bus, "admin")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run, args)
            # on the bus, nothing published yet: live but not ready
            body = await anyio.to_thread.run_sync(lambda: poll(
                lambda: (r := readyz(base))[1].get("checks", {}).get("bus") and r[1],
                what="the publisher on the bus"))
            assert body["ready"] is False and body["checks"]["synced"] is False
            assert readyz(base)[0] == 503
            assert get(f"{base}/healthz")[0] == 200

            snap = InventorySnapshot(
                node=NODE, epoch=time.time_ns(), seq=1, taken_at=time.time(), devices=[
                    Device(name="ob-rdma", attributes={"knd.dev/ifName": "ob0",
                                                       "knd.dev/rdma": True}),
                    Device(name="ob-plain", attributes={"knd.dev/ifName": "ob1"})])
            await disc.publish(Subjects(NODE).inventory_snapshot, encode(snap))
            with anyio.fail_after(10):
                while readyz(base)[0] != 200:
                    await anyio.sleep(0.02)
            assert readyz(base)[1]["checks"] == {"bus": True, "synced": True}

            await admin.request(f"{Subjects(NODE).publisher_group}.status",
                                encode(StatusGet()), timeout=2)
            code, data = get(f"{base}/metrics")
            text = data.decode()
            assert code == 200
            assert "knd_publisher_published_devices 2.0" in text
            assert "knd_publisher_rdma_devices 1.0" in text
            assert "knd_publisher_last_publish_timestamp_seconds " in text
            assert ('knd_bus_request_duration_seconds_count{endpoint="status",'
                    'service="publisher",status="ok"}') in text
            # another service's metrics are not this endpoint's business
            assert "knd_discovery_" not in text and "knd_plumber_" not in text
            tg.cancel_scope.cancel()
    finally:
        await busmod.close(disc)
        await busmod.close(admin)


async def test_discovery_is_ready_with_its_first_snapshot(bus, bus_state: Path,
                                                          node_ns: NetNS, tmp_path: Path):
    node_ns.veth("ob-a", "ob-b")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = build_parser().parse_args([
        "discovery", "--node", NODE, "--state-dir", str(tmp_path),
        "--bus-creds", str(bus_state / "bus" / "creds.json"), "--netns", node_ns.name,
        "--sysfs-root", str(tmp_path / "sys"), "--filter", "true",
        "--metrics-address", f"127.0.0.1:{port}"])
    plumber = StatusOnlyPlumber(NODE)
    plumber.answering = False
    await plumber.start(bus)
    async with anyio.create_task_group() as tg:
        tg.start_soon(discovery.run, args)
        with anyio.fail_after(10):  # not ready while the plumber has not said which
            while plumber.asked < 2:  # devices are in pods: nothing published yet
                await anyio.sleep(0.02)
        code, body = readyz(base)
        assert code == 503 and body["checks"] == {"bus": True, "inventory": False}
        plumber.answering = True
        with anyio.fail_after(10):
            while readyz(base)[0] != 200:
                await anyio.sleep(0.02)
        body = readyz(base)[1]
        assert body["service"] == "discovery"
        assert body["checks"] == {"bus": True, "inventory": True}
        assert body["info"]["devices"] == 2
        text = get(f"{base}/metrics")[1].decode()
        assert "knd_discovery_devices 2.0" in text
        assert "knd_discovery_rescans_total" in text and "knd_publisher_" not in text
        tg.cancel_scope.cancel()
    await plumber.close()
