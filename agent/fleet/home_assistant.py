"""Home Assistant MQTT discovery: the board appears in Home Assistant as a device with two entities.

With ``mqtt.home_assistant = true`` the agent publishes, retained, on every
connection to the broker::

    <discovery_prefix>/binary_sensor/<node>/under_attack/config    device_class "safety" (on: unsafe)
    <discovery_prefix>/sensor/<node>/packets_per_s/config          packets/s, state_class "measurement"

where ``<node>`` is ``iotguard_<fleet>_<device>`` with every character other
than letters, digits, ``_`` and ``-`` replaced by ``_`` (what discovery topics
allow).  Both entities read their state from the agent's status topic, the
retained heartbeat that already carries ``packets_per_s`` and
``under_attack``, and take their availability from the same topic, whose
last will says ``offline``: no topic of its own to publish or allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.wire.jsonio import canonical_json
from agent.wire.messages import discovery_topics

MANUFACTURER = "IoTGuard"

# Templates on the status document (agent.fleet.mqtt: AgentMqtt.status).  A field the document lacks (the last
# will has only the state) gives "unknown" (None) instead of a template warning in Home Assistant's log.
UNDER_ATTACK_TEMPLATE = "{{ 'ON' if value_json.under_attack | default(false) else 'OFF' }}"
PACKETS_TEMPLATE = "{{ value_json.packets_per_s | default(none) }}"
AVAILABILITY_TEMPLATE = "{{ value_json.state }}"


@dataclass(frozen=True)
class DeviceInfo:
    """What Home Assistant's device registry shows besides the name."""

    model: str  # the firmware profile, e.g. rpi-4b
    sw_version: str  # the agent's version


def discovery_configs(discovery_prefix: str, fleet: str, device: str, status_topic: str,
                      info: DeviceInfo) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Discovery topic -> config document, for the two entities of one board."""
    uid = f"iotguard_{fleet}_{device}"  # any string will do; unique across fleets
    common = {
        "state_topic": status_topic,
        "availability_topic": status_topic,
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "device": {
            "identifiers": [uid],
            "name": device,
            "model": info.model,
            "manufacturer": MANUFACTURER,
            "sw_version": info.sw_version,
        },
        "origin": {"name": "iotguard-agent", "sw_version": info.sw_version},
    }
    topics = discovery_topics(discovery_prefix, fleet, device)
    return {
        topics["under_attack"]: {
            "name": "Under attack",
            "unique_id": f"{uid}_under_attack",
            "device_class": "safety",
            "value_template": UNDER_ATTACK_TEMPLATE,
            "payload_on": "ON",
            "payload_off": "OFF",
            # The whole heartbeat as attributes: model and rule-set versions, alert counts, CPU, memory.
            "json_attributes_topic": status_topic,
            **common,
        },
        topics["packets_per_s"]: {
            "name": "Packets per second",
            "unique_id": f"{uid}_packets_per_s",
            "unit_of_measurement": "packets/s",
            "state_class": "measurement",
            "icon": "mdi:lan",
            "value_template": PACKETS_TEMPLATE,
            **common,
        },
    }


def discovery_messages(discovery_prefix: str, fleet: str, device: str, status_topic: str,
                       info: DeviceInfo) -> list[tuple[str, bytes]]:  # fmt: skip
    """(topic, payload) pairs to publish retained."""
    configs = discovery_configs(discovery_prefix, fleet, device, status_topic, info)
    return [(name, canonical_json(doc)) for name, doc in configs.items()]
