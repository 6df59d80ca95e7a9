"""The DaemonSet (base and every variant, as `kubectl kustomize` renders them) hangs
together and keeps its privileges small.

Each check also runs on a broken copy, to show it notices.
"""

from __future__ import annotations

import pytest

from tests.deploy import manifests as m

VARIANTS = list(m.variants())


def pod(name: str) -> dict:
    return m.pod_spec(m.daemonset(m.render(name)))


def by_name(spec: dict, name: str) -> dict:
    (c,) = [c for c in m.containers(spec) if c["name"] == name]
    return c


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


# ---- cross references ------------------------------------------------------------------


def test_every_mount_names_a_volume_of_the_pod(variant):
    assert m.check_volume_refs(pod(variant)) == []


def test_a_mount_of_a_missing_volume_is_noticed():
    spec = pod("base")
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "netns"]
    assert m.check_volume_refs(spec) == ["plumber: mounts 'netns', not a volume of the pod"]
    spec = pod("base")
    by_name(spec, "plumber")["volumeMounts"].pop()
    assert m.check_volume_refs(spec) == ["volume 'dev-infiniband' is mounted by no container"]


def test_service_account_and_rbac_references_exist(variant):
    assert m.check_service_accounts(m.render(variant)) == []
    assert pod(variant)["serviceAccountName"] == "knd"


def test_a_missing_service_account_is_noticed():
    docs = [d for d in m.render("base") if d["kind"] != "ServiceAccount"]
    assert len(m.check_service_accounts(docs)) == 2  # the DaemonSet and the binding


def test_probes_match_each_services_metrics_address(variant):
    assert m.check_probes(pod(variant)) == []


def test_a_probe_on_the_wrong_port_is_noticed():
    spec = pod("base")
    by_name(spec, "publisher")["readinessProbe"]["httpGet"]["port"] = 9501
    by_name(spec, "plumber")["env"] = [e for e in by_name(spec, "plumber")["env"]
                                       if e["name"] != "KND_METRICS_ADDRESS"]
    assert m.check_probes(spec) == ["publisher: readinessProbe port 9501 != 9502",
                                    "plumber: no KND_METRICS_ADDRESS"]


def test_every_container_runs_a_knd_service_or_a_known_image(variant):
    services, tools = m.cli_names()
    assert m.check_commands(pod(variant), services, tools) == []


def test_an_unknown_service_or_a_missing_one_is_noticed():
    services, tools = m.cli_names()
    spec = pod("base")
    by_name(spec, "discovery")["command"] = ["knd", "discovery-v2"]
    problems = m.check_commands(spec, services, tools)
    assert len(problems) == 2 and "discovery-v2" not in services
    spec = pod("base")
    by_name(spec, "bus-config")["image"] = "docker.io/library/alpine:3"
    assert m.check_commands(spec, services, tools) == [
        "bus-config: unexpected image docker.io/library/alpine:3"]


def test_the_services_named_in_the_manifests_are_the_clis():
    services, tools = m.cli_names()
    assert set(m.SERVICE_ROLE) == services
    assert "bus-config" in tools


def test_knd_env_vars_are_settings_of_the_cli(variant):
    """Every KND_* variable a container sets is read by `knd <its command>` and holds a
    value its flag would take."""
    for c in m.containers(pod(variant)):
        command = m.knd_command(c)
        if command is not None:
            assert m.env_problems(command, m.env_values(c)) == [], c["name"]


def test_env_var_checks_can_tell():
    assert m.env_problems("discovery", {"KND_SYSFS_ROOT": "/host/sys", "KND_NO_SUCH": "1",
                                        "KND_NRI_SOCKET": "/x", "PATH": "/bin"}) == [
        "`knd discovery` does not read KND_NO_SUCH",
        "`knd discovery` does not read KND_NRI_SOCKET"]
    assert m.env_problems("kubelet-gateway", {"KND_NRI_SOCKET": "/x", "KND_STANDALONE": None,
                                              "KND_API_TIMEOUT": "soon"}) == [
        '`knd kubelet-gateway`: KND_API_TIMEOUT="soon": expected seconds, more than 0, '
        "at most 600"]
    assert m.env_problems("bus-config", {"KND_NODE": "n", "KND_BUS_PORT": "9500",
                                         "KND_DRIVER_NAME": "knd.dev"}) == [
        "`knd bus-config` does not read KND_DRIVER_NAME"]


# ---- driver name -----------------------------------------------------------------------


@pytest.mark.parametrize(("variant_name", "driver"),
                         [("base", "knd.dev"), ("containerd17-nri", "knd.dev"),
                          ("dranet-compat", "dra.net")])
def test_one_driver_name_everywhere(variant_name, driver):
    docs = m.render(variant_name)
    assert m.check_driver_name(docs, driver) == []
    places = m.driver_names(docs)
    assert sum(1 for p in places if p.startswith("DaemonSet/")) == 4
    assert sum(1 for p in places if p.startswith("DeviceClass/")) >= 2


def test_examples_use_knd_dev():
    docs = [d for p in m.example_files() for d in m.load_yaml(p)]
    assert m.check_driver_name(docs, m.DRIVER) == []


