"""Fault injection (issue #7): broker restarts, network cuts, a failing `nft`, a full disk and SIGKILL mid-write.

After each fault the agent must recover on its own: state files load, no alert is
lost beyond what the bounded queue counts as dropped (received + dropped == sent),
and the rules are what they were.  Already covered elsewhere, so not repeated here:
a broker restart with a queue large enough to drop nothing (every seq stored exactly
once) and an agent process killed mid-stream (tests/test_mqtt_reliability.py), and
SIGKILL while only the alert queue is written (tests/test_alert_queue.py).

Root-only tests (namespaces, tmpfs mounts, nftables) skip with the reason from
``netns.skip_reason()``.  Real parts throughout: mosquitto, the controller and its
SQLite store, nft in a namespace, a tmpfs of 64 KiB, child processes killed with SIGKILL.
"""

from __future__ import annotations

import errno
import inspect
import json
import logging
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.act.enforce import NftablesEnforcer  # noqa: E402
from agent.act.filter import RuleTable  # noqa: E402
from agent.capture.packets import FrameBatch  # noqa: E402
from agent.config import AgentConfig, MqttConfig  # noqa: E402
from agent.fleet.alert_queue import AlertQueue  # noqa: E402
from agent.fleet.mqtt import AgentMqtt  # noqa: E402
from agent.live import LiveAgent  # noqa: E402
from agent.profile import load_profile  # noqa: E402
from controller.broker import MosquittoBroker, mosquitto_binary  # noqa: E402
from controller.service import ControllerService  # noqa: E402
from lab import REPO, netns
from lab.live_lab import attack_frames  # noqa: E402  (Mirai frames from a chosen source address)
from lab.mqtt_helpers import (  # noqa: E402
    FLEET,
    WAIT_S,
    alert,
    make_agent,
    make_controller,
    plain_controller,
    wait_until,
)

ATTACKERS = ("10.77.0.61", "10.77.0.62", "10.77.0.63", "10.77.0.64")
SMALL_QUEUE = 20  # alerts the agent keeps while the broker is away: small, so an outage overflows it

pytestmark = pytest.mark.slow  # real brokers, processes killed and restarted, namespaces


def root_skip_reason(*tools: str) -> str | None:
    """Why a root-only test cannot run here (namespaces, mounts, the given tools), or None."""
    missing = [t for t in tools if shutil.which(t) is None]
    return netns.skip_reason() or (f"needs {', '.join(missing)}" if missing else None)


# --- a stream of alerts and its accounting -------------------------------------------


class AlertStream:
    """Numbered alerts (their seqs) from a background thread until ``stop()``: load during a fault."""

    def __init__(self, agent: AgentMqtt) -> None:
        self.agent = agent
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-stream", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.seqs.append(self.agent.send_alert(alert(f"198.51.100.{len(self.seqs) % 250}")))
                time.sleep(0.001)  # a busy detector, not a busy loop: the machine has two cores
        except BaseException as exc:  # reported by stop(): a fault must not make send_alert raise
            self.error = exc

    def __enter__(self) -> AlertStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_more(self, count: int, what: str) -> None:
        target = len(self.seqs) + count
        wait_until(lambda: len(self.seqs) >= target or self.error, what)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise AssertionError(f"send_alert raised during the fault: {self.error!r}")
        return self.seqs


