"""A stand-in service on the real runner: ``python -m tests.lifecycle.fake_service MODE``.

return: main returns on its own; crash: main raises; serve: runs until signalled,
printing "ready" (and writing it to $FAKE_READY) once its handlers are in;
fork-signal: a forked child signals itself (the child shares our signal wakeup
fd), then main goes on serving; stuck: serves, and its cleanup never ends."""

from __future__ import annotations

import os
import signal
import sys

import anyio

from services.common import logs, runner


async def main(mode: str) -> None:
    if mode == "return":
        return
    if mode == "crash":
        raise ValueError("boom")
    if mode == "fork-signal":
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(0)
        await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        # a bounded wait on purpose: the test is that nothing happens once the loop
        # has read the child's stray wakeup byte (already written: the child is gone)
        await anyio.sleep(0.2)
    print("ready", flush=True)
    if ready := os.environ.get("FAKE_READY"):
        await anyio.Path(ready).write_text("ready")
    try:
        await anyio.sleep_forever()
    finally:
        if mode == "stuck":
            with anyio.CancelScope(shield=True):
                await anyio.sleep_forever()


if __name__ == "__main__":
    logs.setup("info", service="fake")
    runner.run(lambda: main(sys.argv[1]), "fake")
