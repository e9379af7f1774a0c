"""agent.validate: the one validation kit behind rule sets, messages, configuration and profile files."""

from __future__ import annotations

import ipaddress
import re

import pytest

from agent.validate import (
    Field,
    Invalid,
    fields,
    integer,
    ip_address,
    matches,
    network,
    number,
    object_of,
    one_of,
    optional,
    passes,
    text,
    unix_time,
)

ENDPOINT = (Field("ip", ip_address), Field("port", optional(integer(0, 65535)), required=False))
ALERT = (Field("confidence", number(0.0, 1.0)), Field("source", object_of(ENDPOINT)), Field("action", one_of("drop", "none")))


def refusal(check, value) -> Invalid:
    with pytest.raises(Invalid) as info:
        check(value)
    return info.value


def test_values_pass_through_normalised():
    assert fields({"confidence": 1, "source": {"ip": "192.0.2.1"}, "action": "drop", "extra": 1}, ALERT) == {
        "confidence": 1.0, "source": {"ip": "192.0.2.1", "port": None}, "action": "drop"}  # fmt: skip
    assert network()("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    assert unix_time(1_700_000_000) == 1_700_000_000.0
    assert matches(re.compile(r"^[a-z]+$"))("abc") == "abc"


def test_a_fault_names_the_path_to_the_field():
    fault = refusal(lambda d: fields(d, ALERT), {"confidence": 0.5, "source": {"ip": "x"}, "action": "drop"})
    assert fault.path == ("source", "ip") and "not an IP address" in fault.reason
    fault = refusal(lambda d: fields(d, ALERT), {"confidence": 0.5, "action": "drop"})
    assert fault.missing == "source" and fault.path == ()
    fault = refusal(lambda d: fields(d, ENDPOINT, refuse_unknown=True), {"ip": "192.0.2.1", "b": 1, "a": 2})
    assert fault.unknown == ("b", "a") and fault.reason == "unknown field(s) 'a', 'b'"


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (integer(0, 65535), 70000, "must be in 0..65535, got 70000"),
        (integer(0, 65535), True, "must be an integer, got True"),
        (number(0.0, 1.0), float("nan"), "must be a number, got nan"),
        (number(0.0, 1.0), 10**400, "must be in 0.0..1.0, got an integer of 1329 bits"),
        (one_of("drop", "none"), "block", "must be one of drop, none; got 'block'"),
        (text(4), "toolong", "longer than 4 characters"),
    ],
)
def test_each_check_refuses_with_its_reason(check, value, reason):
    assert refusal(check, value).reason == reason
    assert not passes(check, value)


def test_a_network_check_refuses_host_bits_when_strict():
    assert passes(network(strict=False), "10.0.0.1/8") and not passes(network(), "10.0.0.1/8")
    assert not passes(unix_time, -1) and not passes(unix_time, 10**400)
