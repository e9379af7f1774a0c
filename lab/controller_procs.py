"""Controller replicas as real processes (``python -m controller run``), so that SIGKILL is a real crash: what the
replica had not committed is gone with it.  Shared by the replica fault tests and benchmarks/mqtt_scale.py.

Each replica connects to PostgreSQL with ``application_name`` set to its name, so ``pg_stat_activity`` tells
whether it is inside a transaction (``in_transaction``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from controller.db import is_url

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def with_app_name(db: str | Path, name: str) -> str | Path:
    """The PostgreSQL URL with ``application_name=name`` (an SQLite path as it is)."""
    if not is_url(db):
        return db
    return f"{db}{'&' if '?' in str(db) else '?'}application_name={name}"


class Replica:
    """One ``python -m controller run`` process, its output in ``workdir/<name>.log``."""

    def __init__(self, name: str, port: int, db: str | Path, key: Path, workdir: Path, k: int = 1_000_000) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "controller", "--log-level", "INFO", "run",
                     "--broker", f"127.0.0.1:{port}", "--db", str(with_app_name(db, name)), "--key", str(key),
                     "--name", name, "--k", str(k)]  # fmt: skip
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Replica:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._subscribed_at_start = self.text().count(": subscribed")
        return self

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def subscribed(self) -> bool:
        """Subscribed since the last start (the log is appended to across restarts)."""
        return self.text().count(": subscribed") > self._subscribed_at_start

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no rollback, no disconnect, no flush; PostgreSQL rolls back the open transaction."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        log.info("replica %s killed (SIGKILL)", self.name)

    def stop(self) -> str:
        """SIGTERM; the replica's final ``stopped:`` stats line (or why there is none)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        lines = [line for line in self.text().splitlines() if line.startswith("stopped:")]
        return lines[-1] if lines else "(no stats)"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def start_replicas(n: int, port: int, db: str | Path, key: Path, workdir: Path, timeout: float = 60.0) -> list[Replica]:
    replicas = [Replica(f"c{i + 1}", port, db, key, workdir).start() for i in range(n)]
    wait_subscribed(replicas, timeout)
    return replicas


def wait_subscribed(replicas: list[Replica], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.subscribed() for r in replicas):
        dead = [r for r in replicas if not r.alive()]
        if dead:
            raise RuntimeError(f"replica {dead[0].name} exited: {dead[0].text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not subscribed within {timeout:.0f} s")
        time.sleep(0.05)


def in_transaction(admin, name: str) -> bool:
    """Whether replica ``name`` has a transaction open right now (``admin``: a psycopg connection, autocommit)."""
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL "
                        "AND state <> 'idle'", (name,)).fetchone()  # fmt: skip
    return bool(row[0])
