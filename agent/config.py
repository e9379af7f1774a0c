"""The agent's configuration file (TOML): where state lives, what is never blocked, MQTT.

Every key is declared once in ``KEYS`` / ``MQTT_KEYS`` with its type and
default; an unknown key, a wrong type or an impossible value is an error that
names the file, the key and the problem.

    state_dir = "/var/lib/iotguard"
    allowlist = ["192.168.1.10", "10.0.0.0/24"]   # never blocked; gateways, DNS and the broker are added by themselves
    block_seconds = 600
    block = true                                  # false: monitor only (verdicts reported, nothing dropped locally)
    threshold = 0.7
    min_packets = 10
    anomaly = "report"                            # off | report | enforce: verdicts of the anomaly detector
    anomaly_model = ""                            # its model file; empty: the bundled default
    metrics = "127.0.0.1:9464"                    # Prometheus /metrics (HOST:PORT, or a port on 127.0.0.1); "" off

    [events]                                      # optional: verdicts, rule changes, fleet updates as JSON lines
    path = "/var/log/iotguard/events.jsonl"
    max_bytes = 10485760                          # rotated to events.jsonl.1 ... when a line would pass this
    backups = 5                                   # rotated files kept

    [mqtt]                                        # optional: without it the agent runs alone
    host = "broker.lan"
    port = 8883
    fleet = "home"
    device = "pi-kitchen"
    controller_public_key = "/etc/iotguard/controller.pub"
    tls_ca = "/etc/iotguard/ca.pem"
    tls_cert = "/etc/iotguard/device.pem"
    tls_key = "/etc/iotguard/device.key"
    confirm_alerts = "auto"                       # auto | always | off: keep alerts until the controller confirms them
    home_assistant = false                        # publish Home Assistant discovery configs (retained)
    discovery_prefix = "homeassistant"
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.act.respond import ResponseConfig
from agent.detect.decide import DecisionConfig
from agent.events import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from agent.metrics import Listen, parse_listen
from agent.validate import Field, Invalid, boolean, fields, instance_of, network, passes
from agent.wire import ALL_DEVICES, DEFAULT_PREFIX, NAME_RE

REQUIRED = object()
ANOMALY_MODES = ("off", "report", "enforce")
CONFIRM_MODES = ("auto", "always", "off")  # when alerts wait for the controller's confirmation (agent/fleet/mqtt.py)
EVENTS_MIN_BYTES = 1024  # below this a size was surely meant in other units (10 meaning 10 MB)
EVENTS_MAX_BACKUPS = 1000


class ConfigError(ValueError):
    """The configuration file is unusable; the message names file, key and problem."""


@dataclass
class MqttConfig:
    """The fleet link's settings: the [mqtt] table of the configuration file, plus the client's tuning."""

    host: str
    fleet: str
    device: str
    state_dir: Path  # alert queue + applied rule sets + model version live here
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    protocol: str = "5"  # "5" or "3.1.1"
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    max_inflight: int = 32  # alerts handed to paho and not yet acknowledged
    queue_max_items: int = 10_000
    tls_ca: Path | None = None  # TLS is on when this is set
    tls_cert: Path | None = None  # client certificate (its CN is the device name on our brokers)
    tls_key: Path | None = None
    username: str | None = None
    password: str | None = None
    controller_public_key: Path | None = None  # verifies rule sets and model pushes (the fleet link needs it)
    status_interval_s: float = 30.0  # how often the agent publishes its status
    confirm_alerts: str = "auto"  # one of CONFIRM_MODES
    confirm_timeout_s: float = 60.0  # an alert the broker acknowledged but no controller confirmed is sent again
    home_assistant: bool = False  # publish Home Assistant discovery configs (agent/fleet/home_assistant.py)
    discovery_prefix: str = "homeassistant"  # Home Assistant's default

    def __post_init__(self) -> None:
        for what in ("fleet", "device"):
            value = getattr(self, what)
            if not NAME_RE.match(value):
                raise ValueError(f"{what} name {value!r} must match {NAME_RE.pattern}")
        if self.device == ALL_DEVICES:
            raise ValueError(f"device name {ALL_DEVICES!r} is reserved for the fleet-wide rule set")
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', got {self.protocol!r}")
        if self.confirm_alerts not in CONFIRM_MODES:
            raise ValueError(f"confirm_alerts must be one of {', '.join(CONFIRM_MODES)}, got {self.confirm_alerts!r}")
        if not self.confirm_timeout_s > 0:
            raise ValueError(f"confirm_timeout_s must be positive, got {self.confirm_timeout_s}")
        self.state_dir = Path(self.state_dir)
        for what in ("tls_ca", "tls_cert", "tls_key", "controller_public_key"):
            if getattr(self, what) is not None:
                setattr(self, what, Path(getattr(self, what)))


@dataclass
class EventsConfig:
    """The event log (agent/events.py): one JSON object per line, rotated by size."""

    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS

    def __post_init__(self) -> None:
        self.path = Path(self.path)


@dataclass
class AgentConfig:
    state_dir: Path = Path("/var/lib/iotguard")
    allowlist: list[str] = field(default_factory=list)
    block_seconds: float = ResponseConfig.block_seconds
    block: bool = True  # False: verdicts are logged and reported, no local rule drops anything (fleet rules still do)
    threshold: float = DecisionConfig.threshold
    min_packets: int = DecisionConfig.min_packets
    max_local_rules: int = 1024
    model: str = ""
    anomaly: str = "report"
    anomaly_model: str = ""
    mqtt: MqttConfig | None = None
    metrics: Listen | None = None  # where /metrics is served; None: not at all
    events: EventsConfig | None = None
    path: Path | None = None


# Every key of the file with its type and default (the defaults are the dataclasses' own).
KEYS: dict[str, tuple[type | tuple, Any]] = {
    "state_dir": (str, str(AgentConfig.state_dir)),
    "allowlist": (list, []),
    "block_seconds": ((int, float), AgentConfig.block_seconds),
    "block": (bool, AgentConfig.block),
    "threshold": ((int, float), AgentConfig.threshold),
    "min_packets": (int, AgentConfig.min_packets),
    "max_local_rules": (int, AgentConfig.max_local_rules),
    "model": (str, AgentConfig.model),  # a bundle JSON; empty: the bundled default
    "anomaly": (str, AgentConfig.anomaly),  # off: not run; report: its verdicts are alerts; enforce: they block too
    "anomaly_model": (str, AgentConfig.anomaly_model),  # an anomaly model file; empty: the bundled default
    "metrics": ((str, int), ""),  # HOST:PORT or a port (on 127.0.0.1); "": no metrics endpoint
    "events": (dict, None),
    "mqtt": (dict, None),
}
EVENTS_KEYS: dict[str, tuple[type | tuple, Any]] = {
    "path": (str, REQUIRED),
    "max_bytes": (int, DEFAULT_MAX_BYTES),
    "backups": (int, DEFAULT_BACKUPS),
}
MQTT_KEYS: dict[str, tuple[type | tuple, Any]] = {
    "host": (str, REQUIRED),
    "port": (int, MqttConfig.port),
    "fleet": (str, REQUIRED),
    "device": (str, REQUIRED),
    "controller_public_key": (str, REQUIRED),
    "prefix": (str, MqttConfig.prefix),
    "tls_ca": (str, ""),
    "tls_cert": (str, ""),
    "tls_key": (str, ""),
    "status_interval_s": ((int, float), MqttConfig.status_interval_s),
    "confirm_alerts": (str, MqttConfig.confirm_alerts),
    "home_assistant": (bool, MqttConfig.home_assistant),
    "discovery_prefix": (str, MqttConfig.discovery_prefix),
}


def _check(path: Path, table: dict, keys: dict, where: str = "") -> dict:
    """The table's keys with their defaults filled in; every key of the right type, none unknown."""
    checks = []
    for key, (kind, default) in keys.items():
        want = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        check = boolean if kind is bool else instance_of(kind, want)  # instance_of never takes a bool
        checks.append(Field(key, check, required=default is REQUIRED, default=default))
    try:
        return fields(table, checks, refuse_unknown=True)
    except Invalid as exc:
        if exc.unknown:
            raise ConfigError(f"{path}: unknown key {where}{min(exc.unknown)!r} (known: {', '.join(sorted(keys))})") from None
        if exc.missing:
            raise ConfigError(f"{path}: missing key {where}{exc.missing!r}") from None
        raise ConfigError(f"{path}: key {where}{exc.path[0]!r} {exc.reason}") from None


