"""compose.yaml: the bus plus the four services, wired as the DaemonSet is."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from tests.deploy import manifests as m

BUS_DIR = "/run/knd/bus"


def knd_services(doc: dict) -> dict[str, dict]:
    return {n: s for n, s in doc["services"].items() if s.get("image", "").startswith("knd:")}


def check_compose(doc: dict) -> list[str]:
    problems = []
    services, tools = m.cli_names()
    declared = set(doc.get("volumes") or {})
    ran = []
    for name, svc in doc["services"].items():
        for v in svc.get("volumes", []):
            source = v.split(":", 1)[0]
            if not source.startswith("/") and source not in declared:
                problems.append(f"{name}: volume {source!r} is not declared")
        if svc.get("network_mode") != "host":
            problems.append(f"{name}: not on the host network")
        if "privileged" in svc or svc.get("cap_drop") != ["ALL"]:
            problems.append(f"{name}: does not drop every capability")
        if not svc.get("read_only"):
            problems.append(f"{name}: writable root file system")
    for name, svc in knd_services(doc).items():
        command = svc.get("command", [])
        what = command[0] if len(command) == 1 else None
        if what not in services | tools:
            problems.append(f"{name}: command {command} is not a knd service or tool")
            continue
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        problems += [f"{name}: {p}" for p in m.env_problems(what, dict(env))]
        if what in services:
            ran.append(what)
            role = m.SERVICE_ROLE[what]
            if env.get("KND_BUS_CREDS") != f"{BUS_DIR}/{role}/creds.json":
                problems.append(f"{name}: KND_BUS_CREDS is not its role's ({role})")
            if f"bus:{BUS_DIR}:ro" not in svc.get("volumes", []):
                problems.append(f"{name}: does not mount the bus volume read-only")
            port = m.address_port(env.get("KND_METRICS_ADDRESS", ":0"))
            if port != m.METRICS_PORT[what] or f":{port}/healthz" not in " ".join(
                    svc.get("healthcheck", {}).get("test", [])):
                problems.append(f"{name}: metrics port / healthcheck is not {m.METRICS_PORT[what]}")
            deps = svc.get("depends_on", {})
            if deps.get("bus-config", {}).get("condition") != "service_completed_successfully" \
                    or "nats" not in deps:
                problems.append(f"{name}: does not wait for bus-config and nats")
        if what in ("publisher", "kubelet-gateway") and env.get("KND_STANDALONE") != "1":
            problems.append(f"{name}: not standalone")
    if sorted(ran) != sorted(services):
        problems.append(f"services run: {sorted(ran)}")
    return problems


def test_compose_hangs_together():
    assert check_compose(m.compose()) == []


def test_compose_privileges_and_bus():
    doc = m.compose()
    svcs = doc["services"]
    assert set(svcs) == {"bus-config", "nats", "discovery", "publisher", "plumber",
                         "kubelet-gateway"}
    caps = {n: set(s.get("cap_add", [])) for n, s in svcs.items()}
    assert caps == {n: ({"NET_ADMIN", "SYS_ADMIN"} if n == "plumber" else set()) for n in svcs}
    for n in ("bus-config", "nats", "discovery"):
        assert svcs[n]["user"] == "65532:65532", n
    for n in ("publisher", "plumber", "kubelet-gateway"):
        assert svcs[n]["user"] == "0:0" and svcs[n]["group_add"] == ["65532"], n
    conf = svcs["nats"]["command"]
    assert conf == ["-c", f"{BUS_DIR}/nats/nats.conf"]
    assert re.fullmatch(r"docker\.io/library/nats:[\d.]+", svcs["nats"]["image"])
    init = svcs["bus-config"]
    assert init["environment"] == {"KND_BUS_DIR": BUS_DIR, "KND_BUS_PORT": str(m.BUS_PORT)}
    assert init["volumes"] == [f"bus:{BUS_DIR}"] and init["restart"] == "no"
    assert set(doc["volumes"]) == {"bus", "state"}


def test_compose_uses_the_charts_images_and_ports():
    """compose.yaml is a dev tool, not a fourth deploy description: only what must be
    the same as in the cluster (the nats image, the bus and metrics ports) is checked,
    against the chart's values, the one source of the manifests."""
    values = yaml.safe_load((m.CHART / "values.yaml").read_text())
    svcs = m.compose()["services"]
    nats = values["nats"]["image"]
    assert svcs["nats"]["image"] == f"{nats['repository']}:{nats['tag']}"
    assert svcs["bus-config"]["environment"]["KND_BUS_PORT"] == str(values["nats"]["port"])
    key = {"discovery": "discovery", "publisher": "publisher", "plumber": "plumber",
           "kubelet-gateway": "kubeletGateway"}
    for name, svc in knd_services(m.compose()).items():
        if name in key:
            address = svc["environment"]["KND_METRICS_ADDRESS"]
            assert m.address_port(address) == values[key[name]]["metricsPort"], name


@pytest.mark.parametrize(("change", "expect"), [
    (lambda d: d["services"]["publisher"].update(command=["publish"]), "not a knd service"),
    (lambda d: d["services"]["plumber"]["environment"].update(KND_NO_SUCH="1"),
     "does not read KND_NO_SUCH"),
    (lambda d: d["volumes"].pop("state"), "volume 'state' is not declared"),
    (lambda d: d["services"]["discovery"]["environment"].update(
        KND_BUS_CREDS="/run/knd/bus/plumber/creds.json"), "not its role's"),
    (lambda d: d["services"]["kubelet-gateway"]["environment"].pop("KND_STANDALONE"),
     "not standalone"),
    (lambda d: d["services"]["nats"].pop("cap_drop"), "does not drop every capability"),
])
def test_compose_mistakes_are_noticed(change, expect):
    doc = copy.deepcopy(m.compose())
    change(doc)
    problems = check_compose(doc)
    assert any(expect in p for p in problems), problems
