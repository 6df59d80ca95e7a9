"""Discovery documents (``/api``, ``/apis``, ``/api/v1``...), so that the real kubectl can
talk to the test API server: it asks what the server serves before any request.

The legacy (non-aggregated) forms only: kubectl asks for aggregated discovery first and
takes these when the server answers with plain JSON, as an older API server would.
"""

from __future__ import annotations

from tests.kubeapi.store import KINDS, Kind

VERBS = ["create", "delete", "get", "list", "patch", "update"]
SHORT_NAMES = {"events": ["ev"], "nodes": ["no"]}
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "platform": "linux/amd64"}


def _groups() -> dict[str, list[Kind]]:
    out: dict[str, list[Kind]] = {}
    for kind in KINDS.values():
        out.setdefault(kind.group, []).append(kind)
    return out


def _group(name: str, version: str) -> dict:
    gv = {"groupVersion": f"{name}/{version}", "version": version}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


def _resources(group_version: str, kinds: list[Kind]) -> dict:
    resources = []
    for kind in kinds:
        resources.append({"name": kind.resource, "singularName": kind.kind.lower(),
                          "namespaced": kind.namespaced, "kind": kind.kind, "verbs": VERBS,
                          "shortNames": SHORT_NAMES.get(kind.resource, [])})
        if kind.has_status:
            resources.append({"name": f"{kind.resource}/status", "singularName": "",
                              "namespaced": kind.namespaced, "kind": kind.kind,
                              "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}


def document(path: str) -> dict | None:
    """The discovery document at ``path``, or None when ``path`` is not one."""
    path = "/" + path.strip("/")
    groups = _groups()
    if path == "/version":
        return VERSION
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/api/v1":
        return _resources("v1", groups.get("", []))
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [_group(g, kinds[0].version) for g, kinds in groups.items() if g]}
    parts = path.split("/")[2:]
    if parts and parts[0] in groups and parts[0]:
        kinds = groups[parts[0]]
        if len(parts) == 1:
            return {"kind": "APIGroup", "apiVersion": "v1"} | _group(parts[0], kinds[0].version)
        if len(parts) == 2 and parts[1] == kinds[0].version:
            return _resources(f"{parts[0]}/{parts[1]}", kinds)
    return None
