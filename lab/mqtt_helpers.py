"""Shared pieces of the MQTT tests: a real mosquitto per test, keys, agents and controllers wired to it.

Import the fixtures into a test module with ``from mqtt_helpers import broker, keys  # noqa: F401``.
Waiting is by polling a condition with a generous deadline that only matters when
something is broken; no test asserts on elapsed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import MqttConfig
from agent.fleet.mqtt import AgentMqtt
from agent.wire.rules import RuleSet
from agent.wire.signing import generate_key, save_keypair, trusted_keys
from controller.broker import MosquittoBroker, mosquitto_binary
from controller.policy import PolicyConfig
from controller.service import BrokerSettings, ControllerConfig, ControllerService

FLEET = "lab"
WAIT_S = 30.0  # deadline for conditions that should hold within milliseconds

needs_mosquitto = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto binary not installed (apt-get install mosquitto)"
)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not installed (apt-get install mosquitto)")
    b = MosquittoBroker(tmp_path / "broker").start()
    yield b
    b.stop()


@dataclass
class Keys:
    private: Path
    public: Path
    trusted: dict


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    key = generate_key()
    priv, pub = tmp_path / "signing.key", tmp_path / "signing.pub"
    save_keypair(key, priv, pub)
    return Keys(priv, pub, trusted_keys([key.public_key()]))


@dataclass
class RecordingFilter:
    """Stands in for the agent's primary filter: keeps the rule sets it was given."""

    applied: list[RuleSet] = field(default_factory=list)
    fail_with: str | None = None

    def __call__(self, ruleset: RuleSet) -> None:
        if self.fail_with:
            raise ValueError(self.fail_with)
        self.applied.append(ruleset)

    def versions(self, target: str = "all") -> list[int]:
        return [r.version for r in self.applied if r.target == target]


def make_agent(
    broker_host: str, broker_port: int, state_dir: Path, device: str, trusted: dict,
    fleet: str = FLEET, on_model: Callable | None = None, **config: Any,
) -> tuple[AgentMqtt, RecordingFilter]:
    recorder = RecordingFilter()
    cfg = MqttConfig(host=broker_host, port=broker_port, fleet=fleet, device=device, state_dir=state_dir,
                     reconnect_min_s=1, reconnect_max_s=1, **config)
    return AgentMqtt(cfg, trusted, recorder, on_model), recorder


def make_controller(broker_host: str, broker_port: int, tmp_path: Path, key_path: Path, name: str = "c1",
                    db: Path | str | None = None, **policy: Any) -> ControllerService:
    config = ControllerConfig(
        db=db or tmp_path / "controller.sqlite",
        signing_key=key_path,
        broker=BrokerSettings(host=broker_host, port=broker_port),
        name=name,
        tick_s=0.2,
        policy=PolicyConfig(**policy),
    )
    return ControllerService(config)


def plain_controller(host: str, port: int, tmp_path: Path, key: Path) -> ControllerService:
    """A controller on a plain subscription: mosquitto 2.0.11 restores those across a restart, but not
    shared ones (see test_faults.test_controller_offline_across_a_broker_restart_still_gets_alerts)."""
    controller = make_controller(host, port, tmp_path, key, k_devices=99)  # k_devices: no fleet rule pushes
    controller.config.share_group = ""
    return controller


def alert(source_ip: str, cls: str = "mirai_syn", confidence: float = 0.97) -> dict[str, Any]:
    """An alert as the agent's detector would hand it over."""
    now = time.time()
    return {
        "class": cls,
        "confidence": confidence,
        "source": {"ip": source_ip, "mac": "02:00:00:00:00:01", "port": 40000},
        "victim": {"ip": "192.168.1.10", "port": 23},
        "packets": 120,
        "first_seen": now - 1,
        "last_seen": now,
        "action": "drop",
        "rule_id": None,
    }


class Listener:
    """A plain paho client that records what arrives on some topics and can publish raw bytes."""

    def __init__(self, host: str, port: int, topics: list[str], client_id: str | None = None, **tls: Any) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self.subscribed = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv5)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, bool(m.retain)))
        self.client.on_subscribe = lambda c, u, mid, codes, p: setattr(self, "subscribed", True)
        self.client.connect(host, port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            wait_until(lambda: self.subscribed, "SUBACK")

    def publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(name, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def json_on(self, suffix: str) -> list[dict]:
        import json

        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
