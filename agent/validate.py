"""One small kit for checking what comes from outside: MQTT messages, rule sets, TOML files.

A check takes a value and returns it (parsed where that helps) or raises
``Invalid(reason)`` (any ``ValueError`` will do: its message is the reason).  Checks compose: ``optional(integer(0, 65535))``.
``fields`` checks an object against a table of ``Field``s and records in the
error which field failed; each caller turns ``Invalid`` into its own error
(``RuleSetError``, ``MessageError``, ``ConfigError``, ``ProfileError``) in its
own words.  Where a caller words a fault differently, the wording is passed in
(``got=``, ``message=``, ``name_of=``); the checks themselves are shared.

    ENDPOINT = (Field("ip", ip_address), Field("port", optional(integer(0, 65535)), required=False))
    values = fields({"ip": "192.0.2.1"}, ENDPOINT)     # {"ip": "192.0.2.1", "port": None}
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], Any]


class Invalid(ValueError):
    """A value failed a check.

    ``reason`` says what is wrong ("must be in 0..65535, got 70000").  ``path``
    names the fields leading to the value, outermost first (empty: the checked
    value itself).  When an object is at fault, ``missing`` is the name of an
    absent required field, ``unknown`` the names not in its table (document order).
    """

    def __init__(self, reason: str, path: tuple[str, ...] = (), missing: str | None = None,
                 unknown: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__(reason)
        self.reason = reason
        self.path = path
        self.missing = missing
        self.unknown = unknown

    def inside(self, name: str) -> Invalid:
        """The same fault, seen from the object that holds it as field ``name``."""
        return Invalid(self.reason, (name, *self.path), self.missing, self.unknown)


def type_name(value: Any) -> str:
    return type(value).__name__


def passes(check: Check, value: Any) -> bool:
    try:
        check(value)
    except Invalid:
        return False
    return True


# --- objects -----------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of an object; an absent field that is not required reads as ``default``."""

    name: str
    check: Check
    required: bool = True
    default: Any = None


def unknown_fields(doc: Mapping[str, Any], names: Iterable[str]) -> tuple[str, ...]:
    """The fields of ``doc`` not among ``names``, in document order."""
    known = set(names)
    return tuple(name for name in doc if name not in known)


def fields(doc: Mapping[str, Any], table: Sequence[Field], refuse_unknown: bool = False) -> dict[str, Any]:
    """The checked value of every field in ``table``, checked in table order.

    Unknown fields are refused first when ``refuse_unknown`` (rule sets, files:
    a field we do not know is not silently dropped), else ignored (messages:
    newer agents may add some).
    """
    if refuse_unknown:
        unknown = unknown_fields(doc, (f.name for f in table))
        if unknown:
            raise Invalid(f"unknown field(s) {', '.join(map(repr, sorted(unknown)))}", unknown=unknown)
    values = {}
    for f in table:
        if f.name not in doc:
            if f.required:
                raise Invalid(f"missing field {f.name!r}", missing=f.name)
            values[f.name] = f.default
            continue
        try:
            values[f.name] = f.check(doc[f.name])
        except ValueError as exc:  # Invalid, or a parser's own ValueError: its message is the reason
            fault = exc if isinstance(exc, Invalid) else Invalid(str(exc))
            raise fault.inside(f.name) from None
    return values


def object_of(table: Sequence[Field]) -> Check:
    """A nested object, checked field by field (unknown fields ignored)."""

    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(f"must be an object, got {type_name(value)}")
        return fields(value, table)

    return check


# --- values ------------------------------------------------------------------


def optional(check: Check) -> Check:
    """None, or what ``check`` accepts."""
    return lambda value: None if value is None else check(value)


def one_of(*allowed: Any) -> Check:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise Invalid(f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value

    return check


def instance_of(kinds: type | tuple[type, ...], want: str, name_of: Callable[[Any], str] = type_name) -> Check:
    """A value of one of ``kinds``, as is.  Never a bool: Python counts it as an int, JSON and TOML do not."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise Invalid(f"must be {want}, got {name_of(value)} {value!r}")
        return value

    return check


def boolean(value: Any) -> bool:
    """true or false, nothing that merely converts to one (1, "yes")."""
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {type_name(value)} {value!r}")
    return value


def integer(low: int, high: int, got: Callable[[Any], str] = repr) -> Check:
    """An integer in low..high (not a bool); ``got`` shows a value that is no integer at all."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be an integer, got {got(value)}")
        if not low <= value <= high:
            raise Invalid(f"must be in {low}..{high}, got {value}")
        return value

    return check


def number(low: float, high: float) -> Check:
    """A finite number in low..high, as a float."""

    def check(value: Any) -> float:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
            # JSON integers have no size limit, and math.isfinite() raises OverflowError on one beyond a float.
            raise Invalid(f"must be in {low}..{high}, got an integer of {value.bit_length()} bits")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid(f"must be a number, got {value!r}")
        if not low <= value <= high:
            raise Invalid(f"must be in {low}..{high}, got {value}")
        return float(value)

    return check


def unix_time(value: Any) -> float:
    """A non-negative, finite number of seconds since the epoch, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"must be a non-negative unix time, got {type_name(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # JSON integers have no size limit; math.isfinite() would raise OverflowError on them
        raise Invalid(f"must be a non-negative unix time, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise Invalid(f"must be a non-negative unix time, got {value!r}")
    return seconds


def text(max_len: int, min_len: int = 0, message: str | None = None) -> Check:
    """A string of min_len..max_len characters; ``message``, if given, is the reason for any fault."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(message or f"must be a string, got {type_name(value)}")
        if not min_len <= len(value) <= max_len:
            raise Invalid(message or (f"must be {min_len}..{max_len} characters" if min_len else f"longer than {max_len} characters"))
        return value

    return check


def matches(pattern: re.Pattern[str]) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise Invalid(f"must match {pattern.pattern}, got {value!r}")
        return value

    return check


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address, in its normal spelling."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid(f"not an IP address: {value!r}") from None


def network(strict: bool = True) -> Check:
    """An address or CIDR string; ``strict``: no host bits set beyond the prefix."""

    def check(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        # Strings only: ipaddress would read the number 1 as 0.0.0.1.
        if not isinstance(value, str):
            raise Invalid(f"must be an address or CIDR string, got {type_name(value)}")
        if "%" in value:
            # ipaddress takes "fe80::1%<anything>" (newlines and quotes included) as a /128 with a scope id;
            # nft cannot parse it, so such a rule would break every later kernel sync.
            raise Invalid("an IPv6 scope id (%...) has no place in a rule")
        try:
            return ipaddress.ip_network(value, strict=strict)
        except ValueError as exc:
            raise Invalid(f"not an address or CIDR: {exc}") from None

    return check
