"""Driving a whole ``knd up`` agent inside a throwaway node netns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.netns import NetNS
from tests.helpers.wait import wait_for  # noqa: F401 (re-exported for the e2e tests)

KND = str(Path(sys.executable).parent / "knd")


class Agent:
    """``knd up --standalone`` run as the node netns' own agent (its /sys, its loopback)."""

    def __init__(self, ns: NetNS, state_dir: Path, node: str = "e2e-node",
                 extra: tuple[str, ...] = ("--filter", "true"),
                 env: dict[str, str] | None = None) -> None:
        self.ns = ns
        self.state_dir = state_dir
        self.node = node
        self.kubelet_root = state_dir / "kubelet"
        self.nri_socket = state_dir / "nri" / "nri.sock"
        self.argv = ns.exec_argv([KND, "up", "--standalone", "--node", node,
                                  "--state-dir", str(state_dir),
                                  "--kubelet-root", str(self.kubelet_root),
                                  "--nri-socket", str(self.nri_socket),
                                  "--cdi-root", str(state_dir / "cdi"), *extra])
        self.proc: subprocess.Popen | None = None
        self.log = state_dir / "agent.log"
        self.env = dict(env or {})
        """More variables for the agent (KNDTEST_ATTACH_DELAY...)."""

    def start(self) -> Agent:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:  # the child keeps its own copy
            # its own process group, as a job started from a terminal has
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         env={**os.environ, "KND_LOG_LEVEL": "info",
                                              **self.env})
        return self

    def children(self) -> dict[str, int]:
        """Service name -> pid of the supervisor's live children."""
        assert self.proc is not None
        out: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid != self.proc.pid:
                    continue
                words = [c.decode() for c in (entry / "cmdline").read_bytes().split(b"\0") if c]
            except (OSError, ValueError, IndexError):
                continue
            if not words:
                continue
            name = words[-1] if "services.cli" in words else Path(words[0]).name
            out[name] = int(entry.name)
        return out

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("knd up did not stop on SIGTERM") from None

    def slices(self) -> list[dict]:
        d = self.state_dir / "api" / "resourceslices"
        out = []
        for f in sorted(d.glob("*.json")) if d.exists() else []:
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                # files are replaced atomically, so a half-written one is a bug
                raise AssertionError(f"unreadable slice file {f}") from None
        return out

    def devices(self) -> dict[str, dict]:
        """Device name -> device, across all slices; duplicates are an error."""
        out: dict[str, dict] = {}
        for s in self.slices():
            for d in s["spec"].get("devices", []):
                assert d["name"] not in out, f"device {d['name']} in two slices"
                out[d["name"]] = d
        return out
