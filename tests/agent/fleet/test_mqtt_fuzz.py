"""Hostile MQTT messages and configuration files (issue #7): the regression corpus, a property test, a real broker.

The generators (lab/mqtt_fuzz.py, lab/config_fuzz.py) and the agent harness with its checks
(lab/mqtt_fuzz_harness.py) are those of benchmarks/fuzz_mqtt.py (the long run); here they replay
every payload that once found a bug (tests/data/mqtt_fuzz_corpus/), draw a few hundred fresh cases,
and send one hostile message of each kind through a real mosquitto.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.act.enforce import NftablesEnforcer
from agent.wire import topic
from lab import mqtt_fuzz as fz
from lab import netns
from lab.config_fuzz import FileCase, config_case, corpus_entry, load_file_case, profile_base, profile_case
from lab.mqtt_fuzz_harness import Harness, bundle_problem, primed
from lab.mqtt_helpers import Listener, wait_until

CORPUS = sorted(fz.CORPUS.glob("*.json"))
FAST = {kind: [g for g in fz.GENERATORS[kind] if g not in fz.HEAVY] for kind in fz.KINDS}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> fz.World:
    return fz.World.create(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def harness(world, tmp_path_factory):
    """One primed agent for the module: hostile messages must leave it as it was, so it can be shared."""
    h = primed(tmp_path_factory.mktemp("agent"), world)
    yield h
    h.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("files")


def test_the_corpus_covers_every_kind():
    kinds = {json.loads(p.read_text())["kind"] for p in CORPUS}
    assert kinds == {"rules-device", "rules-all", "model", "topic", "config", "profile"}


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_payload_is_refused_with_its_reason_and_changes_nothing(path, harness, world, files):
    case = corpus_entry(json.loads(path.read_text()))
    if isinstance(case, FileCase):
        assert load_file_case(case, files) == []
        return
    out, problems = harness.run(case, harness.snapshot())
    assert problems == [], case.note
    assert bundle_problem(case, world) is None
    if case.expect == "rejected":
        assert case.reason in out.reason and len(out.reason) <= fz.REASON_LIMIT


def test_the_checks_notice_an_accepted_message(world, tmp_path):
    """The harness can fail: a valid, newer rule set gets in and changes the agent's state."""
    h = primed(tmp_path, world)
    try:
        newer = world.ruleset("rules-all", fz.RULES_VERSION + 1, [world.rule(i) for i in range(3, 5)])
        case = fz.Case("rules-all", "valid", body=fz.render(newer))
        outcome, problems = h.run(case, h.snapshot())
        assert outcome.applied and outcome.ack["status"] == "applied"
        assert "hostile message accepted" in problems
        assert any(p.startswith("agent state changed: table, files, applied") for p in problems)
    finally:
        h.close()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
