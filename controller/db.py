"""The store's database connection: SQLite (embedded, the default) or PostgreSQL (replicas on several machines).

The store writes each statement once, in SQLite's spelling with ``?`` placeholders, using only what both
databases understand (``INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE``, ``RETURNING``, window
functions).  What still differs is here and small:

* placeholders: ``?`` (sqlite3) vs ``%s`` (psycopg), translated by ``PostgresConnection``;
* column types: SQLite's REAL/INTEGER/BLOB are DOUBLE PRECISION/BIGINT/BYTEA (PostgreSQL's REAL is only
  4 bytes: it would round timestamps to minutes);
* ``rowid``: implicit in SQLite, an identity column of that name in PostgreSQL (``Dialect.rowid``);
* reading rows added since the last read (the metrics' counters): SQLite has one writer, so rows appear
  in rowid order and "above the last rowid" is exact; on PostgreSQL identity values are taken at insert
  and committed in any order, so rows carry the inserting transaction's id (``xid``) and a read takes those
  below the oldest transaction still running (``pg_snapshot_xmin``), all of which are settled;
* a few functions: ``Dialect.greatest`` (MAX(a, b) vs GREATEST), ``Dialect.trunc_int``;
* the schema version: ``PRAGMA user_version`` vs a one-row ``schema_version`` table;
* locking: SQLite's BEGIN IMMEDIATE takes the one write lock, so ``lock`` and ``try_lock`` have nothing
  to add; PostgreSQL takes transaction-scoped advisory locks.

PostgreSQL runs at READ COMMITTED: each statement sees what other replicas committed before it started.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(target: str | Path) -> bool:
    """A PostgreSQL URL rather than an SQLite file name."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def redact(target: str | Path) -> str:
    """The database named for logs and messages, without a password in the URL."""
    text = str(target)
    if not is_url(text) or "@" not in text:
        return text
    scheme, rest = text.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"


class Row(tuple):
    """A result row read by position or by column name, and ``dict(row)`` gives name -> value (as sqlite3.Row)."""

    _names: tuple[str, ...]

    def __new__(cls, values: Iterable[Any], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return super().__getitem__(self._names.index(key))
        return super().__getitem__(key)


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    types: dict[str, str]  # SQLite column type -> this database's
    rowid: str  # the column definition giving a table a ``rowid`` ("" where it is implicit)
    greatest: str  # the larger of two values, e.g. greatest.format("a", "b")
    trunc_int: str  # a number truncated toward zero to an integer, e.g. trunc_int.format("x")
    mark_column: str  # what orders a table's rows for reading "what is new since the last mark"
    mark_type: str
    mark_now: str  # the mark below which every row of {table} is settled (committed or never to be)
    extra_ddl: tuple[str, ...] = ()  # indexes on what only this dialect has

    def ddl(self, template: str) -> str:
        """A schema template (SQLite types, ``{rowid}`` where a table needs one) in this dialect."""
        text = template.replace("{rowid}", self.rowid)
        for sqlite_type, ours in self.types.items():
            text = text.replace(f" {sqlite_type} ", f" {ours} ").replace(f" {sqlite_type},", f" {ours},")
            text = text.replace(f" {sqlite_type})", f" {ours})")
        return text


SQLITE = Dialect(
    "sqlite", {}, "", "MAX({}, {})", "CAST({} AS INTEGER)",
    "rowid", "INTEGER", "SELECT COALESCE(MAX(rowid), 0) + 1 FROM {table}",
)
POSTGRES = Dialect(
    "postgresql", {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "BLOB": "BYTEA"},
    "rowid BIGINT GENERATED ALWAYS AS IDENTITY, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),",
    "GREATEST({}, {})", "CAST(TRUNC({}) AS BIGINT)",
    "xid", "xid8", "SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)",
    ("CREATE INDEX IF NOT EXISTS alerts_by_xid ON alerts (xid)", "CREATE INDEX IF NOT EXISTS acks_by_xid ON acks (xid)"),
)


def statements(script: str) -> list[str]:
    """A script split into statements (no ``;`` inside the store's literals or comments)."""
    return [s.strip() for s in script.split(";") if s.strip()]


class Connection(Protocol):
    dialect: Dialect

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def lock(self, name: str) -> None: ...
    def try_lock(self, name: str) -> bool: ...
    def schema_version(self) -> int: ...
    def set_schema_version(self, version: int) -> None: ...
    def tables(self) -> set[str]: ...
    def is_transient(self, exc: BaseException) -> bool: ...
    def close(self) -> None: ...


class SqliteConnection:
    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # Switching a new file to WAL can answer "database is locked" at once, without waiting the busy timeout,
        # while another connection (a replica started at the same moment) switches it: try again for a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._db.execute("PRAGMA synchronous=NORMAL")

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, args)

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # the write lock now: reads inside see the latest commit

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def lock(self, name: str) -> None:
        """BEGIN IMMEDIATE already holds the database's one write lock."""

    def try_lock(self, name: str) -> bool:
        return True

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._db.execute(f"PRAGMA user_version = {int(version)}")

    def tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def close(self) -> None:
        self._db.close()