def settle(condition, timeout: float = WAIT_S) -> None:
    """Poll until ``condition()`` holds or ``timeout`` passed; the caller's assertions then say what is wrong."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def assert_every_alert_accounted_for(agent: AgentMqtt, controller: ControllerService, seqs: list[int]) -> None:
    """After recovery: each alert reached the controller exactly once, or is one of those the queue dropped."""
    assert seqs == list(range(1, len(seqs) + 1)), "seqs must be handed out in order, none twice"
    # Queue empty is not enough: alerts dropped while in flight may still be acknowledged (and un-dropped).
    settle(lambda: len(agent.queue) == 0 and agent.stats.alerts_sent + agent.queue.dropped >= len(seqs))
    assert len(agent.queue) == 0, "the agent's queue did not drain"
    dropped = agent.queue.dropped
    settle(lambda: controller.store.count("alerts") >= len(seqs) - dropped)
    wait_until(controller.idle, "the controller to finish storing")
    stored = controller.store.alert_seqs(FLEET, agent.config.device)
    assert len(stored) == len(set(stored)) and set(stored) <= set(seqs)
    missing = sorted(set(seqs) - set(stored))
    assert len(stored) + dropped == len(seqs), (
        f"received {len(stored)} + dropped {dropped} != sent {len(seqs)}; missing {len(missing)}: {missing[:40]}; "
        f"agent {agent.stats}; controller {controller.stats}"
    )
    assert agent.stats.alerts_sent + dropped == len(seqs), "the agent's own counters disagree"
    assert controller.stats.alerts_new == len(stored)
    assert AlertQueue(agent.queue.directory).dropped == dropped, "the drop count on disk is stale"


# --- 1. broker restart under load ------------------------------------------------------


def test_broker_outage_overflowing_a_small_queue_loses_only_counted_alerts(broker, keys, tmp_path):
    controller = plain_controller(broker.host, broker.port, tmp_path, keys.private)
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted,
                          queue_max_items=SMALL_QUEUE)  # fmt: skip
    with ExitStack() as cleanup:
        controller.start()
        cleanup.callback(controller.stop)
        agent.start()
        cleanup.callback(agent.stop)
        wait_until(lambda: controller.ready.is_set() and agent.ready, "connected")
        with AlertStream(agent) as stream:
            stream.wait_more(100, "100 alerts sent")
            broker.stop()  # SIGTERM: mosquitto saves its sessions (the controller's queue) to disk
            wait_until(lambda: agent.queue.dropped >= 2 * SMALL_QUEUE, "the full queue to drop alerts")
            broker.start()  # same port and persistence directory
            wait_until(lambda: agent.connected, "the agent to reconnect")
            stream.wait_more(100, "100 more alerts sent after the restart")
        assert agent.stats.connects >= 2
        assert_every_alert_accounted_for(agent, controller, stream.seqs)


@pytest.mark.parametrize("share_group", ["", "controllers"])
def test_controller_offline_across_a_broker_restart_still_gets_alerts(broker, keys, tmp_path, share_group):
    """The controller's persistent session must collect alerts while it is away, also over a broker restart.

    With the default shared subscription it does not by itself: mosquitto 2.0.11 does not restore shared
    subscriptions from its persistence file, so alerts published after the restart and before the controller
    re-subscribes reach no one, although the broker acknowledged them to the agent.  (Found by the broker
    outage test under load, where the controller's doubling reconnect delay made it reconnect after the
    agent.)  The agent therefore keeps each alert until the controller confirms it stored it, and sends it
    again when no confirmation comes; it does so once it has seen a confirmation (confirm_alerts="auto").
    """
    first = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    first.config.share_group = share_group
    first.start()
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted, confirm_timeout_s=1)
    with ExitStack() as cleanup:
        agent.start()
        cleanup.callback(agent.stop)
        wait_until(lambda: first.ready.is_set() and agent.ready, "the controller subscribed, the agent connected")
        agent.send_alert(alert("198.51.100.1"))
        wait_until(lambda: agent.holding and len(agent.queue) == 0, "the first alert stored and confirmed")
        first.stop()  # a clean disconnect: its session (and subscription) stays with the broker
        for source in ("198.51.100.2", "198.51.100.3"):
            seq = agent.send_alert(alert(source))
            wait_until(lambda: seq in agent.queue.held_seqs() and agent.connected, "the broker's PUBACK")
            if source.endswith(".2"):
                broker.restart()  # SIGTERM: mosquitto saves its sessions
        second = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
        second.config.share_group = share_group
        second.start()
        cleanup.callback(second.stop)
        wait_until(second.ready.is_set, "the controller back")
        wait_until(lambda: len(agent.queue) == 0, "every alert confirmed")
        assert second.store.alert_seqs(FLEET, "dev1") == [1, 2, 3]


# --- 2. network cut --------------------------------------------------------------------


@pytest.mark.netns
def test_network_cut_between_agent_and_broker_loses_only_counted_alerts(keys, tmp_path):
    reason = root_skip_reason() or (None if mosquitto_binary() else "needs mosquitto (apt-get install mosquitto)")
    if reason:
        pytest.skip(reason)
    with netns.veth_pair() as link, ExitStack() as cleanup:
        # Threads inherit the namespace of the thread that starts them, so everything started
        # inside ``entered`` (mosquitto, paho's network threads) lives in that namespace.
        with netns.entered(link.a):
            broker = MosquittoBroker(tmp_path / "broker", host=link.ip4_a).start()
            cleanup.callback(broker.stop)
            controller = plain_controller(link.ip4_a, broker.port, tmp_path, keys.private)
            controller.start()
            cleanup.callback(controller.stop)
        with netns.entered(link.b):
            # keepalive 2 s: paho notices the dead link after a few seconds, not the default 45.
            agent, _ = make_agent(link.ip4_a, broker.port, tmp_path / "dev1", "dev1", keys.trusted,
                                  queue_max_items=SMALL_QUEUE, keepalive_s=2)  # fmt: skip
            agent.start()
            cleanup.callback(agent.stop)
        wait_until(lambda: controller.ready.is_set() and agent.ready, "connected across the veth pair")
        with AlertStream(agent) as stream:
            stream.wait_more(100, "100 alerts sent")
            link.b.run("ip", "link", "set", link.if_b, "down")
            wait_until(lambda: not agent.connected, "the agent to notice the cut (keepalive)")
            wait_until(lambda: agent.queue.dropped >= 2 * SMALL_QUEUE, "the full queue to drop alerts")
            link.b.run("ip", "link", "set", link.if_b, "up")
            wait_until(lambda: agent.connected, "the agent to reconnect")
            stream.wait_more(100, "100 more alerts sent after the cut")
        assert agent.stats.connects >= 2
        assert_every_alert_accounted_for(agent, controller, stream.seqs)


# --- the live agent, fed Mirai frames in-process ---------------------------------------


def make_live_agent(state_dir: Path, mqtt: MqttConfig | None = None) -> LiveAgent:
    """A LiveAgent without capture (frames are handed to process()) and without kernel enforcement."""
    config = AgentConfig(state_dir=state_dir, min_packets=10, mqtt=mqtt)
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    return LiveAgent(load_profile("x86_64-gateway"), config, enforcement="none")


def attack(agent: LiveAgent, source: str) -> list[dict]:
    """Run 1500 frames of a SYN flood from ``source`` through the agent's pipeline; the alerts it raised."""
    frames = attack_frames("mirai_syn", 1500, src_ip=source)
    ts = time.time() + 0.0002 * np.arange(len(frames))
    alerts = []
    for batch in FrameBatch.from_frames(frames, ts).split(agent.profile.batch_size):
        alerts += agent.process(batch)
    return alerts


