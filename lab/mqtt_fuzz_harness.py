"""The agent under MQTT fuzzing, and the oracle that judges what it made of each hostile message.

``Harness`` wires one agent as agent/live.py does (FleetLink, a real RuleTable saved to disk, the ``none``
enforcer or a given one, a temporary state directory) and hands it messages through paho's on_message
callback, without a broker: only the client's ``publish`` is caught (the broker boundary), so the
acknowledgements and status documents it sends can be checked.

After every message (``judge``): no exception escaped or was swallowed by the handler, the message was
rejected with a short reason (the ack on ``rules/ack``, or the status' ``model_error``) or ignored where
that is the design, nothing was accepted, and the agent's state is unchanged (rule table, rule files,
applied versions, model version, model object, kernel entries).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.act.enforce import NoneEnforcer
from agent.act.filter import RuleTable
from agent.act.respond import Responder
from agent.config import MqttConfig
from agent.detect.model import BundleError, Classifier, parse_bundle
from agent.fleet.link import FleetLink
from agent.wire.jsonio import canonical_json
from lab.mqtt_fuzz import (
    DEVICE,
    FLEET,
    MODEL_VERSION,
    PREFIX,
    REASON_LIMIT,
    RULES_VERSION,
    Case,
    World,
    patched_push,
    render,
)

# --- the agent under test -----------------------------------------------------


class Outbox:
    """Stands in for the network under paho: keeps what the agent publishes (acks, status)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, name: str, payload: bytes | None = None, qos: int = 0, retain: bool = False, properties: Any = None):
        self.messages.append((name, payload or b""))
        info = mqtt.MQTTMessageInfo(1)  # one mid for all: nothing is ever acknowledged, so nothing piles up
        info.rc = mqtt.MQTT_ERR_SUCCESS
        return info

    def last(self, suffix: str) -> dict | None:
        for name, payload in reversed(self.messages):
            if name.endswith(suffix):
                return json.loads(payload)
        return None


class CaughtExceptions(logging.Handler):
    """Records log records that carry a traceback: exceptions the handler swallowed instead of rejecting."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.records.append(f"{type(exc).__name__}: {str(exc)[:200]}")


@dataclass(frozen=True)
class Snapshot:
    table: tuple
    files: tuple
    applied: tuple
    model: tuple
    kernel: tuple


@dataclass
class Outcome:
    reason: str | None = None  # the rejection reason, if the message was rejected
    ack: dict | None = None
    status: dict | None = None
    applied: bool = False
    escaped: str | None = None
    caught: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    status_error: str | None = None


class Harness:
    """One agent as agent/live.py builds it, fed messages through paho's on_message callback.

    ``offline`` (the fuzz run): no broker; what the agent publishes is kept in an
    Outbox and the connection is a CONNACK handed to its on_connect.  Otherwise
    the agent is left whole for ``link.start()`` against a real broker.
    """

    def __init__(self, state_dir: Path, world: World, enforcer: Any = None, host: str = "127.0.0.1", port: int = 1883,
                 offline: bool = True) -> None:  # fmt: skip
        self.state_dir, self.world = state_dir, world
        self.rules = RuleTable([], path=state_dir / "rules.json")
        self.enforcer = enforcer or NoneEnforcer()
        self.model: Classifier | None = None
        config = MqttConfig(host=host, port=port, fleet=FLEET, device=DEVICE, prefix=PREFIX, state_dir=state_dir / "mqtt",
                            reconnect_min_s=1, reconnect_max_s=1, controller_public_key=world.public_key)  # fmt: skip
        self.link = FleetLink(config, Responder(self.rules, self.enforcer), threading.Lock(),
                              swap_model=self._swap_model, make_classifier=self._classifier)  # fmt: skip
        self.agent = self.link.client
        self.outbox = Outbox()
        self.caught = CaughtExceptions()
        agent_log = logging.getLogger("agent")
        agent_log.addHandler(self.caught)
        if offline:
            agent_log.propagate = False  # a hundred thousand rejections are logged: keep them off the terminal
            self.agent.client.publish = self.outbox.publish  # the broker boundary
            # A successful CONNACK, as paho reports it: the agent subscribes and publishes its status from now on.
            self.agent.client.on_connect(self.agent.client, None, {}, ReasonCode(PacketTypes.CONNACK, "Success"), None)

    @staticmethod
    def _classifier(bundle: Any) -> Classifier:
        return Classifier(bundle, batch_size=8)  # the self-test has 6 rows; a smaller interpreter loads faster

    def _swap_model(self, classifier: Classifier) -> None:
        self.model = classifier

    def close(self) -> None:
        logging.getLogger("agent").removeHandler(self.caught)
        logging.getLogger("agent").propagate = True

    def prime(self) -> None:
        """v10 of both rule sets and model v5 installed through the handler, as a controller would push them."""
        w = self.world
        for kind in ("rules-all", "rules-device"):
            self.deliver(w.topic(kind), w.signed(render(w.ruleset(kind, RULES_VERSION))))
        self.deliver(w.topic("model"), w.signed(render(w.model_push(MODEL_VERSION))))
        versions = {t: a.version for t, a in self.agent._applied.items()}
        if versions != {"all": RULES_VERSION, DEVICE: RULES_VERSION} or self.agent.model_version != MODEL_VERSION:
            raise RuntimeError(f"priming failed: rules {versions}, model {self.agent.model_version}: "
                               f"{self.agent.stats.last_rules_error} / {self.agent.stats.model_error}")  # fmt: skip

    def snapshot(self) -> Snapshot:
        files = tuple(sorted((str(p.relative_to(self.state_dir)), p.read_bytes()) for p in self.state_dir.rglob("*")
                             if p.is_file() and "alerts" not in p.parts))  # fmt: skip
        return Snapshot(
            table=tuple(sorted((rid, e.origin, e.rule) for rid, e in self.rules.entries.items())),
            files=files,
            applied=tuple(sorted((t, a.version, a.digest) for t, a in self.agent._applied.items())),
            model=(self.agent.model_version, id(self.model)),
            kernel=tuple(sorted(map(repr, self.enforcer.active.values()))),
        )

    def deliver(self, name: bytes, payload: bytes) -> Outcome:
        """Hand one message to the agent exactly as paho's network thread does, and see what it did."""
        stats = self.agent.stats
        counts = (stats.rules_applied, stats.rules_rejected, stats.models_applied, stats.models_rejected)
        self.outbox.messages.clear()
        self.caught.records.clear()
        message = mqtt.MQTTMessage(0, name)
        message.payload = payload
        out = Outcome()
        try:
            self.agent.client.on_message(self.agent.client, None, message)
        except Exception as exc:  # noqa: BLE001 - paho would let this kill its network thread
            out.escaped = f"{type(exc).__name__}: {str(exc)[:200]}"
        out.caught = list(self.caught.records)
        applied_r, rejected_r, applied_m, rejected_m = (a - b for a, b in zip(
            (stats.rules_applied, stats.rules_rejected, stats.models_applied, stats.models_rejected), counts))  # fmt: skip
        out.applied = applied_r > 0 or applied_m > 0
        out.ack = self.outbox.last("/rules/ack")
        out.status = self.outbox.last("/status")
        if rejected_r:
            out.reason = stats.last_rules_error
        elif rejected_m:
            out.reason = stats.model_error
        try:  # the next heartbeat must still be publishable whatever the message left behind
            canonical_json(self.agent.status())
        except Exception as exc:  # noqa: BLE001
            out.status_error = f"{type(exc).__name__}: {exc}"
        return out

    def run(self, case: Case, before: Snapshot) -> tuple[Outcome, list[str]]:
        """Deliver ``case`` and list what is wrong with how the agent took it (empty: fine)."""
        out = self.deliver(case.topic_for(self.world), case.payload(self.world))
        after = self.snapshot()
        out.changed = [f for f in Snapshot.__dataclass_fields__ if getattr(before, f) != getattr(after, f)]
        return out, judge(case, out)