MANY_PARAMETERS = 50  # above this a statement's values are bound by ``PostgresConnection._bound``


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")  # no '?' in the store's literals


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name (Python's hash() differs per process)."""
    return int.from_bytes(hashlib.sha256(f"iotguard:{name}".encode()).digest()[:8], "big", signed=True)


class PostgresConnection:
    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        import psycopg  # only needed for PostgreSQL: the controller extra installs it

        self._psycopg = psycopg
        self._url = url
        self._tx: Any = None  # the adapters binding values into long statements (``_bound``), of connection _tx_of
        self._tx_of: Any = None
        self._db = self._connect()

    def _connect(self) -> Any:
        # Client-side binding, as sqlite3 does: '(? IS NULL OR fleet = ?)' needs no parameter types.
        # Autocommit: transactions are explicit (BEGIN ... COMMIT), as on the SQLite connection.
        psycopg = self._psycopg
        return psycopg.connect(self._url, autocommit=True, cursor_factory=psycopg.ClientCursor, connect_timeout=30)

    def _usable(self) -> Any:
        """The connection; a new one if the last was lost (a server restart, a failover): the statement that
        met the loss failed, the next one works again.  Never inside a transaction: a lost one is gone."""
        if self._db.closed:
            log.warning("database connection lost; connecting again to %s", redact(self._url))
            self._db = self._connect()
        return self._db

    @property
    def in_transaction(self) -> bool:
        status = self._psycopg.pq.TransactionStatus
        return self._db.info.transaction_status in (status.INTRANS, status.INERROR, status.ACTIVE)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        db = self._db if self.in_transaction else self._usable()
        cursor = db.cursor(row_factory=_rows)
        if len(args) > MANY_PARAMETERS:
            return cursor.execute(self._bound(db, sql, args))
        return cursor.execute(_pyformat(sql), tuple(args))  # () too: "%%" is unescaped only with parameters

    def _bound(self, db: Any, sql: str, args: Sequence[Any]) -> bytes:
        """A statement with many parameters (a multi-row INSERT or VALUES list) with its values bound in, as
        psycopg's client-side binding does (the same literals), but split on '?' once: psycopg caches the
        parsing of short statements only and parses a long one with a regular expression each time, which cost
        more than the rest of a batch's work."""
        pieces = sql.split("?")  # no '?' in the store's literals
        if len(pieces) != len(args) + 1:
            raise ValueError(f"{len(pieces) - 1} placeholders, {len(args)} values")
        if self._tx is None or self._tx_of is not db:
            self._tx, self._tx_of = self._psycopg.adapt.Transformer.from_context(db), db
        literal = self._tx.as_literal
        out = [pieces[0].encode()]
        for value, piece in zip(args, pieces[1:]):
            out.append(b"NULL" if value is None else literal(value))
            out.append(piece.encode())
        return b"".join(out)

    def begin(self) -> None:
        self._usable().execute("BEGIN")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        if not self._db.closed:
            self._db.execute("ROLLBACK")

    def lock(self, name: str) -> None:
        """Wait for the named lock; it is released at the end of the transaction."""
        self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(name),))

    def try_lock(self, name: str) -> bool:
        """The named lock if nobody holds it (released at the end of the transaction), else False at once."""
        return bool(self._db.execute("SELECT pg_try_advisory_xact_lock(%s)", (_lock_key(name),)).fetchone()[0])

    def schema_version(self) -> int:
        if "schema_version" not in self.tables():
            return 0
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, version: int) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        self._db.execute("DELETE FROM schema_version")
        self._db.execute("INSERT INTO schema_version (version) VALUES (%s)", (int(version),))

    def tables(self) -> set[str]:
        rows = self._db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in rows}

    def is_transient(self, exc: BaseException) -> bool:
        errors = self._psycopg.errors
        lost = isinstance(exc, self._psycopg.OperationalError) and self._db.closed  # connected again next time
        return lost or isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure))

    def close(self) -> None:
        self._db.close()


def _rows(cursor: Any) -> Any:
    """psycopg row factory making ``Row``s."""
    names = tuple(c.name for c in cursor.description or ())
    return lambda values: Row(values, names)


def connect(target: str | Path) -> Connection:
    """A PostgreSQL URL (postgresql://USER@HOST:PORT/NAME) or an SQLite file."""
    if is_url(target):
        return PostgresConnection(str(target))
    return SqliteConnection(Path(target))


def database_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean 'the database said no' on either backend (for the CLI's one-line errors)."""
    errors: list[type[BaseException]] = [sqlite3.DatabaseError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)
