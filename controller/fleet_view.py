"""What the dashboard and its JSON API show, read from the store: plain dicts, ready for JSON.

Status documents come from the devices and are kept whole, so every value taken from one is checked
here for its type (a number where a number belongs, bounded text) before anyone renders it: a device
cannot make the page or an API client mistake a string for a number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.wire import ALL_DEVICES
from controller.store import Store

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_RANGE = "24h"
BUCKETS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 48  # bars in the chart: readable on a phone
MAX_ALERTS = 1000
TEXT_MAX = 512


class QueryError(ValueError):
    """A filter the user gave cannot be read; the message says which."""


# --- values from devices -------------------------------------------------------


def number(value: Any) -> float | int | None:
    """A finite JSON number, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def short_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else None
    return None if text is None else text[:TEXT_MAX]


def versions(value: Any) -> dict[str, int]:
    """A status' ruleset_version: {target: version}, only the well-formed entries."""
    if not isinstance(value, dict):
        return {}
    return {str(k)[:64]: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


# --- alert filters ---------------------------------------------------------------


def parse_time(text: str, tz_minutes: int | None, what: str) -> float:
    """Unix seconds, or ISO 8601; without an offset, the browser's (``tz``, as JavaScript's
    getTimezoneOffset gives it), else UTC."""
    text = text.strip()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else _iso(text, tz_minutes)
    except ValueError:
        raise QueryError(f"{what}: want unix seconds or ISO 8601 (2024-05-01T12:00Z), got {text[:40]!r}") from None


def _iso(text: str, tz_minutes: int | None) -> float:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone(-timedelta(minutes=tz_minutes or 0)))
    return when.timestamp()


@dataclass(frozen=True)
class AlertQuery:
    fleet: str | None = None
    device: str | None = None
    cls: str | None = None
    range: str = DEFAULT_RANGE  # a key of RANGES, "all", or "custom" (since/until)
    since: float | None = None
    until: float | None = None
    limit: int = 100

    @classmethod
    def from_params(cls, params: dict[str, str], now: float, default_limit: int = 100) -> AlertQuery:
        """From query parameters: fleet, device, class, range, since, until, tz, limit (empty means unset)."""
        p = {k: v.strip() for k, v in params.items() if v.strip()}
        try:
            tz = int(p["tz"]) if "tz" in p else None
            limit = int(p.get("limit", default_limit))
        except ValueError:
            raise QueryError("tz and limit must be integers") from None
        if not 1 <= limit <= MAX_ALERTS:
            raise QueryError(f"limit must be within 1..{MAX_ALERTS}")
        since = parse_time(p["since"], tz, "since") if "since" in p else None
        until = parse_time(p["until"], tz, "until") if "until" in p else None
        # Times given win over a preset range (the form sends both).
        rng = "custom" if since is not None or until is not None else p.get("range", DEFAULT_RANGE)
        if rng not in RANGES and rng not in ("all", "custom"):
            raise QueryError(f"range must be one of {', '.join([*RANGES, 'all', 'custom'])}")
        if rng in RANGES:
            since, until = now - RANGES[rng], None
        elif rng == "all":
            since, until = None, None
        if since is not None and until is not None and since >= until:
            raise QueryError("since must be before until")
        return cls(p.get("fleet"), p.get("device"), p.get("class"), rng, since, until, limit)


# --- views -------------------------------------------------------------------------


def devices(store: Store, now: float) -> list[dict[str, Any]]:
    """Each device with its last heartbeat and whether it applied the newest rule sets and model."""
    latest = store.latest_rulesets()
    acks = store.last_acks()
    pushed = latest_models(store)
    out = []
    for row in store.devices():
        status = row["status"] if isinstance(row["status"], dict) else {}
        fleet, device = row["fleet"], row["device"]
        rules = []
        for target in (ALL_DEVICES, device):
            if (fleet, target) not in latest:
                continue
            ack = acks.get((fleet, device, target))
            newest = latest[(fleet, target)]
            rules.append({
                "target": target, "latest": newest,
                "acked": ack["version"] if ack else None, "ack_status": ack["status"] if ack else None,
                "reason": short_text(ack["reason"]) if ack else None,
                "current": bool(ack and ack["version"] == newest and ack["status"] == "applied"),
            })  # fmt: skip
        model_version = short_text(status.get("model_version"))
        push = pushed.get(f"{fleet}/{device}")
        out.append({
            "fleet": fleet,
            "device": device,
            "state": row["state"],
            "online": row["state"] == "online",
            "last_heartbeat": row["last_seen"],
            "heartbeat_age_s": round(now - row["last_seen"], 1),
            "packets_per_s": number(status.get("packets_per_s")),
            "drops": number(status.get("drops")),
            "cpu_percent": number(status.get("cpu_percent")),
            "rss_bytes": number(status.get("rss_bytes")),
            "alerts_queued": number(status.get("alerts_queued")),
            "alerts_dropped": number(status.get("alerts_dropped")),
            "model_version": model_version,
            "model_error": short_text(status.get("model_error")),
            "latest_model": push["version"] if push else None,
            # The agent reports the push version, or the live agent its bundle's own version string.
            "model_current": None if push is None else model_version in push["names"],
            "ruleset_version": versions(status.get("ruleset_version")),
            "rules_error": short_text(status.get("rules_error")),
            "rules": rules,
            "rules_current": all(r["current"] for r in rules) if rules else None,
        })  # fmt: skip
    return out


