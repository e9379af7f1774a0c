"""An MQTT broker for when none is configured: a mosquitto child process, else amqtt in-process.

``MosquittoBroker`` runs the ``mosquitto`` binary with a config file of its
own in a working directory, on a loopback port; the tests use it too.  At
fleet scale the broker is an existing clustered one (DESIGN 7), not this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    """Path of mosquitto (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def plain_config(workdir: Path, host: str, port: int, persistence: bool = True) -> str:
    """A loopback-only, anonymous broker keeping its state in ``workdir``."""
    lines = [
        f"listener {port} {host}",
        "allow_anonymous true",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {workdir}/",
        # Alerts wait here while a controller is away; the default (1000) is small for a fleet.
        "max_queued_messages 100000",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    return "\n".join(lines) + "\n"


def _wait_listening(host: str, port: int, alive: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerError("broker exited during start-up")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise BrokerError(f"broker not listening on {host}:{port} after {timeout:.0f} s")


@dataclass
class MosquittoBroker:
    """A mosquitto child process.  ``config`` is the whole config file (``plain_config`` by default)."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free one
    config: str | None = None
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        if self.config is None:
            self.config = plain_config(self.workdir, self.host, self.port)
        if os.geteuid() == 0 and "\nuser " not in "\n" + self.config:
            # As root, mosquitto drops to user "mosquitto", which cannot read our temp dir or keys.
            self.config += "user root\n"
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> MosquittoBroker:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.config_path.write_text(self.config)
        with open(self.log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([binary, "-c", str(self.config_path)], stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_listening(self.host, self.port, lambda: self.process.poll() is None, timeout)
        except BrokerError as exc:
            self.stop()
            raise BrokerError(f"{exc}; mosquitto log:\n{self.log_tail()}") from None
        log.info("mosquitto (pid %d) listening on %s:%d", self.process.pid, self.host, self.port)
        return self

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (mosquitto saves its persistence file) or SIGKILL (it saves nothing)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AmqttBroker:
    """The pure-Python amqtt broker on its own event-loop thread (only when mosquitto is missing)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from amqtt.broker import Broker  # ImportError tells the caller amqtt is not installed

        self.host = host
        self.port = port or free_port(host)
        self._config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "auth": {"allow-anonymous": True},
            "topic-check": {"enabled": False},
        }
        self._broker_cls = Broker
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker = None

    def start(self, timeout: float = START_TIMEOUT_S) -> AmqttBroker:
        self._thread.start()

        async def boot() -> None:
            self._broker = self._broker_cls(self._config)
            await self._broker.start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout)
        _wait_listening(self.host, self.port, self._thread.is_alive, timeout)
        log.info("amqtt broker listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
            self._broker = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Broker(Protocol):
    host: str
    port: int

    def stop(self) -> None: ...


def start_embedded_broker(workdir: Path) -> Broker:
    """mosquitto if installed, else amqtt if importable, else a BrokerError saying what to install."""
    if mosquitto_binary() is not None:
        return MosquittoBroker(Path(workdir)).start()
    try:
        return AmqttBroker().start()
    except ImportError:
        raise BrokerError(
            "no broker configured and none can be started: install mosquitto (apt-get install mosquitto) "
            "or amqtt (pip install amqtt), or give --broker HOST:PORT"
        ) from None
