"""The MQTT side of the contract: topics, message schemas and limits, and the checks of what arrives.

Topics (DESIGN 7), with ``prefix`` = ``iotguard/v1`` by default::

    {prefix}/{fleet}/{device}/alerts      agent -> controller, QoS 1
    {prefix}/{fleet}/{device}/status      agent -> controller, QoS 1, retained, last will "offline"
    {prefix}/{fleet}/{device}/rules       controller -> agent, QoS 1, retained, signed
    {prefix}/{fleet}/all/rules            controller -> agent, QoS 1, retained, signed
    {prefix}/{fleet}/{device}/rules/ack   agent -> controller, QoS 1
    {prefix}/{fleet}/{device}/model       controller -> agent, QoS 1, signed
    {prefix}/{fleet}/{device}/alerts/ack  controller -> agent, QoS 1: alerts stored (``parse_alerts_ack``)

What the controller accepts from agents (alerts, status, rules acks) is
declared once per kind as a table of ``Field``s; ``parse_*`` return a plain
dict of checked values or raise ``MessageError(reason)``.  The topic is
authoritative for fleet and device (the broker's ACL ties it to the sender's
certificate); a document naming another device is refused.  What the agent
accepts from the controller: rule sets (``agent.wire.rules``) and model pushes
(``check_model_push``), both inside signed envelopes (``agent.wire.signing``),
and alert confirmations (``parse_alerts_ack``), which are not signed, as
alerts are not: the broker's ACL lets only controllers write to that topic.

Alert confirmations: every alert carries its per-device ``seq`` and
``first_pending``, the lowest seq still in the agent's queue (every lower one
is confirmed or given up for good).  After storing a batch the controller
publishes ``stored_through``: the highest seq such that every alert of the
device up to it is stored, refused for good, or below the agent's
``first_pending``.  Gaps the agent will never fill (alerts dropped from its
full queue) thus do not hold the confirmation back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, NamedTuple

from agent.capture.packets import VERDICT_LABELS
from agent.validate import (
    Check,
    Field,
    Invalid,
    fields,
    integer,
    ip_address,
    number,
    object_of,
    one_of,
    optional,
    passes,
    text,
    unknown_fields,
)
from agent.wire import rules
from agent.wire.jsonio import load_json

DEFAULT_PREFIX = "iotguard/v1"
ALERT_SCHEMA = "iotguard.alert/1"
STATUS_SCHEMA = "iotguard.status/1"
ACK_SCHEMA = "iotguard.rules-ack/1"
ALERTS_ACK_SCHEMA = "iotguard.alerts-ack/1"
MODEL_SCHEMA = "iotguard.model-push/1"
MODEL_MAX_BYTES = 16 * 1024 * 1024  # envelope of a model push (base64 inflates the .tflite by 4/3)
RULES_MAX_BYTES = rules.MAX_BYTES * 4 // 3 + 4096  # envelope around a rule set of at most MAX_BYTES
MODEL_FIELDS = ("schema", "version", "bundle", "tflite_b64", "sha256")
MODEL_MAX_VERSION = 2**53  # as for rule sets: exact in every JSON reader, and far above unix seconds
REASON_MAX_CHARS = 512  # a rejection reason travels in acks and in every status: enough to act on, never a payload
MAX_MESSAGE_BYTES = 64 * 1024  # an alert, status or ack
MAX_MESSAGE_DEPTH = 6

# What the agent's detector must fill in; the client adds schema, device, fleet, seq, sent_at.
ALERT_FIELDS = ("class", "confidence", "source", "victim", "packets", "first_seen", "last_seen", "action", "rule_id")
ALERT_CLASSES = VERDICT_LABELS  # what an alert's class may be: the model's classes, or "anomaly"
# The topic kinds below {prefix}/{fleet}/{device}/.
KINDS = ("alerts", "status", "rules", "rules/ack", "model", "alerts/ack")


# --- topics ------------------------------------------------------------------


class TopicParts(NamedTuple):
    fleet: str
    device: str  # "all" for the fleet-wide rule set
    kind: str  # one of KINDS


def topic(prefix: str, fleet: str, device: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{prefix}/{fleet}/{device}/{kind}"


def parse_topic(prefix: str, name: str) -> TopicParts | None:
    """Split a topic of ours into (fleet, device, kind); None for anything else."""
    if not name.startswith(prefix + "/"):
        return None
    parts = name[len(prefix) + 1 :].split("/", 2)
    if len(parts) != 3 or parts[2] not in KINDS or not all(rules.NAME_RE.match(p) for p in parts[:2]):
        return None
    return TopicParts(*parts)


def discovery_node(fleet: str, device: str) -> str:
    """A board's Home Assistant node id: ``iotguard_<fleet>_<device>``, every character other than letters,
    digits, ``_`` and ``-`` replaced by ``_`` (what discovery topics allow)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"iotguard_{fleet}_{device}")


