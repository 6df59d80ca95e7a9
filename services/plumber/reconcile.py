"""Making the checkpoint and the kernel agree: once at start, then now and then.

At start, before the plumber answers anything, every attachment row is
settled: an ``attached`` device still present in its live pod netns is kept;
everything else (an ``attaching`` row the plumber died in, a ``detaching`` one,
an ``attached`` one whose pod netns is gone or whose device is not there any
more, a device found in the host under its pod name) goes back to the host
with its original configuration, or is recorded ``gone`` when it was virtual
and died with its netns. The sweeper repeats the last part in the background
for pods whose netns vanished without a detach, and for physical devices that
came back from a dead netns after their detach gave up waiting.
"""

from __future__ import annotations

import logging
import os

import anyio

from services.common import memory
from services.common.logs import fields
from services.plumber import nsfs
from services.plumber.attach import Attacher
from services.plumber.model import ATTACHED, DETACHING, GONE, Attachment
from services.plumber.netops import Rtnl
from services.plumber.restore import pod_netns_alive

log = logging.getLogger("knd.plumber.reconcile")


async def intact(attacher: Attacher, att: Attachment) -> bool:
    """An ``attached`` device that is still where we put it."""
    if att.phase != ATTACHED or not pod_netns_alive(att):
        return False
    if att.host is None:
        return True
    try:
        fd = nsfs.open_netns(att.netns)
    except nsfs.NetnsError:
        return False
    try:
        async with await Rtnl.open(fd) as pod:
            return await attacher.restorer.find_in_pod(pod, att) is not None
    finally:
        os.close(fd)


async def reconcile(attacher: Attacher) -> dict[str, int]:
    """Settle every row (see the module doc); returns how many ended which way."""
    counts = {"kept": 0, "restored": 0, "gone": 0, "pending": 0}
    store = attacher.store
    changed: set[str] = set()
    for att in store.attachments():
        if att.phase == GONE:
            continue
        if await intact(attacher, att):
            counts["kept"] += 1
            continue
        async with attacher.lock(att.pod_uid):
            out = await attacher.restorer.restore(att, "reconcile")
        counts[out.result] += 1
        changed.add(att.claim_uid)
        log.info("reconcile: device %s of claim %s (%s): %s %s", att.device, att.claim_uid,
                 att.phase, out.result, out.error,
                 extra=fields(claim=att.claim_uid, pod=att.pod_uid, device=att.device))
    if changed:
        attacher.notify.claims_changed(changed)
    return counts


async def sweep_once(attacher: Attacher) -> int:
    """Give back devices of vanished pod netns and finish pending detaches."""
    store = attacher.store
    done = 0
    changed: set[str] = set()
    for att in store.attachments(phases=(ATTACHED, DETACHING)):
        if att.phase == ATTACHED and pod_netns_alive(att):
            continue
        async with attacher.lock(att.pod_uid):
            cur = store.attachment(att.claim_uid, att.device)  # a detach may have run
            if cur is None or cur.phase not in (ATTACHED, DETACHING):
                continue
            if cur.phase == ATTACHED and pod_netns_alive(cur):
                continue
            out = await attacher.restorer.restore(cur, "netns-gone")
        if out.result != "pending":
            done += 1
            changed.add(att.claim_uid)
    if changed:
        attacher.notify.claims_changed(changed)
    return done


async def sweeper(attacher: Attacher, interval: float) -> None:
    """Every ``interval``: devices of pods whose netns is gone go home, and the memory
    the attaches and detaches since the last round freed goes back to the system."""
    trimmed_at = attacher.moves
    while True:
        await anyio.sleep(interval)
        try:
            await sweep_once(attacher)
        except Exception:  # keep sweeping; the next round retries
            log.exception("sweep failed")
        if attacher.moves != trimmed_at:
            trimmed_at = attacher.moves
            await anyio.to_thread.run_sync(memory.give_back)
