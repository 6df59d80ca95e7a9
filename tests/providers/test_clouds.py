"""Cloud metadata providers against a test-owned metadata server on loopback: what each
cloud publishes, on which devices, from which URLs with which headers; detection."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from aiohttp import web

from schemas.netconfig import NetworkConfig, RouteConfig, RuleConfig
from services.providers import Settings
from services.providers.base import DeviceIds
from services.providers.choose import detect, open_providers
from tests.providers.servers import serve

pytestmark = pytest.mark.anyio

GCE_API = "/computeMetadata/v1/instance/"
GCE_NICS = [
    {"ip": "10.128.0.70", "ipAliases": ["10.24.3.0/24"], "mac": "42:01:0a:80:00:46",
     "mtu": 1460, "network": "projects/628944397724/networks/default"},
    {"ip": "192.168.1.2", "ipAliases": [], "mac": "42:01:c0:a8:01:02", "mtu": 8244,
     "network": "projects/628944397724/networks/dra-net-1"},
]


def _flavored(answer: object):
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="missing Metadata-Flavor")
        if isinstance(answer, str):
            return web.Response(text=answer)
        return web.json_response(answer)
    return handler


def gce_routes(topology: str | None = "/blockA/subblockB/hostC") -> dict:
    routes = {
        ("GET", GCE_API + "name"): _flavored("vm-1"),
        ("GET", GCE_API + "machine-type"): _flavored("projects/1/machineTypes/a3-megagpu-8g"),
        ("GET", GCE_API + "network-interfaces/?recursive=true&alt=json"): _flavored(GCE_NICS),
    }
    if topology is not None:
        routes[("GET", GCE_API + "attributes/physical_host")] = _flavored(topology)
    return routes


def settings(url: str, hint: str = "", **kw) -> Settings:
    return Settings(hint=hint, metadata_url=url, metadata_timeout=5.0, **kw)


async def test_gce_publishes_machine_type_topology_and_the_nic_network_by_mac() -> None:
    async with serve(gce_routes()) as md:
        found = await open_providers(settings(md.url, "GCE"))
        try:
            assert found.cloud is not None and found.profile is None
            attrs, errors = await found.cloud.device_attributes(
                DeviceIds(name="eth1", mac="42:01:C0:A8:01:02"))
            assert errors == []
            assert attrs == {"gce.dra.net/machineType": "a3-megagpu-8g",
                             "gce.dra.net/block": "blockA", "gce.dra.net/subBlock": "subblockB",
                             "gce.dra.net/host": "hostC",
                             "gce.dra.net/networkName": "dra-net-1",
                             "gce.dra.net/networkProjectNumber": 628944397724}
            first, _ = await found.cloud.device_attributes(
                DeviceIds(name="eth0", mac="42:01:0a:80:00:46"))
            assert first["gce.dra.net/ipAliases"] == "10.24.3.0/24"
            # a device the metadata does not list gets only the node-wide attributes
            other, _ = await found.cloud.device_attributes(
                DeviceIds(name="x", mac="02:00:00:00:00:01"))
            assert set(other) == {"gce.dra.net/machineType", "gce.dra.net/block",
                                  "gce.dra.net/subBlock", "gce.dra.net/host"}
            assert await found.cloud.device_config(DeviceIds(name="eth1")) is None
        finally:
            await found.aclose()


async def test_gce_without_physical_host_has_no_topology() -> None:
    async with serve(gce_routes(topology=None)) as md:
        found = await open_providers(settings(md.url, "GCE"))
        assert found.cloud is not None
        attrs, _ = await found.cloud.device_attributes(DeviceIds(name="eth0"))
        assert attrs == {"gce.dra.net/machineType": "a3-megagpu-8g"}
        await found.aclose()


AZ_Q = "?api-version=2025-11-11&format=json"
AZ_COMPUTE = {"vmSize": "Standard_ND96isr_H100_v5", "placementGroupId": "pg-7f3a",
              "interconnectGroupId": "", "name": "vm"}
AZ_NETWORK = {"interface": [
    {"macAddress": "000D3A000001", "ipv4": {"subnet": [{"address": "10.0.0.0", "prefix": "24"}]}},
    {"macAddress": "000D3A000002", "ipv4": {"subnet": [{"address": "10.9.255.0", "prefix": "24"}]}},
]}


def _needs(header: str, value: str, answer: object):
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get(header) != value:
            return web.Response(status=400, text=f"missing {header}")
        return web.json_response(answer) if not isinstance(answer, str) else web.Response(
            text=answer)
    return handler


async def test_azure_node_attributes_on_every_device_and_policy_routing_by_mac() -> None:
    routes = {("GET", "/metadata/instance?api-version=2025-11-11&format=text"):
              _needs("Metadata", "true", "ok"),
              ("GET", "/metadata/instance/compute" + AZ_Q): _needs("Metadata", "true", AZ_COMPUTE),
              ("GET", "/metadata/instance/network" + AZ_Q): _needs("Metadata", "true", AZ_NETWORK)}
    async with serve(routes) as md:
        assert await detect(settings(md.url)) == "AZURE"
        found = await open_providers(settings(md.url))  # unset hint: detected
        assert found.cloud is not None and found.cloud.name == "AZURE"
        attrs, _ = await found.cloud.device_attributes(DeviceIds(name="eth9"))
        assert attrs == {"azure.dra.net/vmSize": "Standard_ND96isr_H100_v5",
                         "azure.dra.net/placementGroupId": "pg-7f3a"}
        cfg = await found.cloud.device_config(DeviceIds(name="d", mac="00:0d:3a:00:00:02"))
        assert cfg == NetworkConfig(
            rules=[RuleConfig(source="10.9.255.0/24", table=101)],
            routes=[RouteConfig(destination="0.0.0.0/0", gateway="10.9.255.1", table=101)])
        assert await found.cloud.device_config(DeviceIds(name="d", mac="02:00:00:00:00:09")) \
            is None
        await found.aclose()


OCID = "ocid1.computegpumemoryfabric.oc1.iad." + "a" * 70


async def test_oke_topology_uses_ocid_suffixes_within_the_string_limit() -> None:
    host = {"rackId": "rack-12", "networkBlockId": "nb-top",
            "rdmaTopologyData": {"customerHPCIslandId": "ocid1.hpcisland.oc1.iad.island1",
                                 "customerNetworkBlock": "ocid1.netblock.oc1.iad.nb7",
                                 "customerLocalBlock": "ocid1.localblock.oc1.iad.lb3",
                                 "customerGpuMemoryFabric": OCID}}
    routes = {("GET", "/opc/v2/instance/"): _needs("Authorization", "Bearer Oracle", {}),
              ("GET", "/opc/v2/host/"): _needs("Authorization", "Bearer Oracle", host)}
    async with serve(routes) as md:
        assert await detect(settings(md.url)) == "OKE"
        found = await open_providers(settings(md.url, "OKE"))
        attrs, _ = await found.cloud.device_attributes(DeviceIds(name="rdma0"))
        assert attrs == {"oke.dra.net/hpcIslandId": "island1", "oke.dra.net/networkBlockId": "nb7",
                         "oke.dra.net/localBlockId": "lb3", "oke.dra.net/rackId": "rack-12",
                         "oke.dra.net/gpuMemoryFabricId": "a" * 60}
        await found.aclose()


async def test_alibaba_token_instance_type_and_erdma_by_pci_address(tmp_path: Path) -> None:
    ib = tmp_path / "class" / "infiniband" / "erdma_0"
    ib.mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:05.0", ib / "device")

    async def token(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds") != "21600":
            return web.Response(status=400)
        return web.Response(text="tok-1\n")

    tok = ("X-aliyun-ecs-metadata-token", "tok-1")
    routes = {("PUT", "/latest/api/token"): token,
              ("GET", "/latest/meta-data/instance-id"): _needs(*tok, "i-1"),
              ("GET", "/latest/meta-data/instance/instance-type"): _needs(*tok, "ecs.ebmgn8v")}
    async with serve(routes) as md:
        assert await detect(settings(md.url)) == "ALIBABA"
        found = await open_providers(settings(md.url, "ALIBABA", sysfs_root=str(tmp_path)))
        erdma, _ = await found.cloud.device_attributes(
            DeviceIds(name="eth1", pci_address="0000:00:05.0"))
        plain, _ = await found.cloud.device_attributes(
            DeviceIds(name="eth2", pci_address="0000:00:06.0"))
        assert erdma == {"alibaba.dra.net/instanceType": "ecs.ebmgn8v",
                         "alibaba.dra.net/erdma": True}
        assert plain == {"alibaba.dra.net/instanceType": "ecs.ebmgn8v"}
        await found.aclose()


def _aws_routes(instance_type: str) -> dict:
    async def token(request: web.Request) -> web.StreamResponse:
        return web.Response(text="aws-tok")

    doc = {"instanceType": instance_type, "region": "us-east-1"}
    return {("PUT", "/latest/api/token"): token,
            ("GET", "/latest/dynamic/instance-identity/document"):
            _needs("X-aws-ec2-metadata-token", "aws-tok", doc)}


def _pci(sysfs: Path, address: str, driver: str) -> None:
    dev = sysfs / "bus" / "pci" / "devices" / address
    dev.mkdir(parents=True)
    os.symlink(f"../../../../bus/pci/drivers/{driver}", dev / "driver")


def _group(*bdfs: str) -> str:
    """AWS's group id, computed here from its definition: SHA-256 of the sorted
    addresses joined by commas, first 16 hex digits."""
    return hashlib.sha256(",".join(sorted(bdfs)).encode()).hexdigest()[:16]


async def test_aws_is_detected_through_imdsv2_and_a_gpu_instance_publishes_nothing(
        tmp_path: Path) -> None:
    _pci(tmp_path, "0000:c9:00.0", "efa")
    async with serve(_aws_routes("p5.48xlarge")) as md:
        assert await detect(settings(md.url)) == "AWS"
        found = await open_providers(settings(md.url, sysfs_root=str(tmp_path)))
        assert found.cloud is not None and found.cloud.name == "AWS"
        assert await found.cloud.device_attributes(
            DeviceIds(name="eth0", pci_address="0000:c9:00.0")) == ({}, [])
        await found.aclose()


async def test_aws_trainium_efa_adapters_get_their_neuron_device_groups(tmp_path: Path) -> None:
    dmi = tmp_path / "devices" / "virtual" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "product_name").write_text("trn2.48xlarge\n")
    _pci(tmp_path, "0000:b4:00.0", "efa")       # Neuron device 1 on trn2
    _pci(tmp_path, "0000:f6:00.0", "efa")       # Neuron device 15
    _pci(tmp_path, "0000:c9:00.0", "vfio-pci")  # device 0's slot, not bound to efa
    trn2 = ["0000:c9:00.0", "0000:b4:00.0", "0000:b3:00.0", "0000:ca:00.0",
            "0000:6c:00.0", "0000:57:00.0", "0000:56:00.0", "0000:6d:00.0",
            "0000:98:00.0", "0000:83:00.0", "0000:82:00.0", "0000:99:00.0",
            "0000:f5:00.0", "0000:e0:00.0", "0000:df:00.0", "0000:f6:00.0"]
    async with serve(_aws_routes("trn2.48xlarge")) as md:
        found = await open_providers(settings(md.url, "AWS", sysfs_root=str(tmp_path)))
        cloud = found.cloud
        assert cloud is not None

        async def attrs(pci: str) -> dict:
            got, errors = await cloud.device_attributes(DeviceIds(name="efa", pci_address=pci))
            assert errors == []
            return got

        assert await attrs("0000:b4:00.0") == {
            "resource.aws.com/devicegroup1_id": "0000:b4:00.0",
            "resource.aws.com/devicegroup4_id": _group(*trn2[0:4]),
            "resource.aws.com/devicegroup8_id": _group(*trn2[0:8]),
            "resource.aws.com/devicegroup16_id": _group(*trn2)}
        last = await attrs("0000:f6:00.0")
        assert last["resource.aws.com/devicegroup4_id"] == _group(*trn2[12:16])
        assert last["resource.aws.com/devicegroup8_id"] == _group(*trn2[8:16])
        assert last["resource.aws.com/devicegroup16_id"] == _group(*trn2)
        assert await attrs("0000:c9:00.0") == {}   # not an EFA adapter
        assert await attrs("0000:00:05.0") == {}   # not in the table
        await found.aclose()


async def test_aws_trn1_adapters_shared_by_two_neuron_devices_count_once(tmp_path: Path) -> None:
    _pci(tmp_path, "0000:a0:1a.0", "efa")   # Neuron devices 2 and 3 on trn1
    async with serve(_aws_routes("trn1.32xlarge")) as md:  # no DMI: the identity's type
        found = await open_providers(settings(md.url, "AWS", sysfs_root=str(tmp_path)))
        got, _ = await found.cloud.device_attributes(
            DeviceIds(name="efa0", pci_address="0000:a0:1a.0"))
        assert got["resource.aws.com/devicegroup1_id"] == "0000:a0:1a.0"
        assert got["resource.aws.com/devicegroup4_id"] == _group("0000:10:1a.0", "0000:a0:1a.0")
        await found.aclose()


async def test_no_cloud_detected_and_an_unreadable_cloud_is_left_out(caplog) -> None:
    async with serve({}) as md:  # answers 404 to everything
        assert await detect(settings(md.url)) == "NONE"
        assert (await open_providers(settings(md.url))).cloud is None
        caplog.set_level(logging.WARNING)
        found = await open_providers(Settings(hint="GCE", metadata_url=md.url,
                                              metadata_timeout=0.4))
        assert found.cloud is None
        assert "cloud provider GCE: metadata not read" in caplog.text
        assert "HTTP 404" in caplog.text
