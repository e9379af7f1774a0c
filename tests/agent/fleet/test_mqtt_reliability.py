"""No alert lost, none stored twice: broker restarts and agent crashes in the middle of a stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from lab import REPO
from lab.mqtt_helpers import FLEET, alert, make_agent, make_controller, plain_controller, wait_until

STREAM = 400

pytestmark = pytest.mark.slow  # a real broker restarted and an agent killed mid-stream


def _stream(agent, count: int, restart_at: int, restart) -> list[int]:
    """Send ``count`` alerts from a thread; call ``restart()`` from here once ``restart_at`` were sent."""
    seqs: list[int] = []

    def run() -> None:
        for i in range(count):
            seqs.append(agent.send_alert(alert(f"198.51.100.{i % 250}")))

    sender = threading.Thread(target=run)
    sender.start()
    wait_until(lambda: len(seqs) >= restart_at, f"{restart_at} alerts sent")
    restart()
    sender.join()
    return seqs


def test_broker_restart_mid_stream_every_seq_stored_exactly_once(broker, keys, tmp_path):
    controller = plain_controller(broker.host, broker.port, tmp_path, keys.private)
    controller.start()
    agent, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    agent.start()
    try:
        wait_until(lambda: controller.ready.is_set() and agent.ready, "connected")
        seqs = _stream(agent, STREAM, STREAM // 3, broker.restart)  # SIGTERM: mosquitto saves its sessions
        assert seqs == list(range(1, STREAM + 1))
        wait_until(lambda: len(agent.queue) == 0, "agent queue drained")
        wait_until(lambda: controller.store.count("alerts") == STREAM, f"{STREAM} alerts stored")
        assert controller.store.alert_seqs(FLEET, "dev1") == seqs
        assert controller.stats.alerts_new == STREAM
        assert agent.stats.connects >= 2, "the agent never saw the broker go away"
    finally:
        agent.stop()
        controller.stop()


AGENT_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent.config import MqttConfig
    from agent.fleet.mqtt import AgentMqtt
    cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), fleet="lab", device="dev1", state_dir=Path(sys.argv[2]),
                     reconnect_min_s=1, reconnect_max_s=1)
    agent = AgentMqtt(cfg, {}, lambda rs: None)
    agent.start()
    for i in range(int(sys.argv[3])):
        seq = agent.send_alert({"class": "mirai_udp", "confidence": 0.9, "source": {"ip": "192.0.2.1"},
                                "victim": None, "packets": 1, "first_seen": 0, "last_seen": 0,
                                "action": "none", "rule_id": None})
        print(seq, flush=True)
    while len(agent.queue):
        time.sleep(0.01)
    print("drained", flush=True)
    time.sleep(600)
    """
)


def test_agent_killed_mid_stream_resends_after_restart_without_duplicates(broker, keys, tmp_path):
    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    controller.start()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    state = tmp_path / "dev1"
    queued: set[int] = set()
    try:
        child = subprocess.Popen([sys.executable, "-c", AGENT_CHILD, str(broker.port), str(state), "100000"],
                                 stdout=subprocess.PIPE, env=env, text=True)
        for line in child.stdout:
            queued.add(int(line))
            if len(queued) == 150:
                child.send_signal(signal.SIGKILL)  # the board loses power mid-stream
        child.wait()
        child.stdout.close()
        # Back up: the same state directory; send 50 more, then wait until all are out.
        child = subprocess.Popen([sys.executable, "-c", AGENT_CHILD, str(broker.port), str(state), "50"],
                                 stdout=subprocess.PIPE, env=env, text=True)
        for line in child.stdout:
            if line.strip() == "drained":
                break
            queued.add(int(line))
        child.kill()
        child.wait()
        child.stdout.close()
        wait_until(lambda: set(controller.store.alert_seqs(FLEET, "dev1")) >= queued, "every queued alert stored")
        stored = controller.store.alert_seqs(FLEET, "dev1")
        assert len(stored) == len(set(stored))
        assert max(stored) == max(queued), "a seq was reused or invented"
        assert len(queued) >= 200
    finally:
        controller.stop()
