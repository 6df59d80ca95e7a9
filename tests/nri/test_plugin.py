"""knd's NRI plugin against the runtime stand-in, over a real unix socket."""

from __future__ import annotations

import functools
import struct
import time

import anyio
import pytest
from prometheus_client import REGISTRY

from kndpeers.nri_runtime import NETNS, FakeRuntime, container, pod
from schemas.plumber import LinuxDevice
from services.kubelet_gateway.nri import NriPlugin, RegistrationError, run_nri
from services.kubelet_gateway.nri.mux import PLUGIN_CONN
from services.kubelet_gateway.nri.plugin import PLUGIN_SERVICE, event_mask
from services.kubelet_gateway.nri.ttrpc import HEADER as TTRPC_HEADER
from services.kubelet_gateway.nri.ttrpc import Code, MsgType, TtrpcError
from services.kubelet_gateway.pb import nri_pb2 as api
from services.kubelet_gateway.pb import ttrpc_pb2
from tests.nri.helpers import FAST, FakeHandler, nri_setup, wait_for

pytestmark = pytest.mark.anyio


# -- registration -------------------------------------------------------------------------


async def test_registers_with_name_and_two_digit_index(sock):
    async with nri_setup(sock, FakeHandler(), handshake=False) as (rt, conn, plugin):
        assert conn.registration.plugin_name == "knd"
        assert conn.registration.plugin_idx == "10"
        assert [r.plugin_name for r in rt.registrations] == ["knd"]
        assert plugin.registrations == 1 and plugin.connected


async def test_custom_name_and_index(sock):
    async with nri_setup(sock, FakeHandler(), plugin_name="knd-x", plugin_idx="07",
                         handshake=False) as (_, conn, _p):
        assert (conn.registration.plugin_name, conn.registration.plugin_idx) == ("knd-x", "07")


@pytest.mark.parametrize("idx", ["1", "100", "1a", "", " 10", "10\n", "\u0661\u0662", 10])
async def test_invalid_index_is_rejected_before_connecting(sock, idx):
    with anyio.fail_after(1), pytest.raises(ValueError, match="two digits"):
        await run_nri(socket_path=sock, handler=FakeHandler(), plugin_idx=idx)


async def test_refused_registration_without_reconnect_raises(sock):
    # bypass the plugin's own validation to see the runtime's refusal come back
    plugin = NriPlugin(socket_path=sock, handler=FakeHandler(), **FAST)
    plugin.plugin_idx = "7"
    async with FakeRuntime(sock) as rt:
        with pytest.raises(RegistrationError, match=r"INVALID_ARGUMENT.*two digits"):
            await plugin.run(reconnect=False)
        assert rt.refusals and not rt.registrations


# -- Configure / Synchronize --------------------------------------------------------------


async def test_configure_subscribes_to_pod_events_and_create_container(sock):
    async with nri_setup(sock, FakeHandler(), handshake=False) as (_, conn, plugin):
        resp = await conn.configure(request_timeout_ms=1500)
        # bit (event - 1): RUN 1, STOP 2, REMOVE 3, CREATE_CONTAINER 4 -> 0b1111
        assert resp.events == 0b1111 == event_mask()
        assert plugin.runtime == ("fake-runtime", "v0.0.1")
        assert plugin.request_timeout == 1.5


async def test_chunked_synchronize_reconciles_at_the_last_chunk(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler, handshake=False) as (_, conn, _p):
        await conn.configure()
        pods = [pod(uid=f"u{i}", name=f"p{i}") for i in range(5)]
        replies = await conn.synchronize(pods, [container("c", pods[0])], chunks=2)
        assert [r.more for r in replies] == [True, False]
        assert len(handler.synced) == 1
        assert sorted(p.uid for p in handler.synced[0]) == [f"u{i}" for i in range(5)]
        assert all(p.netns == NETNS for p in handler.synced[0])
        # pods already present are not attached again
        assert handler.called("run_pod") == []


async def test_synchronize_failure_does_not_fail_the_runtime(sock):
    handler = FakeHandler(fail={"sync": "plumber away"})
    async with nri_setup(sock, handler, handshake=False) as (_, conn, _p):
        replies = await conn.synchronize([pod()])
        assert [r.more for r in replies] == [False]
        assert len(handler.synced) == 1


# -- pod events ---------------------------------------------------------------------------


