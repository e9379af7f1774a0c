"""The MQTT contract: topics, the checks of alerts, status and acks (controller side) and of model pushes (agent side)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from agent.validate import Invalid
from agent.wire import (
    ACK_SCHEMA,
    ALERT_SCHEMA,
    ALERTS_ACK_SCHEMA,
    MODEL_MAX_VERSION,
    MODEL_SCHEMA,
    REASON_MAX_CHARS,
    STATUS_SCHEMA,
    MessageError,
    alert_seq_of,
    alerts_ack,
    check_model_push,
    parse_ack,
    parse_alert,
    parse_alerts_ack,
    parse_status,
    parse_topic,
    short_reason,
    topic,
)

PREFIX = "iotguard/v1"


def payload(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def alert(**changes) -> dict:
    doc = {
        "schema": ALERT_SCHEMA, "seq": 1, "class": "mirai_syn", "confidence": 0.9,
        "source": {"ip": "2001:db8:0::1", "mac": "02:00:00:00:00:01"}, "victim": None, "packets": 12,
        "first_seen": 1700000000, "last_seen": 1700000001.5, "action": "drop", "rule_id": "src:192.0.2.1",
        "device": "d1", "fleet": "lab",
    }  # fmt: skip
    doc.update(changes)
    return doc


def refusal(parse, doc: dict | bytes) -> str:
    with pytest.raises(MessageError) as info:
        parse(doc if isinstance(doc, bytes) else payload(doc), "lab", "d1")
    return info.value.reason


# --- topics ------------------------------------------------------------------


def test_topics_round_trip():
    assert topic(PREFIX, "lab", "dev1", "rules/ack") == "iotguard/v1/lab/dev1/rules/ack"
    assert parse_topic(PREFIX, "iotguard/v1/lab/dev1/rules/ack") == ("lab", "dev1", "rules/ack")
    assert parse_topic(PREFIX, "iotguard/v1/lab/dev1/other") is None
    assert parse_topic(PREFIX, "elsewhere/lab/dev1/alerts") is None
    assert parse_topic(PREFIX, "iotguard/v1/lab/+/alerts") is None, "a wildcard is no device name"
    with pytest.raises(ValueError, match="unknown topic kind 'other'"):
        topic(PREFIX, "lab", "dev1", "other")


def test_a_published_reason_is_bounded_and_utf8():
    assert short_reason("fine") == "fine"
    long = short_reason("x" * 5000)
    assert len(long) == REASON_MAX_CHARS and long.endswith("\u2026")
    assert short_reason("bad \ud800 char").encode("utf-8") == b"bad \\ud800 char"


# --- alerts, status, acks ----------------------------------------------------


def test_an_alert_is_checked_and_normalised():
    values = parse_alert(payload({**alert(), "added_by_a_newer_agent": 1}), "lab", "d1")
    assert values["source"] == {"ip": "2001:db8::1", "mac": "02:00:00:00:00:01", "port": None}
    assert (values["basis"], values["sent_at"], values["first_seen"]) == (None, None, 1700000000.0)
    assert "added_by_a_newer_agent" not in values


@pytest.mark.parametrize(
    "doc, reason",
    [
        (alert(source={"ip": "x"}), "alert: source: ip: not an IP address: 'x'"),
        (alert(source={"port": 1}), "alert: source: missing field 'ip'"),
        (alert(source=[]), "alert: source: must be an object, got list"),
        (alert(victim={"ip": "10.0.0.1", "port": 70000}), "alert: victim: port: must be in 0..65535, got 70000"),
        (alert(confidence=True), "alert: confidence: must be a number, got True"),
        (alert(confidence=1.5), "alert: confidence: must be in 0.0..1.0, got 1.5"),
        # An integer beyond a float: once an OverflowError that rolled back and redelivered the controller's batch.
        (alert(confidence=10**400), "alert: confidence: must be in 0.0..1.0, got an integer of 1329 bits"),
        (alert(seq=0), "alert: seq: must be in 1..9223372036854775807, got 0"),
        (alert(packets="3"), "alert: packets: must be an integer, got '3'"),
        (alert(action="block"), "alert: action: must be one of drop, none; got 'block'"),
        (alert(rule_id="r" * 257), "alert: rule_id: must be a string of at most 256 characters"),
        (alert(device="d2"), "alert: names lab/d2 but came on the topic of lab/d1"),
        (alert(first_pending=0), "alert: first_pending: must be in 1..9223372036854775807, got 0"),
        (alert(seq=4, first_pending=5), "alert: first_pending 5 is above its own seq 4"),
        ({k: v for k, v in alert().items() if k != "victim"}, "alert: missing field 'victim'"),
    ],
)
def test_a_bad_alert_is_refused_naming_the_field(doc, reason):
    assert refusal(parse_alert, doc) == reason


def test_an_alert_that_is_no_json_object_is_refused():
    assert refusal(parse_alert, b"{not json").startswith("alert: malformed JSON")
    assert refusal(parse_alert, b"[1]") == "alert: not a JSON object"
    assert refusal(parse_alert, b" " * (64 * 1024 + 1)).startswith("alert: document too large")


def test_status_keeps_the_whole_document_and_acks_are_checked():
    status = {"schema": STATUS_SCHEMA, "state": "online", "device": "d1", "fleet": "lab", "cpu_percent": 3.5}
    assert parse_status(payload(status), "lab", "d1") == status
    assert refusal(parse_status, {**status, "state": "asleep"}) == "status: state: must be one of online, offline; got 'asleep'"
    ack = {"schema": ACK_SCHEMA, "target": "all", "version": None, "status": "rejected", "device": "d1", "fleet": "lab"}
    assert parse_ack(payload(ack), "lab", "d1") == {**ack, "reason": None}
    assert refusal(parse_ack, {"schema": ACK_SCHEMA}) == "rules ack: missing field 'target'"
    assert refusal(parse_ack, {**ack, "version": 2**53 + 1}) == f"rules ack: version: must be in 1..{2**53}, got {2**53 + 1}"


def test_an_alert_may_name_its_first_pending_seq_and_a_refused_one_its_seq():
    assert parse_alert(payload(alert(seq=9, first_pending=3)), "lab", "d1")["first_pending"] == 3
    assert parse_alert(payload(alert()), "lab", "d1")["first_pending"] is None, "an agent older than confirmations"
    assert alert_seq_of(payload(alert(seq=9, action="block"))) == 9
    assert [alert_seq_of(p) for p in (b"{not json", b"[9]", payload(alert(seq=True)), payload(alert(seq=-1)))] == [None] * 4


# --- alert confirmations (controller -> agent) --------------------------------


def test_an_alert_confirmation_round_trips():
    doc = alerts_ack("lab", "d1", 41, 1700000000.0)
    assert doc == {"schema": ALERTS_ACK_SCHEMA, "fleet": "lab", "device": "d1", "stored_through": 41, "sent_at": 1700000000.0}
    assert parse_alerts_ack(payload(doc), "lab", "d1") == 41
    assert parse_alerts_ack(payload({**doc, "stored_through": 0, "note": "newer"}), "lab", "d1") == 0
    assert topic(PREFIX, "lab", "d1", "alerts/ack") == "iotguard/v1/lab/d1/alerts/ack"
    assert parse_topic(PREFIX, "iotguard/v1/lab/d1/alerts/ack") == ("lab", "d1", "alerts/ack")


@pytest.mark.parametrize(
    "doc, reason",
    [
        (b"{not json", "alerts ack: malformed JSON"),
        (b"[]", "alerts ack: not a JSON object"),
        ({"schema": ACK_SCHEMA}, "alerts ack: schema: must be one of iotguard.alerts-ack/1; got 'iotguard.rules-ack/1'"),
        ({"schema": ALERTS_ACK_SCHEMA, "fleet": "lab", "device": "d1"}, "alerts ack: missing field 'stored_through'"),
        (alerts_ack("lab", "d1", -1, 0), "alerts ack: stored_through: must be in 0..9223372036854775807, got -1"),
        (alerts_ack("lab", "d1", 2**63, 0), f"alerts ack: stored_through: must be in 0..9223372036854775807, got {2**63}"),
        (alerts_ack("lab", "d1", "7", 0), "alerts ack: stored_through: must be an integer, got '7'"),
        (alerts_ack("lab", "d1", 7.0, 0), "alerts ack: stored_through: must be an integer, got 7.0"),
        (alerts_ack("lab", "d2", 7, 0), "alerts ack: names lab/d2 but came on the topic of lab/d1"),
        (alerts_ack("prod", "d1", 7, 0), "alerts ack: names prod/d1 but came on the topic of lab/d1"),
    ],
)
def test_a_bad_alert_confirmation_is_refused_naming_the_fault(doc, reason):
    assert refusal(parse_alerts_ack, doc).startswith(reason)


# --- model pushes ------------------------------------------------------------


def push(version: int = 5, tflite: bytes = b"TFL3 model", **changes) -> dict:
    doc = {"schema": MODEL_SCHEMA, "version": version, "bundle": {"name": "m"},
           "tflite_b64": base64.b64encode(tflite).decode(), "sha256": hashlib.sha256(tflite).hexdigest()}  # fmt: skip
    doc.update(changes)
    return doc


def push_refusal(doc: dict, installed: int = 0) -> str:
    with pytest.raises(Invalid) as info:
        check_model_push(doc, installed)
    return info.value.reason


def test_a_model_push_yields_bundle_bytes_and_version():
    assert check_model_push(push(), installed_version=4) == ({"name": "m"}, b"TFL3 model", 5)


@pytest.mark.parametrize(
    "doc, reason",
    [
        (push(schema="other"), f"model push schema 'other', want {MODEL_SCHEMA!r}"),
        (push(zz=1, aa=2), "unknown model push field(s): 'aa', 'zz'"),
        (push(version=True), f"model push version must be an integer in 1..{MODEL_MAX_VERSION}, got True"),
        (push(version=10**400), f"model push version must be an integer in 1..{MODEL_MAX_VERSION}, got {10**400!r}"),
        (push(version=3), "model version 3 is not newer than installed version 4"),
        (push(bundle=[]), "model push needs bundle (object), tflite_b64 (string) and sha256 (string)"),
        (push(tflite_b64="!!"), "tflite_b64 is not valid base64"),
        (push(sha256="00"), "model sha256 mismatch: got "),
        # The first fault in the order above is the one reported.
        (push(schema="other", zz=1), f"model push schema 'other', want {MODEL_SCHEMA!r}"),
        (push(version=2, bundle=None), "model version 2 is not newer than installed version 4"),
    ],
)
def test_a_bad_model_push_is_refused_with_its_reason(doc, reason):
    assert push_refusal(doc, installed=4).startswith(reason)