def _seconds(value: float) -> bool:
    """A positive, finite number of seconds.  TOML also has nan (which slips past "<= 0"), inf (a permanent
    block) and integers of any length (float() of 10**400 raises OverflowError)."""
    try:
        return 0 < float(value) < math.inf
    except OverflowError:
        return False


def _check_mqtt_values(path: Path, m: dict) -> None:
    """What the MQTT client would refuse later, with a less helpful message: say it now, naming the key."""
    for key in ("host", "controller_public_key"):
        if not m[key]:
            raise ConfigError(f"{path}: key 'mqtt.{key}' must not be empty")
    for key in ("fleet", "device"):  # they become topic levels
        if not NAME_RE.match(m[key]):
            raise ConfigError(f"{path}: key 'mqtt.{key}' must match {NAME_RE.pattern}, got {m[key]!r}")
    if m["device"] == ALL_DEVICES:
        raise ConfigError(f"{path}: key 'mqtt.device' cannot be {ALL_DEVICES!r}: that names the fleet-wide rule set")
    if not m["prefix"] or any(c in m["prefix"] for c in "+#\0"):
        raise ConfigError(f"{path}: key 'mqtt.prefix' must be a topic prefix without wildcards, got {m['prefix']!r}")
    if not _seconds(m["status_interval_s"]):
        raise ConfigError(f"{path}: key 'mqtt.status_interval_s' must be a positive number, got {m['status_interval_s']}")
    if m["confirm_alerts"] not in CONFIRM_MODES:
        raise ConfigError(f"{path}: key 'mqtt.confirm_alerts' must be one of {', '.join(CONFIRM_MODES)}, "
                          f"got {m['confirm_alerts']!r}")  # fmt: skip
    prefix = m["discovery_prefix"]
    if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError(f"{path}: key 'mqtt.discovery_prefix' must be a topic prefix without wildcards or "
                          f"leading/trailing '/', got {prefix!r}")  # fmt: skip


