"""The broker connection of the one-shot commands (block, unblock, push-model): connected before anything
changes, and every message acknowledged by the broker before the command goes on.

``FleetRules`` publishes each rule set inside the database transaction that records it; given
``BrokerSession.publish``, which returns only once the broker has acknowledged the message and raises
otherwise, a rule set the broker did not take is rolled back, so nothing is recorded as issued that was
not published.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.wire import make_client
from controller.service import BrokerSettings, FleetRules
from controller.store import Store


class BrokerUnreachable(RuntimeError):
    """A one-shot command could not reach the broker, or the broker did not take a message."""


class BrokerSession:
    """A connection of a one-shot command (block, unblock, push-model): every publish waits for its PUBACK."""

    def __init__(self, client: mqtt.Client, where: str, timeout: float) -> None:
        self.client, self.where, self.timeout = client, where, timeout

    def publish(self, name: str, payload: bytes, retain: bool) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged it (the ``Publish`` of FleetRules)."""
        info = self.client.publish(name, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:  # paho: not queued, or the connection went away
            raise BrokerUnreachable(f"publish to the broker at {self.where} failed: {exc}") from None
        if not info.is_published():
            raise BrokerUnreachable(f"the broker at {self.where} did not acknowledge within {self.timeout:g} s")


@contextmanager
def broker_session(broker: BrokerSettings, client_id: str, timeout: float = 10.0) -> Iterator[BrokerSession]:
    """Connected (the broker's CONNACK accepted) before the body runs, so that a command whose broker is
    unreachable fails before it changes anything; disconnected after."""
    where = f"{broker.host}:{broker.port}"
    client = make_client(client_id, broker.protocol, broker.tls_ca, broker.tls_cert, broker.tls_key, broker.username, broker.password)
    answered = threading.Event()
    refused: list[str] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:  # refused, unreachable, unknown host, TLS handshake
        raise BrokerUnreachable(f"cannot reach the broker at {where}: {exc.strerror or exc}") from None
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise BrokerUnreachable(f"the broker at {where} did not answer within {timeout:g} s")
        if refused:
            raise BrokerUnreachable(f"the broker at {where} refused the connection: {refused[0]}")
        yield BrokerSession(client, where, timeout)
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def fleet_rules(open_store: Callable[[], Store], key: Ed25519PrivateKey, prefix: str, broker: BrokerSettings,
                client_id: str) -> Iterator[FleetRules]:  # fmt: skip
    """FleetRules on a broker session of its own, what ``block``, ``unblock``, ``push-model`` and the
    dashboard's unblock go through: connected before the store is even opened (an unreachable broker leaves
    no database behind), and every rule set recorded only once the broker acknowledged it."""
    with broker_session(broker, client_id) as session:
        yield FleetRules(open_store(), key, prefix, session.publish)