def latest_models(store: Store, limit: int = 200) -> dict[str, dict[str, Any]]:
    """"fleet/device" -> the newest model pushed to it: its version and the names a device may report."""
    out: dict[str, dict[str, Any]] = {}
    for push in store.models(limit):  # newest first
        names = {str(push["version"])}
        if isinstance(push["meta"], dict) and push["meta"].get("version") is not None:
            names.add(str(push["meta"]["version"]))
        for target in push["targets"]:
            out.setdefault(target, {"version": push["version"], "names": names})
    return out


def alerts(store: Store, q: AlertQuery) -> list[dict[str, Any]]:
    return store.alerts(q.fleet, q.device, q.cls, q.since, q.until, q.limit)


def bucket_for(span_s: float) -> int:
    """The smallest round bucket that keeps the chart within MAX_BUCKETS bars."""
    return next((b for b in BUCKETS_S if span_s / b <= MAX_BUCKETS), BUCKETS_S[-1])


def chart(store: Store, q: AlertQuery, now: float) -> dict[str, Any]:
    """Alerts per class per time bucket over the query's range (the last 24 h when it has none)."""
    until = q.until if q.until is not None else now
    since = q.since if q.since is not None else until - RANGES[DEFAULT_RANGE]
    bucket = bucket_for(until - since)
    start = math.floor(since / bucket) * bucket  # buckets on round times (UTC)
    n = max(1, math.ceil((until - start) / bucket))
    series: dict[str, list[int]] = {}
    for index, cls, count in store.alert_counts(bucket, start, until, q.fleet, q.device, q.cls):
        if 0 <= index < n:
            series.setdefault(cls, [0] * n)[index] += count
    return {"since": start, "until": until, "bucket_s": bucket, "buckets": n, "series": dict(sorted(series.items()))}


def blocks(store: Store, now: float) -> list[dict[str, Any]]:
    return [vars(b) for b in store.active_blocks(now)]


def rulesets(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """Rule set versions, newest first, each with its per-device acks and the devices yet to answer."""
    fleet_devices: dict[str, list[str]] = {}
    for d in store.devices():
        fleet_devices.setdefault(d["fleet"], []).append(d["device"])
    out = []
    for r in store.rulesets(limit=limit):
        acks = store.acks(r["fleet"], r["target"], r["version"])
        answered = {a["device"] for a in acks}
        expected = fleet_devices.get(r["fleet"], []) if r["target"] == ALL_DEVICES else [r["target"]]
        out.append(r | {"acks": acks, "pending": [d for d in expected if d not in answered]})
    return out


def models(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """Model pushes, newest first; each target with the model version its device reports now."""
    reported = {f"{d['fleet']}/{d['device']}": short_text((d["status"] or {}).get("model_version")) for d in store.devices()}
    out = []
    for push in store.models(limit):
        meta = push["meta"] if isinstance(push["meta"], dict) else {}
        names = {str(push["version"]), str(meta.get("version"))}
        out.append({
            "version": push["version"], "sha256": push["sha256"], "bytes": push["bytes"], "pushed_at": push["pushed_at"],
            "bundle_version": short_text(meta.get("version")),
            "targets": [{"target": t, "reported": reported.get(t), "installed": reported.get(t) in names} for t in push["targets"]],
        })  # fmt: skip
    return out


def rejected(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    return store.recent_rejected(limit)


def summary(store: Store, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows at once (one call per section)."""
    now = time.time() if now is None else now
    return {"devices": devices(store, now), "blocks": blocks(store, now), "rulesets": rulesets(store),
            "models": models(store), "rejected": rejected(store)}  # fmt: skip
