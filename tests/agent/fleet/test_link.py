"""agent.fleet.link: what the fleet link does with a verified rule set or model, without a broker.

The MQTT side (signatures, versions, acks, retained messages) is tested in
test_mqtt*.py against a real mosquitto; here the link's own job: a rule set
reaches the responder as the rules of its origin, a model must pass its own
self-test on this board before it is swapped in.
"""

from __future__ import annotations

import copy
import ipaddress
import threading
import time

import numpy as np
import pytest

from agent.act.enforce import NoneEnforcer
from agent.act.filter import RuleTable
from agent.act.respond import Responder
from agent.config import MqttConfig
from agent.detect.model import Classifier, load_bundle
from agent.fleet.link import FleetLink
from agent.wire.rules import ALL_DEVICES, Rule, RuleSet
from agent.wire.signing import generate_key, save_keypair


@pytest.fixture
def link(tmp_path):
    save_keypair(generate_key(), tmp_path / "c.key", tmp_path / "c.pub")
    swapped: list[Classifier] = []
    config = MqttConfig(host="127.0.0.1", fleet="lab", device="dev1", state_dir=tmp_path / "mqtt",
                        controller_public_key=tmp_path / "c.pub")  # fmt: skip
    fl = FleetLink(config, Responder(RuleTable(), NoneEnforcer()), threading.Lock(), swap_model=swapped.append)
    fl.swapped = swapped
    return fl


def ruleset(target: str, *nets: str, expires: float | None = None) -> RuleSet:
    rules = tuple(Rule(f"{target}:{i}", ipaddress.ip_network(n), None, None, "drop", expires, "test") for i, n in enumerate(nets))
    return RuleSet("lab", target, 1, time.time(), rules)


def test_a_rule_set_replaces_the_rules_of_its_origin(link):
    rules = link.responder.rules
    link.apply_rules(ruleset(ALL_DEVICES, "198.51.100.0/24", "203.0.113.7/32"))
    link.apply_rules(ruleset("dev1", "192.0.2.9/32"))
    assert sorted(str(r.network) for r in rules.rules("all")) == ["198.51.100.0/24", "203.0.113.7/32"]
    assert [str(r.network) for r in rules.rules("device")] == ["192.0.2.9/32"]
    link.apply_rules(ruleset(ALL_DEVICES, "198.51.100.0/24", expires=1.0))  # long expired: nothing active
    assert rules.rules("all") == [] and len(rules.rules("device")) == 1
    assert {e.address for e in link.responder.enforcer.active.values()} == {"192.0.2.9"}


def test_the_link_needs_the_controllers_key(tmp_path):
    config = MqttConfig(host="127.0.0.1", fleet="lab", device="dev1", state_dir=tmp_path)
    with pytest.raises(ValueError, match="public key"):
        FleetLink(config, Responder(RuleTable(), NoneEnforcer()), threading.Lock())


def test_a_model_that_passes_its_self_test_is_swapped_in(link):
    bundle = load_bundle()
    link.on_model(bundle.full_meta(), bundle.tflite)
    assert len(link.swapped) == 1 and link.swapped[0].bundle.version == bundle.version


def test_a_model_failing_or_lacking_its_self_test_is_refused(link):
    bundle = load_bundle()
    meta = copy.deepcopy(bundle.full_meta())
    want = np.asarray(meta["self_test"]["int8"])
    meta["self_test"]["int8"] = np.roll(want, 1, axis=1).tolist()  # every row's label moves to another class
    with pytest.raises(ValueError, match="fails its own self-test"):
        link.on_model(meta, bundle.tflite)
    del meta["self_test"]
    with pytest.raises(ValueError, match="no self-test rows"):
        link.on_model(meta, bundle.tflite)
    assert link.swapped == []
