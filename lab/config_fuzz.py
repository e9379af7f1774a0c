"""Hostile configuration files and firmware profiles for the agent's loaders (issue #7).

The controller has no configuration topic (DESIGN 7), so the agent's TOML configuration
(agent/config.py) and firmware profiles (agent/profile.py) arrive as files: a valid file gets one
mutation (a key of the wrong type or a refused value, a missing or unknown key, broken TOML, bytes that
are not UTF-8), and ``load_file_case`` checks that the loader raises ConfigError/ProfileError naming the key.
"""

from __future__ import annotations

import copy
import datetime
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import ConfigError, load_config
from agent.profile import MAX_BATCH, PROFILE_DIR, ProfileError, load_profile
from lab.mqtt_fuzz import BAD_UTF8, Case, same_type


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # nan, inf and -inf are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are a subset of TOML's basic string
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict[str, Any]) -> str:
    """Top-level values, then each table as a [section] (nested tables inline)."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(k)}]")
            lines += [f"{json.dumps(tk)} = {toml_value(tv)}" for tk, tv in table.items()]
    return "\n".join(lines) + "\n"


TOML_VALUES: list[Any] = [
    "", "x", 0, -1, 1.5, True, False, [], [1, "a"], {}, {"a": 1}, float("nan"), float("inf"), 2**63 - 1,
    datetime.datetime(1979, 5, 27, 7, 32), datetime.date(1979, 5, 27), datetime.time(7, 32),
]  # fmt: skip
BAD_SECONDS = [0, -1, -0.5, float("nan"), float("inf"), float("-inf"), 10**400]  # TOML integers have no size limit
CONFIG_BASE: dict[str, Any] = {
    "state_dir": "/var/lib/iotguard", "allowlist": ["192.168.1.1", "10.0.0.0/8", "2001:db8::1"], "block_seconds": 600,
    "threshold": 0.7, "min_packets": 10, "max_local_rules": 1024, "model": "", "metrics": "127.0.0.1:9464",
    "events": {"path": "/var/log/iotguard/events.jsonl", "max_bytes": 10485760, "backups": 5},
    "mqtt": {"host": "broker.lan", "port": 8883, "fleet": "home", "device": "pi-kitchen",
             "controller_public_key": "/etc/iotguard/controller.pub", "prefix": "iotguard/v1", "tls_ca": "",
             "tls_cert": "", "tls_key": "", "status_interval_s": 30, "confirm_alerts": "auto",
             "home_assistant": True, "discovery_prefix": "homeassistant"},
}  # fmt: skip
# key -> (types taken, refused values of those types)
CONFIG_SPEC: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "state_dir": ((str,), []),
    "allowlist": ((list,), [["not-an-ip"], ["1.2.3.4/33"], ["fe80::1%eth0"], [1], [True], [["10.0.0.1"]], [""]]),
    "block_seconds": ((int, float), BAD_SECONDS),
    "threshold": ((int, float), [0, -0.1, 1.01, 2, float("nan"), float("inf")]),
    "min_packets": ((int,), [0, -5]),
    "max_local_rules": ((int,), [0, -1]),
    "model": ((str,), []),
    "metrics": ((str, int), ["x", "0", "board:70000", "::1:9464", "[::1]", 0, -1, 65536, 10**30]),
    "events": ((dict,), []),
    "events.path": ((str,), [""]),
    "events.max_bytes": ((int,), [0, -1, 1023, -(10**30)]),
    "events.backups": ((int,), [-1, 1001, 10**30]),
    "mqtt": ((dict,), []),
    "mqtt.host": ((str,), [""]),
    "mqtt.port": ((int,), [0, -1, 65536, 10**30]),
    "mqtt.fleet": ((str,), ["", "a/b", "+", "#", "x" * 65, "a b"]),
    "mqtt.device": ((str,), ["", "a/b", "+", "#", "x" * 65, "all"]),
    "mqtt.controller_public_key": ((str,), [""]),
    "mqtt.prefix": ((str,), ["", "#", "+", "a/#", "iotguard/+", "x\u0000y"]),
    "mqtt.tls_ca": ((str,), []),
    "mqtt.tls_cert": ((str,), []),
    "mqtt.tls_key": ((str,), []),
    "mqtt.status_interval_s": ((int, float), BAD_SECONDS),
    "mqtt.confirm_alerts": ((str,), ["", "on", "Auto", "never"]),
    "mqtt.home_assistant": ((bool,), []),
    "mqtt.discovery_prefix": ((str,), ["", "#", "home/+", "/homeassistant", "homeassistant/"]),
}
CONFIG_REQUIRED = ("mqtt.host", "mqtt.fleet", "mqtt.device", "mqtt.controller_public_key", "events.path")


@dataclass
class FileCase:
    """A configuration or profile file and the key its loader must name (None: any outcome but a crash)."""

    kind: str  # "config" or "profile"
    category: str
    text: bytes
    key: str | None
    also: tuple[str, ...] = ()  # other keys an error may rightly name (e.g. a budget too big for memory_budget_mb)
    note: str = ""  # (corpus) what this case found

    def to_json(self) -> dict[str, Any]:
        doc = {"kind": self.kind, "category": self.category, "key": self.key, "toml": self.text.decode("utf-8", "replace")}
        return {**doc, "note": self.note} if self.note else doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FileCase:
        return cls(doc["kind"], doc["category"], doc["toml"].encode(), doc.get("key"), note=doc.get("note", ""))


def corpus_entry(doc: dict[str, Any]) -> Case | FileCase:
    """A regression corpus file (tests/data/mqtt_fuzz_corpus/*.json) as the case it holds."""
    return FileCase.from_json(doc) if doc["kind"] in ("config", "profile") else Case.from_json(doc)


def set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        data = data[p]
    data[last] = value


def del_dotted(data: dict, key: str) -> None:
    *parents, last = key.split(".")
    for p in parents:
        data = data[p]
    del data[last]


def mutate_file(rng: random.Random, base: dict, spec: dict, required: tuple[str, ...], kind: str,
                extra_values: Callable[[str], list[Any]] = lambda key: []) -> FileCase:  # fmt: skip
    """One mutation of a valid file: a key of the wrong type or a refused value, a missing or unknown key, broken TOML."""
    data = copy.deepcopy(base)
    how = rng.randrange(6)
    key = rng.choice(list(spec))
    types, bad = spec[key]
    if how in (0, 1) and not bad and not extra_values(key):
        how = 0
    if how == 0:
        value = rng.choice([v for v in TOML_VALUES if not same_type(v, types)])
        set_dotted(data, key, value)
        return FileCase(kind, "value of wrong type", to_toml(data).encode(), key)
    if how == 1:
        set_dotted(data, key, rng.choice(bad + extra_values(key)))
        return FileCase(kind, "refused value", to_toml(data).encode(), key)
    if how == 2 and required:
        key = rng.choice(required)
        del_dotted(data, key)
        return FileCase(kind, "missing key", to_toml(data).encode(), key)
    if how in (2, 3):
        table = rng.choice([k for k, v in data.items() if isinstance(v, dict)] + [""])
        name = rng.choice(["extra", "Threshold", "port ", "\u00e9", "x.y"])
        target = data[table] if table else data
        target[name] = rng.choice(TOML_VALUES)
        return FileCase(kind, "unknown key", to_toml(data).encode(), f"{table}.{name}" if table else name)
    text = bytearray(to_toml(data).encode())
    pos = rng.randrange(len(text))
    if how == 4:
        change = rng.randrange(4)
        if change == 0:
            text = text[:pos]
        elif change == 1:
            del text[pos]
        elif change == 2:
            text.insert(pos, ord(rng.choice('[]="{}.,#\n \\')))
        else:
            text[pos:pos] = text.splitlines(keepends=True)[0]  # a key twice
        return FileCase(kind, "broken TOML", bytes(text), None)
    return FileCase(kind, "not UTF-8 or binary", bytes(text[:pos]) + rng.choice(BAD_UTF8 + [rng.randbytes(50)]), None)


def config_case(rng: random.Random) -> FileCase:
    return mutate_file(rng, CONFIG_BASE, CONFIG_SPEC, CONFIG_REQUIRED, "config")


PROFILE_NAME = "fuzz-board"


def profile_base() -> dict:
    import tomllib

    data = tomllib.loads((PROFILE_DIR / "rpi-zero-2w.toml").read_text())
    data["name"] = PROFILE_NAME
    return data


PROFILE_SPEC: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "name": ((str,), ["other", "", "rpi-zero-2w"]),
    "description": ((str,), []),
    "arch": ((str,), ["", "armv6l", "AARCH64", "arm64"]),
    "cores": ((int,), [0, -1]),
    "memory_mb": ((int,), [0, 63, -1]),
    "runtime": ((str,), ["", "onnx", "tflite"]),
    "threads": ((int,), [0, -1, 5]),
    "interface": ((str,), [""]),
    "batch_size": ((int,), [0, -1, MAX_BATCH + 1, 10**30]),
    "budgets": ((dict,), [{}, {"mi_dir": 1}]),
    **{f"budgets.{t}": ((int,), [0, -1, 10**30, 10**400]) for t in ("mi_dir", "h", "hh", "hh_jit", "hphp")},
    "memory_budget_mb": ((int,), [0, -1, 513, 1]),
    "capture_ring_kb": ((int,), [0, -256, 100, 257, 2**70 + 1]),
    "enforcement": ((str,), ["", "iptables", "NFTABLES"]),
    "qemu": ((str,), ["", "none", "qemu-arm-static"]),
    "qemu_cpu": ((str,), []),
}
PROFILE_REQUIRED = ("name", "arch", "cores", "memory_mb", "runtime", "interface", "batch_size", "budgets",
                    "memory_budget_mb", "enforcement", "qemu", *(f"budgets.{t}" for t in ("mi_dir", "h", "hh", "hh_jit", "hphp")))  # fmt: skip


def profile_case(rng: random.Random, base: dict) -> FileCase:
    case = mutate_file(rng, base, PROFILE_SPEC, PROFILE_REQUIRED, "profile")
    if case.key and case.key.startswith("budgets.") and case.category == "refused value":
        case.also = ("memory_budget_mb",)  # a budget too big for the memory budget is reported there
    return case


def load_file_case(case: FileCase, folder: Path) -> list[str]:
    """Load the file with the agent's loader; list what is wrong (empty: fine)."""
    path = folder / (f"{PROFILE_NAME}.toml" if case.kind == "profile" else "agent.toml")
    path.write_bytes(case.text)
    loader, error = (load_profile, ProfileError) if case.kind == "profile" else (load_config, ConfigError)
    try:
        loader(path)
    except error as exc:
        if case.key is None:
            return []
        if isinstance(exc, ProfileError):  # it carries the key: "budgets" is right for "budgets.h" too
            ok = any(exc.key == k or exc.key.startswith(k + ".") for k in (case.key, *case.also))
        else:  # the message names it, as 'threshold' or mqtt.'port'
            ok = any(all(part in str(exc) for part in k.split(".")) for k in (case.key, *case.also))
        return [] if ok else [f"error names the wrong key (want {case.key}): {str(exc)[:200]}"]
    except Exception as exc:  # noqa: BLE001
        return [f"{type(exc).__name__} instead of {error.__name__}: {str(exc)[:200]}"]
    return [] if case.key is None else [f"accepted: {case.category} at {case.key}"]
