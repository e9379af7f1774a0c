"""A bounded on-disk queue of alerts waiting to be delivered.

Layout of the queue directory::

    state.json              {"next_seq": 42, "dropped": 3, "confirmations": true}
    pending/00000000000000000041.json   one alert per file, named by its seq

Every file is written atomically (temporary file, fsync, rename, fsync of the
directory), so a SIGKILL or power cut at any moment leaves either the old or
the new file, never half of one.  ``put`` returns only after the alert is on
disk.  An alert leaves the disk when the broker acknowledges it (``broker_acked``
without ``hold``), or, where the fleet's controllers confirm what they stored
(``confirmations`` in state.json, see ``agent.fleet.mqtt``), when a
controller's confirmation covers it (``confirm``); until then it is held and
handed out again by ``take`` after a wait that doubles with every resend.
Where each alert stands with the broker (being sent, acknowledged at) is kept
in memory only: after a restart every pending alert is sent again, and the
controller drops the duplicates.

The queue also owns the per-device sequence number: ``state.json`` is written
*before* the alert file, so a seq is never handed out twice, even across
crashes (a crash in between leaves a gap, which is harmless).  When the queue
is full, alerts the broker has acknowledged are let go first (``released``:
without confirmations they would have left at the PUBACK already), then the
oldest are dropped and counted; the count is persisted too, so the agent can
report it in its status.  An alert the disk refuses (full) is counted as
dropped as well, rather than raised: detection must go on.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from agent.util import TMP_PREFIX, write_atomically
from agent.wire.jsonio import canonical_json

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
PENDING_DIR = "pending"
SEQ_DIGITS = 20
MAX_DOUBLINGS = 6  # a held alert is resent after resend_after_s, 2x, 4x, ... at most 64x that
RESEND_SCAN_S = 1.0  # how often take() looks for held alerts due for a resend (a walk over the whole queue)


@dataclass
class QueuedAlert:
    seq: int
    alert: dict[str, Any]
    resend: bool = False  # handed out again: the broker had acknowledged it, no controller confirmed it


@dataclass
class _Delivery:
    """Where a pending alert stands with the broker (memory only)."""

    sending: bool = False  # handed to the network, its PUBACK outstanding
    acked_at: float | None = None  # the broker's last PUBACK: since then held for the controller's confirmation
    resends: int = 0


class Acked(Enum):
    """What a PUBACK meant for the queue (``broker_acked``)."""

    HELD = "held"  # kept until a controller confirms it
    DELIVERED = "delivered"  # removed
    UNDROPPED = "undropped"  # the full queue had dropped it while it was being sent: delivered after all
    GONE = "gone"  # no longer pending (confirmed or let go meanwhile): nothing to do


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
        self.confirmations = False  # a controller has confirmed alerts of this device (persisted)
        self.corrupt = 0  # unreadable files found and removed at load (this process only)
        self.write_errors = 0  # alerts the disk refused (full, failing): counted in dropped too (this process only)
        self.released = 0  # acknowledged by the broker, let go unconfirmed to make room (this process only)
        self.sent_through = 0  # highest seq that may have reached a controller (issued before start, or taken since)
        self._seqs: dict[int, _Delivery] = {}  # pending alerts, oldest first (dict keeps insertion order)
        self._unsent: dict[int, None] = {}  # those waiting for their first publish (or a new one after a failure)
        self._dropped_sending: set[int] = set()  # dropped while being sent: their PUBACK may still come
        self._in_flight = 0  # entries with sending set
        self._next_resend_scan = 0.0
        self._load()

    # --- loading -------------------------------------------------------------

    def _load(self) -> None:
        state_path = self.directory / STATE_FILE
        if state_path.exists():
            try:
                state = json.loads(state_path.read_bytes())
                self.next_seq = int(state["next_seq"])
                self.dropped = int(state["dropped"])
                self.confirmations = state.get("confirmations") is True  # absent before confirmations existed
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
        self._seqs = {seq: _Delivery() for seq in seqs}
        self._unsent = dict.fromkeys(seqs)
        if seqs:
            self.next_seq = max(self.next_seq, seqs[-1] + 1)
        self.sent_through = self.next_seq - 1  # the last run may have sent any of them
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

    def _save_state(self, dropped: int | None = None, confirmations: bool | None = None) -> None:
        doc = {"next_seq": self.next_seq, "dropped": self.dropped if dropped is None else dropped,
               "confirmations": self.confirmations if confirmations is None else confirmations}  # fmt: skip
        write_atomically(self.directory / STATE_FILE, canonical_json(doc))

    def _remove(self, seq: int) -> None:
        self._in_flight -= self._seqs.pop(seq).sending
        self._unsent.pop(seq, None)
        self._path(seq).unlink(missing_ok=True)

    # --- the queue -----------------------------------------------------------

    def put(self, alert: dict[str, Any]) -> int:
        """Assign the next seq, store the alert (with ``seq`` set) durably, return the seq.

        When the disk refuses (full, failing) the alert is logged and counted as dropped
        instead of raising: the agent must keep detecting and blocking.
        """
        with self._lock:
            seq = self.next_seq
            released, oldest = self._make_room(max(0, len(self._seqs) + 1 - self.max_items))
            self.next_seq = seq + 1  # in memory even if the disk refuses: this process never reuses a seq
            try:
                self._save_state(dropped=self.dropped + len(oldest))  # first: no seq reused, no drop uncounted
            except OSError as exc:
                return self._refused(seq, exc)  # nothing changed on disk; the oldest stay queued
            self.dropped += len(oldest)
            self.released += len(released)
            for old in released:
                log.warning("alert queue full (%d): letting go of alert seq %d, acknowledged by the broker but "
                            "not yet confirmed by a controller", self.max_items, old)  # fmt: skip
                self._remove(old)
            for old in oldest:
                log.warning("alert queue full (%d): dropping oldest alert seq %d", self.max_items, old)
                if self._seqs[old].sending:
                    self._dropped_sending.add(old)
                self._remove(old)
            try:
                write_atomically(self._path(seq), canonical_json({**alert, "seq": seq}))
            except OSError as exc:
                return self._refused(seq, exc)
            self._seqs[seq] = _Delivery()
            self._unsent[seq] = None
            return seq

    def _make_room(self, count: int) -> tuple[list[int], list[int]]:
        """The ``count`` alerts to remove: (acknowledged by the broker, oldest first; then the oldest others)."""
        if count == 0:
            return [], []
        acked = list(itertools.islice((s for s, d in self._seqs.items() if d.acked_at is not None), count))
        skip = set(acked)
        return acked, list(itertools.islice((s for s in self._seqs if s not in skip), count - len(acked)))

    def _refused(self, seq: int, exc: OSError) -> int:
        """The disk refused alert ``seq``: count it as dropped (persisted with the next state write)."""
        self.dropped += 1
        self.write_errors += 1
        log.error("alert queue: cannot store alert seq %d (%s); counted as dropped", seq, exc)
        return seq

    def _save_state_or_log(self) -> None:
        try:
            self._save_state()
        except OSError as exc:  # the next put writes the state again
            log.error("alert queue: cannot save state (%s)", exc)

    # --- delivery ------------------------------------------------------------

    def take(self, limit: int, now: float, resend_after_s: float | None = None) -> list[QueuedAlert]:
        """Up to ``limit`` alerts to publish now, marked as being sent: held alerts due for a resend (with
        ``resend_after_s``: unconfirmed that long after their PUBACK, doubling per resend), then unsent ones."""
        with self._lock:
            resends = self._due_for_resend(limit, now, resend_after_s) if resend_after_s is not None else []
            due = resends + list(itertools.islice(self._unsent, limit - len(resends)))
            resent = set(resends)
            out = []
            for seq in due:
                alert = self._read(self._path(seq))
                if alert is None:  # damaged behind our back: count, forget, go on
                    log.error("alert queue: pending alert seq %d unreadable; removing", seq)
                    self.corrupt += 1
                    self._remove(seq)
                    continue
                self._seqs[seq].sending = True
                self._in_flight += 1
                self._unsent.pop(seq, None)
                self.sent_through = max(self.sent_through, seq)
                out.append(QueuedAlert(seq, alert, resend=seq in resent))
            return out

    def _due_for_resend(self, limit: int, now: float, resend_after_s: float) -> list[int]:
        if now < self._next_resend_scan or limit <= 0:
            return []
        due = []
        for seq, d in self._seqs.items():
            if len(due) >= limit:
                return due  # more may be due: look again at the next call
            if not d.sending and d.acked_at is not None:
                if now - d.acked_at >= resend_after_s * 2 ** min(d.resends, MAX_DOUBLINGS):
                    d.resends += 1
                    due.append(seq)
        self._next_resend_scan = now + RESEND_SCAN_S
        return due

    def reconnected(self, now: float) -> int:
        """The broker connection is back: a confirmation sent while it was away never arrives, so every held alert
        starts its resend wait afresh (one resend_after_s from now, not the doubled wait of earlier resends).
        Returns how many are held."""
        with self._lock:
            held = [d for d in self._seqs.values() if not d.sending and d.acked_at is not None]
            for d in held:
                d.acked_at, d.resends = now, 0
            self._next_resend_scan = 0.0
            return len(held)

    def unsend(self, seq: int) -> None:
        """The network did not take alert ``seq`` after all: hand it out again."""
        with self._lock:
            d = self._seqs.get(seq)
            if d is None or not d.sending:
                return
            d.sending = False
            self._in_flight -= 1
            if d.acked_at is None:
                self._unsent = dict.fromkeys(sorted([*self._unsent, seq]))  # rare: keep oldest first

    def in_flight(self) -> int:
        """Alerts handed out by ``take`` whose PUBACK has not come."""
        with self._lock:
            return self._in_flight

    def broker_acked(self, seq: int, now: float, hold: bool) -> Acked:
        """The broker acknowledged alert ``seq``: hold it for a controller's confirmation, or remove it."""
        with self._lock:
            d = self._seqs.get(seq)
            if d is None:
                if seq not in self._dropped_sending:
                    return Acked.GONE
                # Dropped from the full queue while in flight, but it reached the broker: one drop less.
                # Keeps delivered + pending + dropped == queued.
                self._dropped_sending.discard(seq)
                self.dropped = max(0, self.dropped - 1)
                self._save_state_or_log()
                return Acked.UNDROPPED
            self._in_flight -= d.sending
            d.sending = False
            if hold:
                d.acked_at = now
                return Acked.HELD
            self._remove(seq)
            return Acked.DELIVERED

    def confirm(self, through: int) -> int:
        """A controller stored (or gave up) every alert up to seq ``through``: remove them; how many were pending."""
        with self._lock:
            done = list(itertools.takewhile(lambda seq: seq <= through, self._seqs))
            for seq in done:
                self._remove(seq)
            return len(done)

    def note_confirmations(self) -> bool:
        """A controller confirms this device's alerts (remembered on disk); True the first time."""
        with self._lock:
            if self.confirmations:
                return False
            try:
                self._save_state(confirmations=True)  # on disk before anyone acts on it
            except OSError as exc:  # remembered in memory; the next state write records it
                log.error("alert queue: cannot save state (%s)", exc)
            self.confirmations = True
            return True

    def first_pending(self) -> int | None:
        with self._lock:
            return next(iter(self._seqs), None)

    def held_seqs(self) -> list[int]:
        """Acknowledged by the broker, waiting for a controller's confirmation."""
        with self._lock:
            return [seq for seq, d in self._seqs.items() if d.acked_at is not None]

    # --- inspection ----------------------------------------------------------

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
                self._remove(seq)
        return out

    def ack(self, seq: int) -> bool:
        """Forget a delivered alert; False if it was not pending (already acked or dropped)."""
        with self._lock:
            if seq not in self._seqs:
                return False
            self._remove(seq)
            return True

    def pending_seqs(self) -> list[int]:
        with self._lock:
            return list(self._seqs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seqs)
