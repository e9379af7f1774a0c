"""The on-disk alert queue: order, persistence, the bound, damaged files, and SIGKILL at any moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent.fleet.alert_queue import PENDING_DIR, Acked, AlertQueue
from lab import REPO


def test_put_peek_ack_in_order(tmp_path):
    q = AlertQueue(tmp_path)
    seqs = [q.put({"n": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [(a.seq, a.alert) for a in q.peek(2)] == [(1, {"n": 0, "seq": 1}), (2, {"n": 1, "seq": 2})]
    assert [a.seq for a in q.peek(10, skip={1, 3})] == [2, 4, 5]
    assert q.ack(2) and not q.ack(2) and not q.ack(99)
    assert q.pending_seqs() == [1, 3, 4, 5] and len(q) == 4


def test_pending_alerts_and_seq_survive_reopening(tmp_path):
    q = AlertQueue(tmp_path)
    for i in range(3):
        q.put({"n": i})
    q.ack(1)
    q = AlertQueue(tmp_path)
    assert [a.alert["n"] for a in q.peek(10)] == [1, 2]
    assert q.put({"n": 3}) == 4
    for seq in q.pending_seqs():
        q.ack(seq)
    # Empty queue: the seq still continues after a restart (it is per device and strictly increasing).
    assert AlertQueue(tmp_path).put({"n": 4}) == 5


def test_full_queue_drops_oldest_and_counts_persistently(tmp_path):
    q = AlertQueue(tmp_path, max_items=3)
    for i in range(5):
        q.put({"n": i})
    assert q.pending_seqs() == [3, 4, 5] and q.dropped == 2
    q = AlertQueue(tmp_path, max_items=3)
    assert q.dropped == 2 and q.pending_seqs() == [3, 4, 5]


def test_damaged_and_stray_files_are_counted_and_removed(tmp_path):
    q = AlertQueue(tmp_path)
    for i in range(3):
        q.put({"n": i})
    pending = tmp_path / PENDING_DIR
    (pending / "00000000000000000002.json").write_bytes(b'{"n": 1, "se')  # torn by a lying disk
    (pending / "notes.txt").write_text("hello")
    (pending / ".tmp-00000000000000000009.json.1.2").write_bytes(b"half")
    q = AlertQueue(tmp_path)
    assert q.pending_seqs() == [1, 3]
    assert q.corrupt == 2
    assert sorted(p.name for p in pending.iterdir()) == ["00000000000000000001.json", "00000000000000000003.json"]


def test_damaged_state_file_is_rebuilt_from_pending_files(tmp_path):
    q = AlertQueue(tmp_path)
    for i in range(3):
        q.put({"n": i})
    (tmp_path / "state.json").write_text("{")
    q = AlertQueue(tmp_path)
    assert q.corrupt == 1 and q.put({"n": 3}) == 4


# --- delivery: take, PUBACK, confirmation, resend ------------------------------


def take(q: AlertQueue, now: float, limit: int = 10, resend_after_s: float | None = None) -> list[tuple[int, bool]]:
    return [(a.seq, a.resend) for a in q.take(limit, now, resend_after_s)]


def test_held_alerts_wait_for_the_confirmation_and_are_resent_with_a_doubling_wait(tmp_path):
    q = AlertQueue(tmp_path)
    for i in range(3):
        q.put({"n": i})
    assert take(q, 0.0, limit=2) == [(1, False), (2, False)] and q.in_flight() == 2
    assert take(q, 0.0) == [(3, False)], "an alert being sent is not handed out twice"
    assert [q.broker_acked(seq, 10.0, hold=True) for seq in (1, 2, 3)] == [Acked.HELD] * 3
    assert q.held_seqs() == [1, 2, 3] and q.in_flight() == 0 and len(q) == 3
    assert take(q, 10.0, resend_after_s=5) == [], "not yet due"
    assert take(q, 15.0, resend_after_s=5) == [(1, True), (2, True), (3, True)], "same seqs, after the wait"
    q.broker_acked(1, 15.0, hold=True)
    assert take(q, 24.0, resend_after_s=5) == [], "the second wait is twice as long"
    assert take(q, 25.0, resend_after_s=5) == [(1, True)]
    assert q.confirm(2) == 2 and q.pending_seqs() == q.held_seqs() == [3]
    assert q.broker_acked(1, 26.0, hold=True) is Acked.GONE, "a late PUBACK of a confirmed alert changes nothing"
    assert q.confirm(2) == 0
    assert AlertQueue(tmp_path).pending_seqs() == [3], "confirmed alerts are gone from the disk"


def test_a_reconnection_restarts_the_resend_wait_of_held_alerts(tmp_path):
    """Confirmations sent while the broker was away never arrive: after a reconnection every held alert is resent
    one wait later, not after the doubled waits it had reached (up to 64x: a minute or more in the restart test)."""
    q = AlertQueue(tmp_path)
    for i in range(2):
        q.put({"n": i})
    take(q, 0.0)
    for seq in (1, 2):
        q.broker_acked(seq, 0.0, hold=True)
    for t in (5.0, 15.0, 35.0, 75.0):  # resent after 5, 10, 20, 40 s: the next wait is 80 s
        assert take(q, t, resend_after_s=5) == [(1, True), (2, True)]
        for seq in (1, 2):
            q.broker_acked(seq, t, hold=True)
    assert take(q, 100.0, resend_after_s=5) == []
    assert q.reconnected(100.0) == 2
    assert take(q, 104.0, resend_after_s=5) == [] and take(q, 105.0, resend_after_s=5) == [(1, True), (2, True)]


def test_without_hold_a_puback_removes_the_alert_and_a_failed_publish_hands_it_out_again(tmp_path):
    q = AlertQueue(tmp_path)
    for i in range(3):
        q.put({"n": i})
    assert take(q, 0.0) == [(1, False), (2, False), (3, False)]
    q.unsend(2)
    assert q.broker_acked(1, 0.0, hold=False) is Acked.DELIVERED and q.pending_seqs() == [2, 3]
    assert take(q, 0.0) == [(2, False)] and q.in_flight() == 2
    assert take(q, 99.0, resend_after_s=1) == [], "nothing held, nothing resent"


def test_a_full_queue_lets_go_of_acknowledged_alerts_first_then_drops_the_oldest(tmp_path):
    q = AlertQueue(tmp_path, max_items=3)
    for i in range(3):
        q.put({"n": i})
    take(q, 0.0, limit=2)
    q.broker_acked(2, 0.0, hold=True)  # 1 is still being sent
    q.put({"n": 3})
    assert q.pending_seqs() == [1, 3, 4] and (q.released, q.dropped) == (1, 0), "2 had reached the broker"
    q.put({"n": 4})
    assert q.pending_seqs() == [3, 4, 5] and (q.released, q.dropped) == (1, 1), "then the oldest, as before"
    assert q.broker_acked(1, 0.0, hold=True) is Acked.UNDROPPED and q.dropped == 0, "it reached the broker after all"
    assert AlertQueue(tmp_path, max_items=3).dropped == 0, "and the drop count on disk says so"
    assert q.broker_acked(1, 0.0, hold=True) is Acked.GONE


def test_the_confirmation_flag_and_the_sent_bound_survive_a_restart(tmp_path):
    q = AlertQueue(tmp_path)
    q.put({"n": 0})
    q.put({"n": 1})
    assert (q.confirmations, q.sent_through, q.first_pending()) == (False, 0, 1)
    take(q, 0.0, limit=1)
    assert q.sent_through == 1, "seq 2 has not been sent: a confirmation of it is forged"
    assert q.note_confirmations() and not q.note_confirmations()
    q = AlertQueue(tmp_path)
    assert q.confirmations and q.sent_through == 2, "the last run may have sent both"
    assert q.held_seqs() == [] and take(q, 0.0) == [(1, False), (2, False)], "after a restart everything goes again"


def test_invalid_bound_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_items"):
        AlertQueue(tmp_path, max_items=0)


# The child enqueues forever, acknowledging every third alert, and reports each step
# on stdout only after the call returned: "W seq" (written) and "A seq" (acked).
CHILD = textwrap.dedent(
    """
    import os, sys
    from agent.fleet.alert_queue import AlertQueue
    q = AlertQueue(sys.argv[1], max_items=100_000)
    while True:  # one write() per report: print() could be torn by the kill
        seq = q.put({"class": "mirai_syn", "pad": "x" * 300})
        os.write(1, f"W {seq}\\n".encode())
        if seq % 3 == 0:
            q.ack(seq)
            os.write(1, f"A {seq}\\n".encode())
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [7, 61, 203])
def test_sigkill_while_enqueueing_loses_nothing_written(tmp_path, stop_after):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    written: set[int] = set()
    acked: set[int] = set()
    in_doubt: set[int] = set()  # written, then killed while (maybe) acknowledging it
    for _ in range(2):  # kill, restart on the same directory, kill again
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
        count = 0
        last = None
        for line in child.stdout:  # after the kill, this drains what the child had already printed
            if not line.endswith("\n"):
                break  # cut short by the kill: not a report
            kind, seq = line.split()
            (written if kind == "W" else acked).add(int(seq))
            last = int(seq)
            count += kind == "W"
            if count == stop_after:
                child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        if last is not None and last % 3 == 0 and last not in acked:
            in_doubt.add(last)
    q = AlertQueue(tmp_path)
    pending = set(q.pending_seqs())
    assert q.corrupt == 0
    assert written - acked - in_doubt <= pending, "an alert reported as written is missing"
    assert not (pending & acked), "an acknowledged alert came back"
    assert all(a.alert["class"] == "mirai_syn" and a.alert["seq"] == a.seq for a in q.peek(len(pending)))
    assert not list(tmp_path.rglob(".tmp-*"))
    assert q.put({"class": "x"}) > max(written)  # seqs never reused after a crash
