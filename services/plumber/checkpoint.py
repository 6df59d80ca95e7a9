"""The plumber's crash-safe memory: prepared claims and moved interfaces.

sqlite in WAL mode, ``synchronous=NORMAL``: a commit is in the WAL file (the
kernel's page cache) before the call returns, so a record written before a
netlink move survives the plumber's death at any point after it (SIGKILL, OOM,
a crash) -- what the design asks for. Only the last commits can be lost, and
only with the kernel itself (power cut, panic), which takes every pod netns
and every move with it; a reboot starts from the node's own configuration.
``FULL`` would fsync every commit on the event loop: a few ms each under load,
and in a 32-pod storm it cost 2 to 8 of 64 devices their runtime deadline.
sqlite rather than one JSON
file per record because an attach changes several rows at once (claim,
attachments) and must find rows by pod, and a transaction does both without a
write-rename-fsync dance per file. Rows hold msgspec JSON of
:mod:`services.plumber.model` structs; the columns beside them are only what
queries need.

Calls are synchronous and short; the service makes them from the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from services.plumber.model import Attachment, ClaimPlan

SCHEMA = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    uid TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claim_pods (
    claim_uid TEXT NOT NULL REFERENCES claims(uid) ON DELETE CASCADE,
    pod_uid TEXT NOT NULL,
    PRIMARY KEY (claim_uid, pod_uid)
);
CREATE INDEX IF NOT EXISTS claim_pods_pod ON claim_pods(pod_uid);
CREATE TABLE IF NOT EXISTS attachments (
    claim_uid TEXT NOT NULL,
    device TEXT NOT NULL,
    pod_uid TEXT NOT NULL,
    phase TEXT NOT NULL,
    body BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (claim_uid, device)
);
CREATE INDEX IF NOT EXISTS attachments_pod ON attachments(pod_uid);
"""

_claim_dec = msgspec.json.Decoder(ClaimPlan)
_att_dec = msgspec.json.Decoder(Attachment)
_enc = msgspec.json.Encoder()


class CheckpointError(RuntimeError):
    pass


class Checkpoint:
    """``<state-dir>/plumber/checkpoint.db``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        # One node's claims are a few hundred rows at most: 256 KiB of page cache holds
        # them all; sqlite's default (2 MiB) only grew the plumber as pages were touched.
        self.db.execute("PRAGMA cache_size=-256")
        with self._tx():
            for stmt in filter(str.strip, _DDL.split(";")):
                self.db.execute(stmt)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            elif int(row[0]) != SCHEMA:
                raise CheckpointError(f"{path}: checkpoint schema {row[0]}, this build "
                                      f"reads {SCHEMA}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- claims ----------------------------------------------------------------------------

    def put_claim(self, plan: ClaimPlan, *, replace: bool = False) -> None:
        """Save ``plan``; ``replace`` also forgets the attachment rows of an earlier plan
        of the same claim (in the same transaction)."""
        with self._tx() as db:
            if replace:
                db.execute("DELETE FROM attachments WHERE claim_uid=?", (plan.uid,))
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                       (plan.uid, _enc.encode(plan), time.time()))
            db.execute("DELETE FROM claim_pods WHERE claim_uid=?", (plan.uid,))
            db.executemany("INSERT OR IGNORE INTO claim_pods VALUES (?, ?)",
                           [(plan.uid, p.uid) for p in plan.pods])

    def claim(self, uid: str) -> ClaimPlan | None:
        row = self.db.execute("SELECT body FROM claims WHERE uid=?", (uid,)).fetchone()
        return _claim_dec.decode(row[0]) if row else None

    def claims(self) -> list[ClaimPlan]:
        rows = self.db.execute("SELECT body FROM claims ORDER BY uid").fetchall()
        return [_claim_dec.decode(r[0]) for r in rows]

    def claims_of_pod(self, pod_uid: str) -> list[ClaimPlan]:
        rows = self.db.execute(
            "SELECT c.body FROM claims c JOIN claim_pods p ON p.claim_uid = c.uid "
            "WHERE p.pod_uid=? ORDER BY c.uid", (pod_uid,)).fetchall()
        return [_claim_dec.decode(r[0]) for r in rows]

    def drop_claim(self, uid: str) -> bool:
        """Forget a claim and its attachment rows; False when it was not there."""
        with self._tx() as db:
            db.execute("DELETE FROM attachments WHERE claim_uid=?", (uid,))
            return db.execute("DELETE FROM claims WHERE uid=?", (uid,)).rowcount > 0

    # ---- attachments -----------------------------------------------------------------------

    def put_attachment(self, att: Attachment) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?, ?, ?)",
                       (att.claim_uid, att.device, att.pod_uid, att.phase, _enc.encode(att),
                        time.time()))

    def drop_attachment(self, claim_uid: str, device: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM attachments WHERE claim_uid=? AND device=?",
                       (claim_uid, device))

    def attachment(self, claim_uid: str, device: str) -> Attachment | None:
        row = self.db.execute("SELECT body FROM attachments WHERE claim_uid=? AND device=?",
                              (claim_uid, device)).fetchone()
        return _att_dec.decode(row[0]) if row else None

    def attachments(self, *, pod_uid: str | None = None, claim_uid: str | None = None,
                    phases: tuple[str, ...] | None = None) -> list[Attachment]:
        sql, args = "SELECT body FROM attachments WHERE 1=1", []
        if pod_uid is not None:
            sql += " AND pod_uid=?"
            args.append(pod_uid)
        if claim_uid is not None:
            sql += " AND claim_uid=?"
            args.append(claim_uid)
        if phases:
            sql += f" AND phase IN ({','.join('?' * len(phases))})"
            args.extend(phases)
        rows = self.db.execute(sql + " ORDER BY claim_uid, device", args).fetchall()
        return [_att_dec.decode(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows by kind, for the entries gauge: ``claims`` and each attachment phase."""
        out = {"claims": self.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]}
        for phase, n in self.db.execute(
                "SELECT phase, COUNT(*) FROM attachments GROUP BY phase"):
            out[phase] = n
        return out
