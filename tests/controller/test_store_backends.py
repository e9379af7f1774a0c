"""The store on SQLite and PostgreSQL: migrations (``controller migrate``), the CLI views, and what replicas
on several machines rely on: versions allocated in the database, one policy block per source, one sweeper."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from controller.db import POSTGRES, SQLITE, connect, redact
from controller.store import SCHEMA, SCHEMA_VERSION, Block, Store
from lab import REPO
from lab.mqtt_helpers import FLEET

ENV = dict(os.environ, PYTHONPATH=str(REPO), TZ="UTC")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "--log-level", "WARNING", *args], env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_dialects_differ_only_where_they_must():
    ddl = "CREATE TABLE t ({rowid} a REAL NOT NULL, b INTEGER, c BLOB, d TEXT, e REAL)"
    assert SQLITE.ddl(ddl) == "CREATE TABLE t ( a REAL NOT NULL, b INTEGER, c BLOB, d TEXT, e REAL)"
    assert POSTGRES.ddl(ddl) == ("CREATE TABLE t (rowid BIGINT GENERATED ALWAYS AS IDENTITY,"
                                 " xid xid8 NOT NULL DEFAULT pg_current_xact_id(), a DOUBLE PRECISION NOT NULL,"
                                 " b BIGINT, c BYTEA, d TEXT, e DOUBLE PRECISION)")  # fmt: skip
    assert redact("postgresql://ctl:secret@db.lan:5432/fleet") == "postgresql://ctl@db.lan:5432/fleet"
    assert "REAL" not in POSTGRES.ddl(SCHEMA.replace("  ", " ")), "a 4-byte float column on PostgreSQL"


def test_migrate_prints_the_version_and_the_views_work_on_both(database):
    target = str(database)
    if POSTGRES.name in target:  # an empty PostgreSQL database: the views refuse it rather than create tables
        done = cli("rules", "--db", target)
        assert done.returncode == 2 and "holds no controller tables" in done.stderr, done.stderr
    first = cli("migrate", "--db", target)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith(f"schema version {SCHEMA_VERSION} (migrated from version 0)"), first.stdout
    again = cli("migrate", "--db", target)
    assert again.stdout.strip().endswith(f"schema version {SCHEMA_VERSION} (already current)"), again.stdout
    store = Store(target)
    store.add_alert({"fleet": FLEET, "device": "d1", "seq": 1, "class": "mirai_syn", "confidence": 0.9,
                     "source": {"ip": "192.0.2.1", "mac": None, "port": None}, "victim": None, "packets": 3,
                     "first_seen": 1.0, "last_seen": 2.0, "action": "drop", "rule_id": None, "sent_at": 2.5},
                    1_700_000_000.25)  # fmt: skip
    store.add_ruleset(FLEET, "all", 7, 1_700_000_000.5, 2, "{}")
    store.close()
    assert "192.0.2.1" in cli("alerts", "--db", target).stdout
    assert "d1" in cli("devices", "--db", target).stdout
    rules = cli("rules", "--db", target, "--json")
    assert '"version": 7' in rules.stdout and '"issued_at": 1700000000.5' in rules.stdout, "timestamps kept exactly"


def test_a_version_2_database_migrates_and_keeps_issuing_above_its_rule_sets(tmp_path):
    db = tmp_path / "v2.sqlite"
    with sqlite3.connect(db) as old:  # as the controller before version 3 left it
        old.executescript(SCHEMA)
        old.execute("INSERT INTO rulesets VALUES ('lab', 'all', 5000, 1.0, 0, '{}')")
        old.execute("PRAGMA user_version = 2")
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.next_ruleset_version("lab", "all") == 5001, "the counter starts above the versions issued"
    assert store.next_ruleset_version("other", "all", floor=10) == 10


def test_versions_only_grow_and_respect_the_floor(database):
    store = Store(database)
    assert store.next_ruleset_version(FLEET, "all", floor=100) == 100
    assert store.next_ruleset_version(FLEET, "all", floor=50) == 101, "a lower floor never goes back"
    assert store.next_ruleset_version(FLEET, "all", floor=200) == 200
    assert store.next_ruleset_version(FLEET, "dev1") == 1, "per target"
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.next_ruleset_version(FLEET, "all")
            raise RuntimeError("the publish failed")
    assert store.next_ruleset_version(FLEET, "all") == 201, "a rolled back allocation is reused, never skipped past"


def test_replicas_allocate_distinct_increasing_versions(database):
    """Stores on their own connections, as replicas are: each version is issued once, and in the order the
    transactions commit (what the broker then sees, since a rule set is published before its commit)."""
    replicas = [Store(database) for _ in range(4)]
    committed: list[int] = []
    guard = threading.Lock()

    def issue(store: Store) -> None:
        for _ in range(15):
            with store.transaction():
                version = store.next_ruleset_version(FLEET, "all", floor=int(time.time()))
                time.sleep(0.001)  # the publish, while the counter row is held
                store.add_ruleset(FLEET, "all", version, time.time(), 0, "{}")
                with guard:  # appended before the commit, still holding the row: commit order
                    committed.append(version)

    threads = [threading.Thread(target=issue, args=(s,)) for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(committed) == 60 and committed == sorted(set(committed)), committed
    assert replicas[0].count("rulesets") == 60


def test_one_policy_block_per_source_and_an_expired_one_is_replaced(database):
    a, b = Store(database), Store(database)
    now = time.time()
    block = Block(FLEET, "192.0.2.1/32", "policy", "reported by 3 devices", now, now + 60)
    assert a.add_policy_block(block)
    assert not b.add_policy_block(block), "another replica adds the same block again"
    a.put_block(Block(FLEET, "198.51.100.0/24", "policy", "old", now - 120, now - 60))  # expired, not yet swept
    renewed = Block(FLEET, "198.51.100.0/24", "policy", "again", now, now + 60)
    assert b.add_policy_block(renewed) and [x.reason for x in a.blocks(FLEET, now)] == ["reported by 3 devices", "again"]


def test_one_replica_sweeps_expired_blocks_at_a_time(database):
    a, b = Store(database), Store(database)
    now = time.time()
    for fleet in ("f1", "f2"):
        a.put_block(Block(fleet, "192.0.2.1/32", "policy", "x", now - 10, now - 1))
    a.put_block(Block("f3", "192.0.2.1/32", "policy", "x", now - 10, now + 60))
    if POSTGRES.name in str(database):
        with a.transaction():  # replica a is sweeping: b finds the lock taken and leaves it to a
            assert a.expire_blocks(now) == ["f1", "f2"]
            assert b.expire_blocks(now) == []
    else:
        assert a.expire_blocks(now) == ["f1", "f2"]
    assert b.expire_blocks(now) == [] and a.count("blocks") == 1, "swept once"


def test_postgres_rows_read_by_name_and_position(postgres_db):
    db = connect(postgres_db)
    try:
        (row,) = db.execute("SELECT 1 AS one, ? AS two, ? IS NULL AS nothing", ("x", None)).fetchall()
        assert (row[0], row["two"], dict(row)) == (1, "x", {"one": 1, "two": "x", "nothing": True})
        assert db.execute("SELECT '100%' AS p").fetchone()["p"] == "100%", "a literal % is not a placeholder"
    finally:
        db.close()


def test_a_lost_postgres_connection_is_made_again(postgres_db):
    """A server restart or failover ends the store's connection: the statement that meets it fails, the
    following ones work on a new connection."""
    store = Store(postgres_db)
    store.add_ruleset(FLEET, "all", 1, 1.0, 0, "{}")

    def cut() -> None:
        admin = connect(postgres_db)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND pid <> pg_backend_pid()")  # fmt: skip
        admin.close()

    cut()
    with pytest.raises(Exception):
        store.count("rulesets")
    assert store.count("rulesets") == 1
    cut()
    with pytest.raises(Exception) as lost:
        with store.transaction():  # as the service's batch: worth trying again
            store.add_ruleset(FLEET, "all", 9, 1.0, 0, "{}")
    assert store.is_transient(lost.value), lost.value
    with store.transaction():
        store.add_ruleset(FLEET, "all", store.next_ruleset_version(FLEET, "all"), 2.0, 0, "{}")
    assert [r["version"] for r in store.rulesets()] == [2, 1]


def test_counters_read_incrementally_count_rows_committed_out_of_order_once(database):
    """Two replicas insert alerts; the one that inserted first commits last (on PostgreSQL its row number is
    the lower one).  A scrape between the two commits must not step over the late row."""
    a, b, reader = Store(database), Store(database), Store(database)

    def alert(device: str) -> dict:
        return {"fleet": FLEET, "device": device, "seq": 1, "class": "mirai_syn", "confidence": 0.9,
                "source": {"ip": "192.0.2.1", "mac": None, "port": None}, "victim": None, "packets": 3,
                "first_seen": 1.0, "last_seen": 2.0, "action": "drop", "rule_id": None, "sent_at": 2.5}  # fmt: skip

    total, mark = 0, 0
    if POSTGRES.name in str(database):
        with a.transaction():
            a.add_alert(alert("d1"), 1.0)  # the lower row number, committed last
            b.add_alert(alert("d2"), 1.0)  # its own transaction: committed at once
            mark, rows = reader.alert_totals_after(mark)
            total += sum(n for _, _, n in rows)
    else:  # one writer at a time: row numbers are in commit order
        a.add_alert(alert("d1"), 1.0)
        mark, rows = reader.alert_totals_after(mark)
        total += sum(n for _, _, n in rows)
        b.add_alert(alert("d2"), 1.0)
    mark, rows = reader.alert_totals_after(mark)
    total += sum(n for _, _, n in rows)
    assert total == 2 and reader.alert_totals_after(mark)[1] == [], "an alert counted never, or twice"


@pytest.mark.slow
def test_controller_run_on_postgresql_from_the_command_line(postgres_db, broker, keys, tmp_path):
    """``controller run --db postgresql://...``: alerts stored there, the password never printed."""
    from lab.mqtt_helpers import alert, make_agent, wait_until

    url = postgres_db.replace("://iotguard@", "://iotguard:s3cret-pw@")  # trust authentication ignores it
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "--log-level", "INFO", "run", "--db", url, "--key", str(keys.private),
         "--broker", f"{broker.host}:{broker.port}", "--name", "pg1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=work)  # fmt: skip
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    try:
        lines = []
        while not lines or "running" not in lines[-1]:  # printed once subscribed
            lines.append(proc.stdout.readline())
            assert lines[-1], "".join(lines)
        agent.start()
        wait_until(lambda: agent.ready, "agent connected")
        agent.send_alert(alert("192.0.2.5"))
        store = Store(postgres_db)
        wait_until(lambda: store.count("alerts") == 1, "alert stored in PostgreSQL by the CLI controller")
        proc.send_signal(subprocess.signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        out = "".join(lines) + proc.stdout.read()
        assert "alerts_new=1" in out and redact(url) in out and "s3cret-pw" not in out, out
        assert list(work.iterdir()) == [], "an SQLite file beside the PostgreSQL database"
    finally:
        agent.stop()
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_an_unreachable_postgres_is_one_line_and_no_password():
    pytest.importorskip("psycopg")
    for command in ("devices", "migrate", "run"):
        done = cli(command, "--db", "postgresql://ctl:s3cret-pw@127.0.0.1:1/fleet")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("error: cannot open postgresql://ctl@127.0.0.1:1/fleet") and "s3cret" not in line, line


def test_replicas_opening_a_new_database_at_once_migrate_it_once(database):
    """Replicas started together: one creates the schema while the others wait (an advisory lock on
    PostgreSQL, whose CREATE TABLE IF NOT EXISTS is not safe against a concurrent one)."""
    opened: list[Store] = []
    failed: list[BaseException] = []
    start = threading.Barrier(5)

    def open_store() -> None:
        start.wait()
        try:
            opened.append(Store(database))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed and len(opened) == 5, failed
    assert {s.schema_version() for s in opened} == {SCHEMA_VERSION}
    for s in opened:
        s.close()
