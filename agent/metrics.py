"""The agent's Prometheus endpoint: ``GET /metrics`` in the text exposition format (version 0.0.4).

A stdlib ``ThreadingHTTPServer`` answers in a daemon thread.  On each scrape it
asks the live agent for an ``AgentSnapshot`` (counters the agent keeps anyway,
copied under its lock only where the MQTT thread changes them) and writes it
out here, so the packet path does no work for metrics at all.  Every other
path is a 404.

Names start with ``iotguard_agent_``; each family has its HELP and TYPE line;
label values are escaped as the format asks (backslash, double quote, line
feed), so a hostile string in a model version cannot break the page.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.capture.packets import LABELS

log = logging.getLogger(__name__)

PREFIX = "iotguard_agent_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"  # a port alone is served on loopback only: exposing it is the operator's choice
PATH = "/metrics"
# The verdicts each class can have (decide.py): series that exist from the start read 0, not "no data".
VERDICT_SERIES = [(label, basis) for label in LABELS[1:] for basis in ("model", "headers")] + [("anomaly", "anomaly")]


class MetricsError(RuntimeError):
    """The metrics endpoint cannot be served (address in use, not an address of this host)."""


# --- the address ---------------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^[0-9A-Fa-f:.]{2,45}$")


def parse_listen(value: str | int) -> Listen:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``PORT`` or ``:PORT`` (both on 127.0.0.1); PORT in 1..65535.

    Raises ValueError with the reason (the caller names the key or option)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be HOST:PORT or a port number, got {type(value).__name__}")
    text = str(value).strip()
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"needs brackets around an IPv6 address ([::1]:9464), got {text!r}")
    host = host or DEFAULT_HOST
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT or PORT with PORT in 1..65535, got {text!r}")
    if not _HOST_RE.match(host):
        raise ValueError(f"has a host that is neither an address nor a host name: {host!r}")
    return Listen(host, int(port))


# --- the text format -------------------------------------------------------------------


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its samples share a name, a type and a help text."""

    name: str  # without PREFIX
    kind: str  # "counter" or "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self


def render(families: Iterable[Family]) -> str:
    lines = []
    for f in families:
        name = PREFIX + f.name
        lines += [f"# HELP {name} {escape_help(f.help)}", f"# TYPE {name} {f.kind}"]
        for labels, value in f.samples:
            inner = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{inner}}} {format_value(value)}" if inner else f"{name} {format_value(value)}")
    return "\n".join(lines) + "\n"


# --- what the agent reports ------------------------------------------------------------


@dataclass
class AgentSnapshot:
    """The live agent's numbers at one moment (``LiveAgent.snapshot``); None: not known on this agent."""

    now: float
    started: float
    frames: int
    decoded: int
    filtered: int
    per_class: dict[str, int]
    verdicts: dict[tuple[str, str], int]  # (class, basis) -> count
    rules: dict[str, int]  # "local" / "fleet" -> active rules
    model_version: str
    runtime: str
    under_attack: bool
    kernel_drops: int | None = None
    rss_bytes: int | None = None
    cpu_seconds: float | None = None
    fleet: dict | None = None  # FleetLink.summary() plus the rule-set versions
    events_written: int | None = None
    event_failures: int | None = None


