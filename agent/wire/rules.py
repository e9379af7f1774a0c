"""Filter rule sets pushed by the controller: the dataclasses and their validation.

A rule set document (the payload of a signed envelope, see ``agent.wire.signing``)::

    {"schema": "iotguard.ruleset/1", "fleet": "lab", "target": "all" | "<device>",
     "version": 7, "issued_at": 1700000000,
     "rules": [{"id": "r1", "source": "203.0.113.0/24", "proto": "tcp" | "udp" | "icmp" | null,
                "dport": 23 | null, "action": "drop", "expires": 1700003600 | null,
                "reason": "seen by 3 devices"}]}

``parse_ruleset`` turns such a document into a ``RuleSet`` or raises
``RuleSetError`` with a reason that names the offending field.  The fields and
their checks (from ``agent.validate``) are declared once, as data, in
``RULESET_FIELDS`` and ``RULE_FIELDS``.  Whether a valid rule set is
*applicable* (signature, fleet, target, version newer than the last one) is
decided by ``agent.fleet.mqtt``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.validate import (
    Field,
    Invalid,
    fields,
    integer,
    matches,
    network,
    one_of,
    optional,
    text,
    type_name,
    unix_time,
)
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


class RuleSetError(Invalid):
    """A rule set was refused; ``reason`` says why."""


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


def _rules_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(f"must be a list, got {type_name(value)}")
    if len(value) > MAX_RULES:
        raise Invalid(f"too many rules: {len(value)} > limit {MAX_RULES}")
    return value


# In document order.  Every field is required; null is spelled out.
RULESET_FIELDS: tuple[Field, ...] = (
    Field("schema", one_of(SCHEMA)),
    Field("fleet", matches(NAME_RE)),
    Field("target", matches(NAME_RE)),
    Field("version", integer(1, 2**53, got=type_name)),
    Field("issued_at", unix_time),
    Field("rules", _rules_list),
)
RULE_FIELDS: tuple[Field, ...] = (
    Field("id", text(MAX_TEXT, min_len=1)),
    Field("source", network(strict=True)),
    Field("proto", optional(one_of(*PROTOCOLS))),
    Field("dport", optional(integer(0, 65535, got=type_name))),
    Field("action", one_of(*ACTIONS)),
    Field("expires", optional(unix_time)),
    Field("reason", text(MAX_TEXT)),
)


def _check_fields(doc: Any, table: tuple[Field, ...], where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RuleSetError(f"{where}: must be a JSON object, got {type_name(doc)}")
    try:
        return fields(doc, table, refuse_unknown=True)
    except Invalid as exc:
        raise RuleSetError(f"{'.'.join((where, *exc.path))}: {exc.reason}") from None


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
