"""The agent's event log: one JSON object per line (NDJSON), for Filebeat, Vector, Wazuh and ``jq``.

Every line has ``time`` (ISO 8601, UTC, milliseconds), ``event`` (its type),
``device`` (the board's id) and the event's own fields; times inside the fields
stay unix seconds, as ``detect --jsonl`` writes them.  The file is rotated by
size: when a line would take it past ``max_bytes`` it becomes FILE.1 (FILE.1
becomes FILE.2, ... and FILE.<backups> is overwritten), so at most ``backups``
old files are kept; with ``backups = 0`` the full file is removed instead.

Writing never raises: the packet path and the MQTT thread call ``write``, and
a full or read-only disk must not stop detection.  A failure is counted
(``failures``), logged once until a write succeeds again, and the next write
tries again (reopening the file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


def iso_utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no spelling for them, and a reader would refuse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class NoEvents:
    """Where events go when no event log is configured."""

    written = 0
    failures = 0

    def write(self, event: str, /, **fields: Any) -> bool:
        return False

    def close(self) -> None:
        pass


class EventLog:
    """Thread-safe appender with size-based rotation; see the module's docstring."""

    def __init__(self, path: Path | str, device: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS) -> None:  # fmt: skip
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be at least 1 and backups at least 0")
        self.path = Path(path)
        self.device = device
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._failing = False  # a warning was logged; the next success says so and clears it
        self._torn = False  # a write stopped part way: the next line starts on a fresh line

    def write(self, event: str, /, **fields: Any) -> bool:
        """Append one event; True when it reached the file."""
        try:
            doc = {"time": iso_utc(time.time()), "event": event, "device": self.device}
            for key, value in fields.items():
                doc.setdefault(key, value)  # the three fields above are the log's, whatever a caller passes
            try:
                line = json.dumps(doc, separators=(",", ":"), default=str, allow_nan=False)
            except ValueError:
                line = json.dumps(_finite(doc), separators=(",", ":"), default=str)
            data = line.encode() + b"\n"
            with self._lock:
                self._append(data)
        except Exception as exc:  # OSError above all; anything else is a bug that still must not stop detection
            with self._lock:
                self.failures += 1
                if not self._failing:
                    self._failing = True
                    log.warning("event log %s: cannot write (%s); events are counted as lost until it works again",
                                self.path, exc)  # fmt: skip
            return False
        if self._failing:
            with self._lock:
                self._failing = False
            log.info("event log %s: writing again (%d events lost)", self.path, self.failures)
        return True

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._open()
        if self._size and self._size + self._torn + len(data) > self.max_bytes:
            self._rotate()
        if self._torn:
            data = b"\n" + data
        try:
            n = os.write(self._fd, data)
        except OSError:
            self._close()  # reopened on the next write: the file may have been removed or the disk fixed
            raise
        self._size += n
        if n < len(data):
            self._torn = True
            raise OSError(f"only {n} of {len(data)} bytes written")
        self._torn = False
        self.written += 1

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _rotate(self) -> None:
        """FILE -> FILE.1 -> ... -> FILE.<backups>; the oldest is overwritten (or FILE removed: no backups)."""
        self._close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._torn = False  # the torn line stays in the old file
        self._open()

    def close(self) -> None:
        with self._lock:
            self._close()
