"""The webhook provider against test-owned webhooks on a unix socket and on loopback TCP:
DRANET's contract (paths, field names), capabilities at start, and webhooks that are
slow, failing or lying."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from aiohttp import web

from schemas.netconfig import InterfaceConfig, NetworkConfig
from services.common.runner import Refused
from services.providers import Settings
from services.providers.base import DeviceIds
from services.providers.choose import open_providers
from services.providers.http import ProviderError
from services.providers.webhook import Webhook
from tests.providers.servers import serve

pytestmark = pytest.mark.anyio

BOTH = {"cloudProvider": True, "profileProvider": True}
IDS = DeviceIds(name="eth1", mac="02:00:00:00:00:01", pci_address="0000:3b:00.0")


def contract(attrs: object = None) -> dict:
    """A webhook as DRANET's tests/webhook.py behaves."""
    return {
        ("GET", "/health"): BOTH,
        ("POST", "/GetDeviceAttributes"): attrs if attrs is not None else
        {"dra.net/webhook_attr": {"string": "python"}, "acme.com/rail": {"int": 3},
         "acme.com/fast": {"bool": True}, "acme.com/fw": {"version": "1.2.3"}},
        ("POST", "/GetDeviceConfig"): {"interface": {"mtu": 1450}},
        ("POST", "/GetProfileConfig"): {"interface": {"addresses": ["10.200.200.200/24"]}},
        ("POST", "/ReleaseProfileConfig"): {},
    }


@pytest.fixture(params=["unix", "tcp"])
def where(request, tmp_path: Path) -> Path | None:
    return tmp_path / "webhook.sock" if request.param == "unix" else None


async def test_contract_field_names_and_answers(where: Path | None) -> None:
    async with serve(contract(), unix=where) as hook:
        found = await open_providers(Settings(hint="webhook", profile="webhook",
                                              webhook_url=hook.url))
        try:
            assert found.cloud is found.profile is not None
            attrs, errors = await found.cloud.device_attributes(IDS)
            assert errors == []
            assert attrs == {"dra.net/webhook_attr": "python", "acme.com/rail": 3,
                             "acme.com/fast": True, "acme.com/fw": "1.2.3"}
            assert await found.cloud.device_config(IDS) == NetworkConfig(
                interface=InterfaceConfig(mtu=1450))
            asked = NetworkConfig(profile="python-profile")
            got = await found.profile.profile_config(IDS, "uid-1", asked)
            assert got == NetworkConfig(interface=InterfaceConfig(addresses=["10.200.200.200/24"]))
            await found.profile.release_profile_config(IDS, "uid-1", asked)
        finally:
            await found.aclose()
    wire = {"name": "eth1", "mac_address": "02:00:00:00:00:01", "pci_address": "0000:3b:00.0"}
    assert hook.bodies("/GetDeviceAttributes") == [wire]
    assert hook.bodies("/GetDeviceConfig") == [wire]
    profile_body = {"device": wire, "claim_uid": "uid-1",
                    "config": {"profile": "python-profile", "interface": {}}}
    assert hook.bodies("/GetProfileConfig") == [profile_body]
    assert hook.bodies("/ReleaseProfileConfig") == [profile_body]
    assert [s.method for s in hook.seen if s.path == "/health"] == ["GET"]
    assert all(s.headers.get("Content-Type") == "application/json"
               for s in hook.seen if s.method == "POST")


async def test_ids_leave_out_empty_mac_and_pci() -> None:
    async with serve(contract()) as hook:
        w = Webhook(hook.url)
        await w.health()
        await w.device_attributes(DeviceIds(name="veth0"))
        await w.close()
    assert hook.bodies("/GetDeviceAttributes") == [{"name": "veth0"}]


