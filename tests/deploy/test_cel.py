"""The CEL in the manifests compiles and means what it should (evaluated with the same
CEL library discovery's --filter uses; a DeviceClass selector sees ``device.driver``
and ``device.attributes[<domain>].<name>``, as the scheduler gives it)."""

from __future__ import annotations

import pytest

from services.common.celexpr import compile_expression as compile_cel
from tests.deploy import manifests as m


def device(driver: str, **attrs) -> dict:
    return {"device": {"driver": driver, "attributes": {driver: attrs}, "capacity": {}}}


def nic(driver: str, *, rdma: bool, virtual: bool = False) -> dict:
    return device(driver, ifName="eth1", rdma=rdma, virtual=virtual, type="device")


def selects(selectors: list[dict], ctx: dict) -> bool:
    """A device matches a class or request when every selector is true."""
    return all(compile_cel(s["cel"]["expression"]).execute(ctx) is True for s in selectors)


@pytest.mark.parametrize(("variant", "driver"), [("base", "knd.dev"),
                                                 ("dranet-compat", "dra.net")])
def test_device_classes_select_the_right_devices(variant, driver):
    classes = {d["metadata"]["name"]: d["spec"]["selectors"]
               for d in m.render(variant) if d["kind"] == "DeviceClass"}
    rdma, plain = nic(driver, rdma=True), nic(driver, rdma=False)
    gpu = device("gpu.nvidia.com", productName="H100")
    assert selects(classes["knd-nic"], rdma) and selects(classes["knd-nic"], plain)
    assert not selects(classes["knd-nic"], gpu)
    assert selects(classes["knd-rdma-nic"], rdma)
    assert not selects(classes["knd-rdma-nic"], plain)
    other = "dra.net" if driver == "knd.dev" else "knd.dev"
    assert not selects(classes["knd-nic"], nic(other, rdma=True))


def test_example_selectors_take_physical_ports_only():
    for path in m.example_files():
        for d in m.load_yaml(path):
            spec = d["spec"]["spec"] if d["kind"] == "ResourceClaimTemplate" else d["spec"]
            for r in spec.get("devices", {}).get("requests", []):
                sel = r["exactly"].get("selectors", [])
                if sel:
                    assert selects(sel, nic(m.DRIVER, rdma=False))
                    assert not selects(sel, nic(m.DRIVER, rdma=False, virtual=True))


def _policy() -> dict:
    (p,) = [d for d in m.render("base") if d["kind"] == "ValidatingAdmissionPolicy"]
    return p["spec"]


def admitted(op: str, token_node: str | None, old: str | None, new: str | None,
             user: str = "system:serviceaccount:knd-system:knd") -> bool:
    """Whether the policy lets ``user`` do ``op`` (True also when it does not apply)."""
    spec = _policy()
    extra = {"authentication.kubernetes.io/node-name": [token_node]} if token_node else {}
    ctx = {"request": {"operation": op, "userInfo": {"username": user, "extra": extra}},
           "oldObject": None if old is None else {"spec": {"nodeName": old}},
           "object": None if new is None else {"spec": {"nodeName": new}}}
    if not all(compile_cel(c["expression"]).execute(ctx) for c in spec["matchConditions"]):
        return True
    ctx["variables"] = {v["name"]: compile_cel(v["expression"]).execute(ctx)
                        for v in spec["variables"]}
    return all(compile_cel(v["expression"]).execute(ctx) is True for v in spec["validations"])


def test_admission_policy_keeps_each_agent_to_its_node():
    assert admitted("CREATE", "n1", None, "n1")
    assert admitted("UPDATE", "n1", "n1", "n1")
    assert admitted("DELETE", "n1", "n1", None)
    assert not admitted("CREATE", "n1", None, "n2")
    assert not admitted("UPDATE", "n1", "n2", "n1")  # taking over another node's slice
    assert not admitted("UPDATE", "n1", "n1", "n2")
    assert not admitted("DELETE", "n1", "n2", None)
    assert not admitted("CREATE", None, None, "n1")  # a token without a node
    assert admitted("CREATE", None, None, "n2", user="system:admin")  # not knd: not judged
    for v in _policy()["validations"]:
        message = compile_cel(v["messageExpression"]).execute({"variables": {"tokenNode": "n1"}})
        assert "n1" in message
