"""What the controller accepts from agents: alert, status and rules-ack documents.

Each document kind is declared once as a table of (field, check).  ``parse_*``
return a plain dict of checked values or raise ``MessageError(reason)``; the
service stores refused messages with their reason instead of dropping them.
The topic is authoritative for fleet and device (the broker's ACL ties it to
the sender's certificate); a document naming another device is refused.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

from agent.fleet.mqtt import ACK_SCHEMA, ALERT_SCHEMA, STATUS_SCHEMA
from agent.capture.packets import VERDICT_LABELS
from agent.wire.jsonio import load_json

MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 6

Check = Callable[[Any], Any]


class MessageError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _number(low: float, high: float) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"must be a number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be in {low}..{high}, got {value}")
        return float(value)

    return check


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be in {low}..{high}, got {value}")
        return value

    return check


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _one_of(*allowed: Any) -> Check:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value

    return check


def _text(max_len: int = 256) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > max_len:
            raise ValueError(f"must be a string of at most {max_len} characters")
        return value

    return check


def _ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _object(table: tuple[tuple[str, Check, bool], ...]) -> Check:
    """Check a nested object; fields marked optional may be absent (then None)."""

    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError(f"must be an object, got {type(value).__name__}")
        return _fields(value, table)

    return check


def _fields(doc: dict[str, Any], table: tuple[tuple[str, Check, bool], ...]) -> dict[str, Any]:
    out = {}
    for name, check, required in table:
        if name not in doc:
            if required:
                raise ValueError(f"missing field {name!r}")
            out[name] = None
            continue
        try:
            out[name] = check(doc[name])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


NOW_MAX = 2**40  # any sane unix time
PORT = _optional(_integer(0, 65535))

# (field, check, required).  Unknown extra fields are tolerated: newer agents may add some.
ENDPOINT_FIELDS = (("ip", _ip, True), ("mac", _optional(_text(17)), False), ("port", PORT, False))
VICTIM_FIELDS = (("ip", _optional(_ip), False), ("port", PORT, False))
ALERT_FIELDS = (
    ("schema", _one_of(ALERT_SCHEMA), True),
    ("seq", _integer(1, 2**63 - 1), True),
    ("class", _one_of(*VERDICT_LABELS), True),  # the model's classes, or "anomaly"
    ("basis", _optional(_one_of("model", "headers", "anomaly")), False),
    ("confidence", _number(0.0, 1.0), True),
    ("source", _object(ENDPOINT_FIELDS), True),
    ("victim", _optional(_object(VICTIM_FIELDS)), True),
    ("packets", _integer(0, 2**63 - 1), True),
    ("first_seen", _number(0, NOW_MAX), True),
    ("last_seen", _number(0, NOW_MAX), True),
    ("action", _one_of("drop", "none"), True),
    ("rule_id", _optional(_text()), True),
    ("device", _text(64), True),
    ("fleet", _text(64), True),
    ("sent_at", _number(0, NOW_MAX), False),
)
STATUS_FIELDS = (
    ("schema", _one_of(STATUS_SCHEMA), True),
    ("state", _one_of("online", "offline"), True),
    ("device", _text(64), True),
    ("fleet", _text(64), True),
)
ACK_FIELDS = (
    ("schema", _one_of(ACK_SCHEMA), True),
    ("target", _text(64), True),
    ("version", _optional(_integer(1, 2**53)), True),
    ("status", _one_of("applied", "rejected"), True),
    ("reason", _optional(_text(1024)), False),
    ("device", _text(64), True),
    ("fleet", _text(64), True),
)


def _parse(payload: bytes, table: tuple[tuple[str, Check, bool], ...], fleet: str, device: str, what: str) -> tuple[dict, dict]:
    try:
        doc = load_json(payload, MAX_MESSAGE_BYTES, MAX_DEPTH)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        values = _fields(doc, table)
    except ValueError as exc:
        raise MessageError(f"{what}: {exc}") from None
    if (values["fleet"], values["device"]) != (fleet, device):
        raise MessageError(
            f"{what}: names {values['fleet']}/{values['device']} but came on the topic of {fleet}/{device}"
        )
    return values, doc


def parse_alert(payload: bytes, fleet: str, device: str) -> dict[str, Any]:
    values, _ = _parse(payload, ALERT_FIELDS, fleet, device, "alert")
    return values


def parse_status(payload: bytes, fleet: str, device: str) -> dict[str, Any]:
    """The checked core fields; the whole document is kept as the device's status."""
    values, doc = _parse(payload, STATUS_FIELDS, fleet, device, "status")
    return {**doc, **values}


def parse_ack(payload: bytes, fleet: str, device: str) -> dict[str, Any]:
    values, _ = _parse(payload, ACK_FIELDS, fleet, device, "rules ack")
    return values
