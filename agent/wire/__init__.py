"""The wire contract shared by agent and controller: canonical JSON, signing, rule sets, messages, topics.

The controller imports nothing else from the agent: ``from agent.wire import parse_alert, sign, topic``.

    jsonio      canonical JSON out, bounded JSON in
    signing     Ed25519 keys and signed envelopes
    rules       rule set documents and their checks
    messages    topics, schemas and limits; alerts, status, acks, model pushes
    transport   the paho client both ends connect with

The names below are imported on first use, so that reading a rule set (the
agent's configuration does) loads neither cryptography nor paho.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "jsonio": ("canonical_json", "json_depth", "load_json"),
    "signing": (
        "ENVELOPE_SCHEMA",
        "SignatureError",
        "TrustedKeys",
        "generate_key",
        "key_id",
        "load_private_key",
        "load_public_key",
        "open_envelope",
        "save_keypair",
        "sign",
        "trusted_keys",
    ),
    "rules": ("ALL_DEVICES", "MAX_RULES", "NAME_RE", "Rule", "RuleSet", "RuleSetError", "parse_ruleset"),
    "messages": (
        "ACK_SCHEMA",
        "ALERTS_ACK_SCHEMA",
        "ALERT_CLASSES",
        "ALERT_FIELDS",
        "ALERT_SCHEMA",
        "DEFAULT_PREFIX",
        "KINDS",
        "MODEL_FIELDS",
        "MODEL_MAX_BYTES",
        "MODEL_MAX_VERSION",
        "MODEL_SCHEMA",
        "REASON_MAX_CHARS",
        "RULES_MAX_BYTES",
        "STATUS_SCHEMA",
        "MessageError",
        "TopicParts",
        "alert_seq_of",
        "alerts_ack",
        "check_model_push",
        "discovery_node",
        "discovery_topics",
        "parse_ack",
        "parse_alert",
        "parse_alerts_ack",
        "parse_status",
        "parse_topic",
        "short_reason",
        "topic",
    ),
    "transport": ("make_client",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