def discovery_topics(discovery_prefix: str, fleet: str, device: str) -> dict[str, str]:
    """A board's Home Assistant discovery config topics, entity -> topic (the agent publishes them, the broker's
    ACL must let it)."""
    node = discovery_node(fleet, device)
    return {
        "under_attack": f"{discovery_prefix}/binary_sensor/{node}/under_attack/config",
        "packets_per_s": f"{discovery_prefix}/sensor/{node}/packets_per_s/config",
    }


def short_reason(reason: str) -> str:
    """A rejection reason fit to publish: bounded, and UTF-8 (a JSON "\\ud800" escape decodes to a lone surrogate)."""
    reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    return reason if len(reason) <= REASON_MAX_CHARS else reason[: REASON_MAX_CHARS - 1] + "\u2026"


# --- agent -> controller -----------------------------------------------------


class MessageError(Invalid):
    """A message from an agent (or an alert confirmation from a controller) was refused; ``reason`` says why."""


def _text(max_len: int = 256) -> Check:
    return text(max_len, message=f"must be a string of at most {max_len} characters")


NOW_MAX = 2**40  # any sane unix time
SEQ_MAX = 2**63 - 1  # an alert's seq: a SQLite integer
PORT = optional(integer(0, 65535))

# Unknown extra fields are tolerated: newer agents may add some.
ENDPOINT_CHECKS = (Field("ip", ip_address), Field("mac", optional(_text(17)), required=False), Field("port", PORT, required=False))
VICTIM_CHECKS = (Field("ip", optional(ip_address), required=False), Field("port", PORT, required=False))
ALERT_CHECKS = (
    Field("schema", one_of(ALERT_SCHEMA)),
    Field("seq", integer(1, SEQ_MAX)),
    # Absent from agents older than alert confirmations: then gaps hold the confirmation back.
    Field("first_pending", optional(integer(1, SEQ_MAX)), required=False),
    Field("class", one_of(*VERDICT_LABELS)),  # the model's classes, or "anomaly"
    Field("basis", optional(one_of("model", "headers", "anomaly")), required=False),
    Field("confidence", number(0.0, 1.0)),
    Field("source", object_of(ENDPOINT_CHECKS)),
    Field("victim", optional(object_of(VICTIM_CHECKS))),
    Field("packets", integer(0, 2**63 - 1)),
    Field("first_seen", number(0, NOW_MAX)),
    Field("last_seen", number(0, NOW_MAX)),
    Field("action", one_of("drop", "none")),
    Field("rule_id", optional(_text())),
    Field("device", _text(64)),
    Field("fleet", _text(64)),
    Field("sent_at", number(0, NOW_MAX), required=False),
)
STATUS_CHECKS = (
    Field("schema", one_of(STATUS_SCHEMA)),
    Field("state", one_of("online", "offline")),
    Field("device", _text(64)),
    Field("fleet", _text(64)),
)
ACK_CHECKS = (
    Field("schema", one_of(ACK_SCHEMA)),
    Field("target", _text(64)),
    Field("version", optional(integer(1, 2**53))),
    Field("status", one_of("applied", "rejected")),
    Field("reason", optional(_text(1024)), required=False),
    Field("device", _text(64)),
    Field("fleet", _text(64)),
)
ALERTS_ACK_CHECKS = (
    Field("schema", one_of(ALERTS_ACK_SCHEMA)),
    Field("stored_through", integer(0, SEQ_MAX)),  # 0: nothing stored yet
    Field("device", _text(64)),
    Field("fleet", _text(64)),
    Field("sent_at", number(0, NOW_MAX), required=False),
)


