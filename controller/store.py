"""The controller's SQLite database: devices, alerts, blocks, rule set versions, acks, model pushes.

Several controller replicas on one host may share the file (WAL mode, busy
timeout); anything that allocates a rule set version runs inside
``transaction()`` (BEGIN IMMEDIATE), so two replicas never issue the same one.
Alerts are unique by (fleet, device, seq): a redelivered alert is a no-op.
Per device, ``alert_marks`` keeps what the controller confirms to the agent
(``stored_through``, see ``agent.wire.messages``), advanced in the same
transaction that stores the alerts.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    fleet TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL,            -- online / offline (from status and last will) / unknown
    status TEXT,                    -- the last status document, JSON
    last_seen REAL NOT NULL,
    PRIMARY KEY (fleet, device));
CREATE TABLE IF NOT EXISTS alerts (
    fleet TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
    class TEXT NOT NULL, confidence REAL NOT NULL,
    source_ip TEXT NOT NULL, source_mac TEXT, source_port INTEGER,
    victim_ip TEXT, victim_port INTEGER,
    packets INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    action TEXT NOT NULL, rule_id TEXT, sent_at REAL,
    received_at REAL NOT NULL,
    PRIMARY KEY (fleet, device, seq));
CREATE INDEX IF NOT EXISTS alerts_by_source ON alerts (fleet, source_ip, received_at);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (received_at);
CREATE TABLE IF NOT EXISTS alert_marks (    -- what the controller confirms to each device
    fleet TEXT NOT NULL, device TEXT NOT NULL,
    stored_through INTEGER NOT NULL,         -- every seq up to it is stored, refused, or given up by the agent
    PRIMARY KEY (fleet, device));
CREATE TABLE IF NOT EXISTS refused_seqs (    -- alerts refused for good (kept in rejected): they hold no mark back
    fleet TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (fleet, device, seq));
CREATE TABLE IF NOT EXISTS rejected (       -- messages refused, kept with the reason
    topic TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (          -- what the fleet rule set is built from
    fleet TEXT NOT NULL, source TEXT NOT NULL,
    origin TEXT NOT NULL,                    -- policy / manual
    reason TEXT NOT NULL, created_at REAL NOT NULL, expires REAL,
    PRIMARY KEY (fleet, source));
CREATE TABLE IF NOT EXISTS rulesets (
    fleet TEXT NOT NULL, target TEXT NOT NULL, version INTEGER NOT NULL,
    issued_at REAL NOT NULL, rules INTEGER NOT NULL,
    envelope TEXT NOT NULL,                  -- the signed message as published
    PRIMARY KEY (fleet, target, version));
CREATE TABLE IF NOT EXISTS acks (
    fleet TEXT NOT NULL, device TEXT NOT NULL, target TEXT NOT NULL, version INTEGER,
    status TEXT NOT NULL, reason TEXT, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS acks_by_version ON acks (fleet, target, version);
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
    meta TEXT NOT NULL, pushed_at REAL NOT NULL, targets TEXT NOT NULL);
"""

ALERT_COLUMNS = (
    "fleet", "device", "seq", "class", "confidence", "source_ip", "source_mac", "source_port",
    "victim_ip", "victim_port", "packets", "first_seen", "last_seen", "action", "rule_id", "sent_at", "received_at",
)