def saved_rule_ids(path: Path) -> set[str]:
    """The rule ids in a saved rule table, read as a restarted agent would (the file must parse)."""
    json.loads(path.read_text())  # a torn file fails here, not silently as an empty table
    table = RuleTable(path=path)
    table.load()
    return set(table.entries)


# --- 3. nft failing --------------------------------------------------------------------

# Stands in for nft: passes through to the real one, fails, or hangs, as the mode file says.
FAKE_NFT = """#!/bin/sh
case "$(cat {mode})" in
  fails) echo "Error: Could not process rule: Device or resource busy" >&2; exit 1 ;;
  hangs) exec sleep 60 ;;
esac
exec {nft} "$@"
"""


def kernel_blocked(ns: netns.NetNamespace, table: str) -> set[str]:
    """Addresses in the table's blocked4 set, as the kernel has them (empty when the table is gone)."""
    out = ns.run("nft", "-j", "list", "set", "inet", table, "blocked4", check=False)
    if out.returncode:
        return set()
    items = json.loads(out.stdout)["nftables"]
    elems = next(i["set"].get("elem", []) for i in items if "set" in i)
    return {e["elem"]["val"] if isinstance(e, dict) else e for e in elems}


@pytest.mark.netns
@pytest.mark.parametrize("fault", ["nft_fails", "nft_hangs", "table_removed"])
def test_failing_nft_keeps_the_agent_and_its_rules_and_reapplies_them_later(fault, tmp_path, caplog):
    reason = root_skip_reason("nft")
    if reason:
        pytest.skip(reason)
    mode = tmp_path / "nft-mode"
    mode.write_text("ok")
    fake = tmp_path / "bin" / "nft"
    fake.parent.mkdir()
    fake.write_text(FAKE_NFT.format(mode=mode, nft=shutil.which("nft")))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    agent = make_live_agent(tmp_path / "state")
    rules_path = tmp_path / "state" / "rules.json"
    with netns.namespace("nft") as ns:
        table = f"iotguard_{netns.unique_token()}"
        enforcer = NftablesEnforcer(table=table, nft=str(fake), netns=ns.name, command_timeout=1.0)
        agent.enforcer = agent.responder.enforcer = enforcer
        agent.responder.config.resync_s = 0.0  # retry on every housekeeping pass
        enforcer.start()
        try:
            assert [a["action"] for a in attack(agent, ATTACKERS[0])] == ["drop"]
            assert kernel_blocked(ns, table) == {ATTACKERS[0]}

            if fault == "table_removed":  # e.g. a firewall reload flushing the whole ruleset
                ns.run("nft", "delete", "table", "inet", table)
            else:
                mode.write_text(fault.removeprefix("nft_"))
            with caplog.at_level(logging.ERROR, logger="agent"):
                alerts = attack(agent, ATTACKERS[1])  # must not raise
            assert [(a["action"], a["source"]["ip"]) for a in alerts] == [("drop", ATTACKERS[1])]
            wanted = {f"src:{a}" for a in ATTACKERS[:2]}
            assert set(agent.rules.entries) == wanted, "the rule must stay in the filter table"
            assert saved_rule_ids(rules_path) == wanted, "and on disk"
            assert ATTACKERS[1] not in kernel_blocked(ns, table) and agent.responder.kernel_stale
            message = {"nft_fails": "Device or resource busy", "nft_hangs": "did not finish within 1.0 s",
                       "table_removed": "No such file or directory"}[fault]  # fmt: skip
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any(message in m and "kernel" in m for m in errors), errors

            if fault != "table_removed":  # nft itself is broken: the retry fails too, without raising
                agent.housekeeping(force=True)
                assert agent.responder.kernel_stale and agent.responder.enforcement_errors == 2
                mode.write_text("ok")
            agent.housekeeping(force=True)  # the retry rebuilds the table (also a removed one)
            assert kernel_blocked(ns, table) == set(ATTACKERS[:2]), "rules not re-applied once nft works"
            assert not agent.responder.kernel_stale
        finally:
            mode.write_text("ok")
            enforcer.stop()