@pytest.mark.parametrize(("caps", "settings", "needle"), [
    ({"cloudProvider": False, "profileProvider": True}, {"hint": "webhook"},
     "--cloud-provider-hint=webhook: webhook {url} says cloudProvider: false in GET /health"),
    ({"cloudProvider": True, "profileProvider": False}, {"profile": "webhook", "hint": "NONE"},
     "--profile-provider=webhook: webhook {url} says profileProvider: false in GET /health"),
    ({"cloudProvider": "yes"}, {"hint": "webhook"},
     "webhook provider: webhook {url} GET /health: cloudProvider: expected true or false"),
    (["caps"], {"hint": "webhook"}, "GET /health: expected an object of capabilities"),
    ("not json", {"hint": "webhook"}, "GET /health: answer is not JSON"),
])
async def test_refuses_to_start_without_a_requested_capability(caps, settings, needle) -> None:
    async with serve({("GET", "/health"): caps}) as hook:
        with pytest.raises(Refused) as err:
            await open_providers(Settings(webhook_url=hook.url, **settings))
    text = str(err.value)
    assert needle.format(url=hook.url) in text and "\n" not in text


async def test_an_unreachable_webhook_refuses_in_one_line(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/nobody.sock"
    with pytest.raises(Refused) as err:
        await open_providers(Settings(hint="webhook", webhook_url=url))
    assert f"webhook {url} GET /health: cannot reach it" in str(err.value)


async def test_a_slow_webhook_times_out_naming_it() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await anyio.sleep(1.5)
        return web.json_response({})

    async with serve({("GET", "/health"): BOTH, ("POST", "/GetDeviceConfig"): slow}) as hook:
        w = Webhook(hook.url, timeout=0.3)
        await w.health()
        with pytest.raises(ProviderError) as err:
            await w.device_config(IDS)
        await w.close()
    assert str(err.value) == f"webhook {hook.url} POST /GetDeviceConfig: no answer within 0.3 s"


async def test_a_failing_webhook_reports_its_status_and_text() -> None:
    async def fail(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="ipam backend down")

    async with serve({("GET", "/health"): BOTH, ("POST", "/GetProfileConfig"): fail}) as hook:
        w = Webhook(hook.url)
        await w.health()
        with pytest.raises(ProviderError) as err:
            await w.profile_config(IDS, "u", NetworkConfig(profile="p"))
        await w.close()
    assert err.value.status == 503
    assert str(err.value).endswith("POST /GetProfileConfig: HTTP 503: ipam backend down")


@pytest.mark.parametrize(("answer", "needle"), [
    ("{not json", "answer is not JSON"),
    ({"interface": {"mtu": "big"}}, "config.interface.mtu: expected"),
    ({"interface": {"mtu": 20}}, "config.interface.mtu: 20 is out of range"),
    ({"interface": {"colour": "red"}}, "config.interface.colour"),
    (["a"], "config"),
])
async def test_a_lying_config_answer_names_the_webhook_and_the_field(answer, needle) -> None:
    async def lie(request: web.Request) -> web.StreamResponse:
        if isinstance(answer, str):
            return web.Response(text=answer, content_type="application/json")
        return web.json_response(answer)

    async with serve({("GET", "/health"): BOTH, ("POST", "/GetDeviceConfig"): lie}) as hook:
        w = Webhook(hook.url)
        await w.health()
        with pytest.raises(ProviderError) as err:
            await w.device_config(IDS)
        await w.close()
    assert str(err.value).startswith(f"webhook {hook.url} POST /GetDeviceConfig: ")
    assert needle in str(err.value), str(err.value)


async def test_lying_attributes_cost_only_themselves() -> None:
    lies = {"acme.com/ok": {"string": "fine"},
            "acme.com/long": {"string": "x" * 65},
            "acme.com/wrong": {"int": "three"},
            "acme.com/two": {"int": 1, "bool": True},
            "acme.com/truthy": {"bool": 1},
            "Not A Name!": {"string": "x"},
            "acme.com/ver": {"version": "one"}}
    async with serve(contract(lies)) as hook:
        w = Webhook(hook.url)
        await w.health()
        attrs, errors = await w.device_attributes(IDS)
        await w.close()
    assert attrs == {"acme.com/ok": "fine"}
    joined = "\n".join(errors)
    prefix = f"webhook {hook.url} POST /GetDeviceAttributes: "
    assert all(e.startswith(prefix) for e in errors) and len(errors) == 6
    for needle in ("acme.com/long.string: 65 bytes, more than the 64",
                   "acme.com/wrong.int: expected a 64-bit integer",
                   "acme.com/two: expected exactly one of string, int, bool, version",
                   "acme.com/truthy.bool: expected true or false",
                   "Not A Name!: invalid name", "acme.com/ver.version: 'one' is not a semantic"):
        assert needle in joined, joined
