"""Access tokens: stored hashed through a versioned schema change, shown once, revocable; the token commands."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from controller.store import SCHEMA, SCHEMA_VERSION, SchemaError, Store
from controller.tokens import Tokens
from lab import REPO

ENV = dict(os.environ, PYTHONPATH=str(REPO), TZ="UTC")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller", "--log-level", "WARNING", *args], env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_database_from_before_schema_versions_gains_the_tokens_table_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as old:  # as controllers before versions left it: user_version 0, no tokens
        old.executescript(SCHEMA)
        old.execute("INSERT INTO blocks VALUES ('lab', '192.0.2.0/24', 'manual', 'kept', 1.0, NULL)")
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION == 3
    assert [b.reason for b in store.blocks("lab", 0)] == ["kept"]
    assert store.token_rows() == []
    store.close()
    Store(db).close()  # opening again is a no-op
    with sqlite3.connect(db) as newer:
        newer.execute("PRAGMA user_version = 4")
    with pytest.raises(SchemaError, match="newer than this controller"):
        Store(db)
    done = cli("token", "list", "--db", str(db))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "schema version 4 is newer" in done.stderr


def test_tokens_are_stored_as_their_hash_only_and_revoking_ends_them(tmp_path):
    tokens = Tokens(Store(tmp_path / "c.sqlite"))
    admin, secret = tokens.create("admin", "ops")
    viewer, other = tokens.create("viewer")
    assert secret.startswith("iotg_") and len(secret) > 40 and secret != other
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in raw and other.encode() not in raw, "a token secret written to disk"
    (row,) = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT sha256 FROM tokens WHERE id=?", (admin.id,))
    assert row[0] == hashlib.sha256(secret.encode()).hexdigest()
    assert tokens.verify(secret).id == admin.id and tokens.verify(other).role == "viewer"
    assert tokens.verify(secret).allows("admin") and not tokens.verify(other).allows("admin")
    assert tokens.verify(other).allows("viewer")
    for wrong in ("", secret[:-1], secret + "x", "Bearer " + secret, other.upper()):
        assert tokens.verify(wrong) is None, wrong
    assert tokens.get(admin.id).last_used is not None, "last use recorded"
    assert tokens.revoke(admin.id) and not tokens.revoke(admin.id)
    assert tokens.verify(secret) is None and tokens.still_active(admin.id) is None
    assert [t.id for t in tokens.list() if t.active] == [viewer.id]
    with pytest.raises(ValueError, match="role"):
        tokens.create("root")


def test_token_commands(tmp_path):
    db = tmp_path / "c.sqlite"
    listed = cli("token", "list", "--db", str(db))
    assert listed.returncode == 2 and "no controller database" in listed.stderr and not db.exists()
    made = cli("token", "create", "--role", "admin", "--name", "grafana", "--db", str(db))
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert made.stdout.count("\n") == 1 and secret.startswith("iotg_"), "the token alone on standard output"
    assert "shown only this once" in made.stderr
    rows = json.loads(cli("token", "list", "--json", "--db", str(db)).stdout)
    assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [("grafana", "admin", None)]
    table = cli("token", "list", "--db", str(db)).stdout
    assert secret not in table and "grafana" in table and "+00:00" in table
    assert cli("token", "revoke", rows[0]["id"], "--db", str(db)).returncode == 0
    again = cli("token", "revoke", rows[0]["id"], "--db", str(db))
    assert again.returncode == 1 and "no active token" in again.stdout
    assert json.loads(cli("token", "list", "--json", "--db", str(db)).stdout)[0]["revoked_at"] is not None
    assert cli("token", "create", "--role", "root", "--db", str(db)).returncode == 2


def test_run_refuses_a_dashboard_address_it_cannot_bind(tmp_path):
    import socket

    cli("keygen", "--out", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("run", "--db", str(tmp_path / "c.sqlite"), "--key", str(tmp_path / "signing.key"),
                   "--broker", "127.0.0.1:1", "--http", f"127.0.0.1:{port}")  # fmt: skip
    assert done.returncode == 2 and "cannot serve the dashboard" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
