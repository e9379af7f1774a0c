"""The controller's database: devices, alerts, blocks, rule set versions, acks, model pushes.

SQLite (a file, the default) or PostgreSQL (``postgresql://USER@HOST:PORT/NAME``, for replicas on several
machines); the SQL is written once and ``controller.db`` holds the few differences.  Replicas share state
only through the database (and the broker):

* alerts are unique by (fleet, device, seq): whichever replica gets a redelivered alert, it is stored once
  (``ON CONFLICT DO NOTHING``; on PostgreSQL a concurrent insert of the same key waits for the first);
* the K-devices policy counts reporters in the database, after the batch that stored the alerts committed,
  so of two replicas storing reports of one source the later to commit sees both;
* a policy block is inserted only where no active one is (``add_policy_block``), so only one replica
  publishes a rule set for it;
* rule set versions come from a counter row (``ruleset_versions``) bumped with ``INSERT ... ON CONFLICT DO
  UPDATE ... RETURNING`` in the transaction that publishes the rule set: the row stays locked until the commit, so replicas never
  issue the same version, and one issued later is higher (SQLite: BEGIN IMMEDIATE has the same effect);
* the expiry sweep runs on one replica at a time (``try_lock``: an advisory lock on PostgreSQL).

Per device, ``alert_marks`` keeps what the controller confirms to the agent (``stored_through``, see
``agent.wire.messages``), advanced in the same transaction that stores the alerts; it never goes back.

Schema versions (``PRAGMA user_version`` / the ``schema_version`` table): 1 is ``SCHEMA`` as it stood
before versions were recorded; each later version is one step of ``MIGRATIONS``, applied in order inside
one transaction when a store opens the database (``controller migrate`` does only that).  A database from
a newer controller is refused rather than written to.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.db import SQLITE, Connection, Row, connect, redact, statements

log = logging.getLogger(__name__)

# SQLite's spelling; {rowid}: tables read in insertion order (an identity column on PostgreSQL).
SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS devices (
    fleet TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL,            -- online / offline (from status and last will) / unknown
    status TEXT,                    -- the last status document, JSON
    last_seen REAL NOT NULL,
    PRIMARY KEY (fleet, device));
CREATE TABLE IF NOT EXISTS alerts ({rowid}
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
CREATE TABLE IF NOT EXISTS rejected ({rowid}       -- messages refused, kept with the reason
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
CREATE TABLE IF NOT EXISTS acks ({rowid}
    fleet TEXT NOT NULL, device TEXT NOT NULL, target TEXT NOT NULL, version INTEGER,
    status TEXT NOT NULL, reason TEXT, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS acks_by_version ON acks (fleet, target, version);
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
    meta TEXT NOT NULL, pushed_at REAL NOT NULL, targets TEXT NOT NULL);
"""

SCHEMA = SQLITE.ddl(SCHEMA_TEMPLATE)  # as SQLite controllers before schema versions created it

SCHEMA_VERSION = 3
MIGRATIONS: dict[int, tuple[str, ...]] = {  # version -> the statements that reach it from the one before
    2: (  # access tokens of the dashboard, its API and /metrics (controller/tokens.py): only the hash is kept
        "CREATE TABLE IF NOT EXISTS tokens ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('viewer', 'admin')),"
        " sha256 TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, last_used REAL, revoked_at REAL)",
    ),
    3: (  # the last rule set version issued per (fleet, target): a row to lock and bump, shared by replicas
        "CREATE TABLE IF NOT EXISTS ruleset_versions ("
        " fleet TEXT NOT NULL, target TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (fleet, target))",
        "INSERT INTO ruleset_versions (fleet, target, version)"
        " SELECT fleet, target, MAX(version) FROM rulesets GROUP BY fleet, target",
    ),
}


class SchemaError(sqlite3.DatabaseError):
    """The database was written by a newer controller (its schema version is above ours)."""


