"""Rule set documents: what parses, and a clear reason for everything that does not.

The agent-side checks that need a broker (unsigned, wrong key, replayed or
not-newer versions, previous rules kept) are in test_mqtt.py.
"""

from __future__ import annotations

import copy
import ipaddress
import json

import pytest

from agent.wire.rules import (
    MAX_BYTES,
    MAX_RULES,
    SCHEMA,
    Rule,
    RuleSet,
    RuleSetError,
    parse_ruleset,
)


def doc(**changes) -> dict:
    base = {
        "schema": SCHEMA,
        "fleet": "lab",
        "target": "all",
        "version": 3,
        "issued_at": 1_700_000_000,
        "rules": [
            {"id": "r1", "source": "203.0.113.0/24", "proto": "tcp", "dport": 23, "action": "drop",
             "expires": 1_700_003_600, "reason": "seen by 3 devices"},
            {"id": "r2", "source": "2001:db8::1", "proto": None, "dport": None, "action": "drop",
             "expires": None, "reason": ""},
        ],
    }
    base.update(changes)
    return base


def rule_doc(**changes) -> dict:
    d = doc()
    d["rules"] = [{**d["rules"][0], **changes}]
    return d


def test_valid_document_parses_to_dataclasses():
    rs = parse_ruleset(json.dumps(doc()).encode())
    assert (rs.fleet, rs.target, rs.version, rs.issued_at) == ("lab", "all", 3, 1_700_000_000.0)
    r1, r2 = rs.rules
    assert r1 == Rule("r1", ipaddress.ip_network("203.0.113.0/24"), "tcp", 23, "drop", 1_700_003_600.0, "seen by 3 devices")
    assert r2.network == ipaddress.ip_network("2001:db8::1/128") and r2.proto is None and r2.expires is None


def test_to_json_round_trips_and_expiry_filters():
    rs = parse_ruleset(doc())
    assert parse_ruleset(rs.to_json()) == rs
    assert [r.id for r in rs.active_rules(now=1_700_000_001)] == ["r1", "r2"]
    assert [r.id for r in rs.active_rules(now=1_700_003_600)] == ["r2"]


def test_empty_rule_list_is_valid():
    assert parse_ruleset(doc(rules=[])).rules == ()


@pytest.mark.parametrize(
    "document, reason",
    [
        (doc(schema="iotguard.ruleset/2"), "ruleset.schema: must be one of iotguard.ruleset/1"),
        (doc(fleet="a/b"), "ruleset.fleet: must match"),
        (doc(target="+"), "ruleset.target: must match"),
        (doc(version=0), r"ruleset.version: must be in 1\.\."),
        (doc(version="3"), "ruleset.version: must be an integer, got str"),
        (doc(version=True), "ruleset.version: must be an integer, got bool"),
        (doc(version=3.0), "ruleset.version: must be an integer, got float"),
        (doc(issued_at=-1), "ruleset.issued_at: must be a non-negative unix time"),
        (doc(rules={"id": "r1"}), "ruleset.rules: must be a list, got dict"),
        (doc(extra=1), "ruleset: unknown field"),
        ({k: v for k, v in doc().items() if k != "version"}, "ruleset: missing field 'version'"),
        (doc(rules=[1]), r"rules\[0\]: must be a JSON object, got int"),
        (rule_doc(source="300.1.2.3"), r"rules\[0\].source: not an address or CIDR"),
        (rule_doc(source="10.0.0.1/8"), r"rules\[0\].source: not an address or CIDR: .*host bits set"),
        (rule_doc(source=167772161), r"rules\[0\].source: must be an address or CIDR string"),
        (rule_doc(proto="sctp"), r"rules\[0\].proto: must be one of tcp, udp, icmp"),
        (rule_doc(dport=70000), r"rules\[0\].dport: must be in 0\.\.65535"),
        (rule_doc(proto="icmp"), r"rules\[0\].dport: a port needs proto tcp or udp"),
        (rule_doc(action="accept"), r"rules\[0\].action: must be one of drop"),
        (rule_doc(expires="soon"), r"rules\[0\].expires: must be a non-negative unix time"),
        (rule_doc(id=""), r"rules\[0\].id: must be 1\.\.256 characters"),
        (rule_doc(reason=None), r"rules\[0\].reason: must be a string"),
        (rule_doc(why="x"), r"rules\[0\]: unknown field\(s\) 'why'"),
    ],
)
def test_wrong_fields_are_refused_with_the_field_named(document, reason):
    with pytest.raises(RuleSetError, match=reason):
        parse_ruleset(document)


def test_duplicate_rule_ids_are_refused():
    d = doc()
    d["rules"][1]["id"] = "r1"
    with pytest.raises(RuleSetError, match=r"rules\[1\].id: duplicate id 'r1'"):
        parse_ruleset(d)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"schema": "iotguard.ruleset/1", ', "malformed JSON"),
        (b"\xc3\x28", "not UTF-8"),
        (b'{"schema": NaN}', "NaN is not valid JSON"),
        (b"[]", "ruleset: must be a JSON object, got list"),
    ],
)
def test_malformed_bytes_are_refused(data, reason):
    with pytest.raises(RuleSetError, match=reason):
        parse_ruleset(data)


def test_too_many_rules_are_refused():
    rules = [{"id": f"r{i}", "source": f"10.{i >> 8 & 255}.{i & 255}.0/24", "proto": None, "dport": None,
              "action": "drop", "expires": None, "reason": ""} for i in range(MAX_RULES + 1)]
    with pytest.raises(RuleSetError, match=f"too many rules: {MAX_RULES + 1} > limit {MAX_RULES}"):
        parse_ruleset(doc(rules=rules))
    assert len(parse_ruleset(doc(rules=rules[:MAX_RULES])).rules) == MAX_RULES


def test_oversized_documents_are_refused_as_bytes_and_as_dicts():
    big = doc()
    big["rules"][0]["reason"] = "x" * 200
    big["rules"] = [dict(big["rules"][0], id=f"r{i}") for i in range(MAX_RULES)]
    data = json.dumps(big).encode()
    data = data[:-1] + b" " * (MAX_BYTES - len(data) + 1) + b"}"
    with pytest.raises(RuleSetError, match="too large"):
        parse_ruleset(data)
    with pytest.raises(RuleSetError, match="too large"):
        parse_ruleset(big, max_bytes=100_000)


def test_deeply_nested_documents_are_refused():
    nested: object = []
    for _ in range(50):
        nested = [nested]
    with pytest.raises(RuleSetError, match="nesting too deep"):
        parse_ruleset(doc(rules=[{"id": nested}]))
    with pytest.raises(RuleSetError, match="nesting too deep"):
        parse_ruleset(b'{"rules": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_parsing_does_not_modify_the_input():
    d = doc()
    before = copy.deepcopy(d)
    parse_ruleset(d)
    assert d == before
    assert isinstance(parse_ruleset(d), RuleSet)
