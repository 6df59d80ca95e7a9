"""The plumber with a webhook of the test's own: baseline (GetDeviceConfig) and profile
(GetProfileConfig) configs are merged into the claim's before anything is applied and
checked like a claim's; the profile is released at unprepare and when prepare fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from schemas.netconfig import InterfaceConfig, NetworkConfig
from services.providers import Settings
from services.providers.choose import Providers, open_providers
from tests.plumber.conftest import Env, netdev, uid
from tests.providers.servers import Server, serve

pytestmark = pytest.mark.anyio

MAC = "02:00:00:00:77:01"


def webhook(profile_answer: object = None, device_answer: object = None) -> dict:
    async def profile(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["config"].get("profile") == "deny":
            return web.Response(status=409, text="10.77.0.9 already in use")
        if body["config"].get("profile") == "slow":
            await anyio.sleep(1.5)
        return web.json_response(profile_answer if profile_answer is not None else
                                 {"interface": {"addresses": ["10.77.0.9/24"]},
                                  "routes": [{"destination": "10.78.0.0/16",
                                              "gateway": "10.77.0.1"}]})

    async def device(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("mac_address") != MAC:
            return web.json_response({})
        return web.json_response(device_answer if device_answer is not None else
                                 {"interface": {"mtu": 1450},
                                  "routes": [{"destination": "10.78.0.0/16",
                                              "gateway": "10.77.0.254"}]})

    return {("GET", "/health"): {"cloudProvider": True, "profileProvider": True},
            ("POST", "/GetDeviceConfig"): device, ("POST", "/GetProfileConfig"): profile,
            ("POST", "/ReleaseProfileConfig"): {}}


@asynccontextmanager
async def hooked(env: Env, tmp_path: Path, patience: float = 10.0, **answers: object
                 ) -> AsyncIterator[tuple[Server, Providers]]:
    async with serve(webhook(**answers), unix=tmp_path / "hook.sock") as hook:
        found = await open_providers(Settings(hint="webhook", profile="webhook",
                                              webhook_url=hook.url, webhook_timeout=patience))
        try:
            async with env.running(providers=found):
                yield hook, found
        finally:
            await found.aclose()


async def test_profile_and_baseline_are_applied_and_released(env: Env, tmp_path: Path) -> None:
    env.node.veth("pa0", "pb0")
    env.node.ip("link", "set", "pa0", "address", MAC)
    await env.inventory([netdev("dev-p", "pa0", mac=MAC)])
    async with hooked(env, tmp_path) as (hook, _):
        claim, pod_uid = uid(), uid("pod")
        cfg = NetworkConfig(profile="acme.com/blue", interface=InterfaceConfig(name="blue0"))
        rep = await env.prepare(claim, [("dev-p", cfg)], [pod_uid])
        assert rep.error == ""
        # a kubelet retry is the same claim: answered from the checkpoint
        assert (await env.prepare(claim, [("dev-p", cfg)], [pod_uid])).error == ""
        assert len(hook.bodies("/GetProfileConfig")) == 1
        pod = env.pod()
        assert (await env.attach(pod_uid, pod)).error == ""
        assert "10.77.0.9/24" in pod.ip("addr", "show", "blue0")
        assert "mtu 1450" in pod.ip("link", "show", "blue0")
        # one route per destination: the claim's, else the baseline's, else the
        # profile's (DRANET's merge order), so the baseline's .254 beats the profile's .1
        routes = pod.ip("route", "show")
        assert "10.78.0.0/16 via 10.77.0.254" in routes
        asked = hook.bodies("/GetProfileConfig")[0]
        assert asked["device"] == {"name": "dev-p", "mac_address": MAC}
        assert asked["claim_uid"] == claim
        assert asked["config"]["profile"] == "acme.com/blue"
        assert asked["config"]["interface"] == {"name": "blue0", "mtu": 1450}
        assert (await env.detach(pod_uid)).error == ""
        assert (await env.unprepare(claim)).error == ""
        released = hook.bodies("/ReleaseProfileConfig")
        assert [r["claim_uid"] for r in released] == [claim]
        assert released[0]["config"]["interface"]["addresses"] == ["10.77.0.9/24"]


async def test_a_denied_profile_fails_prepare_naming_webhook_and_field(
        env: Env, tmp_path: Path) -> None:
    env.node.veth("da0", "db0")
    before = json.loads(env.node.ip("-j", "link", "show", "da0"))[0]["operstate"]
    await env.inventory([netdev("dev-d", "da0")])
    async with hooked(env, tmp_path) as (hook, _):
        rep = await env.prepare(uid(), [("dev-d", NetworkConfig(profile="deny"))], [uid("pod")])
        assert rep.error == (f'devices[0].config.profile: "deny": webhook {hook.url} POST '
                             "/GetProfileConfig: HTTP 409: 10.77.0.9 already in use")
    async with hooked(env, tmp_path, patience=0.5) as (hook, _):
        slow = await env.prepare(uid(), [("dev-d", NetworkConfig(profile="slow"))],
                                 [uid("pod")])
        assert "POST /GetProfileConfig: no answer within 0.5 s" in slow.error
    assert json.loads(env.node.ip("-j", "link", "show", "da0"))[0]["operstate"] == before


async def test_a_bad_merged_value_fails_prepare_and_releases_the_profile(
        env: Env, tmp_path: Path) -> None:
    env.node.veth("ba0", "bb0")
    await env.inventory([netdev("dev-b", "ba0")])
    # valid alone, but the route's IPv6 gateway has no IPv6 address on the interface
    answer = {"interface": {"addresses": ["10.77.0.9/24"]},
              "routes": [{"destination": "2001:db8:1::/64", "gateway": "2001:db8::1"}]}
    async with hooked(env, tmp_path, profile_answer=answer) as (hook, _):
        claim = uid()
        rep = await env.prepare(claim, [("dev-b", NetworkConfig(profile="p"))], [uid("pod")])
        assert "devices[0].config.routes[0].gateway" in rep.error, rep.error
        assert [r["claim_uid"] for r in hook.bodies("/ReleaseProfileConfig")] == [claim]


async def test_a_lying_baseline_fails_prepare_naming_the_field(env: Env, tmp_path: Path) -> None:
    env.node.veth("la0", "lb0")
    env.node.ip("link", "set", "la0", "address", MAC)
    await env.inventory([netdev("dev-l", "la0", mac=MAC)])
    async with hooked(env, tmp_path, device_answer={"interface": {"mtu": "jumbo"}}) as (hook, _):
        rep = await env.prepare(uid(), [("dev-l", None)], [uid("pod")])
        assert rep.error.startswith(f"devices[0].config: baseline configuration from webhook "
                                    f"{hook.url} POST /GetDeviceConfig: config.interface.mtu:")


async def test_a_profile_without_a_profile_provider_is_refused(env: Env, plumber) -> None:
    env.node.veth("na0", "nb0")
    await env.inventory([netdev("dev-n", "na0")])
    rep = await env.prepare(uid(), [("dev-n", NetworkConfig(profile="x"))], [uid("pod")])
    assert rep.error.startswith('devices[0].config.profile: "x": no profile provider')


async def test_azure_baseline_routes_ipv4_and_ipv6_through_the_hosts_gateway(
        env: Env, tmp_path: Path) -> None:
    """DRANET's Azure policy routing, end to end: IMDS's subnet gives the IPv4 rule and
    route; the host's IPv6 default route through the NIC gives the IPv6 gateway."""
    from tests.providers.test_clouds import AZ_COMPUTE, AZ_Q

    mac = "00:0d:3a:00:00:02"
    network = {"interface": [
        {"macAddress": "000D3A000001", "ipv4": {"subnet": [{"address": "10.0.0.0",
                                                            "prefix": "24"}]}},
        {"macAddress": "000D3A000002",
         "ipv4": {"subnet": [{"address": "10.9.255.0", "prefix": "24"}]},
         "ipv6": {"ipAddress": [{"privateIpAddress": "2001:db8:9::5"}]}}]}
    routes = {("GET", "/metadata/instance/compute" + AZ_Q): AZ_COMPUTE,
              ("GET", "/metadata/instance/network" + AZ_Q): network}
    env.node.veth("az0", "az1")
    env.node.ip("link", "set", "az0", "address", mac)
    env.node.ip("addr", "add", "10.9.255.5/24", "dev", "az0")
    env.node.ip("-6", "addr", "add", "2001:db8:9::5/64", "dev", "az0", "nodad")
    # the primary NIC's default route has the lower metric: az0 is not the uplink
    env.node.veth("up0", "up1")
    env.node.ip("-6", "addr", "add", "2001:db8:1::5/64", "dev", "up0", "nodad")
    env.node.ip("-6", "route", "add", "default", "via", "2001:db8:1::1", "dev", "up0",
                "metric", "100")
    env.node.ip("-6", "route", "add", "default", "via", "2001:db8:9::1", "dev", "az0",
                "metric", "1024")
    await env.inventory([netdev("dev-az", "az0", mac=mac)])
    async with serve(routes) as md:
        found = await open_providers(Settings(hint="AZURE", metadata_url=md.url))
        try:
            async with env.running(providers=found):
                claim, pod_uid = uid(), uid("pod")
                assert (await env.prepare(claim, [("dev-az", None)], [pod_uid])).error == ""
                pod = env.pod()
                assert (await env.attach(pod_uid, pod)).error == ""
                rules4 = json.loads(pod.ip("-j", "rule", "show"))
                rules6 = json.loads(pod.ip("-j", "-6", "rule", "show"))
                assert {(r.get("src"), r.get("srclen"), r.get("table")) for r in rules4} >= {
                    ("10.9.255.0", 24, "101")}
                # iproute2 leaves out a host prefix's length
                assert {(r.get("src"), r.get("srclen", 128), r.get("table"))
                        for r in rules6} >= {("2001:db8:9::5", 128, "101")}
                t4 = json.loads(pod.ip("-j", "route", "show", "table", "101"))
                t6 = json.loads(pod.ip("-j", "-6", "route", "show", "table", "101"))
                assert [(r["dst"], r.get("gateway")) for r in t4] == [("default", "10.9.255.1")]
                assert [(r["dst"], r.get("gateway")) for r in t6] == [
                    ("default", "2001:db8:9::1")]
        finally:
            await found.aclose()
