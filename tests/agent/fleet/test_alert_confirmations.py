"""Not one alert lost end to end: the controller confirms what it stored, the agent holds and resends the rest.

Real mosquitto, a real controller service (shared subscription unless said otherwise) and the agent's
fleet link or its MQTT client.  Mosquitto 2.0.11 does not restore shared subscriptions after a restart,
and SIGKILL loses whatever it had not saved: alerts it acknowledged to the agent then reach no
controller, and only the agent's resend of unconfirmed alerts brings them in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.act.enforce import NoneEnforcer
from agent.act.filter import RuleTable
from agent.act.respond import Responder
from agent.config import MqttConfig
from agent.fleet.alert_queue import AlertQueue
from agent.fleet.link import FleetLink
from agent.fleet.mqtt import AgentMqtt
from agent.wire import alerts_ack, canonical_json, topic
from lab.mqtt_helpers import FLEET, Listener, alert, make_agent, make_controller, wait_until

PREFIX = "iotguard/v1"
ACK_TOPIC = topic(PREFIX, FLEET, "dev1", "alerts/ack")
STREAM = 300


def make_link(broker, public_key: Path, state_dir: Path, **config: Any) -> FleetLink:
    """The fleet link as the live agent has it (a responder without kernel enforcement)."""
    mqtt = MqttConfig(host=broker.host, port=broker.port, fleet=FLEET, device="dev1", state_dir=state_dir,
                      controller_public_key=public_key, reconnect_min_s=1, reconnect_max_s=1, **config)  # fmt: skip
    return FleetLink(mqtt, Responder(RuleTable(), NoneEnforcer()), threading.Lock())


def stream(agent: AgentMqtt | FleetLink, count: int, fault_at: int, fault: Callable[[], None]) -> list[int]:
    """Send ``count`` alerts from a thread, a few ms apart; run ``fault()`` here once ``fault_at`` were sent."""
    seqs: list[int] = []

    def run() -> None:
        for i in range(count):
            seqs.append(agent.send_alert(alert(f"198.51.100.{i % 250}")))
            time.sleep(0.005)

    sender = threading.Thread(target=run)
    sender.start()
    wait_until(lambda: len(seqs) >= fault_at, f"{fault_at} alerts sent")
    fault()
    sender.join()
    return seqs


def learn_confirmations(agent: AgentMqtt) -> int:
    """One alert stored and confirmed: from then on (confirm_alerts="auto") alerts wait for confirmations."""
    seq = agent.send_alert(alert("198.51.100.250"))
    wait_until(lambda: agent.holding and len(agent.queue) == 0, "the first alert confirmed")
    return seq


def assert_stored_exactly_once(agent: AgentMqtt, controller, seqs: list[int]) -> None:
    wait_until(lambda: len(agent.queue) == 0, "every alert confirmed")
    stored = controller.store.alert_seqs(FLEET, "dev1")
    assert stored == seqs == list(range(1, len(seqs) + 1)), f"missing {sorted(set(seqs) - set(stored))[:40]}"
    assert agent.queue.dropped == 0 and agent.queue.released == 0
    # The first alert left at its PUBACK: its confirmation was the first the agent saw.
    assert agent.stats.alerts_sent == len(seqs) and agent.stats.alerts_confirmed == len(seqs) - 1


# --- faults mid-stream -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_broker_restarted_mid_stream_every_alert_is_stored_exactly_once(broker, keys, tmp_path, kill):
    """SIGTERM: alerts sent after the restart, before the controller's shared subscription is back, reach no
    one.  SIGKILL: also those the broker had acknowledged and not yet passed on, and the controller's session."""
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    link = make_link(broker, keys.public, tmp_path / "dev1", confirm_timeout_s=1)
    agent = link.client
    controller.start()
    link.start()
    try:
        wait_until(lambda: controller.ready.is_set() and agent.ready, "connected")
        first = learn_confirmations(agent)
        # The controller comes back after the agent (as with its doubling reconnect delay in the soak).
        controller.client.reconnect_delay_set(3, 3)
        seqs = [first] + stream(link, STREAM, STREAM // 3, lambda: broker.restart(kill=kill))
        assert_stored_exactly_once(agent, controller, seqs)
        summary = link.summary()
        assert summary["connects"] >= 2, "the agent never saw the broker go away"
        assert summary["alerts_resent"] > 0, "nothing was lost on the way: the test would show nothing"
        assert {k: summary[k] for k in ("alerts_queued", "alerts_sent", "alerts_pending", "alerts_dropped",
                                        "alerts_unconfirmed", "awaiting_confirmation")} == {
            "alerts_queued": len(seqs), "alerts_sent": len(seqs), "alerts_pending": 0, "alerts_dropped": 0,
            "alerts_unconfirmed": 0, "awaiting_confirmation": True}  # fmt: skip
    finally:
        link.stop()
        controller.stop()


@pytest.mark.slow
def test_controller_stopped_mid_stream_over_a_broker_restart_every_alert_is_stored_exactly_once(broker, keys, tmp_path):
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted, confirm_timeout_s=1)
    controller.start()
    agent.start()
    try:
        wait_until(lambda: controller.ready.is_set() and agent.ready, "connected")
        first = learn_confirmations(agent)

        def away() -> None:
            controller.stop()  # its persistent session collects alerts: until the broker restarts
            broker.restart()
            wait_until(lambda: agent.connected, "the agent back on the broker")

        seqs = [first] + stream(agent, STREAM, STREAM // 3, away)
        assert agent.queue.held_seqs(), "nothing waits for the controller: the test would show nothing"
        controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)  # same database
        controller.start()
        assert_stored_exactly_once(agent, controller, seqs)
    finally:
        agent.stop()
        controller.stop()