def test_any_generated_message_is_refused_and_changes_nothing(harness, world, data):
    kind = data.draw(st.sampled_from(fz.KINDS), label="kind")
    generate = data.draw(st.sampled_from(FAST[kind]), label="generator")
    case = generate(random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed")), world, kind)
    problems = harness.run(case, harness.snapshot())[1]
    assert problems == [], (generate.__name__, case.category)
    if case.kind == "model":
        assert bundle_problem(case, world) is None


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(kind=st.sampled_from(["config", "profile"]), seed=st.integers(0, 2**32 - 1))
def test_any_generated_file_is_refused_naming_its_key(files, kind, seed):
    rng = random.Random(seed)
    case = config_case(rng) if kind == "config" else profile_case(rng, profile_base())
    assert load_file_case(case, files) == [], case.category


# --- through a real broker -------------------------------------------------------------------------


@pytest.mark.slow
def test_hostile_messages_through_mosquitto_are_refused_then_a_valid_rule_set_applies(broker, world, harness, tmp_path):
    """One hostile message per category on the device's rules topic and the model topic; each is refused with
    the reason the direct handler gives (the acknowledgement, or the status for models); then a valid rule set."""
    rng = random.Random(11)
    rules = [g(rng, world, "rules-device") for g in fz.RULES if g not in (fz.gen_empty, fz.gen_redelivered)]
    models = [g(rng, world, "model") for g in (fz.gen_json_syntax, fz.gen_bad_signature, fz.gen_push_field,
                                               fz.gen_bundle_field, fz.gen_tflite_garbage, fz.gen_self_test_fails)]  # fmt: skip
    # What the agent must answer: the reason the direct handler gives for the same bytes.
    expected = {id(c): harness.run(c, harness.snapshot())[0].reason for c in rules + models}

    agent = Harness(tmp_path / "agent", world, host=broker.host, port=broker.port, offline=False)
    me = lambda kind: topic(fz.PREFIX, fz.FLEET, fz.DEVICE, kind)
    listener = Listener(broker.host, broker.port, [me("rules/ack"), me("status")])
    agent.link.start()
    try:
        wait_until(lambda: agent.agent.ready, "agent subscribed")
        # The state the expected reasons were taken in: v10 of its rule set and model v5 (for the replays).
        listener.publish(me("rules"), world.signed(fz.render(world.ruleset("rules-device", fz.RULES_VERSION))))
        listener.publish(me("model"), world.signed(fz.render(world.model_push(fz.MODEL_VERSION))))
        wait_until(lambda: agent.agent.model_version == fz.MODEL_VERSION and listener.json_on("/rules/ack"), "agent primed")
        primed = agent.snapshot()
        for case in rules:
            before = len(listener.json_on("/rules/ack"))
            listener.publish(me("rules"), case.payload(world))
            ack = wait_until(lambda n=before: listener.json_on("/rules/ack")[n:], f"ack for {case.category}")[0]
            assert (ack["status"], ack["reason"]) == ("rejected", expected[id(case)]), case.category
        for case in models:
            listener.publish(me("model"), case.payload(world))
            reason = expected[id(case)]
            wait_until(lambda r=reason: any(s.get("model_error") == r for s in listener.json_on("/status")),
                       f"status naming the refused model ({case.category})")  # fmt: skip
        assert agent.snapshot() == primed and agent.caught.records == []

        valid = world.ruleset("rules-device", fz.RULES_VERSION + 1, [world.rule(i) for i in range(5, 9)])
        listener.publish(me("rules"), world.signed(fz.render(valid)))
        ack = wait_until(lambda: [a for a in listener.json_on("/rules/ack") if a["version"] == valid["version"]], "ack")[0]
        assert ack["status"] == "applied" and agent.agent.connected
        assert sorted(r.id for r in agent.rules.rules("device")) == sorted(r["id"] for r in valid["rules"])
    finally:
        agent.link.stop()
        agent.close()
        listener.close()


# --- huge expiries in the kernel ---------------------------------------------------------------------

_no_nft = netns.skip_reason() or (None if shutil.which("nft") else "needs nft (apt-get install nftables)")


@pytest.mark.skipif(_no_nft is not None, reason=_no_nft or "")
def test_far_expiries_reach_nftables_and_a_refused_sync_leaves_the_table_alone(world, tmp_path):
    """A signed rule set whose rules expire in two days or in 1e300 s is enforced (nft refuses "100000000ms",
    so a plain millisecond timeout failed beyond 27.7 hours); and when the kernel does refuse a rule set,
    the agent's rule table and the saved signed rule set stay as they were."""
    with netns.namespace("fuzz") as ns:
        enforcer = NftablesEnforcer(table=f"iotguard_{netns.unique_token()}", netns=ns.name)
        enforcer.start()
        h = Harness(tmp_path / "agent", world, enforcer=enforcer)
        try:
            doc = world.ruleset("rules-all", 1)
            doc["rules"][0]["expires"], doc["rules"][1]["expires"] = time.time() + 2 * 86400, 1e300
            out = h.deliver(world.topic("rules-all"), world.signed(fz.render(doc)))
            assert out.ack["status"] == "applied", out.reason
            listed = ns.run("nft", "list", "table", "inet", enforcer.table).stdout
            assert "timeout 1d" in listed or "timeout 2d" in listed  # the two-day rule, counting down
            assert h.rules.count() == 3

            stored = tmp_path / "agent" / "mqtt" / "rules" / "all.json"  # the signed set applied again at start
            saved = stored.read_bytes()
            ns.run("nft", "delete", "table", "inet", enforcer.table)  # gone behind the agent's back: nft now fails
            out = h.deliver(world.topic("rules-all"), world.signed(fz.render(world.ruleset("rules-all", 2, []))))
            assert out.ack["status"] == "rejected" and out.reason.startswith("apply failed")
            assert h.rules.count() == 3 and stored.read_bytes() == saved
        finally:
            h.close()
            enforcer.stop()