def primed(folder: Path, world: World) -> Harness:
    """A harness in the state hostile messages are judged against (``Harness.prime``)."""
    harness = Harness(folder, world)
    harness.prime()
    return harness


def judge(case: Case, out: Outcome) -> list[str]:
    problems = []
    if out.escaped:
        problems.append(f"exception escaped the handler: {out.escaped}")
    problems += [f"handler swallowed an exception (no reason sent): {c}" for c in out.caught]
    if out.status_error:
        problems.append(f"status no longer publishable: {out.status_error}")
    if out.applied:
        problems.append("hostile message accepted")
    if out.changed:
        problems.append(f"agent state changed: {', '.join(out.changed)}")
    if case.expect == "ignored":
        if out.reason is not None or out.ack is not None:
            problems.append(f"expected to be ignored, got rejection {out.reason!r}")
        return problems
    if not out.reason:
        if not out.escaped and not out.caught and not out.applied:
            problems.append("not rejected with a reason")
        return problems
    if len(out.reason) > REASON_LIMIT:
        problems.append(f"reason of {len(out.reason)} characters (limit {REASON_LIMIT})")
    if case.reason and case.reason not in out.reason:
        problems.append(f"reason {out.reason[:200]!r} lacks {case.reason!r}")
    if case.kind == "model":
        if out.status is None or out.status.get("model_error") != out.reason:
            problems.append("model rejection not reported in the status")
    elif out.ack is None or (out.ack["status"], out.ack["reason"]) != ("rejected", out.reason):
        problems.append(f"rejection not acknowledged with its reason: {out.ack}")
    elif out.ack["target"] != World.target(case.kind):
        problems.append(f"ack names target {out.ack['target']!r}")
    return problems


def bundle_problem(case: Case, world: World) -> str | None:
    """parse_bundle (also the start-up path, load_bundle) must refuse a bad bundle with BundleError only."""
    if case.patch is None or not any(p.startswith("bundle") for p in case.patch):
        return None
    try:
        push = json.loads(patched_push(world, case.model_version, case.patch))
    except ValueError:
        return None  # not JSON once rendered (NaN and friends): open_envelope refuses it first
    if not isinstance(push.get("bundle"), dict):
        return None
    try:
        parse_bundle(push["bundle"], world.model_tflite)
    except BundleError:
        pass
    except Exception as exc:  # noqa: BLE001
        return f"parse_bundle raised {type(exc).__name__} instead of BundleError: {str(exc)[:150]}"
    return None
