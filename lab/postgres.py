"""A throwaway PostgreSQL server for the tests: Debian's binaries, a data folder and socket in a temporary
folder, a free TCP port on 127.0.0.1, trust authentication, stopped at the end.

The server refuses to run as root, and the tests run as root: initdb and pg_ctl run as ``nobody`` (through
``runuser``) in a folder that user owns.  Each test gets a database of its own (``postgres_db``), so tests
never see each other's rows while sharing one server per session.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

USER = "iotguard"  # the cluster's superuser (initdb -U), what the tests connect as
RUN_AS = "nobody"


def postgres_bin() -> Path | None:
    """The newest installed /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin: Path
    folder: Path
    port: int = 0
    _names = itertools.count(1)

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *argv: str, check: bool = True) -> None:
        command = [*argv] if os.geteuid() != 0 else ["runuser", "-u", RUN_AS, "--", *argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PostgresServer:
        try:
            return self._start()
        except BaseException:
            if self.port:  # pg_ctl ran: a server that came up too slowly is stopped before its folder goes
                self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop",
                               check=False)  # fmt: skip
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.folder, RUN_AS)
        data, sockets = self.folder / "data", self.folder / "sockets"
        self._as_owner("mkdir", "-p", str(sockets))
        self._as_owner(str(self.bin / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8",
                       "--no-sync", "--no-instructions")  # fmt: skip
        self.port = _free_port()
        # Small and fast: a test server needs no durability (fsync off) and few connections.
        options = (f"-h 127.0.0.1 -p {self.port} -k {sockets} -c fsync=off -c synchronous_commit=off"
                   " -c full_page_writes=off -c max_connections=60 -c shared_buffers=16MB")  # fmt: skip
        self._as_owner(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"), "-w",
                       "-t", "60", "-o", options, "start")  # fmt: skip
        log.info("PostgreSQL %s on 127.0.0.1:%d", self.bin.parts[-2], self.port)
        return self

    def stop(self) -> None:
        try:
            self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return 'psycopg not installed (pip install "psycopg[binary]")'
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp folder: that one is private to root, and the server runs as nobody.
    server = PostgresServer(postgres_bin(), Path(tempfile.mkdtemp(prefix="iotguard-pg-"))).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database on the session's server, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """The controller's database on each backend: an SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "controller.sqlite"
    return request.getfixturevalue("postgres_db")
