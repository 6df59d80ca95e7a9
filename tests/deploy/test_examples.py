"""deploy/examples: claims and pods that refer to what exists, with configs knd accepts."""

from __future__ import annotations

import pytest

from schemas.netconfig import ConfigError, decode_config
from tests.deploy import manifests as m

FILES = m.example_files()
CLASSES = {d["metadata"]["name"] for d in m.render("base") if d["kind"] == "DeviceClass"}


def claim_devices(doc: dict) -> dict | None:
    if doc["kind"] == "ResourceClaimTemplate":
        return doc["spec"]["spec"]["devices"]
    if doc["kind"] == "ResourceClaim":
        return doc["spec"]["devices"]
    return None


def check_example(docs: list[dict]) -> list[str]:
    problems = []
    templates = {d["metadata"]["name"] for d in docs if d["kind"] == "ResourceClaimTemplate"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "ResourceClaim"}
    for d in docs:
        devices = claim_devices(d)
        if devices is not None:
            requests = {r["name"] for r in devices["requests"]}
            for r in devices["requests"]:
                cls = r["exactly"]["deviceClassName"]
                if cls not in CLASSES | m.EXTERNAL_CLASSES:
                    problems.append(f"request {r['name']}: no DeviceClass {cls}")
            for c in devices.get("constraints", []):
                if not set(c.get("requests", [])) <= requests:
                    problems.append(f"constraint names unknown requests {c['requests']}")
            for n, c in enumerate(devices.get("config", [])):
                if not set(c.get("requests", [])) <= requests:
                    problems.append(f"config[{n}] names unknown requests {c['requests']}")
                if c.get("opaque", {}).get("driver") == m.DRIVER:
                    try:
                        decode_config(c["opaque"]["parameters"], f"config[{n}].parameters")
                    except ConfigError as exc:
                        problems.append(str(exc))
        if d["kind"] == "Pod":
            refs = {}
            for rc in d["spec"].get("resourceClaims", []):
                refs[rc["name"]] = rc
                template, claim = rc.get("resourceClaimTemplateName"), rc.get("resourceClaimName")
                if template not in templates and claim not in claims:
                    problems.append(f"pod claim {rc['name']}: no template or claim {rc}")
            for c in d["spec"]["containers"]:
                for used in c.get("resources", {}).get("claims", []):
                    if used["name"] not in refs:
                        problems.append(f"{c['name']}: uses unknown pod claim {used['name']}")
    return problems


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_hangs_together(path):
    docs = m.load_yaml(path)
    assert check_example(docs) == []
    assert any(d["kind"] == "Pod" for d in docs)


def test_the_three_examples():
    by = {p.stem: m.load_yaml(p) for p in FILES}
    assert set(by) == {"rdma-nic-with-gpu", "static-addresses", "two-nics-same-numa"}

    gpu = claim_devices(by["rdma-nic-with-gpu"][0])
    assert {r["exactly"]["deviceClassName"] for r in gpu["requests"]} == {
        "gpu.nvidia.com", "knd-rdma-nic"}
    assert gpu["constraints"] == [{"requests": ["gpu", "nic"],
                                   "matchAttribute": "resource.kubernetes.io/pcieRoot"}]

    static = claim_devices(by["static-addresses"][0])
    cfg = decode_config(static["config"][0]["opaque"]["parameters"])
    assert cfg.interface.addresses and cfg.routes and cfg.interface.mtu

    numa = claim_devices(by["two-nics-same-numa"][0])
    assert len(numa["requests"]) == 2
    assert numa["constraints"][0]["matchAttribute"] == "resource.kubernetes.io/numaNode"


def test_example_mistakes_are_noticed():
    docs = m.load_yaml(EXAMPLES_STATIC := m.EXAMPLES / "static-addresses.yaml")
    assert EXAMPLES_STATIC in FILES
    devices = claim_devices(docs[0])
    devices["requests"][0]["exactly"]["deviceClassName"] = "knd-nics"
    devices["config"][0]["opaque"]["parameters"]["interface"]["mtu"] = 40
    docs[1]["spec"]["containers"][0]["resources"]["claims"][0]["name"] = "nope"
    problems = check_example(docs)
    assert len(problems) == 3, problems
    assert "interface.mtu" in problems[1]