def _events(path: Path, table: dict) -> EventsConfig:
    e = _check(path, table, EVENTS_KEYS, "events.")
    if not e["path"]:
        raise ConfigError(f"{path}: key 'events.path' must not be empty")
    if e["max_bytes"] < EVENTS_MIN_BYTES:
        raise ConfigError(f"{path}: key 'events.max_bytes' must be at least {EVENTS_MIN_BYTES}, got {e['max_bytes']}")
    if not 0 <= e["backups"] <= EVENTS_MAX_BACKUPS:
        raise ConfigError(f"{path}: key 'events.backups' must be in 0..{EVENTS_MAX_BACKUPS}, got {e['backups']}")
    return EventsConfig(Path(e["path"]), e["max_bytes"], e["backups"])


def _metrics(path: Path, value: str | int) -> Listen | None:
    if value == "":
        return None
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: key 'metrics' {exc}") from None


def load_config(path: str | Path | None) -> AgentConfig:
    if path is None:
        return AgentConfig()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    v = _check(path, raw, KEYS)
    for i, item in enumerate(v["allowlist"]):
        if not passes(network(strict=False), item):
            raise ConfigError(f"{path}: key 'allowlist' entry {i} is not an address or CIDR: {item!r}")
    if not _seconds(v["block_seconds"]):
        raise ConfigError(f"{path}: key 'block_seconds' must be a positive number of seconds, got {v['block_seconds']}")
    if not 0 < v["threshold"] <= 1:
        raise ConfigError(f"{path}: key 'threshold' must be in (0, 1], got {v['threshold']}")
    if v["anomaly"] not in ANOMALY_MODES:
        raise ConfigError(f"{path}: key 'anomaly' must be one of {', '.join(ANOMALY_MODES)}, got {v['anomaly']!r}")
    if v["min_packets"] < 1 or v["max_local_rules"] < 1:
        raise ConfigError(f"{path}: keys 'min_packets' and 'max_local_rules' must be at least 1")
    mqtt = None
    if v["mqtt"] is not None:
        m = _check(path, v["mqtt"], MQTT_KEYS, "mqtt.")
        if not 0 < m["port"] < 65536:
            raise ConfigError(f"{path}: key 'mqtt.port' must be 1..65535, got {m['port']}")
        _check_mqtt_values(path, m)
        files = {k: m.pop(k) or None for k in ("tls_ca", "tls_cert", "tls_key", "controller_public_key")}  # "": none
        mqtt = MqttConfig(**m, **files, state_dir=Path(v["state_dir"]) / "mqtt")  # it makes the file names Paths
    metrics = _metrics(path, v["metrics"])
    events = _events(path, v["events"]) if v["events"] is not None else None
    return AgentConfig(
        state_dir=Path(v["state_dir"]),
        allowlist=[str(a) for a in v["allowlist"]],
        block_seconds=float(v["block_seconds"]),
        block=v["block"],
        threshold=float(v["threshold"]),
        min_packets=v["min_packets"],
        max_local_rules=v["max_local_rules"],
        model=v["model"],
        anomaly=v["anomaly"],
        anomaly_model=v["anomaly_model"],
        mqtt=mqtt,
        metrics=metrics,
        events=events,
        path=path,
    )
