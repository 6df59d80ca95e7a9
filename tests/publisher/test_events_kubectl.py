"""What a user types: the real kubectl (v1.37, as the deploy tests use it) lists the Events
the publisher wrote, by the pod's uid, from the test API server (which serves kubectl's
discovery and the events' table as a real one does)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from schemas import events as reasons
from tests.deploy.manifests import render_deploy
from tests.helpers.wait import until
from tests.kubeapi.server import KubeApiServer
from tests.publisher.test_events_service import S, failed, notice, publisher, speaking_as

pytestmark = pytest.mark.anyio


async def kubectl(srv: KubeApiServer, home: Path, *argv: str) -> str:
    rd = render_deploy()
    env = rd.tool_env(home) | {"KUBECONFIG": str(srv.write_kubeconfig(home / "kubeconfig")),
                               "HOME": str(home)}
    p = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [str(rd.tool("kubectl")), *argv], env=env, text=True, capture_output=True,
        timeout=60, check=False))
    assert p.returncode == 0, p.stderr
    return p.stdout


async def test_kubectl_lists_the_pods_events_by_uid(bus, kube_api, kube, tmp_path):
    async with publisher(bus, kube, tmp_path), speaking_as(bus, "gateway") as gateway, \
            speaking_as(bus, "plumber") as plumber:
        await gateway(S.notice, notice())
        await plumber(S.event("device.failed"), failed())
        await gateway(S.notice, notice(name="web-1", uid="uid-web-1"))  # another pod
        await until(lambda: len(kube_api.objects("events")) == 3)
    home = tmp_path / "home"
    home.mkdir()
    out = json.loads(await kubectl(kube_api, home, "get", "events", "-n", "team-a",
                                   "--field-selector", "involvedObject.uid=uid-web-0",
                                   "-o", "json"))
    got = sorted((e["reason"], e["type"], e["involvedObject"]["name"], e["count"],
                  e["source"]["component"]) for e in out["items"])
    assert got == [(reasons.ATTACH_DEFERRED, "Warning", "web-0", 1, "knd.dev"),
                   (reasons.ATTACH_FAILED, "Warning", "web-0", 1, "knd.dev")]
    # what the user reads: the columns of the server's table, one line per event
    table = await kubectl(kube_api, home, "get", "events", "--all-namespaces",
                          "--field-selector", "involvedObject.uid=uid-web-0")
    head, *lines = table.splitlines()
    assert head.split() == ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert sorted(line.split()[2:5] for line in lines) == [
        ["Warning", reasons.ATTACH_DEFERRED, "pod/web-0"],
        ["Warning", reasons.ATTACH_FAILED, "pod/web-0"]]
    assert any("failed to attach network device eth1 to pod team-a/web-0" in line
               for line in lines)
