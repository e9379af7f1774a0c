"""The event log: verdicts, rule changes and fleet updates as JSON lines, rotated by size, never raising.

The live agent runs the real pipeline on the bundled capture (frames handed to ``process()``); fleet
updates come over a real mosquitto.  A full disk is /dev/full (every write fails with ENOSPC).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from agent.config import EventsConfig, MqttConfig
from agent.events import EventLog
from agent.wire import topic
from agent.wire.jsonio import canonical_json
from agent.wire.rules import SCHEMA as RULESET_SCHEMA
from agent.wire.signing import generate_key, load_private_key, sign
from lab.live_lab import feed_capture, offline_agent
from lab.mqtt_helpers import FLEET, Listener, wait_until


def read_events(path: Path) -> list[dict]:
    """Every line must be one whole JSON object with the three fields every event has."""
    events = []
    for line in path.read_text().splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict) and list(doc)[:3] == ["time", "event", "device"], line
        assert doc["time"].endswith("Z") and datetime.fromisoformat(doc["time"].replace("Z", "+00:00")).utcoffset().seconds == 0
        events.append(doc)
    return events


def test_a_run_over_the_capture_writes_verdicts_and_rule_changes(tmp_path):
    path = tmp_path / "log" / "events.jsonl"  # the folder is made as needed
    agent = offline_agent(tmp_path / "state", events=EventsConfig(path))
    alerts = feed_capture(agent)
    events = read_events(path)
    assert {e["device"] for e in events} == {agent.device_id}

    verdicts = [e for e in events if e["event"] == "verdict"]
    assert len(verdicts) == agent.counters.verdicts == len(alerts) > 0
    # Each verdict line carries the verdict and what was done about it, as the alert says.
    for v, a in zip(verdicts, alerts):
        assert (v["label"], v["basis"], v["action"], v["rule_id"]) == (a["class"], a["basis"], a["action"], a["rule_id"])
        assert v["first_seen"] <= v["decided_at"] and v["packets"] == a["packets"]
    blocked = {v["rule_id"] for v in verdicts if v["action"] == "drop"}
    added = [e for e in events if e["event"] == "block_added"]
    assert {e["rule_id"] for e in added} == blocked == set(agent.rules.entries)
    assert all(e["origin"] == "local" and e["expires"] > time.time() for e in added)
    source_rule = next(e for e in added if e["rule_id"].startswith("src:"))
    assert source_rule["source"] == source_rule["rule_id"][4:] + "/32" and source_rule["action"] == "drop"

    # Renewal and expiry, as housekeeping does them.
    agent.responder.renew([source_rule["rule_id"]])
    agent.responder.housekeeping(now=time.time() + 10 * agent.config.block_seconds)
    events = read_events(path)
    renewed = [e for e in events if e["event"] == "block_renewed"]
    assert [e["rule_id"] for e in renewed] == [source_rule["rule_id"]] and renewed[0]["expires"] > source_rule["expires"]
    expired = [e for e in events if e["event"] == "block_expired"]
    assert {e["rule_id"] for e in expired} == blocked and agent.rules.count() == 0
    assert agent.events.failures == 0 and agent.events.written == len(events)


def signed_ruleset(key, version: int, *sources: str) -> bytes:
    doc = {"schema": RULESET_SCHEMA, "fleet": FLEET, "target": "all", "version": version, "issued_at": time.time(),
           "rules": [{"id": f"r-{s}", "source": s, "proto": None, "dport": None, "action": "drop", "expires": None,
                      "reason": "fleet"} for s in sources]}  # fmt: skip
    return canonical_json(sign(doc, key))


def test_fleet_rule_sets_and_models_applied_or_refused_are_events(broker, keys, tmp_path):
    path = tmp_path / "events.jsonl"
    mqtt = MqttConfig(host=broker.host, port=broker.port, fleet=FLEET, device="dev1", state_dir=tmp_path / "mqtt",
                      controller_public_key=keys.public)  # fmt: skip
    agent = offline_agent(tmp_path / "state", mqtt=mqtt, events=EventsConfig(path))
    controller = Listener(broker.host, broker.port, [topic("iotguard/v1", FLEET, "dev1", "rules/ack")])
    agent.fleet.start()
    key = load_private_key(keys.private)
    try:
        wait_until(lambda: agent.fleet.client.ready, "the fleet link subscribed")
        rules_topic = topic("iotguard/v1", FLEET, "all", "rules")
        acks = lambda: controller.json_on("/rules/ack")  # noqa: E731
        controller.publish(rules_topic, signed_ruleset(key, 1, "198.51.100.1", "198.51.100.2"))
        wait_until(lambda: len(acks()) == 1, "first rule set acknowledged")
        controller.publish(rules_topic, signed_ruleset(key, 2, "198.51.100.2", "198.51.100.3"))
        wait_until(lambda: len(acks()) == 2, "second rule set acknowledged")
        controller.publish(rules_topic, signed_ruleset(generate_key(), 3, "198.51.100.9"))  # not the controller's key
        wait_until(lambda: len(acks()) == 3, "forged rule set refused")
        model = {"schema": "iotguard.model-push/1", "version": 5, "bundle": {}, "tflite_b64": "", "sha256": ""}
        controller.publish(topic("iotguard/v1", FLEET, "dev1", "model"), canonical_json(sign(model, key)))
        wait_until(lambda: agent.fleet.client.stats.models_rejected == 1, "the broken model push refused")
    finally:
        agent.fleet.stop()
        controller.close()
    events = read_events(path)
    fleet = [(e["event"], e.get("version") or e.get("rule_id")) for e in events]
    # Within one rule set the blocks come in no particular order; the rule set's line follows them.
    assert sorted(fleet[:2]) == [("block_added", "r-198.51.100.1"), ("block_added", "r-198.51.100.2")]
    assert sorted(fleet[3:5]) == [("block_added", "r-198.51.100.3"), ("block_removed", "r-198.51.100.1")]
    # A forged rule set's version is not read: nothing in it is trusted (the ack says None too).
    assert [fleet[2], *fleet[5:]] == [("ruleset_applied", 1), ("ruleset_applied", 2), ("ruleset_refused", None),
                                      ("model_refused", 5)]  # fmt: skip
    by_type = {e["event"]: e for e in events}
    assert by_type["ruleset_applied"]["target"] == "all" and by_type["ruleset_applied"]["rules"] == 2
    assert "signed by unknown key" in by_type["ruleset_refused"]["reason"]
    assert by_type["block_added"]["origin"] == "all" and by_type["block_removed"]["origin"] == "all"
    assert "model" in by_type["model_refused"]["reason"]


def test_rotation_keeps_exactly_the_backups_asked_for(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "dev1", max_bytes=2000, backups=3)
    for i in range(400):
        assert log.write("tick", n=i, pad="x" * 50)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    kept = []
    for name in reversed(files[1:]):
        assert (tmp_path / name).stat().st_size <= 2000
        kept += [e["n"] for e in read_events(tmp_path / name)]
    kept += [e["n"] for e in read_events(path)]
    assert kept == list(range(kept[0], 400)) and kept[0] > 0  # the newest, in order, none torn, the oldest gone

    only = EventLog(tmp_path / "single" / "events.jsonl", "dev1", max_bytes=2000, backups=0)
    for i in range(100):
        only.write("tick", n=i, pad="x" * 50)
    assert sorted(p.name for p in (tmp_path / "single").iterdir()) == ["events.jsonl"]
    assert read_events(tmp_path / "single" / "events.jsonl")[-1]["n"] == 99


def test_writers_on_several_threads_leave_whole_lines(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", "dev1", max_bytes=50_000, backups=50)
    threads = [threading.Thread(target=lambda t=t: [log.write("tick", thread=t, n=i) for i in range(500)])
               for t in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [e for p in tmp_path.iterdir() for e in read_events(p)]
    assert len(lines) == log.written == 2000
    assert {(e["thread"], e["n"]) for e in lines} == {(t, i) for t in range(4) for i in range(500)}


def test_values_json_cannot_spell_still_make_a_line(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", "dev1")
    assert log.write("verdict", confidence=float("nan"), when=datetime(2024, 1, 1), nested={"x": float("inf")},
                     event="not the type", time="not the time")  # fmt: skip
    (doc,) = read_events(tmp_path / "events.jsonl")
    assert doc["confidence"] is None and doc["nested"] == {"x": None} and doc["when"] == "2024-01-01 00:00:00"
    assert doc["event"] == "verdict" and doc["time"] != "not the time"


@pytest.mark.parametrize("target", ["full", "unwritable"])
def test_a_full_or_unwritable_target_never_stops_the_agent(target, tmp_path, caplog):
    if target == "full":
        path = Path("/dev/full")  # every write: ENOSPC, as on a full disk
        if not path.exists():
            pytest.skip("no /dev/full")
    else:
        (tmp_path / "not-a-folder").write_text("")
        path = tmp_path / "not-a-folder" / "events.jsonl"  # its folder cannot be made (as root, mode bits would not stop us)
    agent = offline_agent(tmp_path / "state", events=EventsConfig(path))
    with caplog.at_level(logging.WARNING, logger="agent.events"):
        alerts = feed_capture(agent)  # must not raise
        agent.housekeeping(force=True)
    assert alerts and agent.rules.count("local") > 0, "detection and blocking went on"
    lost = len(alerts) + sum(a["action"] == "drop" for a in alerts)  # a verdict line each, a block_added per rule
    assert agent.events.written == 0 and agent.events.failures == lost
    warnings = [r for r in caplog.records if r.name == "agent.events"]
    assert len(warnings) == 1 and "cannot write" in warnings[0].getMessage()

    if target == "unwritable":  # the disk is fixed: the log goes on by itself
        (tmp_path / "not-a-folder").unlink()
        with caplog.at_level(logging.INFO, logger="agent.events"):
            assert agent.events.write("tick")
        assert "writing again" in caplog.text and read_events(path)[0]["event"] == "tick"
