"""The fleet controller: store, policy, CLI, and the K-devices loop end to end on a real mosquitto."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.wire import canonical_json, load_private_key, parse_alert, parse_alerts_ack, topic
from controller.broker import start_embedded_broker
from controller.db import connect
from controller.policy import Policy, PolicyConfig
from controller.store import Store
from lab import REPO
from lab.mqtt_helpers import FLEET, Listener, alert, make_agent, make_controller, needs_mosquitto, wait_until

PREFIX = "iotguard/v1"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "controller", "--log-level", "WARNING", *args],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"controller {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def raw_alert(device: str, seq: int, source: str, confidence: float = 0.9) -> dict:
    return {**alert(source, confidence=confidence), "schema": "iotguard.alert/1", "device": device, "fleet": FLEET,
            "seq": seq, "sent_at": time.time()}


def imported_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module)
    return modules


def test_the_controller_takes_only_the_wire_contract_from_the_agent():
    from_agent = {m for m in imported_modules(REPO / "controller") if m.split(".")[0] == "agent"}
    assert from_agent <= {"agent.wire", "agent"}, from_agent
    # From the package itself only the product's version (importing agent.wire runs agent/__init__.py anyway).
    from_root = {alias.name for path in (REPO / "controller").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module == "agent" for alias in node.names}  # fmt: skip
    assert from_root <= {"__version__"}, from_root
    assert not {m for m in imported_modules(REPO / "agent") if m.split(".")[0] == "controller"}


# --- store and policy, no broker ---------------------------------------------


def test_policy_counts_distinct_devices_in_the_window_only(database):
    store = Store(database)
    policy = Policy(PolicyConfig(k_devices=2, window_s=60, never_block=("10.0.0.0/8",), min_confidence=0.5))
    now = time.time()

    def add(device, seq, source, age=0.0, confidence=0.9):
        doc = parse_alert(canonical_json(raw_alert(device, seq, source, confidence)), FLEET, device)
        return store.add_alert(doc, now - age)

    assert add("d1", 1, "192.0.2.1") and add("d1", 2, "192.0.2.1")
    assert not add("d1", 2, "192.0.2.1"), "(device, seq) stored twice"
    assert policy.new_blocks(store, FLEET, {"192.0.2.1"}, now) == [], "one device reporting twice is not two devices"
    add("d2", 1, "192.0.2.1", age=120)  # outside the window
    add("d3", 1, "192.0.2.1", confidence=0.2)  # below min_confidence
    assert policy.new_blocks(store, FLEET, {"192.0.2.1"}, now) == []
    add("d4", 1, "192.0.2.1")
    (block,) = policy.new_blocks(store, FLEET, {"192.0.2.1"}, now)
    assert (block.source, block.origin, block.expires) == ("192.0.2.1/32", "policy", now + 3600)
    add("d1", 3, "10.1.2.3")
    add("d2", 2, "10.1.2.3")
    assert policy.new_blocks(store, FLEET, {"10.1.2.3"}, now) == [], "never_block ignored"
    assert store.count("alerts") == 7


def test_the_confirmation_mark_covers_stored_refused_and_given_up_seqs_only(database):
    store = Store(database)

    def add(seq, device="d1"):
        store.add_alert(parse_alert(canonical_json(raw_alert(device, seq, "192.0.2.1")), FLEET, device), time.time())

    assert store.advance_mark(FLEET, "d1") == 0, "nothing stored yet"
    for seq in (1, 2, 4):
        add(seq)
    add(3, device="d2")  # another device's seq fills no gap
    assert store.advance_mark(FLEET, "d1") == 2, "the missing 3 holds the mark"
    store.refuse_seq(FLEET, "d1", 3)  # refused for good: resending it would not help
    assert store.advance_mark(FLEET, "d1") == 4
    add(7)
    assert store.advance_mark(FLEET, "d1") == 4
    assert store.advance_mark(FLEET, "d1", first_pending=6) == 5, "5 given up by the agent; 6 not stored"
    assert store.advance_mark(FLEET, "d1", first_pending=7) == 7
    assert store.advance_mark(FLEET, "d1", first_pending=2) == 7, "the mark never goes back"
    add(3)  # stored after it was refused (a fixed controller): counted once
    assert Store(database).advance_mark(FLEET, "d1") == 7, "kept in the database"
    assert store.advance_mark(FLEET, "d2") == 0 and store.advance_mark("other", "d1") == 0


def test_a_batch_stores_each_alert_once_and_advances_every_mark_as_one_at_a_time_would(database):
    """The batch path (a few multi-row statements per batch) against the one-alert-at-a-time answers."""
    store = Store(database)

    def doc(device, seq):
        return parse_alert(canonical_json(raw_alert(device, seq, f"192.0.2.{seq % 7}")), FLEET, device)

    now = time.time()
    batch = [doc("d1", s) for s in range(1, 601)] + [doc("d2", 2), doc("d1", 5), doc("d3", 1), doc("d2", 2)]
    new = store.add_alerts(batch, now)
    assert new == [True] * 600 + [True, False, True, False], "a repeat, in the batch or stored, is not new"
    assert store.add_alerts([doc("d1", 600), doc("d1", 602)], now) == [False, True]
    assert store.count("alerts") == 603 and store.alert_seqs(FLEET, "d2") == [2]
    store.refuse_seqs([(FLEET, "d2", 1), (FLEET, "d2", 1), (FLEET, "d3", 3)])
    floors = {(FLEET, "d1"): 1, (FLEET, "d2"): 1, (FLEET, "d3"): 1, (FLEET, "d4"): 5}
    # d1: 600 in a row (longer than a read window), 601 missing; d2: 1 refused, 2 stored; d3: 2 missing;
    # d4: nothing stored, but the agent gave up everything below 5.
    assert store.advance_marks(floors) == {(FLEET, "d1"): 600, (FLEET, "d2"): 2, (FLEET, "d3"): 1, (FLEET, "d4"): 4}
    store.add_alerts([doc("d1", 601), doc("d3", 2)], now)
    assert store.advance_marks({(FLEET, "d1"): 1, (FLEET, "d3"): 1}) == {(FLEET, "d1"): 602, (FLEET, "d3"): 3}
    assert store.advance_marks({(FLEET, "d4"): 2}) == {(FLEET, "d4"): 4}, "the mark never goes back"
    assert store.reporters_of(FLEET, ["192.0.2.1", "192.0.2.2", "198.51.100.1"], now - 60, 0.5) == {
        "192.0.2.1": store.reporters(FLEET, "192.0.2.1", now - 60, 0.5),
        "192.0.2.2": store.reporters(FLEET, "192.0.2.2", now - 60, 0.5),
    }


# --- the controller against a real broker ------------------------------------


def test_k_devices_policy_end_to_end(broker, keys, tmp_path, database):
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, db=database, k_devices=2)
    controller.start()
    agents = [make_agent(broker.host, broker.port, tmp_path / d, d, keys.trusted) for d in ("dev1", "dev2", "dev3")]
    for agent, _ in agents:
        agent.start()
    try:
        wait_until(lambda: controller.ready.is_set() and all(a.ready for a, _ in agents), "everyone connected")
        store = controller.store
        agents[0][0].send_alert(alert("203.0.113.66"))
        agents[0][0].send_alert(alert("203.0.113.66"))
        agents[2][0].send_alert(alert("198.51.100.9"))  # a different source, one device only
        wait_until(lambda: store.count("alerts") == 3, "3 alerts stored")
        assert store.count("rulesets") == 0, "blocked before K devices reported"

        agents[1][0].send_alert(alert("203.0.113.66"))
        for agent, recorder in agents:
            wait_until(lambda r=recorder: len(r.versions()) == 1, f"{agent.config.device} applied the first rule set")
            (rule,) = recorder.applied[0].rules
            assert str(rule.network) == "203.0.113.66/32" and rule.action == "drop" and rule.expires is not None
        wait_until(lambda: store.rulesets()[0]["applied"] == 3, "3 acks recorded")
        version = agents[0][1].versions()[0]
        assert version >= int(time.time()) - 60, "versions start at the unix time"
        assert {a["device"] for a in store.acks(FLEET, "all", version)} == {"dev1", "dev2", "dev3"}
        wait_until(lambda: all(d["status"] and d["status"]["ruleset_version"] == {"all": version} for d in store.devices()),
                   "status shows the applied version")
        assert [d["state"] for d in store.devices()] == ["online"] * 3
        # More reports of a blocked source do not issue new versions.
        agents[2][0].send_alert(alert("203.0.113.66"))
        wait_until(lambda: store.count("alerts") == 5, "alert stored")
        assert store.count("rulesets") == 1

        agents[2][0].stop()
        wait_until(lambda: store.devices()[2]["state"] == "offline", "dev3 offline")
        assert all(r.versions() == [version] for _, r in agents)
    finally:
        for agent, _ in agents:
            agent.stop()
        controller.stop()


def test_duplicates_are_stored_once_and_bad_messages_are_kept_with_a_reason(broker, keys, tmp_path, database):
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, db=database)
    controller.start()
    pub = Listener(broker.host, broker.port, [])
    try:
        wait_until(controller.ready.is_set, "controller connected")
        good = canonical_json(raw_alert("dev1", 7, "192.0.2.7"))
        pub.publish(topic(PREFIX, FLEET, "dev1", "alerts"), good)
        pub.publish(topic(PREFIX, FLEET, "dev1", "alerts"), good)  # as after a lost PUBACK
        pub.publish(topic(PREFIX, FLEET, "dev2", "alerts"), good)  # dev1's alert on dev2's topic
        pub.publish(topic(PREFIX, FLEET, "dev1", "alerts"), b"{not json")
        pub.publish(topic(PREFIX, FLEET, "dev1", "alerts"), canonical_json({**raw_alert("dev1", 8, "x"), "class": "bad"}))
        pub.publish(topic(PREFIX, FLEET, "dev1", "rules/ack"), canonical_json({"schema": "iotguard.rules-ack/1"}))
        wait_until(lambda: controller.store.count("rejected") == 4, "4 rejected messages stored")
        assert controller.store.alert_seqs(FLEET, "dev1") == [7]
        assert (controller.stats.alerts_new, controller.stats.alerts_duplicate) == (1, 1)
        reasons = [r[0] for r in controller.store._query("SELECT reason FROM rejected ORDER BY rowid")]
        assert "came on the topic of lab/dev2" in reasons[0]
        assert reasons[1].startswith("alert: malformed JSON")
        assert reasons[2].startswith("alert: class: must be one of benign")
        assert reasons[3] == "rules ack: missing field 'target'"
    finally:
        pub.close()
        controller.stop()


def test_alerts_are_confirmed_after_the_commit_up_to_the_first_gap(broker, keys, tmp_path, database):
    """Old agents (no first_pending) are confirmed too; they simply do not listen."""
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, db=database, k_devices=99)
    controller.start()
    seen: list[tuple[int, list[int]]] = []  # (stored_through, seqs committed when the confirmation arrived)
    reader = connect(database)  # a connection of its own: committed rows only

    def on_ack(stored_through: int) -> None:
        seen.append((stored_through, [r[0] for r in reader.execute("SELECT seq FROM alerts ORDER BY seq")]))

    agent = Listener(broker.host, broker.port, [topic(PREFIX, FLEET, "dev1", "alerts/ack")])
    agent.client.on_message = lambda c, u, m: on_ack(parse_alerts_ack(m.payload, FLEET, "dev1"))
    pub = Listener(broker.host, broker.port, [])
    alerts = topic(PREFIX, FLEET, "dev1", "alerts")
    try:
        wait_until(controller.ready.is_set, "controller connected")
        steps = [  # what the agent publishes -> the confirmation it gets
            (raw_alert("dev1", 1, "192.0.2.1"), 1),
            (raw_alert("dev1", 2, "192.0.2.1"), 2),
            (raw_alert("dev1", 4, "192.0.2.1"), 2),  # 3 is missing
            (raw_alert("dev1", 4, "192.0.2.1"), 2),  # a duplicate is confirmed too (its confirmation got lost)
            ({**raw_alert("dev1", 3, "192.0.2.1"), "class": "bad"}, 4),  # refused for good: no longer awaited
            ({**raw_alert("dev1", 9, "192.0.2.1"), "first_pending": 8}, 7),  # 5..7 given up, 8 still pending
            ({**raw_alert("dev1", 8, "192.0.2.1"), "first_pending": 8}, 9),
        ]
        for i, (doc, stored_through) in enumerate(steps):
            pub.publish(alerts, canonical_json(doc))
            wait_until(lambda: len(seen) > i, f"confirmation {i + 1}")
            assert seen[i][0] == stored_through, (i, seen)
        assert all(set(range(1, mark + 1)) - {3, 5, 6, 7} <= set(stored) for mark, stored in seen), seen
        assert controller.stats.confirmations == len(steps)
    finally:
        for client in (agent, pub):
            client.close()
        controller.stop()
        reader.close()


def test_blocks_expire_into_a_new_version(broker, keys, tmp_path, database):
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, db=database, k_devices=1,
                                 block_ttl_s=0.5)  # fmt: skip
    controller.start()
    agent, recorder = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    agent.start()
    try:
        wait_until(lambda: controller.ready.is_set() and agent.ready, "controller and agent subscribed")
        agent.send_alert(alert("192.0.2.99"))
        wait_until(lambda: len(recorder.versions()) == 2, "block applied, then its expiry")
        assert len(recorder.applied[0].rules) == 1 and recorder.applied[1].rules == ()
    finally:
        agent.stop()
        controller.stop()


@pytest.mark.slow
def test_two_replicas_share_the_alert_stream(broker, keys, tmp_path):
    db = tmp_path / "shared.sqlite"
    replicas = [make_controller(broker.host, broker.port, tmp_path, keys.private, name=n, db=db, k_devices=99)
                for n in ("c1", "c2")]
    for c in replicas:
        c.start()
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    agent.start()
    try:
        wait_until(lambda: all(c.ready.is_set() for c in replicas), "replicas connected")
        for i in range(200):
            agent.send_alert(alert(f"198.51.{i // 250}.{i % 250}"))
        wait_until(lambda: replicas[0].store.count("alerts") == 200, "200 alerts stored")
        new = [c.stats.alerts_new for c in replicas]
        assert sum(new) == 200 and min(new) > 0, f"shared subscription did not split the load: {new}"
        assert replicas[0].store.alert_seqs(FLEET, "dev1") == list(range(1, 201))
    finally:
        agent.stop()
        for c in replicas:
            c.stop()


@pytest.mark.slow
def test_cli_keygen_block_unblock_listings_and_model_push(broker, tmp_path):
    cli("keygen", "--out", str(tmp_path))
    assert "exists" in cli("keygen", "--out", str(tmp_path), check=False).stdout
    key = load_private_key(tmp_path / "signing.key")
    from agent.wire.signing import trusted_keys

    installed = []
    agent, recorder = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", trusted_keys([key.public_key()]),
                                 on_model=lambda meta, tflite: installed.append((meta, tflite)))
    agent.start()
    db = str(tmp_path / "c.sqlite")
    common = ["--db", db, "--key", str(tmp_path / "signing.key"), "--broker", f"{broker.host}:{broker.port}"]
    try:
        wait_until(lambda: agent.ready, "agent subscribed")
        out = cli("block", "192.0.2.0/24", "--fleet", FLEET, "--reason", "botnet C2", *common).stdout
        assert re.search(r"rule set v\d+ \(1 rule\) published", out), out
        wait_until(lambda: len(recorder.versions()) == 1, "agent applied the first version")
        assert recorder.applied[0].rules[0].reason == "botnet C2" and recorder.applied[0].rules[0].expires is None
        cli("block", "2001:db8::/32", "--fleet", FLEET, "--ttl", "600", *common)
        wait_until(lambda: len(recorder.versions()) == 2, "agent applied the second version")
        assert sorted(str(r.network) for r in recorder.applied[1].rules) == ["192.0.2.0/24", "2001:db8::/32"]
        cli("unblock", "192.0.2.0/24", "--fleet", FLEET, *common)
        wait_until(lambda: len(recorder.versions()) == 3, "agent applied the third version")
        assert [str(r.network) for r in recorder.applied[2].rules] == ["2001:db8::/32"]
        assert cli("unblock", "192.0.2.0/24", "--fleet", FLEET, *common, check=False).returncode == 1

        (tmp_path / "m.tflite").write_bytes(b"TFL3 tiny model")
        (tmp_path / "m.json").write_text(json.dumps({"labels": ["benign"]}))
        cli("push-model", "--fleet", FLEET, "--devices", "dev1", "--tflite", str(tmp_path / "m.tflite"),
            "--meta", str(tmp_path / "m.json"), *common)
        wait_until(lambda: installed == [({"labels": ["benign"]}, b"TFL3 tiny model")], "model installed")

        rules = json.loads(cli("rules", "--db", db, "--json").stdout)
        assert [r["version"] for r in rules] == sorted(recorder.versions(), reverse=True)
        assert "2001:db8::/32" in cli("rules", "--db", db, "--fleet", FLEET, "--blocks").stdout
        assert cli("devices", "--db", db).stdout.strip() == "(none)"  # this db never ran a service
        assert "error: " in cli("block", "not-an-ip", "--fleet", FLEET, *common, check=False).stderr
    finally:
        agent.stop()


@pytest.mark.slow
@needs_mosquitto
def test_run_without_a_broker_starts_an_embedded_one(tmp_path):
    cli("keygen", "--out", str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "--log-level", "WARNING", "run", "--db", str(tmp_path / "c.sqlite"),
         "--key", str(tmp_path / "signing.key")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "started an embedded broker on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        assert "running" in proc.stdout.readline()
        # An agent can use it, and the controller stores what the agent sends.
        from agent.wire.signing import trusted_keys

        agent, _ = make_agent("127.0.0.1", port, tmp_path / "dev1", "dev1", trusted_keys([]))
        agent.start()
        agent.send_alert(alert("192.0.2.5"))
        wait_until(lambda: len(agent.queue) == 0, "alert delivered")
        agent.stop()
        wait_until(lambda: Store(tmp_path / "c.sqlite").count("alerts") == 1, "alert stored by the CLI controller")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "alerts_new=1" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@needs_mosquitto
def test_embedded_broker_helper_gives_a_usable_broker(tmp_path):
    b = start_embedded_broker(tmp_path)
    try:
        listener = Listener(b.host, b.port, ["x/y"])
        listener.publish("x/y", b"hello")
        wait_until(lambda: listener.messages, "message through the embedded broker")
        listener.close()
    finally:
        b.stop()
