"""The generated messages match kubelet's wire contract (DRA and plugin registration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from services.kubelet_gateway.pb import (
    dra_health_v1alpha1_pb2,
    dra_v1_pb2,
    dra_v1beta1_pb2,
    pluginregistration_pb2,
)

DRA = {"v1": dra_v1_pb2, "v1beta1": dra_v1beta1_pb2}


def fields(msg) -> dict[str, tuple[int, bool]]:
    """name -> (number, repeated)."""
    return {f.name: (f.number, f.is_repeated) for f in msg.DESCRIPTOR.fields}


def methods(mod, service: str) -> dict[str, tuple[str, str, bool]]:
    svc = mod.DESCRIPTOR.services_by_name[service]
    return {m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
            for m in svc.methods}


def test_generated_modules_import_only_protobuf() -> None:
    for mod in [*DRA.values(), pluginregistration_pb2, dra_health_v1alpha1_pb2]:
        assert list(mod.DESCRIPTOR.dependencies) == [], mod.__name__
        imports = [line for line in Path(mod.__file__).read_text().splitlines()
                   if line.startswith(("import ", "from "))]
        assert all(line.startswith("from google.protobuf") for line in imports), imports


def test_every_message_module_has_its_type_stub() -> None:
    """setup.py writes a .pyi beside each *_pb2 module: without it mypy (CI) sees the
    messages as untyped and cannot check the fields the services set."""
    protos = sorted(p.stem for p in (Path(__file__).parents[2] / "protos").glob("*.proto"))
    pb = Path(dra_v1_pb2.__file__).parent
    assert protos and sorted(p.name.removesuffix("_pb2.pyi")
                             for p in pb.glob("*_pb2.pyi")) == protos
    stub = (pb / "dra_v1_pb2.pyi").read_text()
    assert "class NodePrepareResourcesRequest(_message.Message):" in stub


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_dra_plugin(version: str) -> None:
    pb = DRA[version]
    assert pb.DESCRIPTOR.package == f"k8s.io.kubelet.pkg.apis.dra.{version}"
    svc = pb.DESCRIPTOR.services_by_name["DRAPlugin"]
    assert svc.full_name == f"k8s.io.kubelet.pkg.apis.dra.{version}.DRAPlugin"
    assert methods(pb, "DRAPlugin") == {
        "NodePrepareResources": ("NodePrepareResourcesRequest",
                                 "NodePrepareResourcesResponse", False),
        "NodeUnprepareResources": ("NodeUnprepareResourcesRequest",
                                   "NodeUnprepareResourcesResponse", False),
    }
    assert fields(pb.Claim) == {"namespace": (1, False), "uid": (2, False), "name": (3, False)}
    assert fields(pb.NodePrepareResourcesRequest) == {"claims": (1, True)}
    assert fields(pb.NodeUnprepareResourcesRequest) == {"claims": (1, True)}
    for resp, value in [(pb.NodePrepareResourcesResponse, "NodePrepareResourceResponse"),
                        (pb.NodeUnprepareResourcesResponse, "NodeUnprepareResourceResponse")]:
        claims = resp.DESCRIPTOR.fields_by_name["claims"]
        assert claims.number == 1 and claims.message_type.GetOptions().map_entry
        key, val = claims.message_type.fields
        assert key.type == F.TYPE_STRING and val.message_type.name == value
    assert fields(pb.NodePrepareResourceResponse) == {"devices": (1, True), "error": (2, False)}
    assert fields(pb.NodeUnprepareResourceResponse) == {"error": (1, False)}
    want = {"request_names": (1, True), "pool_name": (2, False), "device_name": (3, False),
            "cdi_device_ids": (4, True)}
    if version == "v1":
        want["share_id"] = (5, False)
        assert pb.Device.DESCRIPTOR.fields_by_name["share_id"].has_presence  # optional
    assert fields(pb.Device) == want


def test_both_versions_coexist() -> None:
    a = dra_v1_pb2.NodePrepareResourcesResponse()
    a.claims["u"].devices.add(device_name="eth0", share_id="s")
    b = dra_v1beta1_pb2.NodePrepareResourcesResponse.FromString(a.SerializeToString())
    assert b.claims["u"].devices[0].device_name == "eth0"  # share_id: unknown field to v1beta1
    assert type(a).DESCRIPTOR.full_name != type(b).DESCRIPTOR.full_name


def test_registration() -> None:
    pb = pluginregistration_pb2
    assert pb.DESCRIPTOR.package == "pluginregistration"
    assert methods(pb, "Registration") == {
        "GetInfo": ("InfoRequest", "PluginInfo", False),
        "NotifyRegistrationStatus": ("RegistrationStatus", "RegistrationStatusResponse", False),
    }
    assert fields(pb.PluginInfo) == {"type": (1, False), "name": (2, False),
                                     "endpoint": (3, False), "supported_versions": (4, True)}
    assert fields(pb.RegistrationStatus) == {"plugin_registered": (1, False), "error": (2, False)}
    assert fields(pb.InfoRequest) == {} and fields(pb.RegistrationStatusResponse) == {}


def test_health() -> None:
    pb = dra_health_v1alpha1_pb2
    assert pb.DESCRIPTOR.package == "v1alpha1"
    assert methods(pb, "DRAResourceHealth") == {
        "NodeWatchResources": ("NodeWatchResourcesRequest", "NodeWatchResourcesResponse", True)}
    assert fields(pb.NodeWatchResourcesResponse) == {"devices": (1, True)}
    assert fields(pb.DeviceHealth) == {"device": (1, False), "health": (2, False),
                                       "last_updated_time": (3, False),
                                       "health_check_timeout_seconds": (4, False)}
    assert fields(pb.DeviceIdentifier) == {"pool_name": (1, False), "device_name": (2, False)}
    assert dict(pb.HealthStatus.items()) == {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}
    assert pb.DeviceHealth.DESCRIPTOR.fields_by_name["last_updated_time"].type == F.TYPE_INT64