@dataclass(frozen=True)
class Block:
    fleet: str
    source: str  # network in CIDR form
    origin: str  # "policy" or "manual"
    reason: str
    created_at: float
    expires: float | None


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used under a lock: the service's worker, the tick and CLI calls share it.
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (rolled back on error); nests as a no-op."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- ingest --------------------------------------------------------------

    def add_alert(self, alert: dict[str, Any], received_at: float) -> bool:
        """Store one checked alert; False if (fleet, device, seq) was already there."""
        src, victim = alert["source"], alert["victim"] or {}
        row = (
            alert["fleet"], alert["device"], alert["seq"], alert["class"], alert["confidence"],
            src["ip"], src["mac"], src["port"], victim.get("ip"), victim.get("port"),
            alert["packets"], alert["first_seen"], alert["last_seen"], alert["action"], alert["rule_id"],
            alert["sent_at"], received_at,
        )
        with self.transaction() as db:
            cur = db.execute(
                f"INSERT OR IGNORE INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES ({', '.join('?' * len(row))})", row
            )
            db.execute(
                "INSERT OR IGNORE INTO devices (fleet, device, state, last_seen) VALUES (?, ?, 'unknown', ?)",
                (alert["fleet"], alert["device"], received_at),
            )
            return cur.rowcount == 1

    def refuse_seq(self, fleet: str, device: str, seq: int) -> None:
        """An alert refused for good: sending it again would not help, so it must not hold the mark back."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO refused_seqs (fleet, device, seq) VALUES (?, ?, ?)", (fleet, device, seq))

    def advance_mark(self, fleet: str, device: str, first_pending: int = 1) -> int:
        """Advance and return the device's ``stored_through``: every seq up to it is stored, refused, or below
        ``first_pending`` (the agent has nothing lower left to send).  Never goes back."""
        with self.transaction() as db:
            row = db.execute("SELECT stored_through FROM alert_marks WHERE fleet=? AND device=?", (fleet, device))
            mark = max(next(row, (0,))[0], first_pending - 1)
            # Walk the settled seqs above the mark in order; cursors step lazily, so a gap costs one row.
            cursors = [
                (r[0] for r in db.execute(f"SELECT seq FROM {table} WHERE fleet=? AND device=? AND seq>? ORDER BY seq",
                                          (fleet, device, mark)))  # fmt: skip
                for table in ("alerts", "refused_seqs")
            ]
            for seq in heapq.merge(*cursors):
                if seq > mark + 1:
                    break
                mark = seq  # the next one, or the same seq once more (stored after it was refused)
            db.execute(
                "INSERT INTO alert_marks (fleet, device, stored_through) VALUES (?, ?, ?) "
                "ON CONFLICT (fleet, device) DO UPDATE SET stored_through=excluded.stored_through",
                (fleet, device, mark),
            )
            return mark

    def set_status(self, fleet: str, device: str, status: dict[str, Any], received_at: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO devices (fleet, device, state, status, last_seen) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (fleet, device) DO UPDATE SET state=excluded.state, status=excluded.status, "
                "last_seen=excluded.last_seen",
                (fleet, device, status["state"], json.dumps(status), received_at),
            )

    def add_ack(self, fleet: str, device: str, ack: dict[str, Any], received_at: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO acks (fleet, device, target, version, status, reason, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fleet, device, ack["target"], ack["version"], ack["status"], ack["reason"], received_at),
            )

    def add_rejected(self, topic: str, reason: str, payload: bytes, received_at: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO rejected (topic, reason, payload, received_at) VALUES (?, ?, ?, ?)",
                (topic, reason, payload[:65536], received_at),
            )

    # --- policy inputs -------------------------------------------------------

    def reporters(self, fleet: str, source_ip: str, since: float, min_confidence: float) -> int:
        """How many distinct devices reported ``source_ip`` since ``since``."""
        (row,) = self._query(
            # Anomaly alerts say "unusual", not "hostile": they are kept and listed but block nothing fleet-wide.
            "SELECT COUNT(DISTINCT device) FROM alerts WHERE fleet=? AND source_ip=? AND received_at>=? AND confidence>=?"
            " AND class != 'anomaly'",
            (fleet, source_ip, since, min_confidence),
        )
        return int(row[0])

    # --- blocks --------------------------------------------------------------

    def blocks(self, fleet: str, now: float) -> list[Block]:
        rows = self._query(
            "SELECT * FROM blocks WHERE fleet=? AND (expires IS NULL OR expires>?) ORDER BY created_at, source",
            (fleet, now),
        )
        return [Block(**dict(r)) for r in rows]

    def is_blocked(self, fleet: str, source: str, now: float) -> bool:
        return bool(self._query(
            "SELECT 1 FROM blocks WHERE fleet=? AND source=? AND (expires IS NULL OR expires>?)", (fleet, source, now)
        ))

    def put_block(self, block: Block) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO blocks (fleet, source, origin, reason, created_at, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (block.fleet, block.source, block.origin, block.reason, block.created_at, block.expires),
            )

    def remove_block(self, fleet: str, source: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM blocks WHERE fleet=? AND source=?", (fleet, source)).rowcount > 0

    def expire_blocks(self, now: float) -> list[str]:
        """Delete expired blocks; return the fleets whose rule set changed."""
        with self.transaction() as db:
            fleets = [r[0] for r in db.execute("SELECT DISTINCT fleet FROM blocks WHERE expires IS NOT NULL AND expires<=?", (now,))]
            db.execute("DELETE FROM blocks WHERE expires IS NOT NULL AND expires<=?", (now,))
        return fleets

    # --- rule sets, acks, models ---------------------------------------------

    def next_ruleset_version(self, fleet: str, target: str, floor: int = 0) -> int:
        """One more than the last version issued, and at least ``floor``."""
        (row,) = self._query("SELECT COALESCE(MAX(version), 0) FROM rulesets WHERE fleet=? AND target=?", (fleet, target))
        return max(int(row[0]) + 1, floor)

    def add_ruleset(self, fleet: str, target: str, version: int, issued_at: float, rules: int, envelope: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO rulesets (fleet, target, version, issued_at, rules, envelope) VALUES (?, ?, ?, ?, ?, ?)",
                (fleet, target, version, issued_at, rules, envelope),
            )

    def rulesets(self, fleet: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first, with how many devices applied / rejected each version."""
        rows = self._query(
            "SELECT r.fleet, r.target, r.version, r.issued_at, r.rules, "
            " (SELECT COUNT(DISTINCT device) FROM acks a WHERE a.fleet=r.fleet AND a.target=r.target "
            "   AND a.version=r.version AND a.status='applied') AS applied, "
            " (SELECT COUNT(DISTINCT device) FROM acks a WHERE a.fleet=r.fleet AND a.target=r.target "
            "   AND a.version=r.version AND a.status='rejected') AS rejected "
            "FROM rulesets r WHERE (? IS NULL OR r.fleet=?) ORDER BY r.issued_at DESC, r.version DESC LIMIT ?",
            (fleet, fleet, limit),
        )
        return [dict(r) for r in rows]

    def acks(self, fleet: str, target: str, version: int) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT device, status, reason, received_at FROM acks WHERE fleet=? AND target=? AND version=? ORDER BY received_at",
            (fleet, target, version),
        )
        return [dict(r) for r in rows]

    def next_model_version(self, floor: int = 0) -> int:
        (row,) = self._query("SELECT COALESCE(MAX(version), 0) FROM models")
        return max(int(row[0]) + 1, floor)

    def add_model(self, version: int, sha256: str, size: int, meta: dict[str, Any], pushed_at: float, targets: list[str]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO models (version, sha256, bytes, meta, pushed_at, targets) VALUES (?, ?, ?, ?, ?, ?)",
                (version, sha256, size, json.dumps(meta), pushed_at, json.dumps(targets)),
            )

    # --- listings ------------------------------------------------------------

    def devices(self, fleet: str | None = None) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT fleet, device, state, status, last_seen FROM devices WHERE (? IS NULL OR fleet=?) ORDER BY fleet, device",
            (fleet, fleet),
        )
        out = []
        for r in rows:
            d = dict(r)
            d["status"] = json.loads(d["status"]) if d["status"] else None
            out.append(d)
        return out

    def recent_alerts(self, limit: int = 20, fleet: str | None = None) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT * FROM alerts WHERE (? IS NULL OR fleet=?) ORDER BY received_at DESC, seq DESC LIMIT ?",
            (fleet, fleet, limit),
        )
        return [dict(r) for r in rows]

    def alert_seqs(self, fleet: str, device: str) -> list[int]:
        return [r[0] for r in self._query("SELECT seq FROM alerts WHERE fleet=? AND device=? ORDER BY seq", (fleet, device))]

    def count(self, table: str) -> int:
        if table not in ("devices", "alerts", "rejected", "blocks", "rulesets", "acks", "models", "refused_seqs"):
            raise ValueError(f"no table {table!r}")
        (row,) = self._query(f"SELECT COUNT(*) FROM {table}")
        return int(row[0])
