"""Throwaway network namespaces that stand in for a node, so tests never touch
this machine's own interfaces."""

from __future__ import annotations

import subprocess
import uuid


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


def ip_batch(lines: list[str], netns: str) -> None:
    """Run many ip commands in one process (fast for hundreds of links)."""
    res = subprocess.run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip -batch: {res.stderr.strip()}")


class NetNS:
    """A named netns with loopback up; ``delete()`` removes it and every link in it."""

    def __init__(self, prefix: str = "knd-t") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        ip("netns", "add", self.name)
        ip("link", "set", "lo", "up", netns=self.name)

    def ip(self, *args: str, check: bool = True) -> str:
        return ip(*args, netns=self.name, check=check)

    def batch(self, lines: list[str]) -> None:
        ip_batch(lines, self.name)

    def veth(self, a: str, b: str, up: bool = True) -> None:
        self.ip("link", "add", a, "type", "veth", "peer", "name", b)
        if up:
            self.ip("link", "set", a, "up")
            self.ip("link", "set", b, "up")

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self) -> None:
        ip("netns", "del", self.name, check=False)
