"""The agent's MQTT client against a real mosquitto: alerts, status, signed rule sets and models."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent.wire import MODEL_SCHEMA, topic
from agent.wire.jsonio import canonical_json
from agent.wire.rules import SCHEMA as RULESET_SCHEMA
from agent.wire.signing import generate_key, sign, trusted_keys
from lab.mqtt_helpers import FLEET, Listener, alert, make_agent, wait_until

PREFIX = "iotguard/v1"
from lab import REPO


def t(device: str, kind: str) -> str:
    return topic(PREFIX, FLEET, device, kind)


def ruleset_doc(version: int, target: str = "all", fleet: str = FLEET, source: str = "203.0.113.7") -> dict:
    return {
        "schema": RULESET_SCHEMA, "fleet": fleet, "target": target, "version": version, "issued_at": time.time(),
        "rules": [{"id": f"r{version}", "source": source, "proto": None, "dport": None, "action": "drop",
                   "expires": None, "reason": "test"}],
    }


def test_alerts_carry_seq_and_identity_and_leave_the_disk_after_puback(broker, keys, tmp_path):
    listener = Listener(broker.host, broker.port, [t("dev1", "alerts"), t("dev1", "status")])
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    agent.start()
    try:
        seqs = [agent.send_alert(alert(f"198.51.100.{i}")) for i in range(5)]
        got = wait_until(lambda: len(listener.json_on("/alerts")) == 5 and listener.json_on("/alerts"), "5 alerts")
        assert [a["seq"] for a in got] == seqs == [1, 2, 3, 4, 5]
        assert {(a["schema"], a["device"], a["fleet"]) for a in got} == {("iotguard.alert/1", "dev1", FLEET)}
        assert all(a["sent_at"] >= a["last_seen"] for a in got)
        wait_until(lambda: len(agent.queue) == 0, "queue emptied by PUBACKs")
        status = listener.json_on("/status")[0]
        assert status["state"] == "online" and status["rss_bytes"] > 0
        with pytest.raises(ValueError, match="alert lacks field"):
            agent.send_alert({"class": "mirai_syn"})
    finally:
        agent.stop()
        listener.close()


AGENT_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent.config import MqttConfig
    from agent.fleet.mqtt import AgentMqtt
    cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), fleet="lab", device="dev9", state_dir=Path(sys.argv[2]))
    agent = AgentMqtt(cfg, {}, lambda rs: None)
    agent.start()
    while not agent.connected:
        time.sleep(0.01)
    print("connected", flush=True)
    time.sleep(600)
    """
)


