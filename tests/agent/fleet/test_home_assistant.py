"""Home Assistant MQTT discovery against a real mosquitto: retained configs, states with the heartbeat, the ACL.

Home Assistant itself is not run; a subscriber stands in for it, subscribing only after the agent
published (as Home Assistant does after a restart), so every config and state it gets was retained.
"""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import agent
import agent.live
from agent.config import MqttConfig
from agent.wire import discovery_node, topic
from controller.broker import MosquittoBroker, free_port, mosquitto_binary
from controller.certs import issue, write_pki
from lab.live_lab import feed_capture, offline_agent
from lab.mqtt_helpers import FLEET, Listener, make_agent, wait_until

PREFIX = "iotguard/v1"
pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto binary not installed (apt-get install mosquitto)")


def configs(listener: Listener) -> dict[str, tuple[dict, bool]]:
    """Discovery topic -> (config, retained)."""
    return {t: (json.loads(p), r) for t, p, r in listener.messages if t.startswith("homeassistant/") and p}


def statuses(listener: Listener) -> list[dict]:
    return listener.json_on("/status")


def template_fields(template: str) -> list[str]:
    return re.findall(r"value_json\.(\w+)", template)


def test_discovery_configs_are_retained_and_the_states_follow_the_heartbeat(broker, keys, tmp_path, monkeypatch):
    monkeypatch.setattr(agent.live, "ATTACK_HOLD_S", 1.0)  # "under attack" ends a second after the last drop
    mqtt = MqttConfig(host=broker.host, port=broker.port, fleet=FLEET, device="pi.kitchen", state_dir=tmp_path / "mqtt",
                      controller_public_key=keys.public, home_assistant=True, status_interval_s=3600)  # fmt: skip
    board = offline_agent(tmp_path / "state", mqtt=mqtt)
    status_topic = topic(PREFIX, FLEET, "pi.kitchen", "status")
    board.fleet.start()
    ha = None
    try:
        wait_until(lambda: board.fleet.client.ready, "the fleet link connected")
        board.housekeeping(force=True)  # the first heartbeat: quiet
        ha = Listener(broker.host, broker.port, ["homeassistant/#", status_topic])
        found = wait_until(lambda: len(configs(ha)) == 2 and configs(ha), "both discovery configs")
        node = discovery_node(FLEET, "pi.kitchen")
        assert node == "iotguard_lab_pi_kitchen"  # '.' is not allowed in a discovery topic
        sensor = f"homeassistant/sensor/{node}/packets_per_s/config"
        binary = f"homeassistant/binary_sensor/{node}/under_attack/config"
        assert set(found) == {sensor, binary} and all(retained for _, retained in found.values())

        attack, rate = found[binary][0], found[sensor][0]
        assert attack["device_class"] == "safety" and (attack["payload_on"], attack["payload_off"]) == ("ON", "OFF")
        assert rate["unit_of_measurement"] == "packets/s" and rate["state_class"] == "measurement"
        for doc in (attack, rate):
            assert doc["state_topic"] == doc["availability_topic"] == status_topic
            assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
            assert doc["device"] == {"identifiers": ["iotguard_lab_pi.kitchen"], "name": "pi.kitchen",
                                     "model": "x86_64-gateway", "manufacturer": "IoTGuard",
                                     "sw_version": agent.__version__}  # fmt: skip
        assert attack["unique_id"] != rate["unique_id"]
        assert attack["json_attributes_topic"] == status_topic

        quiet = wait_until(lambda: statuses(ha), "the retained heartbeat")[-1]
        assert quiet["state"] == "online" and quiet["under_attack"] is False and quiet["packets_per_s"] == 0
        # Every field the templates read is in the heartbeat, with the type the template expects.
        kinds = {"under_attack": bool, "packets_per_s": (int, float), "state": str}
        for doc in (attack, rate):
            for template in (doc["value_template"], doc["availability_template"]):
                for name in template_fields(template):
                    assert isinstance(quiet[name], kinds[name]), (name, quiet)

        # An attack: the heartbeat goes out at once (the interval is an hour), with the rate since the last one.
        feed_capture(board)
        board.housekeeping(force=True)
        hot = wait_until(lambda: [s for s in statuses(ha) if s.get("under_attack")], "under_attack on")[-1]
        assert hot["packets_per_s"] > 0
        time.sleep(1.1)  # nothing dropped since: the attack is over
        board.housekeeping(force=True)
        calm = wait_until(lambda: (s := statuses(ha)[-1]) and s.get("under_attack") is False and s, "under_attack off")
        assert calm["packets_per_s"] == 0, "the rate is the current one, not the average since the start"
    finally:
        board.fleet.stop()
    offline = wait_until(lambda: (s := statuses(ha)[-1]) and s["state"] == "offline" and s, "the availability payload")
    assert template_fields(attack["availability_template"]) == ["state"] and offline["state"] == "offline"
    ha.close()