def test_a_stray_driver_name_is_noticed():
    docs = m.render("base")
    by_name(m.pod_spec(m.daemonset(docs)), "plumber")["env"].append(
        {"name": "KND_DRIVER_NAME", "value": "other.dev"})
    by_name(m.pod_spec(m.daemonset(docs)), "plumber")["env"] = [
        e for e in by_name(m.pod_spec(m.daemonset(docs)), "plumber")["env"]
        if e.get("value") != "knd.dev"]
    (rdma,) = [d for d in docs if d["metadata"]["name"] == "knd-rdma-nic"]
    rdma["spec"]["selectors"][1]["cel"]["expression"] = 'device.attributes["dra.net"].rdma'
    assert m.check_driver_name(docs, "knd.dev") == [
        "DaemonSet/knd/plumber: driver ['other.dev'], not 'knd.dev'",
        "DeviceClass/knd-rdma-nic: driver ['dra.net', 'knd.dev'], not 'knd.dev'"]


def test_device_classes():
    classes = {d["metadata"]["name"]: [s["cel"]["expression"] for s in d["spec"]["selectors"]]
               for d in m.render("base") if d["kind"] == "DeviceClass"}
    assert classes == {
        "knd-nic": ['device.driver == "knd.dev"'],
        "knd-rdma-nic": ['device.driver == "knd.dev"',
                         'device.attributes["knd.dev"].rdma == true'],
    }


# ---- security ----------------------------------------------------------------------------


def test_security_posture(variant):
    assert m.check_security(pod(variant)) == []


@pytest.mark.parametrize(("container", "change", "problem"), [
    ("publisher", lambda c: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
     "publisher: adds ['NET_ADMIN'], want []"),
    ("plumber", lambda c: c["securityContext"].update(privileged=True), "plumber: privileged"),
    ("discovery", lambda c: c["securityContext"].update(runAsUser=0),
     "discovery: runAsUser 0, want 65532"),
    ("nats", lambda c: c["securityContext"].update(readOnlyRootFilesystem=False),
     "nats: root file system is writable"),
    ("publisher", lambda c: c["volumeMounts"].append({"name": "state", "mountPath": "/x"}),
     "publisher: mounts host path /var/lib/knd"),
    ("discovery", lambda c: c["volumeMounts"][1].pop("readOnly"),
     "discovery: /sys is not read-only"),
    ("discovery", lambda c: c["volumeMounts"].append({"name": "api-token", "mountPath": "/t"}),
     "discovery: gets the service account token"),
])
def test_a_wider_privilege_is_noticed(container, change, problem):
    spec = pod("base")
    change(by_name(spec, container))
    assert m.check_security(spec) == [problem]


def test_bus_wiring(variant):
    assert m.check_bus_wiring(pod(variant)) == []


def test_bus_wiring_mistakes_are_noticed():
    spec = pod("base")
    by_name(spec, "publisher")["volumeMounts"][0]["subPath"] = "plumber"
    by_name(spec, "nats")["args"] = ["-c", "/run/knd/bus/nats/nats.conf"]
    assert m.check_bus_wiring(spec) == [
        "nats does not read nats/nats.conf of the bus volume",
        "publisher: bus mount is not ('/run/knd/bus', 'publisher', True)"]


def test_pod_level_settings(variant):
    ds = m.daemonset(m.render(variant))
    spec = m.pod_spec(ds)
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"fsGroup": 65532,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert m.tolerates(spec["tolerations"], "nvidia.com/gpu", "NoSchedule")
    assert m.tolerates(spec["tolerations"], "node-role.kubernetes.io/control-plane",
                       "NoSchedule")
    # one agent per node: a surged second pod would be refused (agent locks)
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    init = spec["initContainers"]
    assert [c["name"] for c in init[:2]] == ["bus-config", "nats"]
    assert "restartPolicy" not in init[0] and init[1]["restartPolicy"] == "Always"
    for c in m.containers(spec):
        res = c["resources"]
        assert set(res) == {"requests", "limits"} and {"cpu", "memory"} <= set(res["limits"])
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["state"]["hostPath"] == {"path": "/var/lib/knd", "type": "DirectoryOrCreate"}
    (netns,) = [x for x in by_name(spec, "plumber")["volumeMounts"] if x["name"] == "netns"]
    assert netns["mountPropagation"] == "HostToContainer"


def test_toleration_matching_can_fail():
    assert not m.tolerates([{"key": "other", "operator": "Exists"}], "nvidia.com/gpu",
                           "NoSchedule")
    assert not m.tolerates([{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoExecute"}], "nvidia.com/gpu", "NoSchedule")


def test_rbac_is_exactly_what_the_services_use():
    (role,) = [d for d in m.render("base") if d["kind"] == "ClusterRole"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"])
             for r in role["rules"]}
    assert rules == {
        (("resource.k8s.io",), ("resourceslices",)):
            {"create", "get", "list", "watch", "update", "delete"},
        (("resource.k8s.io",), ("resourceclaims",)): {"get", "list", "watch"},
        (("resource.k8s.io",), ("resourceclaims/status",)): {"patch", "update"},
        (("",), ("nodes",)): {"get"},
        (("",), ("events",)): {"create", "patch"},
    }
    (sa,) = [d for d in m.render("base") if d["kind"] == "ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False


def test_admission_policy_binds_to_knds_service_account():
    docs = m.render("base")
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert f'"{user}"' in policy["spec"]["matchConditions"][0]["expression"]
