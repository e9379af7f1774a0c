"""The controller's metrics in the Prometheus text format (version 0.0.4), served at /metrics.

Counted from the database, so the numbers hold across restarts and include what other replicas and the
one-shot commands wrote: alerts stored per fleet and class, rule sets issued per fleet, and the histogram
of seconds from a rule set's issue to each device's first 'applied' ack.  The counters are kept
incrementally (rows settled since the mark of the last scrape, see ``Store.alert_totals_after``), so a
scrape reads only what is new.  Replicas that share
one database therefore report the same totals: scrape one of them, or aggregate with max().

From this replica's process: messages it refused and duplicates it dropped, whether its MQTT session is
up.  Devices online is a gauge read from the devices table (state from the status topic and its last will).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import __version__
from controller.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
PREFIX = "iotguard_controller_"


def label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{label_value(str(v))}"' for k, v in pairs.items()) + "}" if pairs else ""


def number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


@dataclass
class Histogram:
    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; the last is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        value = max(value, 0.0)  # clocks of two replicas may disagree by a little
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            running += count
            out.append(f"{name}_bucket{labels(le=number(bound))} {running}")
        return out + [f"{name}_sum {number(self.total)}", f"{name}_count {running}"]


@dataclass
class ProcessView:
    """What this replica knows of itself (None when the server runs without a service, as in tests)."""

    rejected: Callable[[], dict[str, int]] = dict
    duplicates: Callable[[], int] = lambda: 0
    connected: Callable[[], bool] | None = None


class Metrics:
    def __init__(self, store: Store, process: ProcessView | None = None) -> None:
        self.store = store
        self.process = process or ProcessView()
        self._lock = threading.Lock()  # scrapes may overlap
        self._alert_mark = 0
        self._alerts: dict[tuple[str, str], int] = {}
        self._ack_mark = 0
        self._latency = Histogram()

    def _catch_up(self) -> None:
        top, rows = self.store.alert_totals_after(self._alert_mark)
        for fleet, cls, n in rows:
            self._alerts[(fleet, cls)] = self._alerts.get((fleet, cls), 0) + n
        self._alert_mark = top
        top, latencies = self.store.ack_latencies_after(self._ack_mark)
        for seconds in latencies:
            self._latency.observe(seconds)
        self._ack_mark = top

    def render(self) -> str:
        with self._lock:
            self._catch_up()
            alerts, latency = dict(self._alerts), Histogram(self._latency.bounds, list(self._latency.counts), self._latency.total)
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
            out.append(f"# HELP {PREFIX}{name} {help_text}")
            out.append(f"# TYPE {PREFIX}{name} {kind}")
            out.extend(f"{PREFIX}{name}{labels(**lab)} {number(v)}" for lab, v in samples)

        family("build_info", "gauge", "Version of this controller.", [({"version": __version__}, 1)])
        family("alerts_ingested_total", "counter", "Alerts stored, per fleet and class (from the database).",
               [({"fleet": f, "class": c}, n) for (f, c), n in sorted(alerts.items())])
        states: dict[str, dict[str, int]] = {}
        for fleet, state, n in self.store.online_devices():
            states.setdefault(fleet, {"online": 0, "offline": 0, "unknown": 0})[state] = n
        family("devices_online", "gauge", "Devices whose last status is online.",
               [({"fleet": f}, s["online"]) for f, s in sorted(states.items())])
        family("devices", "gauge", "Devices known, per state (online, offline, unknown).",
               [({"fleet": f, "state": st}, n) for f, s in sorted(states.items()) for st, n in sorted(s.items())])
        family("rulesets_issued_total", "counter", "Signed rule sets issued, per fleet (from the database).",
               [({"fleet": f}, n) for f, n in self.store.ruleset_totals()])
        name = f"{PREFIX}ruleset_ack_latency_seconds"
        out.append(f"# HELP {name} Seconds from a rule set's issue to each device's first 'applied' ack.")
        out.append(f"# TYPE {name} histogram")
        out.extend(latency.lines(name))
        family("alerts_duplicate_total", "counter", "Alerts this replica received again and dropped.",
               [({}, self.process.duplicates())])
        family("messages_rejected_total", "counter", "Messages this replica refused, per reason.",
               [({"reason": r}, n) for r, n in sorted(self.process.rejected().items())])
        if self.process.connected is not None:
            family("mqtt_connected", "gauge", "1 while this replica is connected and subscribed.",
                   [({}, int(self.process.connected()))])
        return "\n".join(out) + "\n"
