"""The barrier: an OCI ``createRuntime`` hook that holds a container until its pod's
network devices are all attached.

The runtime runs the hook on the host, in the runtime's own context, before the
container's process exists; it kills it after the hook's timeout and fails the
container when it exits non-zero. The hook is the host's POSIX shell running a few
lines that wait for a result file in a host folder the gateway shares (``--hook-dir``):
no binary to install on the node, and nothing to connect to that a restart of knd
could leave half-open. Files, per pod UID: ``<uid>.pending`` while the attach runs,
then ``<uid>.ok`` or ``<uid>.failed`` (holding why), written atomically.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("knd.nri.barrier")

WAIT_SCRIPT = """\
f="$1/$KND_POD_UID"
while [ -e "$f.pending" ] && [ ! -e "$f.ok" ] && [ ! -e "$f.failed" ]; do sleep 0.05; done
[ -e "$f.ok" ] && exit 0
if [ -e "$f.failed" ]; then
  echo "knd: network devices of pod $KND_POD_UID not attached: $(cat "$f.failed")" >&2
  exit 1
fi
echo "knd: no network device attach in progress for pod $KND_POD_UID; the kubelet \
recreates the container and the attach resumes" >&2
exit 1
"""
"""``$1``: the folder; the pod in ``KND_POD_UID``. A file that is not there yet when
the hook starts means no attach is under way (knd restarted): fail at once, and the
kubelet's retry of CreateContainer starts a new attach."""

_UID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


@dataclass(frozen=True)
class Hook:
    """An OCI hook as NRI's ``Hook`` carries it (``args[0]`` is argv[0])."""

    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: int
    """Seconds; the runtime kills the hook after it."""


class Barrier:
    """The result files of one folder, and the hook that waits on them."""

    def __init__(self, folder: Path, shell: str = "/bin/sh") -> None:
        self.folder = folder
        self.shell = shell

    def reset(self) -> None:
        """At start: whatever a previous run left is stale (its attach jobs died with
        it); waiting hooks see no ``pending`` file and fail, and the kubelet retries."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for entry in self.folder.iterdir():
            if entry.suffix in (".pending", ".ok", ".failed", ".tmp"):
                entry.unlink(missing_ok=True)

    def _path(self, uid: str, suffix: str) -> Path:
        if not _UID.fullmatch(uid):
            raise ValueError(f"pod UID {uid!r} cannot name a file")
        return self.folder / f"{uid}{suffix}"

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # a waiting hook never reads half a file

    def pending(self, uid: str) -> None:
        """The pod's attach is under way: hooks wait."""
        for suffix in (".ok", ".failed"):
            self._path(uid, suffix).unlink(missing_ok=True)
        self._write(self._path(uid, ".pending"), "")

    def release(self, uid: str, error: str = "") -> None:
        """The attach ended: every waiting hook exits, 0 when ``error`` is empty."""
        if not self._path(uid, ".pending").exists():
            return  # no hook was ever given for it
        self._write(self._path(uid, ".failed" if error else ".ok"), error)
        self._path(uid, ".pending").unlink(missing_ok=True)

    def clear(self, uid: str) -> None:
        for suffix in (".pending", ".ok", ".failed"):
            self._path(uid, suffix).unlink(missing_ok=True)

    def hook(self, *, uid: str, namespace: str, name: str, container: str, netns: str,
             deadline_in: float, devices: str = "") -> Hook:
        """The hook for one container; it may wait until ``deadline_in`` seconds from now.
        ``devices``: the pod's devices as JSON in ``KND_DEVICES`` (what DRANET's hook gets
        as ``DRANET_DEVICES``): which devices the container waits for, in its spec."""
        env = (f"KND_POD_UID={uid}", f"KND_POD_NAMESPACE={namespace}", f"KND_POD_NAME={name}",
               f"KND_CONTAINER_NAME={container}", f"KND_NETNS={netns}",
               *([f"KND_DEVICES={devices}"] if devices else ()),
               "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        return Hook(path=self.shell,
                    args=(Path(self.shell).name, "-c", WAIT_SCRIPT, "knd-attach-wait",
                          str(self.folder)),
                    env=env, timeout=max(1, math.ceil(deadline_in)))