# --- 4. disk full ----------------------------------------------------------------------


@dataclass
class TinyDisk:
    """A 64 KiB tmpfs: ``fill()`` takes every free byte (but ``leave``), ``free()`` gives them back."""

    root: Path

    def fill(self, leave: int = 0) -> None:
        filler = self.root / "filler"
        with open(filler, "ab", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        if leave:
            os.truncate(filler, max(0, filler.stat().st_size - leave))

    def free(self) -> None:
        (self.root / "filler").unlink(missing_ok=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    reason = root_skip_reason("mount", "umount")
    if reason:
        pytest.skip(reason)
    root = tmp_path / "tiny"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(root)], check=True)
    try:
        yield TinyDisk(root)
    finally:
        subprocess.run(["umount", str(root)], check=True)


def leftovers(directory: Path) -> list[Path]:
    """Temporary files an interrupted or refused write left behind."""
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


@pytest.mark.netns
def test_full_disk_does_not_stop_the_agent_and_it_catches_up_when_space_returns(
    tiny_disk, broker, keys, tmp_path, caplog
):
    state = tiny_disk.root / "state"
    rules_path = state / "rules.json"
    mqtt = MqttConfig(host=broker.host, port=broker.port, fleet=FLEET, device="dev1", state_dir=state / "mqtt",
                      controller_public_key=keys.public)  # fmt: skip
    agent = make_live_agent(state, mqtt)
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    client = agent.fleet.client
    with ExitStack() as cleanup:
        controller.start()
        cleanup.callback(controller.stop)
        agent.fleet.start()
        cleanup.callback(agent.fleet.stop)
        wait_until(lambda: controller.ready.is_set() and client.ready, "connected")
        attack(agent, ATTACKERS[0])
        wait_until(lambda: controller.store.count("alerts") == 1, "the first alert stored")
        assert saved_rule_ids(rules_path) == {f"src:{ATTACKERS[0]}"}

        tiny_disk.fill()
        with caplog.at_level(logging.ERROR, logger="agent"):
            for source in ATTACKERS[1:3]:
                assert len(attack(agent, source)) == 1  # must not raise
            agent.housekeeping(force=True)  # retries the rule table save: fails again
        assert set(agent.rules.entries) == {f"src:{a}" for a in ATTACKERS[:3]}, "rules kept in memory"
        assert saved_rule_ids(rules_path) == {f"src:{ATTACKERS[0]}"}, "the previous file must stay valid"
        assert agent.rules.save_errors >= 3 and agent.rules.save_failed
        assert client.queue.dropped == 2, "alerts that could not be stored are counted as dropped"
        assert client.queue.write_errors == 2
        assert "No space left on device" in caplog.text
        assert leftovers(state) == []

        tiny_disk.free()
        agent.housekeeping(force=True)
        assert saved_rule_ids(rules_path) == {f"src:{a}" for a in ATTACKERS[:3]}, "the retried save"
        assert not agent.rules.save_failed
        attack(agent, ATTACKERS[3])
        assert_every_alert_accounted_for(client, controller, [1, 2, 3, 4])
        assert controller.store.alert_seqs(FLEET, "dev1") == [1, 4]