def test_status_is_retained_online_and_the_last_will_says_offline_when_the_agent_dies(broker, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    early = Listener(broker.host, broker.port, [t("dev9", "status")])
    child = subprocess.Popen([sys.executable, "-c", AGENT_CHILD, str(broker.port), str(tmp_path / "dev9")],
                             stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout.readline().strip() == "connected"
        wait_until(lambda: early.json_on("/status"), "live status")
        early.close()
        # A client arriving later still learns the state: the status is retained.
        late = Listener(broker.host, broker.port, [t("dev9", "status")])
        first = wait_until(lambda: late.json_on("/status"), "retained status")[0]
        assert first["state"] == "online" and late.messages[0][2] is True
        child.send_signal(signal.SIGKILL)
        wait_until(lambda: late.json_on("/status")[-1]["state"] == "offline", "last will")
        assert late.json_on("/status")[-1] == {"schema": "iotguard.status/1", "state": "offline", "device": "dev9", "fleet": FLEET}
        late.close()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_alerts_wait_on_disk_through_a_broker_outage_and_an_agent_restart(broker, keys, tmp_path):
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    agent.start()
    wait_until(lambda: agent.connected, "agent connected")
    broker.stop()
    wait_until(lambda: not agent.connected, "agent noticed the outage")
    assert [agent.send_alert(alert("198.51.100.1")) for _ in range(3)] == [1, 2, 3]
    agent.stop()  # the board reboots before the broker is back
    broker.start()
    listener = Listener(broker.host, broker.port, [t("dev1", "alerts")])
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    assert len(agent.queue) == 3
    agent.start()
    try:
        wait_until(lambda: len(listener.json_on("/alerts")) >= 3, "queued alerts delivered")
        assert agent.send_alert(alert("198.51.100.1")) == 4
        wait_until(lambda: len(listener.json_on("/alerts")) == 4, "new alert delivered")
        assert sorted(a["seq"] for a in listener.json_on("/alerts")) == [1, 2, 3, 4]
    finally:
        agent.stop()
        listener.close()


class RulesBench:
    """An agent, a publisher on its rules topics and a listener on its acks."""

    def __init__(self, broker, keys, tmp_path, device="dev1") -> None:
        self.key = generate_key()
        self.trusted = trusted_keys([self.key.public_key()])
        self.device = device
        self.acks = Listener(broker.host, broker.port, [t(device, "rules/ack"), t(device, "status")])
        self.agent, self.filter = make_agent(broker.host, broker.port, tmp_path / device, device, self.trusted)
        self.agent.start()
        wait_until(lambda: self.agent.ready, "agent subscribed")

    def send(self, payload: bytes | dict, target: str = "all") -> dict:
        """Publish to a rules topic and return the ack the agent sends for it."""
        before = len(self.acks.json_on("/rules/ack"))
        data = payload if isinstance(payload, bytes) else canonical_json(payload)
        self.acks.publish(t(target, "rules"), data)
        return wait_until(lambda: self.acks.json_on("/rules/ack")[before:], "rules ack")[0]

    def signed(self, doc: dict, key=None) -> bytes:
        return canonical_json(sign(doc, key or self.key))

    def close(self) -> None:
        self.agent.stop()
        self.acks.close()


def test_rule_sets_are_applied_only_when_signed_valid_and_newer(broker, keys, tmp_path):
    bench = RulesBench(broker, keys, tmp_path)
    try:
        ack = bench.send(bench.signed(ruleset_doc(2)))
        assert (ack["status"], ack["target"], ack["version"], ack["reason"]) == ("applied", "all", 2, None)
        assert bench.filter.versions() == [2]

        refused = {
            "unsigned": (canonical_json(ruleset_doc(5)), "unsigned or unknown envelope schema"),
            "wrong key": (bench.signed(ruleset_doc(5), generate_key()), "signed by unknown key"),
            "malformed": (b'{"schema": "iotguard.signed/1", "key_id"', "envelope: malformed JSON"),
            "wrong types": (bench.signed({**ruleset_doc(5), "version": "5"}), "ruleset.version: must be an integer"),
            "bad rule": (bench.signed(ruleset_doc(5, source="10.0.0.1/8")), r"rules[0].source"),
            "other fleet": (bench.signed(ruleset_doc(5, fleet="prod")), "for fleet 'prod'"),
            "wrong target": (bench.signed(ruleset_doc(5, target="dev1")), "names target 'dev1' but came on the rules topic of 'all'"),
            "replayed": (bench.signed(ruleset_doc(1)), "version 1 is not newer than applied version 2"),
            "same version, other rules": (bench.signed(ruleset_doc(2, source="192.0.2.1")), "version 2 is not newer"),
            "deeply nested": (bench.signed({**ruleset_doc(5), "rules": [[[[[[[[[]]]]]]]]]}), "nesting too deep"),
        }
        for name, (payload, reason) in refused.items():
            ack = bench.send(payload)
            assert ack["status"] == "rejected", name
            assert reason in ack["reason"], (name, ack["reason"])
        assert bench.filter.versions() == [2], "a refused rule set changed the filter"
        assert bench.agent.stats.rules_rejected == len(refused)
        status = wait_until(lambda: [s for s in bench.acks.json_on("/status") if s.get("rules_error")], "status with error")
        assert status[-1]["ruleset_version"] == {"all": 2}

        # The device's own rule set is versioned separately from the fleet's.
        ack = bench.send(bench.signed(ruleset_doc(1, target="dev1")), target="dev1")
        assert (ack["status"], ack["target"]) == ("applied", "dev1")
        assert bench.filter.versions("dev1") == [1]
    finally:
        bench.close()


def test_filter_refusal_is_reported_and_a_redelivered_rule_set_is_not_reapplied(broker, keys, tmp_path):
    bench = RulesBench(broker, keys, tmp_path)
    try:
        bench.filter.fail_with = "nft: table missing"
        ack = bench.send(bench.signed(ruleset_doc(1)))
        assert (ack["status"], ack["reason"]) == ("rejected", "apply failed: nft: table missing")
        bench.filter.fail_with = None
        v1 = bench.signed(ruleset_doc(1))
        assert bench.send(v1)["status"] == "applied"  # the failed attempt did not burn the version
        # The same message again (as a reconnect redelivers the retained copy) is quietly ignored:
        # the next ack is already the one for v2.
        bench.acks.publish(t("all", "rules"), v1)
        assert bench.send(bench.signed(ruleset_doc(2)))["version"] == 2
        assert bench.filter.versions() == [1, 2]
    finally:
        bench.close()


def test_applied_rule_sets_are_reapplied_at_start_without_a_broker(broker, keys, tmp_path):
    bench = RulesBench(broker, keys, tmp_path)
    bench.send(bench.signed(ruleset_doc(3)))
    bench.send(bench.signed(ruleset_doc(1, target="dev1")), target="dev1")
    bench.close()
    broker.stop()
    agent, recorder = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", bench.trusted)
    agent.start()
    try:
        assert [(r.target, r.version) for r in recorder.applied] == [("all", 3), ("dev1", 1)]
        assert not agent.connected
    finally:
        agent.stop()


def model_push(key, version: int, tflite: bytes, digest: str | None = None) -> bytes:
    payload = {"schema": MODEL_SCHEMA, "version": version, "bundle": {"labels": ["benign"], "name": "m"},
               "tflite_b64": base64.b64encode(tflite).decode(), "sha256": digest or hashlib.sha256(tflite).hexdigest()}
    return canonical_json(sign(payload, key))


def test_model_updates_are_verified_before_the_agent_sees_them(broker, keys, tmp_path):
    key = generate_key()
    installed: list[tuple[dict, bytes]] = []
    refuse = {"now": False}

    def on_model(meta: dict, tflite: bytes) -> None:
        if refuse["now"]:
            raise RuntimeError("interpreter rejected the model")
        installed.append((meta, tflite))

    listener = Listener(broker.host, broker.port, [t("dev1", "status")])
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", trusted_keys([key.public_key()]), on_model=on_model)
    agent.start()
    wait_until(lambda: agent.ready and listener.json_on("/status"), "agent subscribed, first status seen")

    def push(data: bytes) -> dict:
        before = len(listener.json_on("/status"))
        listener.publish(t("dev1", "model"), data)
        return wait_until(lambda: listener.json_on("/status")[before:], "status after model push")[-1]

    try:
        status = push(model_push(key, 1, b"TFL3-model-one"))
        assert installed == [({"labels": ["benign"], "name": "m"}, b"TFL3-model-one")]
        assert (status["model_version"], status["model_error"]) == (1, None)

        status = push(model_push(key, 2, b"TFL3-model-two", digest="0" * 64))
        assert "sha256 mismatch" in status["model_error"] and status["model_version"] == 1
        status = push(model_push(generate_key(), 2, b"TFL3-model-two"))
        assert "unknown key" in status["model_error"]
        status = push(model_push(key, 1, b"TFL3-model-one"))
        assert "not newer" in status["model_error"]
        refuse["now"] = True
        status = push(model_push(key, 2, b"TFL3-model-two"))
        assert "old model kept: interpreter rejected the model" in status["model_error"] and status["model_version"] == 1
        assert len(installed) == 1
        refuse["now"] = False
        assert push(model_push(key, 2, b"TFL3-model-two"))["model_version"] == 2
        assert json.loads((tmp_path / "dev1" / "model.json").read_text()) == {"version": 2}
    finally:
        agent.stop()
        listener.close()