async def test_run_pod_sandbox_passes_the_netns_path(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (_, conn, _p):
        await conn.run_pod_sandbox(pod(uid="u1", name="web", namespace="ns1"))
        [info] = handler.called("run_pod")
        assert (info.uid, info.name, info.namespace) == ("u1", "web", "ns1")
        assert info.sandbox_id == "sb-u1"
        assert info.netns == NETNS
        assert info.labels == {"app": "web"} and info.ips == ("10.0.0.7",)


async def test_handler_error_reaches_the_runtime(sock):
    handler = FakeHandler(fail={"run_pod": "eth7 is gone"})
    async with nri_setup(sock, handler) as (_, conn, _p):
        with pytest.raises(TtrpcError) as err:
            await conn.run_pod_sandbox(pod())
        assert err.value.code == Code.INTERNAL
        assert "eth7 is gone" in err.value.message


@pytest.mark.parametrize("netns", ["", None])
async def test_host_network_pod_with_claims_is_refused(sock, netns):
    handler = FakeHandler(claims={"uid-1"})
    async with nri_setup(sock, handler) as (_, conn, _p):
        with pytest.raises(TtrpcError) as err:
            await conn.run_pod_sandbox(pod(netns=netns))
        assert err.value.code == Code.FAILED_PRECONDITION
        assert "host network" in err.value.message and "default/pod-a" in err.value.message
        assert handler.called("run_pod") == []


async def test_host_network_pod_without_claims_is_left_alone(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (_, conn, _p):
        await conn.run_pod_sandbox(pod(netns=""))
        assert len(handler.called("has_claims")) == 1
        assert handler.called("run_pod") == []


async def test_slow_handler_is_an_error_well_inside_the_request_timeout(sock):
    handler = FakeHandler(delay={"run_pod": 30, "stop_pod": 30})
    async with nri_setup(sock, handler, handshake=False) as (_, conn, plugin):
        await conn.handshake(request_timeout_ms=500)
        for call in (conn.run_pod_sandbox, conn.stop_pod_sandbox):
            start = time.monotonic()
            with pytest.raises(TtrpcError) as err:
                await call(pod())
            took = time.monotonic() - start
            assert err.value.code == Code.DEADLINE_EXCEEDED
            assert took < 0.5, (call, took)
        # RunPodSandbox: the request's time less 0.2 s; the others 3/4 of it at most
        assert plugin.attach_budget == pytest.approx(0.3) and plugin.budget == 0.3
        assert handler.budgets[0] < plugin.attach_budget


async def test_default_budget_is_inside_the_runtime_timeout(sock):
    plugin = NriPlugin(socket_path=sock, handler=FakeHandler())
    assert plugin.budget == 1.5 < 2.0
    plugin.request_timeout = 1.0  # a runtime configured with a shorter request timeout
    assert plugin.budget == 0.75
    assert plugin.attach_budget == pytest.approx(0.8)


async def test_slow_request_does_not_block_others(sock):
    handler = FakeHandler(delay={"run_pod": 0.25})
    async with nri_setup(sock, handler, handler_timeout=1.0) as (_, conn, _p):
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run_pod_sandbox, pod(uid="slow"))
            await wait_for(lambda: handler.called("run_pod"))
            start = time.monotonic()
            await conn.stop_pod_sandbox(pod(uid="other"))
            assert time.monotonic() - start < 0.2
            assert len(handler.called("run_pod")) == 1  # still running


async def test_stop_and_remove(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (_, conn, _p):
        await conn.stop_pod_sandbox(pod(uid="u1"))
        await conn.remove_pod_sandbox(pod(uid="u1"))
        assert [(n, a.uid) for n, a in handler.calls if n != "sync"] == [
            ("stop_pod", "u1"), ("remove_pod", "u1")]
        assert handler.called("remove_pod")[0].netns == NETNS


async def test_create_container_returns_the_devices_adjustment(sock):
    handler = FakeHandler(devices=[
        LinuxDevice(path="/dev/infiniband/uverbs0", type="c", major=231, minor=192,
                    file_mode=0o600),
        LinuxDevice(path="/dev/infiniband/rdma_cm", major=10, minor=58)])
    async with nri_setup(sock, handler) as (_, conn, _p):
        sb = pod()
        resp = await conn.create_container(sb, container("trainer", sb))
        devs = [(d.path, d.type, d.major, d.minor, d.file_mode.value)
                for d in resp.adjust.linux.devices]
        assert devs == [("/dev/infiniband/uverbs0", "c", 231, 192, 0o600),
                        ("/dev/infiniband/rdma_cm", "c", 10, 58, 0o666)]
        [(info, name)] = handler.called("create_container")
        assert (info.uid, name) == ("uid-1", "trainer")


async def test_create_container_without_devices_adjusts_nothing(sock):
    async with nri_setup(sock, FakeHandler()) as (_, conn, _p):
        resp = await conn.create_container(pod(), container())
        assert not resp.HasField("adjust")


async def test_state_change_events_map_to_the_same_handlers(sock):
    handler = FakeHandler(claims={"host"})
    async with nri_setup(sock, handler) as (_, conn, _p):
        await conn.state_change(api.RUN_POD_SANDBOX, pod(uid="a"))
        await conn.state_change(api.STOP_POD_SANDBOX, pod(uid="a"))
        await conn.state_change(api.REMOVE_POD_SANDBOX, pod(uid="a"))
        await conn.state_change(api.CREATE_CONTAINER, pod(uid="a"), container())
        await conn.state_change(7, pod(uid="a"))  # an event knd does not know
        with pytest.raises(TtrpcError) as err:
            await conn.state_change(api.RUN_POD_SANDBOX, pod(uid="host", netns=""))
        assert err.value.code == Code.FAILED_PRECONDITION
        assert [(n, a.uid) for n, a in handler.calls if n != "sync"] == [
            ("run_pod", "a"), ("stop_pod", "a"), ("remove_pod", "a"), ("has_claims", "host")]
        assert handler.called("run_pod")[0].netns == NETNS


async def test_shutdown_is_answered(sock):
    async with nri_setup(sock, FakeHandler()) as (_, conn, _p):
        assert await conn.shutdown() == api.Empty()


# -- errors and garbage -------------------------------------------------------------------


@pytest.mark.parametrize("service,method", [
    (PLUGIN_SERVICE, "UpdateContainer"),
    (PLUGIN_SERVICE, "PostStartContainer"),
    ("nri.pkg.api.v1alpha1.Nope", "Configure"),
    ("", ""),
])
async def test_unknown_method_is_unimplemented(sock, service, method):
    async with nri_setup(sock, FakeHandler()) as (_, conn, _p):
        with pytest.raises(TtrpcError) as err:
            await conn.call(method, api.Empty(), api.Empty, service=service)
        assert err.value.code == Code.UNIMPLEMENTED == 12
        await conn.run_pod_sandbox(pod())  # still serving


async def test_corrupt_payloads_get_an_error_status(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (_, conn, _p):
        # a well-formed ttrpc request whose RunPodSandboxRequest cannot be decoded
        bad = b"\x0a\xff\xff\xff\xff\x0f"
        with pytest.raises(TtrpcError) as err:
            await conn.client.call_raw(PLUGIN_SERVICE, "RunPodSandbox", bad, deadline=1)
        assert err.value.code == Code.INVALID_ARGUMENT
        # the ttrpc.Request envelope itself is garbage
        resp = await conn.exchange(b"\x12\x05ab")
        assert resp.status.code == Code.INVALID_ARGUMENT
        assert "cannot decode request" in resp.status.message
        assert handler.called("run_pod") == []
        await conn.run_pod_sandbox(pod())
        assert len(handler.called("run_pod")) == 1
        assert len(conn.mux.conns) == 2 and not conn.closed.is_set()


async def test_unknown_conn_id_is_skipped(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (rt, conn, plugin):
        await conn.send_frame(9, b"\x00" * 100)
        await conn.send_frame(0, b"hello")
        await conn.run_pod_sandbox(pod())
        assert len(handler.called("run_pod")) == 1
        assert plugin.registrations == 1 and len(rt.registrations) == 1


async def test_oversized_ttrpc_message_is_refused_and_the_conn_goes_on(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (_, conn, plugin):
        size = 4 * 1024 * 1024 + 1
        # stream id 1001 is far above what the runtime's client has used so far
        await conn.send_frame(PLUGIN_CONN, TTRPC_HEADER.pack(size, 1001, MsgType.REQUEST, 0))
        for _ in range(5):
            await conn.send_frame(PLUGIN_CONN, b"\x00" * ((size + 4) // 5))
        await conn.run_pod_sandbox(pod())
        assert len(handler.called("run_pod")) == 1
        assert plugin.registrations == 1


@pytest.mark.parametrize("garbage", [
    struct.pack(">II", PLUGIN_CONN, 0xFFFFFFF0),            # absurd mux frame length
    struct.pack(">II", PLUGIN_CONN, 0x7FFFFFFF) + b"x" * 64,
    struct.pack(">II", PLUGIN_CONN, 10) + TTRPC_HEADER.pack(0xFFFFFFFF, 1, 1, 0),
])
async def test_broken_framing_drops_the_connection_and_reconnects(sock, garbage):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (rt, conn, plugin):
        await conn.send_raw(garbage)
        with anyio.fail_after(2):
            await conn.closed.wait()  # the plugin hung up
        again = await rt.next_plugin()
        await again.handshake()
        await again.run_pod_sandbox(pod())
        await wait_for(lambda: plugin.registrations == 2)
        assert len(rt.registrations) == 2
        assert len(handler.called("run_pod")) == 1


async def test_peer_closing_inside_a_frame(sock):
    async with nri_setup(sock, FakeHandler()) as (rt, conn, plugin):
        await conn.send_raw(struct.pack(">II", PLUGIN_CONN, 100) + b"abc")
        await conn.close()
        again = await rt.next_plugin()
        assert again.registration.plugin_name == "knd"
        await wait_for(lambda: plugin.registrations == 2)


# -- restarts and shutdown ----------------------------------------------------------------


async def test_runtime_restart_makes_the_plugin_register_again(sock):
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (rt, first, plugin):
        await rt.restart()
        assert first.closed.is_set()
        conn2 = await rt.next_plugin()
        assert conn2.registration.plugin_idx == "10"
        assert await conn2.handshake() is not None
        await conn2.run_pod_sandbox(pod(uid="after"))
        assert [p.uid for p in handler.called("run_pod")] == ["after"]
        await wait_for(lambda: plugin.registrations == 2)
        assert len(handler.synced) == 2


async def test_plugin_waits_for_a_runtime_that_is_not_there_yet(sock):
    async with anyio.create_task_group() as tg:
        plugin = await tg.start(functools.partial(run_nri, socket_path=sock,
                                                  handler=FakeHandler(), **FAST))
        await wait_for(lambda: plugin.last_error)  # it tried, and failed to connect
        assert plugin.registrations == 0
        async with FakeRuntime(sock) as rt:
            conn = await rt.next_plugin()
            assert conn.registration.plugin_name == "knd"
        tg.cancel_scope.cancel()


async def test_without_reconnect_a_missing_socket_raises(sock):
    with pytest.raises(OSError):
        await run_nri(socket_path=sock, handler=FakeHandler(), reconnect=False)


async def test_without_reconnect_the_plugin_returns_when_the_runtime_leaves(sock):
    async with FakeRuntime(sock) as rt, anyio.create_task_group() as tg:
        done = anyio.Event()
        plugin = NriPlugin(socket_path=sock, handler=FakeHandler(), **FAST)

        async def run() -> None:
            await plugin.run(reconnect=False)
            done.set()

        tg.start_soon(run)
        conn = await rt.next_plugin()
        await wait_for(lambda: plugin.connected)
        await conn.close()
        with anyio.fail_after(2):
            await done.wait()


async def test_cancellation_closes_the_connection(sock):
    async with FakeRuntime(sock) as rt:
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(run_nri, socket_path=sock,
                                             handler=FakeHandler(), **FAST))
            conn = await rt.next_plugin()
            tg.cancel_scope.cancel()
        with anyio.fail_after(1):
            await conn.closed.wait()
        assert rt.connections == 1


# -- metrics ------------------------------------------------------------------------------


def _count(method: str, status: str) -> float:
    return REGISTRY.get_sample_value("knd_nri_requests_total",
                                     {"method": method, "status": status}) or 0.0


async def test_requests_are_counted_by_method_and_status(sock):
    ok0, fail0 = _count("RunPodSandbox", "OK"), _count("RunPodSandbox", "INTERNAL")
    unknown0 = _count("unknown", "UNIMPLEMENTED")
    handler = FakeHandler()
    async with nri_setup(sock, handler) as (_, conn, _p):
        await conn.run_pod_sandbox(pod())
        handler.fail["run_pod"] = "boom"
        with pytest.raises(TtrpcError):
            await conn.run_pod_sandbox(pod())
        with pytest.raises(TtrpcError):
            await conn.call("NoSuchMethod", api.Empty(), api.Empty)
    assert _count("RunPodSandbox", "OK") == ok0 + 1
    assert _count("RunPodSandbox", "INTERNAL") == fail0 + 1
    assert _count("unknown", "UNIMPLEMENTED") == unknown0 + 1
    assert REGISTRY.get_sample_value("knd_nri_request_seconds_count",
                                     {"method": "RunPodSandbox", "status": "OK"}) >= 1


def test_ttrpc_response_has_google_rpc_status_shape():
    # google.rpc.Status: code = 1 (int32), message = 2, details = 3
    resp = ttrpc_pb2.Response(payload=b"x")
    resp.status.code = 12
    resp.status.message = "no"
    assert resp.SerializeToString() == b"\x0a\x06\x08\x0c\x12\x02no\x12\x01x"