def test_nothing_goes_to_home_assistant_unless_asked(broker, keys, tmp_path):
    ha = Listener(broker.host, broker.port, ["homeassistant/#", topic(PREFIX, FLEET, "dev1", "status")])
    client, _ = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    client.start()
    try:
        # With home_assistant = true the configs go out before the heartbeat, on the same connection.
        wait_until(lambda: statuses(ha), "the heartbeat")
        assert not configs(ha), "discovery published without home_assistant = true"
        client.publish_discovery()  # so this listener would have seen them
        wait_until(lambda: len(configs(ha)) == 2, "discovery sent by hand")
    finally:
        client.stop()
        ha.close()


# --- the broker ACL of `python -m controller certs` ------------------------------------------------


def _tls(out, folder: str, name: str) -> dict:
    return {"ca_certs": str(out / "ca.crt"), "certfile": str(out / folder / f"{name}.crt"),
            "keyfile": str(out / folder / f"{name}.key")}  # fmt: skip


@pytest.mark.slow
def test_the_acl_of_certs_refuses_discovery_unless_made_with_home_assistant(keys, tmp_path, caplog):
    """``controller certs`` without --home-assistant: the broker refuses the discovery configs (the agent logs it);
    with it, each device may publish its own and Home Assistant's certificate reads them and the status."""
    for home_assistant in (False, True):
        port = free_port()
        out = tmp_path / f"pki-{home_assistant}"
        write_pki(out, devices=["dev1"], controllers=["c1"], fleet=FLEET, listen_host="127.0.0.1", port=port,
                  discovery_prefix="homeassistant" if home_assistant else None)  # fmt: skip
        if not home_assistant:  # no certificate for Home Assistant was made: issue one, as an operator might
            ca_key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), None)
            ca_cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
            key, cert = issue(ca_key, ca_cert, "homeassistant", server=False)
            (out / "clients").mkdir()
            (out / "clients" / "homeassistant.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            (out / "clients" / "homeassistant.key").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            with open(out / "acl", "a") as acl:  # ...and let it read, so that only the devices' grant is missing
                acl.write(f"\nuser homeassistant\ntopic read homeassistant/#\ntopic read {PREFIX}/{FLEET}/+/status\n")
        broker = MosquittoBroker(out / "run", port=port, config=(out / "mosquitto.conf").read_text()).start()
        board, _ = make_agent(broker.host, broker.port, tmp_path / f"dev1-{home_assistant}", "dev1", keys.trusted,
                              home_assistant=True, tls_ca=out / "ca.crt", tls_cert=out / "devices" / "dev1.crt",
                              tls_key=out / "devices" / "dev1.key")  # fmt: skip
        caplog.clear()
        try:
            with caplog.at_level(logging.WARNING, logger="agent.fleet.mqtt"):
                board.start()
                ha = Listener(broker.host, broker.port, ["homeassistant/#", topic(PREFIX, FLEET, "dev1", "status")],
                              client_id="homeassistant", **_tls(out, "clients", "homeassistant"))  # fmt: skip
                wait_until(lambda: statuses(ha), "dev1's heartbeat, which Home Assistant may read")

                def warned() -> list[str]:
                    return [r.getMessage() for r in caplog.records if "refused the publish" in r.getMessage()]

                if home_assistant:
                    wait_until(lambda: len(configs(ha)) == 2, "the retained discovery configs")
                    assert not warned()
                else:
                    refused = wait_until(lambda: len(warned()) == 2 and warned(), "the agent's warnings")
                    assert all("homeassistant/" in m and "Not authorized" in m for m in refused), refused
                    assert not configs(ha)
                ha.close()
        finally:
            board.stop()
            broker.stop()
