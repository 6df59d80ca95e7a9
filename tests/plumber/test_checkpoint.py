"""The checkpoint on its own: rows survive a reopen; a foreign schema is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from schemas.plumber import PodRef
from services.plumber.checkpoint import Checkpoint, CheckpointError
from services.plumber.model import (
    ATTACHED,
    ATTACHING,
    AddrRec,
    Attachment,
    ClaimPlan,
    LinkSnapshot,
    PlannedDevice,
    RouteRec,
)


def plan(uid: str, pods: list[str]) -> ClaimPlan:
    return ClaimPlan(uid=uid, namespace="ns", name="n", pods=[PodRef(uid=x) for x in pods],
                     devices=[PlannedDevice(request="r", pool="p", device="d0", ifname="eth1")])


def test_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "plumber" / "checkpoint.db"
    db = Checkpoint(path)
    db.put_claim(plan("c1", ["p1", "p2"]))
    db.put_claim(plan("c2", ["p2"]))
    snap = LinkSnapshot(index=7, name="eth1", mtu=1500, mac="02:00:00:00:00:01", up=True,
                        addresses=[AddrRec(cidr="192.0.2.1/24")],
                        routes=[RouteRec(family=2, dst="198.51.100.0/24", gateway="192.0.2.9")])
    db.put_attachment(Attachment(claim_uid="c1", device="d0", pod_uid="p1", phase=ATTACHING,
                                 netns="/x", host=snap))
    db.close()
    db = Checkpoint(path)
    assert [c.uid for c in db.claims_of_pod("p2")] == ["c1", "c2"]
    assert [c.uid for c in db.claims_of_pod("p1")] == ["c1"]
    [att] = db.attachments(pod_uid="p1")
    assert att.host == snap and att.phase == ATTACHING
    att.phase = ATTACHED
    db.put_attachment(att)
    assert db.counts() == {"claims": 2, ATTACHED: 1}
    assert db.drop_claim("c1") and not db.drop_claim("c1")
    assert db.attachments() == [] and db.claims_of_pod("p1") == []
    db.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_foreign_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.db"
    Checkpoint(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema'")
    con.commit()
    con.close()
    with pytest.raises(CheckpointError, match="schema 99"):
        Checkpoint(path)


def test_the_page_cache_is_held_to_256_kib(tmp_path: Path) -> None:
    """One node's claims fit; sqlite's default 2 MiB only grew the plumber's memory."""
    store = Checkpoint(tmp_path / "c.db")
    try:
        assert store.db.execute("PRAGMA cache_size").fetchone()[0] == -256
    finally:
        store.close()