def _parse(payload: bytes, table: tuple[Field, ...], fleet: str, device: str, what: str) -> tuple[dict, dict]:
    try:
        doc = load_json(payload, MAX_MESSAGE_BYTES, MAX_MESSAGE_DEPTH)
    except ValueError as exc:
        raise MessageError(f"{what}: {exc}") from None
    if not isinstance(doc, dict):
        raise MessageError(f"{what}: not a JSON object")
    try:
        values = fields(doc, table)
    except Invalid as exc:
        raise MessageError(": ".join((what, *exc.path, exc.reason))) from None
    if (values["fleet"], values["device"]) != (fleet, device):
        raise MessageError(
            f"{what}: names {values['fleet']}/{values['device']} but came on the topic of {fleet}/{device}"
        )
    return values, doc


def parse_alert(payload: bytes, fleet: str, device: str) -> dict[str, Any]:
    values, _ = _parse(payload, ALERT_CHECKS, fleet, device, "alert")
    if values["first_pending"] is not None and values["first_pending"] > values["seq"]:
        # The alert itself is pending when it is sent: a higher floor would confirm it unstored.
        raise MessageError(f"alert: first_pending {values['first_pending']} is above its own seq {values['seq']}")
    return values


def alert_seq_of(payload: bytes) -> int | None:
    """The seq of an alert that was refused, if it has a valid one: the controller settles it as refused."""
    try:
        doc = load_json(payload, MAX_MESSAGE_BYTES, MAX_MESSAGE_DEPTH)
    except ValueError:
        return None
    seq = doc.get("seq") if isinstance(doc, dict) else None
    return seq if passes(integer(1, SEQ_MAX), seq) else None


def parse_status(payload: bytes, fleet: str, device: str) -> dict[str, Any]:
    """The checked core fields; the whole document is kept as the device's status."""
    values, doc = _parse(payload, STATUS_CHECKS, fleet, device, "status")
    return {**doc, **values}


def parse_ack(payload: bytes, fleet: str, device: str) -> dict[str, Any]:
    values, _ = _parse(payload, ACK_CHECKS, fleet, device, "rules ack")
    return values


# --- controller -> agent -----------------------------------------------------


def alerts_ack(fleet: str, device: str, stored_through: int, sent_at: float) -> dict[str, Any]:
    """The confirmation a controller publishes on ``{prefix}/{fleet}/{device}/alerts/ack``."""
    return {"schema": ALERTS_ACK_SCHEMA, "fleet": fleet, "device": device, "stored_through": stored_through,
            "sent_at": sent_at}  # fmt: skip


def parse_alerts_ack(payload: bytes, fleet: str, device: str) -> int:
    """A confirmation for this device, checked: its ``stored_through``, or MessageError(reason)."""
    values, _ = _parse(payload, ALERTS_ACK_CHECKS, fleet, device, "alerts ack")
    return values["stored_through"]


def check_model_push(doc: dict[str, Any], installed_version: int) -> tuple[dict[str, Any], bytes, int]:
    """A verified model push, checked: (bundle metadata, .tflite bytes, version), or Invalid(reason).

    The version must be newer than ``installed_version``.
    """
    if doc.get("schema") != MODEL_SCHEMA:
        raise Invalid(f"model push schema {doc.get('schema')!r}, want {MODEL_SCHEMA!r}")
    unknown = unknown_fields(doc, MODEL_FIELDS)
    if unknown:  # as strict as rule sets and envelopes: a field we do not know is not silently dropped
        raise Invalid(f"unknown model push field(s): {', '.join(map(repr, sorted(unknown)))}")
    version = doc.get("version")
    # Bounded: a signed push of version 10**400 would otherwise be installed and lock out every later one.
    if not passes(integer(1, MODEL_MAX_VERSION), version):
        raise Invalid(f"model push version must be an integer in 1..{MODEL_MAX_VERSION}, got {version!r}")
    if version <= installed_version:
        raise Invalid(f"model version {version} is not newer than installed version {installed_version}")
    meta, b64, digest = doc.get("bundle"), doc.get("tflite_b64"), doc.get("sha256")
    if not isinstance(meta, dict) or not isinstance(b64, str) or not isinstance(digest, str):
        raise Invalid("model push needs bundle (object), tflite_b64 (string) and sha256 (string)")
    try:
        tflite = base64.b64decode(b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Invalid("tflite_b64 is not valid base64") from None
    actual = hashlib.sha256(tflite).hexdigest()
    if actual != digest.lower():
        raise Invalid(f"model sha256 mismatch: got {actual}, message says {digest!r}")
    return meta, tflite, version
