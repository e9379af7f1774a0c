"""``python -m controller`` when something is wrong: one line on standard error, a non-zero status, and nothing
created or recorded that should not be (no stray database, no rule set issued that the broker never took)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import agent
from controller.store import Store
from lab import REPO
from lab.mqtt_helpers import FLEET

ENV = dict(os.environ, PYTHONPATH=str(REPO), TZ="UTC")


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "--log-level", "WARNING", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def failed_with(done: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with status 2 and one error line containing ``words``."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def rows(db: Path, table: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def test_version():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"python -m controller {agent.__version__}"


def test_views_never_create_a_database(tmp_path):
    for view in ("devices", "alerts", "rules"):
        failed_with(cli(view, cwd=tmp_path), "no controller database at iotguard-controller.sqlite", "--db")
        failed_with(cli(view, "--db", str(tmp_path / "fleet.sqlite")), "no controller database at")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_the_controllers_database_is_refused_untouched(tmp_path):
    text = tmp_path / "notadb.sqlite"
    text.write_text("some notes, not a database\n")
    failed_with(cli("rules", "--db", str(text)), "not an SQLite database")
    assert text.read_text() == "some notes, not a database\n"

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE photos (name TEXT)")
    for args in (("devices", "--db", str(other)), ("run", "--db", str(other), "--broker", "127.0.0.1:1")):
        failed_with(cli(*args), "not the controller's")
    with sqlite3.connect(other) as c:
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master")] == ["photos"], "no tables added"


def test_block_without_a_broker_issues_nothing(tmp_path, broker):
    """A block the broker never took is not recorded: neither the block nor its rule set version."""
    assert cli("keygen", "--out", str(tmp_path)).returncode == 0
    db = tmp_path / "fleet.sqlite"
    key = ["--key", str(tmp_path / "signing.key"), "--fleet", FLEET]
    failed_with(cli("block", "192.0.2.7", "--db", str(db), "--broker", "127.0.0.1:1", *key),
                "cannot reach the broker at 127.0.0.1:1")  # fmt: skip
    assert not db.exists(), "nothing recorded, not even an empty database"

    reachable = ["--db", str(db), "--broker", f"{broker.host}:{broker.port}", *key]
    done = cli("block", "192.0.2.7", *reachable)
    assert done.returncode == 0 and "(1 rule) published" in done.stdout, done.stderr
    blocks, rulesets = rows(db, "blocks"), rows(db, "rulesets")
    assert len(blocks) == 1 and len(rulesets) == 1

    broker.stop()  # the same broker, gone: block, unblock and push-model fail without a trace in the database
    failed_with(cli("block", "198.51.100.0/24", *reachable), "cannot reach the broker")
    failed_with(cli("unblock", "192.0.2.7", *reachable), "cannot reach the broker")
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    (tmp_path / "m.json").write_text("{}")
    failed_with(cli("push-model", "--devices", "dev1", "--tflite", str(tmp_path / "m.tflite"), "--meta",
                    str(tmp_path / "m.json"), *reachable), "cannot reach the broker")  # fmt: skip
    assert rows(db, "blocks") == blocks and rows(db, "rulesets") == rulesets and rows(db, "models") == []


def test_listings_print_iso_times_and_keep_their_json(database):
    db = str(database)
    store = Store(database)
    store.add_ruleset(FLEET, "all", 7, 1_700_000_000.5, 2, "{}")
    store.close()
    table = cli("rules", "--db", db).stdout
    assert re.search(r"\b2023-11-14T22:13:20\+00:00\b", table), table
    (row,) = json.loads(cli("rules", "--db", db, "--json").stdout)
    assert row["issued_at"] == 1_700_000_000.5
    assert row["issued"] == datetime.fromtimestamp(1_700_000_000.5).strftime("%Y-%m-%d %H:%M:%S"), "as before"


def test_the_broker_command_that_certs_prints_starts_mosquitto_as_root():
    """As root, mosquitto drops to the user mosquitto before reading its key: a root-only key stopped the printed
    command with "Unable to load server key file".  Only the broker's key and data folder are handed over."""
    import pytest

    from controller.broker import free_port, mosquitto_binary

    if os.geteuid() != 0 or mosquitto_binary() is None:
        pytest.skip("needs root and mosquitto (apt-get install mosquitto)")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="iotguard-certs-"))  # pytest's folders are 0700: the broker's user must reach it
    base.chmod(0o755)
    out = base / "pki"
    port = free_port()
    done = cli("certs", "--out", str(out), "--devices", "dev1", "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    command = re.search(r"start the broker with: (mosquitto -c \S+)", done.stdout).group(1).split()
    broker = subprocess.Popen([mosquitto_binary(), *command[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    try:
        import socket
        import time

        deadline = time.monotonic() + 10
        while broker.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        assert broker.poll() is None, broker.stdout.read()
        assert (out / "ca.key").stat().st_uid == 0 and (out / "devices" / "dev1.key").stat().st_uid == 0
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        shutil.rmtree(base)
