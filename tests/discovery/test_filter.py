"""The --filter CEL expression, in both attribute spellings."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from schemas.inventory import Device
from services.common.celexpr import CelError as FilterError
from services.discovery.filter import DefaultFilter, DeviceFilter, default_expression, device_filter
from tests.helpers.fresh import python


def dev(name: str, **attrs) -> Device:
    return Device(name=name, attributes={f"knd.dev/{k}": v for k, v in attrs.items()})


@pytest.mark.parametrize("f", [DeviceFilter(default_expression("knd.dev")),
                               DefaultFilter("knd.dev")], ids=["cel", "python"])
def test_default_hides_veth_only(f):
    assert not f(dev("a", type="veth"))
    assert f(dev("b", type="macvlan"))
    assert f(dev("c", type="device", rdma=True))
    assert f(Device(name="rdma-only"))
    assert f(dev("d", type=5))


def test_without_a_filter_the_default_runs_without_cel():
    code = ("import sys; from services.discovery.filter import device_filter; "
            "f = device_filter(None, 'dra.net'); "
            "print(type(f).__name__, f.expression, 'cel' in sys.modules)")
    out = python(code)
    assert out == f"DefaultFilter {default_expression('dra.net')} False"
    assert type(device_filter("true", "dra.net")).__name__ == "DeviceFilter"


def test_default_follows_the_driver_name():
    f = DeviceFilter(default_expression("dra.net"))
    assert not f(Device(name="a", attributes={"dra.net/type": "veth"}))
    assert f(Device(name="a", attributes={"knd.dev/type": "veth"}))


def test_true_publishes_everything():
    f = DeviceFilter("true")
    assert f(dev("a", type="veth")) and f(Device(name="x"))


def test_selector_spelling_and_types():
    f = DeviceFilter('device.attributes["knd.dev"].mtu >= 9000 && device.name.startsWith("pci-")')
    assert f(dev("pci-0000-3b-00-0", mtu=9000))
    assert not f(dev("pci-0000-3b-00-0", mtu=1500))
    assert not f(dev("eth0", mtu=9000))
    g = DeviceFilter('attributes["knd.dev/rdma"] == true && '
                     'attributes["resource.kubernetes.io/numaNode"] == 1')
    d = Device(name="n", attributes={"knd.dev/rdma": True, "resource.kubernetes.io/numaNode": 1})
    assert g(d)


def test_bad_expression_is_a_clear_error():
    with pytest.raises(FilterError, match="--filter"):
        DeviceFilter('attributes["knd.dev/type"] ==')


def test_evaluation_error_excludes_and_counts():
    before = REGISTRY.get_sample_value("knd_discovery_filter_errors_total") or 0
    f = DeviceFilter('attributes["knd.dev/mtu"] > 1500')
    assert not f(dev("no-mtu", type="veth"))
    assert not DeviceFilter('"not a bool"')(dev("x"))
    after = REGISTRY.get_sample_value("knd_discovery_filter_errors_total")
    assert after == before + 2