# --- old controllers, old agents ----------------------------------------------------------


@pytest.mark.slow
def test_an_agent_whose_controller_never_confirms_lets_alerts_go_at_the_puback(broker, keys, tmp_path):
    old = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    old.config.confirm_alerts = False  # as controllers before confirmations
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted, confirm_timeout_s=0.2)
    old.start()
    agent.start()
    try:
        wait_until(lambda: old.ready.is_set() and agent.ready, "connected")
        seqs = [agent.send_alert(alert(f"198.51.100.{i}")) for i in range(50)]
        wait_until(lambda: len(agent.queue) == 0, "the queue emptied by PUBACKs")
        wait_until(lambda: old.store.count("alerts") == 50, "50 alerts stored")
        time.sleep(1.5)  # several confirmation timeouts: nothing may be sent again
        assert old.store.alert_seqs(FLEET, "dev1") == seqs
        assert not agent.holding and agent.stats.alerts_sent == 50 and agent.stats.alerts_confirmed == 0
        assert agent.stats.alerts_resent == 0 and old.stats.alerts_duplicate == 0 and old.stats.confirmations == 0
    finally:
        agent.stop()
        old.stop()


@pytest.mark.slow
def test_a_controller_confirms_to_an_agent_that_ignores_confirmations(broker, keys, tmp_path):
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    old, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted, confirm_alerts="off")
    listener = Listener(broker.host, broker.port, [ACK_TOPIC])
    controller.start()
    old.start()
    try:
        wait_until(lambda: controller.ready.is_set() and old.ready, "connected")
        seqs = [old.send_alert(alert(f"198.51.100.{i}")) for i in range(50)]
        confirmed = lambda: [ack["stored_through"] for ack in listener.json_on("/alerts/ack")]  # noqa: E731
        wait_until(lambda: confirmed() and confirmed()[-1] == 50, "the controller's confirmations")
        assert controller.store.alert_seqs(FLEET, "dev1") == seqs
        wait_until(lambda: len(old.queue) == 0, "the queue emptied by PUBACKs")
        assert old.stats.confirmations == 0 and not old.queue.confirmations and not old.holding
        assert old.stats.alerts_sent == 50 and controller.stats.alerts_duplicate == 0
    finally:
        listener.close()
        old.stop()
        controller.stop()


# --- confirmations that must change nothing -------------------------------------------------


def test_malformed_foreign_and_too_high_confirmations_are_refused_and_change_nothing(broker, keys, tmp_path, caplog):
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted, confirm_alerts="always")
    fake = Listener(broker.host, broker.port, [])  # whoever may write to the agent's confirmation topic
    agent.start()
    try:
        wait_until(lambda: agent.ready, "connected")
        for i in range(3):
            agent.send_alert(alert(f"198.51.100.{i}"))
        wait_until(lambda: agent.queue.held_seqs() == [1, 2, 3], "3 alerts acknowledged by the broker")
        hostile = [
            (b"{not json", "alerts ack: malformed JSON"),
            (canonical_json({"schema": "iotguard.alerts-ack/1", "fleet": FLEET, "device": "dev1"}),
             "alerts ack: missing field 'stored_through'"),
            (canonical_json(alerts_ack(FLEET, "dev2", 3, time.time())),
             "names lab/dev2 but came on the topic of lab/dev1"),
            (canonical_json(alerts_ack(FLEET, "dev1", 4, time.time())),
             "confirms alerts up to seq 4, but this device has sent only up to seq 3"),
            (canonical_json(alerts_ack(FLEET, "dev1", 2**63, time.time())), "stored_through: must be in 0.."),
        ]  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="agent.fleet.mqtt"):
            for payload, _ in hostile:
                fake.publish(ACK_TOPIC, payload)
            wait_until(lambda: agent.stats.confirmations_refused == len(hostile), "every hostile confirmation refused")
        refusals = [r.getMessage() for r in caplog.records if "alert confirmation refused" in r.getMessage()]
        assert len(refusals) == len(hostile)
        for line, (_, reason) in zip(refusals, hostile):
            assert reason in line and "nothing changed" in line, (line, reason)
        assert agent.queue.pending_seqs() == agent.queue.held_seqs() == [1, 2, 3], "no alert dropped"
        assert agent.stats.confirmations == agent.stats.alerts_confirmed == 0

        fake.publish(ACK_TOPIC, canonical_json(alerts_ack(FLEET, "dev1", 2, time.time())))
        wait_until(lambda: agent.queue.pending_seqs() == [3], "a valid confirmation to take effect")
        assert AlertQueue(agent.queue.directory).pending_seqs() == [3], "and on disk"
    finally:
        fake.close()
        agent.stop()


def test_a_refused_confirmation_does_not_switch_an_agent_to_waiting_for_them(broker, keys, tmp_path):
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)  # confirm_alerts="auto"
    fake = Listener(broker.host, broker.port, [])
    agent.start()
    try:
        wait_until(lambda: agent.ready, "connected")
        fake.publish(ACK_TOPIC, canonical_json(alerts_ack(FLEET, "dev1", 7, time.time())))  # nothing sent yet
        wait_until(lambda: agent.stats.confirmations_refused == 1, "the confirmation refused")
        assert not agent.holding and not AlertQueue(agent.queue.directory).confirmations
        agent.send_alert(alert("198.51.100.1"))
        wait_until(lambda: len(agent.queue) == 0, "the alert gone at its PUBACK, as without confirmations")
        fake.publish(ACK_TOPIC, canonical_json(alerts_ack(FLEET, "dev1", 1, time.time())))
        wait_until(lambda: agent.holding, "a valid confirmation switches it")
        assert AlertQueue(agent.queue.directory).confirmations, "remembered across restarts"
    finally:
        fake.close()
        agent.stop()
