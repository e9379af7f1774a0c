"""A bounded on-disk queue of alerts waiting for the broker's PUBACK.

Layout of the queue directory::

    state.json              {"next_seq": 42, "dropped": 3}
    pending/00000000000000000041.json   one alert per file, named by its seq

Every file is written atomically (temporary file, fsync, rename, fsync of the
directory), so a SIGKILL or power cut at any moment leaves either the old or
the new file, never half of one.  ``put`` returns only after the alert is on
disk; ``ack`` deletes it once the broker has acknowledged it.

The queue also owns the per-device sequence number: ``state.json`` is written
*before* the alert file, so a seq is never handed out twice, even across
crashes (a crash in between leaves a gap, which is harmless).  When the queue
is full the oldest alert is dropped and counted; the count is persisted too,
so the agent can report it in its status.  An alert the disk refuses (full) is
counted as dropped as well, rather than raised: detection must go on.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.util import TMP_PREFIX, write_atomically
from agent.wire.jsonio import canonical_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
PENDING_DIR = "pending"
SEQ_DIGITS = 20


@dataclass
class QueuedAlert:
    seq: int
    alert: dict[str, Any]


class AlertQueue:
    """Thread-safe: the agent thread puts, the MQTT network thread acks."""

    def __init__(self, directory: Path | str, max_items: int = 10_000) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.directory = Path(directory)
        self.max_items = max_items
        self._pending_dir = self.directory / PENDING_DIR
        self._pending_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.next_seq = 1
        self.dropped = 0  # alerts dropped because the queue was full (persisted)
        self.corrupt = 0  # unreadable files found and removed at load (this process only)
        self.write_errors = 0  # alerts the disk refused (full, failing): counted in dropped too (this process only)
        self._seqs: dict[int, None] = {}  # pending seqs, oldest first (dict keeps insertion order)
        self._load()

    # --- loading -------------------------------------------------------------

    def _load(self) -> None:
        state_path = self.directory / STATE_FILE
        if state_path.exists():
            try:
                state = json.loads(state_path.read_bytes())
                self.next_seq = int(state["next_seq"])
                self.dropped = int(state["dropped"])
            except (ValueError, KeyError, TypeError) as exc:
                # Cannot happen with atomic writes unless the disk lies; recover from the files.
                log.error("alert queue: unreadable %s (%s); rebuilding from pending files", state_path, exc)
                self.corrupt += 1
        for directory in (self.directory, self._pending_dir):
            for leftover in directory.glob(TMP_PREFIX + "*"):
                leftover.unlink(missing_ok=True)  # an interrupted write: the rename never happened
        seqs = []
        for path in self._pending_dir.iterdir():
            seq = self._seq_of(path)
            if seq is None or self._read(path) is None:
                log.error("alert queue: removing unreadable file %s", path.name)
                self.corrupt += 1
                path.unlink(missing_ok=True)
                continue
            seqs.append(seq)
        seqs.sort()
        self._seqs = dict.fromkeys(seqs)
        if seqs:
            self.next_seq = max(self.next_seq, seqs[-1] + 1)
        log.info("alert queue %s: %d pending, next seq %d, %d dropped", self.directory, len(seqs), self.next_seq, self.dropped)

    @staticmethod
    def _seq_of(path: Path) -> int | None:
        stem, _, ext = path.name.partition(".")
        return int(stem) if ext == "json" and len(stem) == SEQ_DIGITS and stem.isdigit() else None

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            alert = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return alert if isinstance(alert, dict) else None

    def _path(self, seq: int) -> Path:
        return self._pending_dir / f"{seq:0{SEQ_DIGITS}d}.json"

    def _save_state(self, dropped: int | None = None) -> None:
        doc = {"next_seq": self.next_seq, "dropped": self.dropped if dropped is None else dropped}
        write_atomically(self.directory / STATE_FILE, canonical_json(doc))

    # --- the queue -----------------------------------------------------------

    def put(self, alert: dict[str, Any]) -> int:
        """Assign the next seq, store the alert (with ``seq`` set) durably, return the seq.

        When the disk refuses (full, failing) the alert is logged and counted as dropped
        instead of raising: the agent must keep detecting and blocking.
        """
        with self._lock:
            seq = self.next_seq
            overflow = max(0, len(self._seqs) + 1 - self.max_items)
            oldest = list(itertools.islice(self._seqs, overflow))
            self.next_seq = seq + 1  # in memory even if the disk refuses: this process never reuses a seq
            try:
                self._save_state(dropped=self.dropped + len(oldest))  # first: no seq reused, no drop uncounted
            except OSError as exc:
                return self._refused(seq, exc)  # nothing changed on disk; the oldest stay queued
            self.dropped += len(oldest)
            for old in oldest:
                log.warning("alert queue full (%d): dropping oldest alert seq %d", self.max_items, old)
                self._path(old).unlink(missing_ok=True)
                del self._seqs[old]
            try:
                write_atomically(self._path(seq), canonical_json({**alert, "seq": seq}))
            except OSError as exc:
                return self._refused(seq, exc)
            self._seqs[seq] = None
            return seq

    def _refused(self, seq: int, exc: OSError) -> int:
        """The disk refused alert ``seq``: count it as dropped (persisted with the next state write)."""
        self.dropped += 1
        self.write_errors += 1
        log.error("alert queue: cannot store alert seq %d (%s); counted as dropped", seq, exc)
        return seq

    def uncount_drop(self) -> None:
        """An alert dropped while the sender had it in flight reached the broker after all: one drop less.

        Keeps delivered + pending + dropped == queued; without it, the alerts in flight when the
        queue overflowed were reported as dropped *and* arrived at the controller.
        """
        with self._lock:
            self.dropped = max(0, self.dropped - 1)
            try:
                self._save_state()
            except OSError as exc:  # the next put writes the state again
                log.error("alert queue: cannot save state (%s)", exc)

    def peek(self, limit: int, skip: set[int] | frozenset[int] = frozenset()) -> list[QueuedAlert]:
        """Up to ``limit`` oldest pending alerts whose seq is not in ``skip``."""
        out: list[QueuedAlert] = []
        unreadable: list[int] = []
        with self._lock:
            for seq in self._seqs:
                if len(out) >= limit:
                    break
                if seq in skip:
                    continue
                alert = self._read(self._path(seq))
                if alert is None:  # damaged behind our back: count, forget, go on
                    unreadable.append(seq)
                    continue
                out.append(QueuedAlert(seq, alert))
            for seq in unreadable:
                log.error("alert queue: pending alert seq %d unreadable; removing", seq)
                self.corrupt += 1
                self._path(seq).unlink(missing_ok=True)
                del self._seqs[seq]
        return out

    def ack(self, seq: int) -> bool:
        """Forget a delivered alert; False if it was not pending (already acked or dropped)."""
        with self._lock:
            if seq not in self._seqs:
                return False
            del self._seqs[seq]
            self._path(seq).unlink(missing_ok=True)
            return True

    def pending_seqs(self) -> list[int]:
        with self._lock:
            return list(self._seqs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)
