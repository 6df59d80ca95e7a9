"""Run the test API server as its own process (benchmarks, manual runs).

``python -m tests.kubeapi --port N --node NAME`` prints the URL as the first
line of stdout, so a parent process can read it before sending requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from tests.kubeapi.server import KubeApiServer


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with KubeApiServer(host=args.host, port=args.port) as server:
        for node in args.node:
            server.add_node(node)
        if args.kubeconfig:
            server.write_kubeconfig(Path(args.kubeconfig))
        print(server.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeapi",
                                     description="knd's test Kubernetes API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--node", action="append", default=[], help="create this Node (repeatable)")
    parser.add_argument("--kubeconfig", help="also write a kubeconfig pointing at the server here")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
