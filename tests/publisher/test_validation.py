"""Devices the API server would reject are dropped one by one, with the field named."""

from __future__ import annotations

from fractions import Fraction

from prometheus_client import REGISTRY

from schemas.inventory import Device
from services.publisher.validation import (
    device_errors,
    parse_quantity,
    to_wire,
    validate,
)
from tests.publisher.helpers import DRIVER, device


def _dropped(why: str) -> float:
    return REGISTRY.get_sample_value("knd_publisher_dropped_devices_total", {"why": why}) or 0.0


def test_wire_shape_keeps_bools_apart_from_ints():
    w = to_wire(Device(name="eth0", attributes={"a": True, "b": 1, "c": "x"},
                       capacity={"d/e": "1Gi"}))
    assert w == {"name": "eth0",
                 "attributes": {"a": {"bool": True}, "b": {"int": 1}, "c": {"string": "x"}},
                 "capacity": {"d/e": {"value": "1Gi"}}}


def test_long_string_is_dropped_with_its_field_and_the_rest_kept():
    before = _dropped("invalid")
    bad = device(1, **{f"{DRIVER}/alias": "x" * 65})
    ok = device(2, **{f"{DRIVER}/alias": "x" * 64})
    out = validate([bad, ok])
    assert [d["name"] for d in out.devices] == ["eth2"]
    assert out.dropped == [f'devices[eth1].attributes["{DRIVER}/alias"]: '
                           "longer than 64 characters"]
    assert _dropped("invalid") == before + 1


def test_name_must_be_a_dns_label():
    for name in ("Eth0", "eth_0", "-eth0", "a" * 64, ""):
        errs = device_errors(to_wire(Device(name=name)))
        assert errs and f"devices[{name}].name" in errs[0], name
    assert device_errors(to_wire(Device(name="a" * 63))) == []


def test_too_many_attributes_and_capacities():
    attrs = {f"{DRIVER}/a{i}": i for i in range(30)}
    caps = {f"{DRIVER}/c{i}": "1" for i in range(3)}
    errs = device_errors(to_wire(Device(name="eth0", attributes=attrs, capacity=caps)))
    assert errs == ["devices[eth0]: 33 attributes and capacities, more than 32"]
    caps.popitem()
    assert device_errors(to_wire(Device(name="eth0", attributes=attrs, capacity=caps))) == []


def test_qualified_names_values_and_quantities():
    wire = {
        "name": "eth0",
        "attributes": {
            "Bad.Domain/x": {"string": "a"},
            f"{DRIVER}/{'i' * 33}": {"int": 1},
            f"{DRIVER}/1abc": {"bool": True},
            f"{DRIVER}/ver": {"version": "1.2"},
            f"{DRIVER}/big": {"int": 2**63},
            f"{DRIVER}/two": {"int": 1, "bool": True},
            f"{DRIVER}/okver": {"version": "1.2.3-rc.1+b5"},
        },
        "capacity": {f"{DRIVER}/bw": {"value": "ten"}, f"{DRIVER}/ok": {"value": "1.5Gi"}},
    }
    errs = device_errors(wire)
    fields = sorted(e.split(":")[0] for e in errs)
    assert fields == sorted([
        'devices[eth0].attributes["Bad.Domain/x"]',
        f'devices[eth0].attributes["{DRIVER}/{"i" * 33}"]',
        f'devices[eth0].attributes["{DRIVER}/1abc"]',
        f'devices[eth0].attributes["{DRIVER}/ver"]',
        f'devices[eth0].attributes["{DRIVER}/big"]',
        f'devices[eth0].attributes["{DRIVER}/two"]',
        f'devices[eth0].capacity["{DRIVER}/bw"]',
    ]), errs


def test_duplicates_keep_the_first():
    before = _dropped("duplicate")
    a, b = device(1), device(1, **{f"{DRIVER}/mtu": 9000})
    out = validate([a, b, device(2)])
    assert [d["name"] for d in out.devices] == ["eth1", "eth2"]
    assert out.devices[0]["attributes"][f"{DRIVER}/mtu"] == {"int": 1500}
    assert len(out.dropped) == 1 and "duplicate" in out.dropped[0]
    assert _dropped("duplicate") == before + 1


def test_rejected_names_stay_out():
    out = validate([device(1), device(2)], rejected={"eth1": "devices[eth1]: server said no"})
    assert [d["name"] for d in out.devices] == ["eth2"]
    assert out.dropped == ["devices[eth1]: server said no"]


def test_quantities_parse_to_exact_values():
    assert parse_quantity("1Gi") == parse_quantity("1024Mi") == 2**30
    assert parse_quantity("1.5k") == 1500
    assert parse_quantity("100m") == Fraction(1, 10)
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("-2") == -2
    for bad in ("", "G", "1.2.3", "1Gb", "1 G", "0x10"):
        assert parse_quantity(bad) is None, bad


def test_taints_are_checked():
    wire = {"name": "eth0", "taints": [{"key": "knd.dev/broken", "effect": "NoSchedule"},
                                       {"key": "bad key", "effect": "NoSchedule"},
                                       {"key": "ok", "effect": "Sometimes"}]}
    errs = device_errors(wire)
    assert [e.split(":")[0] for e in errs] == ["devices[eth0].taints[1]",
                                               "devices[eth0].taints[2]"]
