"""The on-disk alert queue: order, persistence, the bound, damaged files, and SIGKILL at any moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent.fleet.alert_queue import PENDING_DIR, AlertQueue
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