@pytest.mark.netns
def test_almost_full_disk_never_commits_a_truncated_file(tiny_disk):
    """One page left: the kernel writes part of a bigger alert; that part must not become the alert file."""
    queue = AlertQueue(tiny_disk.root / "alerts")
    queue.put({"n": 1})
    tiny_disk.fill(leave=4096)
    queue.put({"n": 2, "pad": "x" * 10_000})  # refused and counted, not raised
    assert queue.pending_seqs() == [1] and queue.dropped == 1 and queue.write_errors == 1
    reopened = AlertQueue(tiny_disk.root / "alerts")  # what a restart would find
    assert reopened.corrupt == 0 and reopened.pending_seqs() == [1]
    assert leftovers(tiny_disk.root) == []
    tiny_disk.free()
    assert queue.put({"n": 3, "pad": "x" * 10_000}) == 3  # also writes the drop count down
    again = AlertQueue(tiny_disk.root / "alerts")
    assert again.pending_seqs() == [1, 3] and again.dropped == 1 and again.corrupt == 0
    assert [a.alert["n"] for a in again.peek(10)] == [1, 3]


# --- 5. SIGKILL during writes ----------------------------------------------------------

KILLS = 40


def rule_state(generation: int, step: int) -> list:
    """The rule table the child saves at ``step``: 50 to 200 rules (a file of 10-40 KiB, written in
    several pieces, as a busy board's table is), whose addresses and reason name the step."""
    import ipaddress

    from agent.wire.rules import Rule

    rules = []
    for i in range(50 * (1 + step % 4)):
        address = f"10.{generation % 250}.{step % 250}.{i}"
        proto, port = ("udp", 23) if i == 1 else (None, None)
        rules.append(Rule(f"src:{address}:{proto}", ipaddress.ip_network(address), proto, port, "drop", 4.0e9,
                          f"generation {generation} step {step}"))  # fmt: skip
    return rules


