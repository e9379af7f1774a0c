"""``python -m iotguard demo``: detect Mirai in the capture bundled with the agent, then show the fleet loop.

The capture (``agent/samples/mirai_demo.pcap``) is synthesised: benign
smart-home traffic with each Mirai variant over it in turn.  Its labels file
lets the demo say, next to the verdicts, how the per-packet classes compare
with the truth.

Then the fleet loop runs on this machine: an embedded broker (mosquitto when
installed, else the pure-Python amqtt), the controller with a fresh signing
key and a policy of one reporting device, and this agent's MQTT link.  The
agent's alerts on hostile sources go to the controller, which blocks the
sources fleet-wide in a signed rule set; the agent verifies and applies it and
acknowledges.  Spoofed-flood verdicts are not sent, as the live agent sends
none: their sources are forged, and the agent blocks them on the board alone.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.decide import DecisionLayer
from agent.detect.model import Classifier, load_bundle
from agent.pipeline import SAMPLE_CAPTURE, detect_capture
from agent.report import counted, reported_line

SAMPLE = SAMPLE_CAPTURE


def read_labels(capture: Path) -> dict[int, int] | None:
    path = capture.with_name(capture.stem + ".labels.csv")
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        return {int(row["index"]): LABELS.index(row["label"]) for row in csv.DictReader(fh)}


def run_demo(capture: Path = SAMPLE, model: str | None = None, runtime: str = "auto", fleet: bool = True) -> int:
    bundle = load_bundle(model) if model else load_bundle()
    classifier = Classifier(bundle, runtime=runtime)
    result = detect_capture(capture, classifier, DecisionLayer())
    print(f"capture {capture.name}: {result.packets} packets, model {bundle.version} on {classifier.runtime}")
    if result.stats.total_skipped:
        print(result.stats.summary(), file=sys.stderr)
    print(f"\n{counted(len(result.verdicts), 'verdict')}:")
    for v in result.verdicts:
        print("  " + v.describe())
    truth = read_labels(capture)
    if truth is not None:
        y = np.array([truth[i] for i in result.index.tolist()])
        print("\nper-packet classes against the capture's labels:")
        print(f"  {'true class':15s} {'packets':>9s} {'correct':>8s} {'called attack':>14s}")
        for k, name in enumerate(LABELS):
            sel = y == k
            if sel.any():
                correct = (result.labels[sel] == k).mean()
                attack = (result.labels[sel] != 0).mean()
                print(f"  {name:15s} {sel.sum():9d} {correct:8.2%} {attack:14.2%}")
    if fleet:
        return fleet_round_trip(result.verdicts)
    return 0


def fleet_round_trip(verdicts: list, timeout: float = 30.0) -> int:
    """agent -> alert -> controller -> signed fleet rule set -> agent applies -> acknowledgement."""
    import tempfile
    import threading
    import time

    from agent.act.enforce import NoneEnforcer
    from agent.act.filter import RuleTable
    from agent.act.respond import Responder, alert_document
    from agent.config import MqttConfig
    from agent.fleet.link import FleetLink
    from agent.wire.signing import generate_key, save_keypair
    from controller.broker import AmqttBroker, BrokerError, start_embedded_broker
    from controller.policy import PolicyConfig
    from controller.service import BrokerSettings, ControllerConfig, ControllerService

    sources = [v for v in verdicts if v.kind == "source"]  # what the live agent sends too (agent/live.py)
    print(f"\nfleet loop, {reported_line(verdicts)}")
    with tempfile.TemporaryDirectory(prefix="iotguard-demo-") as tmp:
        tmp = Path(tmp)
        try:
            broker = start_embedded_broker(tmp / "broker")
        except BrokerError as exc:
            print(f"  skipped: {exc}")
            return 0
        protocol = "3.1.1" if isinstance(broker, AmqttBroker) else "5"
        print(f"  broker: {type(broker).__name__} on {broker.host}:{broker.port} (MQTT {protocol})")
        save_keypair(generate_key(), tmp / "controller.key", tmp / "controller.pub")
        service = ControllerService(ControllerConfig(
            db=tmp / "controller.sqlite", signing_key=tmp / "controller.key",
            broker=BrokerSettings(broker.host, broker.port, protocol), share_group="controllers" if protocol == "5" else "",
            policy=PolicyConfig(k_devices=1, window_s=3600, block_ttl_s=3600),
        ))  # fmt: skip
        rules = RuleTable()
        link = FleetLink(
            MqttConfig(host=broker.host, port=broker.port, fleet="demo", device="board-1", state_dir=tmp / "agent",
                       protocol=protocol, controller_public_key=tmp / "controller.pub"),
            Responder(rules, NoneEnforcer()), threading.Lock(),
        )  # fmt: skip
        try:
            service.start()
            service.ready.wait(10)
            link.start()
            start = time.time()
            for v in sources:
                link.send_alert(alert_document(v, "drop", f"src:{v.src_ip}"))
            wanted = {v.src_ip for v in sources}
            while time.time() - start < timeout:
                fleet_rules = {str(r.network.network_address) for r in rules.rules("all")}
                if wanted <= fleet_rules:
                    break
                time.sleep(0.05)
            elapsed = time.time() - start
            time.sleep(0.5)  # let the acknowledgement reach the controller
            store = service.store
            print(f"  controller stored {counted(store.count('alerts'), 'alert')}")
            for rs in store.rulesets("demo")[:1]:
                acks = store.acks("demo", rs["target"], rs["version"])
                who = ", ".join("{} ({})".format(a["device"], a["status"]) for a in acks) or "nobody yet"
                print(f"  controller signed rule set '{rs['target']}' v{rs['version']} with {counted(rs['rules'], 'rule')}; acknowledged by: {who}")
            applied = sorted(str(r.network) for r in rules.rules("all"))
            ok = wanted <= {a.split("/")[0] for a in applied}
            print(f"  agent applied the fleet rules: {', '.join(applied) or 'none'}")
            print(f"  round trip {'complete' if ok else 'INCOMPLETE'} in {elapsed * 1000:.0f} ms")
            return 0 if ok else 1
        finally:
            link.stop()
            service.stop()
            broker.stop()
