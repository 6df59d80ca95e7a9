"""``interface.addressing: SLAAC``: waiting, at attach, for the address the kernel
autoconfigures from a router advertisement.

The sysctls that make the interface solicit a router and accept its advertisement
(DRANET's SLAAC defaults: schemas.netconfig.defaulted) are set by the attach; the
kernel does the rest. The attach then waits, as DRANET does, for an address that is
usable: autoconfigured (not one configured by hand), past duplicate address
detection, not deprecated. No such address in time fails the attach, which rolls the
device back: a pod is not started with an interface that has no address.
"""

from __future__ import annotations

import errno
import time

import anyio

from services.plumber.netops import KernelError, Rtnl

WAIT = 1.5
"""DRANET's bound (DefaultSLAACReadyTimeout): below the runtime's 2 s for a request."""
MARGIN = 0.3
"""Seconds of the runtime's deadline left for the rollback and the reply."""
POLL = 0.025
IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE, IFA_F_PERMANENT = 0x08, 0x20, 0x40, 0x80
_NOT_READY = {IFA_F_TENTATIVE: "tentative", IFA_F_DADFAILED: "dadfailed",
              IFA_F_DEPRECATED: "deprecated", IFA_F_PERMANENT: "permanent"}


def _describe(states: list[tuple[str, int]]) -> str:
    if not states:
        return "none"
    return " ".join(cidr + (f"({','.join(n for b, n in _NOT_READY.items() if flags & b)})"
                            if flags & sum(_NOT_READY) else "") for cidr, flags in states)


async def wait(pod: Rtnl, index: int, name: str, deadline: float) -> list[str]:
    """The autoconfigured addresses of ``name`` (``index`` in ``pod``) once there is one,
    within :data:`WAIT` and the runtime's ``deadline`` (epoch seconds, 0: none)."""
    budget = WAIT
    if deadline > 0:
        budget = max(0.0, min(budget, deadline - time.time() - MARGIN))
    start = time.monotonic()
    while True:
        states = await pod.ipv6_global(index)
        # dict: a dump can report an address twice while the kernel is changing it
        ready = list(dict.fromkeys(cidr for cidr, flags in states
                                   if not flags & sum(_NOT_READY)))
        if ready:
            return ready
        if time.monotonic() - start >= budget:
            raise KernelError(
                "config.interface.addressing", errno.ETIMEDOUT,
                f"SLAAC: {name} has no autoconfigured IPv6 address after "
                f"{time.monotonic() - start:.1f} s (global addresses: {_describe(states)}): "
                "no router advertisement with an autonomous prefix reached it")
        await anyio.sleep(POLL)