ALERT_COLUMNS = (
    "fleet", "device", "seq", "class", "confidence", "source_ip", "source_mac", "source_port",
    "victim_ip", "victim_port", "packets", "first_seen", "last_seen", "action", "rule_id", "sent_at", "received_at",
)


CHUNK_ROWS = 500  # rows per multi-row statement (SQLite allows 32,766 parameters: 500 alerts take 8,500)


def _chunks(items: list) -> Iterator[list]:
    for i in range(0, len(items), CHUNK_ROWS):
        yield items[i : i + CHUNK_ROWS]


def _values(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?), ...``: the VALUES of a multi-row statement."""
    row = f"({', '.join('?' * columns)})"
    return ", ".join([row] * rows)


@dataclass(frozen=True)
class Block:
    fleet: str
    source: str  # network in CIDR form
    origin: str  # "policy" or "manual"
    reason: str
    created_at: float
    expires: float | None


class Store:
    def __init__(self, target: Path | str) -> None:
        """``target``: an SQLite file, or a PostgreSQL URL (postgresql://USER@HOST:PORT/NAME)."""
        self.target = target
        # One connection, used under a lock: the service's worker, the tick and CLI calls share it.
        self._db: Connection = connect(target)
        self.dialect = self._db.dialect
        self._lock = threading.RLock()
        self._migrate()

    def _migrate(self) -> None:
        """Bring the database to SCHEMA_VERSION; replicas opening it at once wait for each other (BEGIN
        IMMEDIATE on SQLite, an advisory lock on PostgreSQL)."""
        with self.transaction() as db:
            db.lock("migrate")
            found = db.schema_version()
            if found > SCHEMA_VERSION:
                raise SchemaError(f"schema version {found} is newer than this controller's ({SCHEMA_VERSION}): upgrade it")
            for statement in (*statements(self.dialect.ddl(SCHEMA_TEMPLATE)), *self.dialect.extra_ddl):
                db.execute(statement)  # one by one, not executescript: it would commit half-way
            for step in range(max(found, 1) + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    db.execute(self.dialect.ddl(statement))
            if found != SCHEMA_VERSION:
                db.set_schema_version(SCHEMA_VERSION)
                log.info("database %s: schema version %d -> %d", redact(self.target), found, SCHEMA_VERSION)

    def schema_version(self) -> int:
        with self._lock:
            return self._db.schema_version()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN (IMMEDIATE on SQLite) ... COMMIT, rolled back on error; nests as a no-op."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.begin()
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def is_transient(self, exc: BaseException) -> bool:
        """A failure worth trying the transaction again for (a deadlock between replicas, a busy file)."""
        return self._db.is_transient(exc)

    def _query(self, sql: str, args: tuple = ()) -> list[Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- ingest --------------------------------------------------------------

    def add_alert(self, alert: dict[str, Any], received_at: float) -> bool:
        """Store one checked alert; False if (fleet, device, seq) was already there."""
        return self.add_alerts([alert], received_at)[0]

    def add_alerts(self, alerts: list[dict[str, Any]], received_at: float) -> list[bool]:
        """Store checked alerts (a batch: a few multi-row statements); for each, True if it is new, False if
        its (fleet, device, seq) was already stored (or came earlier in ``alerts``).  Rows go in key order, so
        replicas storing overlapping batches take the row locks in one order."""
        first: dict[tuple[str, str, int], int] = {}  # key -> index of its first alert here
        for i, a in enumerate(alerts):
            first.setdefault((a["fleet"], a["device"], a["seq"]), i)
        rows = []
        for key in sorted(first):
            a = alerts[first[key]]
            src, victim = a["source"], a["victim"] or {}
            rows.append((
                a["fleet"], a["device"], a["seq"], a["class"], a["confidence"],
                src["ip"], src["mac"], src["port"], victim.get("ip"), victim.get("port"),
                a["packets"], a["first_seen"], a["last_seen"], a["action"], a["rule_id"],
                a["sent_at"], received_at,
            ))  # fmt: skip
        stored: set[tuple[str, str, int]] = set()
        with self.transaction() as db:
            for chunk in _chunks(rows):
                cur = db.execute(
                    f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES {_values(len(chunk), len(ALERT_COLUMNS))}"
                    " ON CONFLICT DO NOTHING RETURNING fleet, device, seq",
                    [v for row in chunk for v in row],
                )
                stored.update((r[0], r[1], int(r[2])) for r in cur.fetchall())
            devices = sorted({(a["fleet"], a["device"]) for a in alerts})
            for chunk in _chunks(devices):
                db.execute(
                    f"INSERT INTO devices (fleet, device, state, last_seen) VALUES {_values(len(chunk), 4)}"
                    " ON CONFLICT DO NOTHING",
                    [v for fleet, device in chunk for v in (fleet, device, 'unknown', received_at)],
                )
        return [(a["fleet"], a["device"], a["seq"]) in stored and first[(a["fleet"], a["device"], a["seq"])] == i
                for i, a in enumerate(alerts)]  # fmt: skip

    def refuse_seq(self, fleet: str, device: str, seq: int) -> None:
        """An alert refused for good: sending it again would not help, so it must not hold the mark back."""
        self.refuse_seqs([(fleet, device, seq)])

    def refuse_seqs(self, keys: list[tuple[str, str, int]]) -> None:
        """``refuse_seq`` for each (fleet, device, seq)."""
        with self.transaction() as db:
            for chunk in _chunks(sorted(set(keys))):
                db.execute(f"INSERT INTO refused_seqs (fleet, device, seq) VALUES {_values(len(chunk), 3)} ON CONFLICT DO NOTHING",
                           [v for key in chunk for v in key])  # fmt: skip

    def advance_mark(self, fleet: str, device: str, first_pending: int = 1) -> int:
        """Advance and return the device's ``stored_through``: every seq up to it is stored, refused, or below
        ``first_pending`` (the agent has nothing lower left to send).  Never goes back."""
        return self.advance_marks({(fleet, device): first_pending})[(fleet, device)]

    MARK_WINDOW = 256  # seqs above a mark read per device and round: a gap costs at most this many rows

    def advance_marks(self, floors: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        """``advance_mark`` for many devices at once, (fleet, device) -> first_pending: a few statements for the
        whole batch.  Marks are written in key order, which keeps replicas out of deadlocks."""
        keys = sorted(floors)
        if not keys:
            return {}
        marks = {key: max(0, floors[key] - 1) for key in keys}
        higher = self.dialect.greatest
        with self.transaction() as db:
            # The settled seqs (stored or refused) just above each mark, a window at a time: the mark moves up
            # while the next seq is there; a device whose whole window was settled reads the next one.  The first
            # round starts from the stored mark (if higher), read in the same statement.
            pending, first = keys, True
            while pending:
                lows = {key: marks[key] for key in pending}
                settled: dict[tuple[str, str], set[int]] = {key: set() for key in pending}
                for chunk in _chunks(pending):
                    low = higher.format("COALESCE(m.stored_through, 0)", "w.lo") if first else "w.lo"
                    window = (
                        f"WITH w (fleet, device, lo) AS (VALUES {_values(len(chunk), 3)}),"
                        f" b AS (SELECT w.fleet, w.device, {low} AS lo FROM w"
                        + (" LEFT JOIN alert_marks m ON m.fleet=w.fleet AND m.device=w.device" if first else "") + ") "
                    )  # fmt: skip
                    select = ("SELECT b.fleet, b.device, b.lo, t.seq FROM b {join} {table} t ON t.fleet=b.fleet"
                              " AND t.device=b.device AND t.seq>b.lo AND t.seq<=b.lo+?")  # fmt: skip
                    rows = db.execute(
                        window + select.format(join="LEFT JOIN", table="alerts") + " UNION ALL "
                        + select.format(join="JOIN", table="refused_seqs"),
                        [*(v for key in chunk for v in (*key, lows[key])), self.MARK_WINDOW, self.MARK_WINDOW],
                    )  # fmt: skip
                    for r in rows:
                        key = (r[0], r[1])
                        lows[key] = max(lows[key], int(r[2]))
                        if r[3] is not None:
                            settled[key].add(int(r[3]))
                for key in pending:
                    seqs, mark = settled[key], lows[key]
                    while mark + 1 in seqs:
                        mark += 1
                    marks[key] = mark
                pending = [key for key in pending if marks[key] == lows[key] + self.MARK_WINDOW]
                first = False
            # The larger of the two: another replica may have advanced it meanwhile (PostgreSQL).
            higher_mark = higher.format("alert_marks.stored_through", "excluded.stored_through")
            out = {}
            for chunk in _chunks(keys):
                rows = db.execute(
                    f"INSERT INTO alert_marks (fleet, device, stored_through) VALUES {_values(len(chunk), 3)} "
                    f"ON CONFLICT (fleet, device) DO UPDATE SET stored_through={higher_mark} RETURNING fleet, device, stored_through",
                    [v for key in chunk for v in (*key, marks[key])],
                ).fetchall()
                out.update(((r[0], r[1]), int(r[2])) for r in rows)
            return out

    def set_status(self, fleet: str, device: str, status: dict[str, Any], received_at: float) -> None:
        self.set_statuses([(fleet, device, status)], received_at)

    def set_statuses(self, statuses: list[tuple[str, str, dict[str, Any]]], received_at: float) -> None:
        """(fleet, device, status) in the order received: each device keeps its last."""
        last = {(fleet, device): status for fleet, device, status in statuses}
        with self.transaction() as db:
            for chunk in _chunks(sorted(last)):
                db.execute(
                    f"INSERT INTO devices (fleet, device, state, status, last_seen) VALUES {_values(len(chunk), 5)} "
                    "ON CONFLICT (fleet, device) DO UPDATE SET state=excluded.state, status=excluded.status, "
                    "last_seen=excluded.last_seen",
                    [v for key in chunk for v in (*key, last[key]["state"], json.dumps(last[key]), received_at)],
                )

    def add_ack(self, fleet: str, device: str, ack: dict[str, Any], received_at: float) -> None:
        self.add_acks([(fleet, device, ack)], received_at)

    def add_acks(self, acks: list[tuple[str, str, dict[str, Any]]], received_at: float) -> None:
        """(fleet, device, checked rules ack), stored in this order."""
        with self.transaction() as db:
            for chunk in _chunks(acks):
                db.execute(
                    f"INSERT INTO acks (fleet, device, target, version, status, reason, received_at) VALUES {_values(len(chunk), 7)}",
                    [v for fleet, device, a in chunk
                     for v in (fleet, device, a["target"], a["version"], a["status"], a["reason"], received_at)],
                )  # fmt: skip

    def add_rejected(self, topic: str, reason: str, payload: bytes, received_at: float) -> None:
        self.add_rejected_many([(topic, reason, payload)], received_at)

    def add_rejected_many(self, rejected: list[tuple[str, str, bytes]], received_at: float) -> None:
        """(topic, reason, payload) of refused messages, kept in this order."""
        with self.transaction() as db:
            for chunk in _chunks(rejected):
                db.execute(f"INSERT INTO rejected (topic, reason, payload, received_at) VALUES {_values(len(chunk), 4)}",
                           [v for topic, reason, payload in chunk for v in (topic, reason, payload[:65536], received_at)])

    # --- policy inputs -------------------------------------------------------

    def reporters(self, fleet: str, source_ip: str, since: float, min_confidence: float) -> int:
        """How many distinct devices reported ``source_ip`` since ``since``."""
        return self.reporters_of(fleet, [source_ip], since, min_confidence).get(source_ip, 0)

    def reporters_of(self, fleet: str, source_ips: list[str], since: float, min_confidence: float) -> dict[str, int]:
        """``reporters`` of each of ``source_ips`` (one statement a chunk); sources nobody reported are left out."""
        out: dict[str, int] = {}
        for chunk in _chunks(sorted(set(source_ips))):
            rows = self._query(
                # Anomaly alerts say "unusual", not "hostile": they are kept and listed but block nothing fleet-wide.
                "SELECT source_ip, COUNT(DISTINCT device) FROM alerts WHERE fleet=? AND source_ip IN"
                f" ({', '.join('?' * len(chunk))}) AND received_at>=? AND confidence>=? AND class != 'anomaly'"
                " GROUP BY source_ip",
                (fleet, *chunk, since, min_confidence),
            )
            out.update((r[0], int(r[1])) for r in rows)
        return out

    # --- blocks --------------------------------------------------------------

    def blocks(self, fleet: str, now: float) -> list[Block]:
        rows = self._query(
            "SELECT * FROM blocks WHERE fleet=? AND (expires IS NULL OR expires>?) ORDER BY created_at, source",
            (fleet, now),
        )
        return [Block(**dict(r)) for r in rows]

    def is_blocked(self, fleet: str, source: str, now: float) -> bool:
        return bool(self.blocked_among(fleet, [source], now))

    def blocked_among(self, fleet: str, sources: list[str], now: float) -> set[str]:
        """Those of ``sources`` (networks in CIDR form) that have an active block."""
        out: set[str] = set()
        for chunk in _chunks(sorted(set(sources))):
            rows = self._query(
                f"SELECT source FROM blocks WHERE fleet=? AND source IN ({', '.join('?' * len(chunk))})"
                " AND (expires IS NULL OR expires>?)",
                (fleet, *chunk, now),
            )
            out.update(r[0] for r in rows)
        return out

    _PUT_BLOCK = (
        "INSERT INTO blocks (fleet, source, origin, reason, created_at, expires) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (fleet, source) DO UPDATE SET origin=excluded.origin, reason=excluded.reason,"
        " created_at=excluded.created_at, expires=excluded.expires"
    )

    def put_block(self, block: Block) -> None:
        """Add or replace the block of ``block.source`` (a manual block)."""
        with self.transaction() as db:
            db.execute(self._PUT_BLOCK, (block.fleet, block.source, block.origin, block.reason, block.created_at,
                                         block.expires))  # fmt: skip

    def add_policy_block(self, block: Block) -> bool:
        """Add the block unless an active one of the source is there; True if added.  Of replicas deciding
        the same block at once, one adds it (PostgreSQL: the second insert waits for the first's commit)."""
        with self.transaction() as db:
            cur = db.execute(self._PUT_BLOCK + " WHERE blocks.expires IS NOT NULL AND blocks.expires <= ?",
                             (block.fleet, block.source, block.origin, block.reason, block.created_at, block.expires,
                              block.created_at))  # fmt: skip
            return cur.rowcount == 1

    def remove_block(self, fleet: str, source: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM blocks WHERE fleet=? AND source=?", (fleet, source)).rowcount > 0

    def expire_blocks(self, now: float) -> list[str]:
        """Delete expired blocks; return the fleets whose rule set changed (publish them in the same
        transaction).  One replica sweeps at a time: another one sweeping now means nothing to do here."""
        with self.transaction() as db:
            if not db.try_lock("expiry sweep"):
                return []
            rows = db.execute("DELETE FROM blocks WHERE expires IS NOT NULL AND expires<=? RETURNING fleet", (now,))
            return sorted({r[0] for r in rows})

    # --- rule sets, acks, models ---------------------------------------------

    def next_ruleset_version(self, fleet: str, target: str, floor: int = 0) -> int:
        """Allocate a version: one more than the last one allocated (by any replica), and at least ``floor``.
        Call it inside the transaction that records and publishes the rule set: the counter row stays locked
        until the commit, so versions are issued and published in order."""
        greatest = self.dialect.greatest
        with self.transaction() as db:
            (row,) = db.execute(
                "INSERT INTO ruleset_versions (fleet, target, version)"
                f" SELECT ?, ?, {greatest.format('COALESCE(MAX(version), 0) + 1', '?')}"
                " FROM rulesets WHERE fleet=? AND target=?"
                " ON CONFLICT (fleet, target) DO UPDATE SET"
                f" version={greatest.format('ruleset_versions.version + 1', 'excluded.version')} RETURNING version",
                (fleet, target, floor, fleet, target),
            ).fetchall()
            return int(row[0])

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
                "INSERT INTO models (version, sha256, bytes, meta, pushed_at, targets) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (version) DO UPDATE SET sha256=excluded.sha256, bytes=excluded.bytes, meta=excluded.meta,"
                " pushed_at=excluded.pushed_at, targets=excluded.targets",
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
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE (? IS NULL OR fleet=?) ORDER BY received_at DESC, seq DESC LIMIT ?",
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

    # --- access tokens (controller/tokens.py) --------------------------------

    def add_token(self, token_id: str, name: str, role: str, sha256: str, created_at: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO tokens (id, name, role, sha256, created_at) VALUES (?, ?, ?, ?, ?)",
                       (token_id, name, role, sha256, created_at))  # fmt: skip

    def token_rows(self, sha256: str | None = None, token_id: str | None = None) -> list[dict[str, Any]]:
        """Tokens (hash left out), oldest first; or the one with this hash or id."""
        rows = self._query(
            "SELECT id, name, role, created_at, last_used, revoked_at FROM tokens"
            " WHERE (? IS NULL OR sha256=?) AND (? IS NULL OR id=?) ORDER BY created_at, id",
            (sha256, sha256, token_id, token_id),
        )
        return [dict(r) for r in rows]

    def touch_token(self, token_id: str, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE tokens SET last_used=? WHERE id=?", (now, token_id))

    def revoke_token(self, token_id: str, now: float) -> bool:
        """False if there is no such token or it was already revoked."""
        with self.transaction() as db:
            return db.execute("UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                              (now, token_id)).rowcount > 0  # fmt: skip

    # --- dashboard and metrics reads -----------------------------------------

    @staticmethod
    def _alert_filter(fleet: str | None, device: str | None, cls: str | None, since: float | None,
                      until: float | None) -> tuple[str, tuple]:  # fmt: skip
        return (
            "(? IS NULL OR fleet=?) AND (? IS NULL OR device=?) AND (? IS NULL OR class=?)"
            " AND received_at >= COALESCE(?, -1e300) AND received_at < COALESCE(?, 1e300)",
            (fleet, fleet, device, device, cls, cls, since, until),
        )

    def alerts(self, fleet: str | None = None, device: str | None = None, cls: str | None = None,
               since: float | None = None, until: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts received in [since, until), newest first."""
        where, args = self._alert_filter(fleet, device, cls, since, until)
        rows = self._query(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE {where}"
                           " ORDER BY received_at DESC, seq DESC LIMIT ?", (*args, limit))  # fmt: skip
        return [dict(r) for r in rows]

    def alert_counts(self, bucket_s: float, since: float, until: float, fleet: str | None = None,
                     device: str | None = None, cls: str | None = None) -> list[tuple[int, str, int]]:
        """(bucket index from ``since``, class, alerts) for the alerts received in [since, until)."""
        where, args = self._alert_filter(fleet, device, cls, since, until)
        rows = self._query(
            f"SELECT {self.dialect.trunc_int.format('(received_at - ?) / ?')} AS bucket, class, COUNT(*)"
            f" FROM alerts WHERE {where}"
            " GROUP BY bucket, class ORDER BY bucket, class",
            (since, bucket_s, *args),
        )
        return [(int(r[0]), r[1], int(r[2])) for r in rows]

    def active_blocks(self, now: float) -> list[Block]:
        """The active blocks of every fleet."""
        rows = self._query("SELECT * FROM blocks WHERE expires IS NULL OR expires>? ORDER BY fleet, created_at, source", (now,))
        return [Block(**dict(r)) for r in rows]

    def latest_rulesets(self) -> dict[tuple[str, str], int]:
        """(fleet, target) -> the newest version issued."""
        return {(r[0], r[1]): int(r[2]) for r in self._query("SELECT fleet, target, MAX(version) FROM rulesets GROUP BY fleet, target")}

    def last_acks(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """(fleet, device, target) -> the device's last rules ack (version, status, reason, received_at)."""
        rows = self._query(
            "SELECT fleet, device, target, version, status, reason, received_at FROM ("
            " SELECT *, ROW_NUMBER() OVER (PARTITION BY fleet, device, target ORDER BY received_at DESC, rowid DESC) AS n"
            " FROM acks) AS newest WHERE n = 1"
        )
        return {(r["fleet"], r["device"], r["target"]): dict(r) for r in rows}

    def models(self, limit: int = 20) -> list[dict[str, Any]]:
        """Model pushes, newest first, with their metadata and targets ("fleet/device") decoded."""
        rows = self._query("SELECT * FROM models ORDER BY pushed_at DESC, version DESC LIMIT ?", (limit,))
        return [dict(r) | {"meta": json.loads(r["meta"]), "targets": json.loads(r["targets"])} for r in rows]

    def recent_rejected(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._query("SELECT topic, reason, received_at FROM rejected ORDER BY rowid DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def _settled_mark(self, table: str) -> int:
        """Every row of ``table`` below this mark is settled: counted once read (see ``controller.db``)."""
        return int(self._db.execute(self.dialect.mark_now.format(table=table)).fetchone()[0])

    def _new_rows(self, alias: str = "") -> str:
        """The rows in [the last mark, this one): a read-only window over settled rows."""
        column, kind = f"{alias}{self.dialect.mark_column}", self.dialect.mark_type
        return f"{column} >= CAST(? AS {kind}) AND {column} < CAST(? AS {kind})"

    def alert_totals_after(self, mark: int) -> tuple[int, list[tuple[str, str, int]]]:
        """For counters kept incrementally: a new mark, and (fleet, class, alerts) of the alerts settled from
        ``mark`` (0 the first time) up to it."""
        with self._lock:  # the mark read first, so a row being inserted meanwhile waits for the next call
            top = self._settled_mark("alerts")
            rows = self._db.execute(f"SELECT fleet, class, COUNT(*) FROM alerts WHERE {self._new_rows()} GROUP BY fleet, class",
                                    (str(mark), str(top))).fetchall()  # fmt: skip
        return top, [(r[0], r[1], int(r[2])) for r in rows]

    def ruleset_totals(self) -> list[tuple[str, int]]:
        """(fleet, rule sets issued): rows are never deleted, so these only grow."""
        return [(r[0], int(r[1])) for r in self._query("SELECT fleet, COUNT(*) FROM rulesets GROUP BY fleet")]

    def ack_latencies_after(self, mark: int) -> tuple[int, list[float]]:
        """A new mark, and for each first 'applied' ack settled from ``mark`` up to it of a rule set this
        database issued: seconds from issue to the ack's arrival."""
        with self._lock:
            top = self._settled_mark("acks")
            rows = self._db.execute(
                "SELECT a.received_at - r.issued_at FROM acks a JOIN rulesets r"
                " ON r.fleet=a.fleet AND r.target=a.target AND r.version=a.version"
                f" WHERE {self._new_rows('a.')} AND a.status='applied' AND NOT EXISTS (SELECT 1 FROM acks b"
                "  WHERE b.fleet=a.fleet AND b.target=a.target AND b.version=a.version AND b.device=a.device"
                "  AND b.status='applied' AND b.rowid<a.rowid)",
                (str(mark), str(top)),
            ).fetchall()
        return top, [float(r[0]) for r in rows]

    def online_devices(self) -> list[tuple[str, str, int]]:
        """(fleet, state, devices)."""
        return [(r[0], r[1], int(r[2])) for r in self._query("SELECT fleet, state, COUNT(*) FROM devices GROUP BY fleet, state")]