# Saves rule_state(generation, 0), (generation, 1), ... and enqueues an alert after each, acknowledging
# every third; each step is reported on stdout only once the call has returned.
KILL_CHILD = textwrap.dedent(inspect.getsource(rule_state)) + textwrap.dedent(
    """
    import os
    import sys
    from pathlib import Path
    from agent.fleet.alert_queue import AlertQueue
    from agent.act.filter import RuleTable

    def report(kind, number):
        os.write(1, f"{kind} {number}\\n".encode())  # one write(): print() may be torn by the kill

    state, generation = Path(sys.argv[1]), int(sys.argv[2])
    table = RuleTable(path=state / "rules.json")
    queue = AlertQueue(state / "alerts")
    step = 0
    while True:
        table.entries.clear()
        for rule in rule_state(generation, step):
            table.add(rule)
        if not table.save():
            sys.exit("rule table not saved")
        report("R", step)
        seq = queue.put({"class": "mirai_syn", "step": step, "pad": "x" * 300})
        report("W", seq)
        if seq % 3 == 0:
            queue.ack(seq)
            report("A", seq)
        step += 1
    """
)


def test_sigkill_at_random_moments_leaves_valid_rules_and_queue(tmp_path):
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    state = tmp_path / "state"
    previous: list = []  # the rule table as a restarted agent loads it
    last_seq = 0
    hit_rule_write = 0  # kills that left the rule table's temporary file: mid-save
    for generation in range(KILLS):
        written: set[int] = set()
        acked: set[int] = set()
        saved_step: int | None = None
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(state), str(generation)],
                                 stdout=subprocess.PIPE, env=env, text=True)  # fmt: skip
        # From the start, so some kills land while the child loads what the last one left.
        timer = threading.Timer(rng.uniform(0.05, 0.35), child.send_signal, (signal.SIGKILL,))
        timer.start()
        last = None
        for line in child.stdout:  # ends when the child is dead
            kind, number = line.split()
            last = (kind, int(number))
            if kind == "R":
                saved_step = int(number)
            else:
                (written if kind == "W" else acked).add(int(number))
        timer.join()
        child.stdout.close()
        assert child.wait() == -signal.SIGKILL, f"the child died on its own (generation {generation})"
        hit_rule_write += any(state.glob(".tmp-*rules.json"))

        # The rule table is the last state reported saved, or the one being written when killed.
        table = RuleTable(path=state / "rules.json")
        table.load()
        loaded = [e.rule for e in table.entries.values()]
        if saved_step is None:
            candidates = [previous, rule_state(generation, 0)]
        else:
            candidates = [rule_state(generation, saved_step), rule_state(generation, saved_step + 1)]
        assert loaded in candidates, f"generation {generation}: rules {loaded} are neither saved state"
        previous = loaded

        # Every alert reported written is there unless reported acked (or killed while being acked).
        in_doubt = {last[1]} if last and last[0] == "W" and last[1] % 3 == 0 else set()
        queue = AlertQueue(state / "alerts")
        pending = set(queue.pending_seqs())
        assert queue.corrupt == 0, f"generation {generation}: a damaged queue file"
        assert written - acked - in_doubt <= pending, f"generation {generation}: a written alert is missing"
        assert not pending & acked, f"generation {generation}: an acknowledged alert came back"
        assert all(a.alert["seq"] == a.seq and a.alert["class"] == "mirai_syn" for a in queue.peek(len(pending)))
        assert queue.next_seq > max(written | {last_seq}), "a seq would be handed out twice"
        last_seq = queue.next_seq - 1
        for seq in pending:  # delivered: keeps the queue small across generations
            queue.ack(seq)
    assert not leftovers(state / "alerts"), "loading removes interrupted writes"
    logging.getLogger(__name__).info("%d of %d kills hit a rule table save", hit_rule_write, KILLS)
