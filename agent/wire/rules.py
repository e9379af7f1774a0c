"""Filter rule sets pushed by the controller: the dataclasses and their validation.

A rule set document (the payload of a signed envelope, see ``agent.wire.signing``)::

    {"schema": "iotguard.ruleset/1", "fleet": "lab", "target": "all" | "<device>",
     "version": 7, "issued_at": 1700000000,
     "rules": [{"id": "r1", "source": "203.0.113.0/24", "proto": "tcp" | "udp" | "icmp" | null,
                "dport": 23 | null, "action": "drop", "expires": 1700003600 | null,
                "reason": "seen by 3 devices"}]}

``parse_ruleset`` turns such a document into a ``RuleSet`` or raises
``RuleSetError`` with a reason that names the offending field.  The fields and
their checks are declared once, as data, in ``RULESET_FIELDS`` and
``RULE_FIELDS``.  Whether a valid rule set is *applicable* (signature, fleet,
target, version newer than the last one) is decided by ``agent.fleet.mqtt``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.wire.jsonio import canonical_json, json_depth, load_json

SCHEMA = "iotguard.ruleset/1"
MAX_RULES = 4096
MAX_BYTES = 1024 * 1024
MAX_DEPTH = 8  # the document nests 3 levels (object > rules list > rule)
MAX_TEXT = 256  # longest id / reason

PROTOCOLS = ("tcp", "udp", "icmp")
ACTIONS = ("drop",)
ALL_DEVICES = "all"  # the target of the fleet-wide rule set
# Fleet and device names become MQTT topic levels: no wildcards, no separators.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RuleSetError(ValueError):
    """A rule set was refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    id: str
    network: Network
    proto: str | None  # None: any protocol
    dport: int | None  # None: any port
    action: str
    expires: float | None  # unix time; None: until a newer rule set drops it
    reason: str

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": str(self.network),
            "proto": self.proto,
            "dport": self.dport,
            "action": self.action,
            "expires": self.expires,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RuleSet:
    fleet: str
    target: str  # "all" or a device name
    version: int
    issued_at: float
    rules: tuple[Rule, ...]

    def active_rules(self, now: float) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.active(now))

    def to_json(self) -> dict[str, Any]:
        """The document form (what the controller signs)."""
        return {
            "schema": SCHEMA,
            "fleet": self.fleet,
            "target": self.target,
            "version": self.version,
            "issued_at": self.issued_at,
            "rules": [r.to_json() for r in self.rules],
        }


# --- field checks: each returns the parsed value or raises ValueError(reason) ---


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_TEXT:
        raise ValueError(f"must be 1..{MAX_TEXT} characters")
    return value


def _reason_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"must match {NAME_RE.pattern}, got {value!r}")
    return value


def _int(value: Any, low: int, high: int) -> int:
    # bool is an int subclass in Python; JSON true is not a number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"must be in {low}..{high}, got {value}")
    return value


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a non-negative unix time, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # JSON integers have no size limit; math.isfinite() would raise OverflowError on them
        raise ValueError(f"must be a non-negative unix time, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"must be a non-negative unix time, got {value!r}")
    return seconds


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


def _network(value: Any) -> Network:
    if not isinstance(value, str):
        raise ValueError(f"must be an address or CIDR string, got {type(value).__name__}")
    if "%" in value:
        # ipaddress takes "fe80::1%<anything>" (newlines and quotes included) as a /128 with a scope id;
        # nft cannot parse it, so such a rule would break every later kernel sync.
        raise ValueError("an IPv6 scope id (%...) has no place in a rule")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an address or CIDR: {exc}") from None


def _rules_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list, got {type(value).__name__}")
    if len(value) > MAX_RULES:
        raise ValueError(f"too many rules: {len(value)} > limit {MAX_RULES}")
    return value


# (field, check) in document order.  Every field is required; null is spelled out.
RULESET_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("schema", _one_of(SCHEMA)),
    ("fleet", _name),
    ("target", _name),
    ("version", lambda v: _int(v, 1, 2**53)),
    ("issued_at", _time),
    ("rules", _rules_list),
)
RULE_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("id", _text),
    ("source", _network),
    ("proto", _optional(_one_of(*PROTOCOLS))),
    ("dport", _optional(lambda v: _int(v, 0, 65535))),
    ("action", _one_of(*ACTIONS)),
    ("expires", _optional(_time)),
    ("reason", _reason_text),
)


def _check_fields(doc: Any, table: tuple[tuple[str, Callable[[Any], Any]], ...], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RuleSetError(f"{where}: must be a JSON object, got {type(doc).__name__}")
    names = [name for name, _ in table]
    unknown = sorted(set(doc) - set(names))
    if unknown:
        raise RuleSetError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    values = {}
    for name, check in table:
        if name not in doc:
            raise RuleSetError(f"{where}: missing field {name!r}")
        try:
            values[name] = check(doc[name])
        except ValueError as exc:
            raise RuleSetError(f"{where}.{name}: {exc}") from None
    return values


def parse_ruleset(document: bytes | str | Mapping[str, Any], max_bytes: int = MAX_BYTES) -> RuleSet:
    """Validate a rule set document (bytes or already-parsed dict); RuleSetError(reason) on any fault."""
    if isinstance(document, Mapping):
        doc: Any = dict(document)
        if json_depth(doc) > MAX_DEPTH:
            raise RuleSetError(f"rule set: nesting too deep (limit {MAX_DEPTH})")
        try:
            size = len(canonical_json(doc))
        except (TypeError, ValueError) as exc:
            raise RuleSetError(f"rule set: not representable as JSON: {exc}") from None
        if size > max_bytes:
            raise RuleSetError(f"rule set too large: {size} bytes > limit {max_bytes}")
    else:
        try:
            doc = load_json(document, max_bytes, MAX_DEPTH)
        except ValueError as exc:
            raise RuleSetError(f"rule set: {exc}") from None
    top = _check_fields(doc, RULESET_FIELDS, "ruleset")
    rules = []
    seen: set[str] = set()
    for i, raw in enumerate(top["rules"]):
        values = _check_fields(raw, RULE_FIELDS, f"rules[{i}]")
        if values["id"] in seen:
            raise RuleSetError(f"rules[{i}].id: duplicate id {values['id']!r}")
        seen.add(values["id"])
        if values["dport"] is not None and values["proto"] not in ("tcp", "udp"):
            raise RuleSetError(f"rules[{i}].dport: a port needs proto tcp or udp, got {values['proto']!r}")
        rules.append(
            Rule(
                id=values["id"],
                network=values["source"],
                proto=values["proto"],
                dport=values["dport"],
                action=values["action"],
                expires=values["expires"],
                reason=values["reason"],
            )
        )
    return RuleSet(
        fleet=top["fleet"], target=top["target"], version=top["version"], issued_at=top["issued_at"], rules=tuple(rules)
    )