def families(s: AgentSnapshot) -> list[Family]:
    out = [
        Family("frames_captured_total", "counter", "Frames handed over by the capture ring.").add(s.frames),
        Family("packets_decoded_total", "counter", "Frames decoded into packets.").add(s.decoded),
        Family("packets_filtered_total", "counter", "Packets dropped by the primary filter's rules.").add(s.filtered),
    ]
    per_class = Family("packets_total", "counter", "Packets classified by the model, per class.")
    for name in LABELS:
        per_class.add(s.per_class.get(name, 0), **{"class": name})
    verdicts = Family("verdicts_total", "counter", "Hostile verdicts, per class and basis (model, headers, anomaly).")
    for (label, basis), n in sorted({**dict.fromkeys(VERDICT_SERIES, 0), **s.verdicts}.items()):
        verdicts.add(n, **{"class": label, "basis": basis})
    rules = Family("rules_active", "gauge", "Active filter rules, by origin (local verdicts, fleet rule sets).")
    for origin in ("local", "fleet"):
        rules.add(s.rules.get(origin, 0), origin=origin)
    out += [per_class, verdicts, rules]
    if s.kernel_drops is not None:
        out.append(Family("kernel_drops_total", "counter", "Frames the kernel dropped: the capture ring was full.")
                   .add(s.kernel_drops))  # fmt: skip
    out.append(Family("under_attack", "gauge", "1 while a verdict or a dropped packet is less than a minute old.")
               .add(int(s.under_attack)))  # fmt: skip
    if s.fleet is not None:
        f = s.fleet
        out += [
            Family("fleet_connected", "gauge", "1 while connected to the MQTT broker.").add(int(f["connected"])),
            Family("alert_queue_depth", "gauge", "Alerts on disk waiting for delivery or confirmation.")
            .add(f["alerts_pending"]),
            Family("alerts_queued_total", "counter", "Alerts queued for the controller.").add(f["alerts_queued"]),
            Family("alerts_sent_total", "counter", "Alerts delivered (acknowledged, or confirmed where awaited).")
            .add(f["alerts_sent"]),
            Family("alerts_confirmed_total", "counter", "Alerts a controller confirmed it stored.").add(f["alerts_confirmed"]),
            Family("alerts_dropped_total", "counter", "Alerts dropped because the queue was full or the disk refused.")
            .add(f["alerts_dropped"]),
        ]  # fmt: skip
        versions = Family("ruleset_version", "gauge", "Version of the last applied fleet rule set, per target.")
        for target, version in sorted(f.get("ruleset_version", {}).items()):
            versions.add(version, target=target)
        out.append(versions)
    if s.events_written is not None:
        out += [
            Family("events_written_total", "counter", "Lines written to the event log.").add(s.events_written),
            Family("event_write_failures_total", "counter", "Events the disk refused (full, read-only).")
            .add(s.event_failures or 0),
        ]  # fmt: skip
    if s.rss_bytes is not None:
        out.append(Family("resident_memory_bytes", "gauge", "Resident set size of the agent process.").add(s.rss_bytes))
    if s.cpu_seconds is not None:
        out.append(Family("cpu_seconds_total", "counter", "User and system CPU time of the agent process.")
                   .add(s.cpu_seconds))  # fmt: skip
    out += [
        Family("model_info", "gauge", "The model the agent classifies with (value 1).")
        .add(1, version=s.model_version, runtime=s.runtime),
        Family("start_time_seconds", "gauge", "Unix time the agent started.").add(s.started),
        Family("uptime_seconds", "gauge", "Seconds since the agent started.").add(max(0.0, s.now - s.started)),
    ]  # fmt: skip
    return out


# --- the server ------------------------------------------------------------------------


@functools.cache
def _server_class(ipv6: bool) -> type:
    """The HTTP server and its handler, made on first use: http.server pulls in about 3 MB of modules (email,
    html, http.client) that an agent without metrics should not carry on a 512 MB board."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = "iotguard-agent"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path.split("?", 1)[0] != PATH:
                self._answer(404, b"not found: metrics are at /metrics\n", "text/plain; charset=utf-8")
                return
            try:
                body = render(self.server.collect()).encode()
            except Exception:  # a bug in collecting must cost one scrape, not the server thread
                log.exception("metrics: collecting failed")
                self._answer(500, b"collecting metrics failed, see the agent's log\n", "text/plain; charset=utf-8")
                return
            self._answer(200, body, CONTENT_TYPE)

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's signature)
            log.debug("metrics: %s %s", self.address_string(), format % args)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        daemon_threads = True  # a scraper that hangs must not hold up the agent's exit
        handler = Handler
        collect: Callable[[], list[Family]]

    return Server


class MetricsServer:
    """Serves ``collect()`` at /metrics on ``listen`` (port 0: the kernel picks one, see ``address``)."""

    def __init__(self, listen: Listen, collect: Callable[[], list[Family]]) -> None:
        self.listen = listen
        self.collect = collect
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        cls = _server_class(":" in self.listen.host)
        try:
            server = cls((self.listen.host, self.listen.port), cls.handler)
        except (OSError, OverflowError) as exc:  # in use, no such address, a name that does not resolve
            raise MetricsError(f"cannot serve metrics on {self.listen}: {getattr(exc, 'strerror', None) or exc}") from None
        server.collect = self.collect
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics-http", daemon=True)  # fmt: skip
        self._thread.start()
        log.info("metrics at http://%s%s", Listen(*self.address), PATH)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return host, port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
