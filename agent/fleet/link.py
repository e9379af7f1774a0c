"""The fleet link: connect an agent's responder and model to the fleet over MQTT.

``FleetLink`` wraps ``AgentMqtt`` (the paho client with the on-disk alert
queue) and gives it the two callbacks it needs: a signed rule set goes to the
responder, which replaces the rules of its origin (``all`` for the fleet-wide
set, ``device`` for this board's own) in the primary filter and the kernel; a
signed model bundle must pass its own self-test on this board before it is
swapped in, without stopping capture.  Callbacks run on paho's network
thread, so every change to shared state goes through ``lock``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from agent.act.respond import Responder
from agent.config import MqttConfig
from agent.detect.model import Bundle, Classifier, parse_bundle
from agent.fleet.home_assistant import DeviceInfo
from agent.fleet.mqtt import AgentMqtt
from agent.wire.rules import ALL_DEVICES, RuleSet
from agent.wire.signing import load_public_key, trusted_keys

log = logging.getLogger(__name__)


class FleetLink:
    def __init__(
        self,
        config: MqttConfig,
        responder: Responder,
        lock: threading.Lock,
        swap_model: Callable[[Classifier], None] | None = None,
        make_classifier: Callable[[Bundle], Classifier] = Classifier,
        events: Any = None,
        device_info: DeviceInfo | None = None,
    ) -> None:
        if config.controller_public_key is None:
            raise ValueError("the fleet link needs the controller's public key to verify rule sets and models")
        self.config = config
        self.responder, self.lock = responder, lock
        self.swap_model, self.make_classifier = swap_model, make_classifier
        keys = trusted_keys([load_public_key(config.controller_public_key)])
        self.client = AgentMqtt(config, keys, self.apply_rules, self.on_model if swap_model else None,
                                events=events, device_info=device_info)  # fmt: skip

    def start(self) -> None:
        self.client.start()

    def stop(self) -> None:
        self.client.stop()

    def send_alert(self, alert: dict) -> int:
        return self.client.send_alert(alert)

    def summary(self) -> dict:
        """Alert accounting and update counts: queued alerts were either sent, are pending, or were dropped.

        Of the sent ones, ``alerts_confirmed`` were confirmed stored by a controller and ``alerts_unconfirmed``
        were let go at the broker's acknowledgement to make room in the full queue."""
        c = self.client
        return {
            "connected": c.connected,
            "connects": c.stats.connects,
            "alerts_queued": c.queue.next_seq - 1,
            "alerts_sent": c.stats.alerts_sent,
            "alerts_pending": len(c.queue),
            "alerts_dropped": c.queue.dropped,
            "alerts_confirmed": c.stats.alerts_confirmed,
            "alerts_unconfirmed": c.queue.released,
            "alerts_resent": c.stats.alerts_resent,
            "awaiting_confirmation": c.holding,
            "rules_applied": c.stats.rules_applied,
            "rules_rejected": c.stats.rules_rejected,
            "ruleset_version": c.ruleset_versions(),
        }

    def apply_rules(self, ruleset: RuleSet) -> None:
        """A verified rule set: the responder swaps the rules of its origin (raises to reject it)."""
        origin = "all" if ruleset.target == ALL_DEVICES else "device"
        now = time.time()
        with self.lock:
            self.responder.apply_ruleset(origin, list(ruleset.active_rules(now)), now)
        log.info("applied %s rule set v%d: %d rules", ruleset.target, ruleset.version, len(ruleset.rules))

    def on_model(self, meta: dict, tflite: bytes) -> None:
        """A verified model push: load it, check its self-test rows, then swap (raise to keep the old model)."""
        bundle: Bundle = parse_bundle(meta, tflite)
        classifier = self.make_classifier(bundle)
        test = classifier.self_test()
        if test is None:
            raise ValueError("model bundle has no self-test rows to check it with")
        if not test.same_labels:
            raise ValueError("model fails its own self-test on this board")
        with self.lock:
            self.swap_model(classifier)
        log.info("model %s swapped in", bundle.version)
