"""Which Linux capabilities this process has, from ``/proc/self/status``.

Decided on capabilities, not on uid 0: the DaemonSet runs the plumber with
CAP_NET_ADMIN and CAP_SYS_ADMIN and without being root in every other sense,
and a root process in a restricted container may lack them.
"""

from __future__ import annotations

from pathlib import Path

CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}
"""Bit numbers (linux/capability.h) of the capabilities knd asks about."""

PLUMBER_NEEDS = ("CAP_NET_ADMIN", "CAP_SYS_ADMIN")
"""Moving links between namespaces and configuring them (NET_ADMIN), entering a pod's
network namespace with setns (SYS_ADMIN)."""


def effective(status: Path = Path("/proc/self/status")) -> int:
    """The effective capability set as a bit mask (0 if it cannot be read)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def missing_capabilities(names: tuple[str, ...], status: Path = Path("/proc/self/status"),
                         ) -> list[str]:
    """Those of ``names`` not in the effective set."""
    have = effective(status)
    return [n for n in names if not have >> CAPABILITIES[n] & 1]
