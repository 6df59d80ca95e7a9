"""Launch a command that dies with its parent:
``python -m services.common.pdeathsig PARENT_PID CMD...``.

``knd up`` starts its children in their own session so that a Ctrl-C reaches only
the supervisor, which then stops them in order (services first, then the bus).
The price of a separate session is that a SIGKILLed supervisor would leave them
running; the kernel's parent-death signal, set here and kept across exec,
closes that gap for every child, nats-server included.

The kernel sends that signal when the parent *thread* ends, and again each time
the child is handed to another thread of the dying process: a multi-threaded
``knd up`` killed at once sends it several times. The services' handlers
(services.common.runner) stay installed until they exit, so a repeat changes
nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_ENV = "KND_PARENT_PID"


def main() -> None:
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m services.common.pdeathsig PARENT_PID CMD [ARGS...]")
    parent, argv = int(sys.argv[1]), sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)
    # the promise, for the command's own watchdog (services.common.runner)
    os.environ[PARENT_ENV] = str(parent)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
