"""The dashboard's HTML: the login page and the fleet page, with the alerts chart as inline SVG.

Rendered on the server from the views of ``controller.fleet_view`` with ``controller.markup`` (escaped by
construction).  The page works without JavaScript; ``static/dashboard.js`` only refreshes the parts marked
``data-live``, shows times in the browser's zone and fills the time-zone field of the alert filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from agent.wire import ALERT_CLASSES
from controller.fleet_view import RANGES, AlertQuery
from controller.markup import Markup, el, esc, join, raw

# Class -> colour (colour-blind safe, Okabe-Ito); other class names take the rest in turn.
CLASS_COLOURS = {
    "mirai_ack": "#E69F00", "mirai_scan": "#56B4E9", "mirai_syn": "#009E73", "mirai_udp": "#0072B2",
    "mirai_udpplain": "#D55E00", "anomaly": "#CC79A7", "benign": "#999999",
}  # fmt: skip
SPARE_COLOURS = ("#F0E442", "#000000", "#882255", "#44AA99")
CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 960, 220, 44, 28, 10
PAGE_ALERTS, MORE_ALERTS = 25, 200  # alerts listed on the page, and after "show more"


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page: the token's name and role, and the session's CSRF token for its forms."""

    name: str
    role: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def utc(ts: float | None) -> Markup:
    """A time as <time>: UTC in the markup, the browser's zone once the script ran."""
    if ts is None:
        return esc("")
    when = datetime.fromtimestamp(ts, timezone.utc)
    return el("time", when.strftime("%Y-%m-%d %H:%M:%S UTC"), datetime=when.isoformat(timespec="seconds"))


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def size(value: Any) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:.0f} B"


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{max(seconds, 0):.0f} s ago"


def badge(text: str, kind: str) -> Markup:
    return el("span", text, class_=f"badge {kind}")


def table(headers: list[str], rows: list[list[Any]], empty: str, cls: str = "") -> Markup:
    """A table that becomes one card per row on a narrow screen (each cell labelled by its header)."""
    if not rows:
        return el("p", empty, class_="empty")
    head = el("thead", el("tr", [el("th", h, scope="col") for h in headers]))
    # One element per cell content: on a phone the cell is a flex row of its label and this, which may wrap.
    body = el("tbody", [el("tr", [el("td", el("div", cell), data_label=h) for h, cell in zip(headers, row)]) for row in rows])
    return el("div", el("table", head, body, class_=cls or None), class_="scroll")


def document(title: str, *body: Any, refresh_s: int = 0) -> bytes:
    page = raw("<!doctype html>") + el(
        "html",
        el("head",
           el("meta", charset="utf-8"),
           el("meta", name="viewport", content="width=device-width, initial-scale=1"),
           el("meta", name="color-scheme", content="light dark"),
           el("title", title),
           el("link", rel="stylesheet", href="/static/dashboard.css"),
           el("link", rel="icon", href="data:,"),  # no favicon request to answer with 404
           el("script", src="/static/dashboard.js", defer=True)),
        el("body", *body, data_refresh=refresh_s or None),
        lang="en",
    )  # fmt: skip
    return page.encode("utf-8")


# --- login -----------------------------------------------------------------------


def login_page(error: str | None = None) -> bytes:
    return document(
        "IoTGuard: log in",
        el("main",
           el("h1", "IoTGuard fleet"),
           el("form",
              el("label", "Access token", el("input", type="password", name="token", autocomplete="off", required=True,
                                             autofocus=True, spellcheck="false")),
              el("p", error, class_="error", role="alert") if error else None,
              el("button", "Log in", type="submit"),
              method="post", action="/login", class_="login"),
           el("p", "A token comes from ", el("code", "python -m controller token create --role viewer"),
              " on the controller's host.", class_="hint"),
           class_="narrow"),
    )  # fmt: skip


# --- the fleet page ---------------------------------------------------------------


def fleet_page(viewer: Viewer, view: dict[str, Any], query: AlertQuery, alerts: list[dict[str, Any]],
               chart: dict[str, Any], flash: str | None, refresh_s: int, params: dict[str, str] | None = None) -> bytes:  # fmt: skip
    devices = view["devices"]
    online = sum(d["online"] for d in devices)
    header = el("header",
                el("h1", "IoTGuard fleet"),
                el("span", viewer.name, " (", viewer.role, ")", class_="who"),
                el("form", csrf_field(viewer), el("button", "Log out", type="submit", class_="link"),
                   method="post", action="/logout"),
                class_="top")  # fmt: skip
    nav = el("nav", [el("a", label, href=f"#{anchor}") for anchor, label in (
        ("devices", "Devices"), ("alerts", "Alerts"), ("blocks", "Blocks"), ("rulesets", "Rule sets"),
        ("models", "Models"), ("rejected", "Refused"))])  # fmt: skip
    return document(
        "IoTGuard fleet",
        header, nav,
        el("main",
           el("p", flash, class_="flash", role="status") if flash else None,
           el("section",
              el("div", el("h2", "Devices ", el("small", f"{online} online of {len(devices)}")),
                 devices_table(devices), id="live-devices", data_live=True),
              id="devices"),
           el("section", el("h2", "Alerts"), alert_filters(query, devices),
              el("div", alert_chart(chart), alerts_table(alerts), more_alerts(alerts, query, params or {}),
                 id="live-alerts", data_live=True), id="alerts"),
           el("section", el("h2", "Active blocks"),
              el("div", blocks_table(view["blocks"], viewer), id="live-blocks", data_live=True), id="blocks"),
           el("section", el("h2", "Rule sets"),
              el("div", rulesets_table(view["rulesets"]), id="live-rulesets", data_live=True), id="rulesets"),
           el("section", el("h2", "Model pushes"),
              el("div", models_table(view["models"]), id="live-models", data_live=True), id="models"),
           el("section", el("h2", "Refused messages"),
              el("div", rejected_table(view["rejected"]), id="live-rejected", data_live=True), id="rejected")),
        refresh_s=refresh_s,
    )  # fmt: skip


def csrf_field(viewer: Viewer) -> Markup:
    return el("input", type="hidden", name="csrf", value=viewer.csrf)


def devices_table(devices: list[dict[str, Any]]) -> Markup:
    rows = []
    for d in devices:
        state = badge(d["state"], "ok" if d["online"] else "bad" if d["state"] == "offline" else "muted")
        rows.append([
            el("span", el("b", d["device"]), el("small", " ", d["fleet"])),
            state,
            [utc(d["last_heartbeat"]), el("small", " ", age(d["heartbeat_age_s"]))],
            fmt(d["packets_per_s"]), fmt(d["drops"]), "-" if d["cpu_percent"] is None else f"{d['cpu_percent']:.0f}%",
            size(d["rss_bytes"]), model_cell(d), rules_cell(d), fmt(d["alerts_queued"]),
        ])  # fmt: skip
    return table(["Device", "State", "Last heartbeat", "Packets/s", "Drops", "CPU", "RSS", "Model", "Rule sets",
                  "Alerts queued"], rows, "No device has reported yet.", "devices")  # fmt: skip


def model_cell(d: dict[str, Any]) -> Markup:
    parts: list[Any] = [d["model_version"] or "-"]
    if d["model_current"] is True:
        parts.append(badge("latest", "ok"))
    elif d["model_current"] is False:
        parts.append(badge(f"v{d['latest_model']} pending", "warn"))
    if d["model_error"]:
        parts.append(el("small", d["model_error"], class_="error"))
    return join(parts, " ")


def rules_cell(d: dict[str, Any]) -> Markup:
    if not d["rules"]:
        return esc("-")
    items = []
    for r in d["rules"]:
        if r["current"]:
            state = badge("applied", "ok")
        elif r["ack_status"] == "rejected":
            state = badge(f"v{r['acked']} rejected", "bad")
        else:
            state = badge("pending" if r["acked"] is None else f"at v{r['acked']}", "warn")
        items.append(el("div", r["target"], " v", r["latest"], " ", state,
                        el("small", " ", r["reason"], class_="error") if r["reason"] else None))  # fmt: skip
    if d["rules_error"]:
        items.append(el("small", d["rules_error"], class_="error"))
    return join(items)


def alert_filters(q: AlertQuery, devices: list[dict[str, Any]]) -> Markup:
    def options(values: list[str], chosen: str | None, anything: str) -> list[Markup]:
        return [el("option", anything, value="")] + [el("option", v, value=v, selected=v == chosen) for v in values]

    names = sorted({d["device"] for d in devices} | ({q.device} if q.device else set()))
    classes = list(ALERT_CLASSES) + ([q.cls] if q.cls and q.cls not in ALERT_CLASSES else [])
    ranges = [(k, f"last {k}") for k in RANGES] + [("all", "all time"), ("custom", "from/to below")]
    return el("form",
              el("label", "Device", el("select", options(names, q.device, "all devices"), name="device")),
              el("label", "Class", el("select", options(classes, q.cls, "all classes"), name="class")),
              el("label", "Time", el("select", [el("option", text, value=k, selected=k == q.range) for k, text in ranges],
                                     name="range")),
              el("label", "From", time_input("since", q.since, q.range)),
              el("label", "To", time_input("until", q.until, q.range)),
              el("input", type="hidden", name="tz", value="0"),
              el("input", type="hidden", name="fleet", value=q.fleet) if q.fleet else None,
              el("input", type="hidden", name="limit", value=q.limit) if q.limit != PAGE_ALERTS else None,
              el("button", "Filter", type="submit"),
              el("a", "clear", href="/#alerts"),
              method="get", action="/", class_="filters")  # fmt: skip


def time_input(name: str, ts: float | None, rng: str) -> Markup:
    """A custom time back into the form: in UTC with tz=0, which the script rewrites to the browser's zone
    (value and tz together, from data-ts)."""
    shown = ts if rng == "custom" else None
    value = None if shown is None else datetime.fromtimestamp(shown, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    return el("input", type="datetime-local", name=name, value=value, data_ts=None if shown is None else f"{shown:.0f}")


def colours(classes: list[str]) -> dict[str, str]:
    spare = iter(SPARE_COLOURS * (1 + len(classes) // len(SPARE_COLOURS)))
    return {c: CLASS_COLOURS.get(c) or next(spare) for c in classes}


def alert_chart(chart: dict[str, Any]) -> Markup:
    """Stacked bars of alerts per class per bucket, drawn here as SVG (no script, nothing fetched)."""
    series, n, bucket = chart["series"], chart["buckets"], chart["bucket_s"]
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    top = max(totals, default=0)
    scale = nice_ceiling(top)
    plot_w, plot_h = CHART_W - PAD_L - 4, CHART_H - PAD_B - PAD_T
    bar_w = plot_w / n
    palette = colours(list(series))
    shapes: list[Markup] = []
    for frac in (0.0, 0.5, 1.0):  # grid lines and the y scale
        y = PAD_T + plot_h * (1 - frac)
        shapes.append(el("line", x1=PAD_L, x2=CHART_W - 4, y1=f"{y:.1f}", y2=f"{y:.1f}", class_="grid"))
        shapes.append(el("text", fmt(round(scale * frac)), x=PAD_L - 6, y=f"{y + 4:.1f}", text_anchor="end"))
    for i in range(n):
        y = PAD_T + plot_h
        start = chart["since"] + i * bucket
        for cls, counts in series.items():
            if not counts[i]:
                continue
            h = plot_h * counts[i] / scale
            y -= h
            label = f"{cls}: {counts[i]} alert{'s' if counts[i] != 1 else ''} from {short_time(start, bucket)} UTC"
            shapes.append(el("rect", el("title", label), x=f"{PAD_L + i * bar_w + bar_w * 0.1:.1f}", y=f"{y:.1f}",
                             width=f"{max(bar_w * 0.8, 1):.1f}", height=f"{h:.1f}", fill=palette[cls]))  # fmt: skip
    for i in sorted({0, n // 4, n // 2, 3 * n // 4, n}):  # x labels: start, quarters, end
        anchor = "start" if i == 0 else "end" if i == n else "middle"
        shapes.append(el("text", short_time(chart["since"] + i * bucket, bucket), x=f"{PAD_L + i * bar_w:.1f}",
                         y=CHART_H - 8, text_anchor=anchor))  # fmt: skip
    total = sum(totals)
    title = f"Alerts per class, {total} in all, bars of {bucket_name(bucket)} (UTC)"
    svg = el("svg", el("title", title), shapes, viewBox=f"0 0 {CHART_W} {CHART_H}", role="img", aria_label=title,
             class_="chart", preserveAspectRatio="xMidYMid meet")  # fmt: skip
    legend = el("ul", [el("li", el("svg", el("rect", width=12, height=12, fill=palette[c]), viewBox="0 0 12 12",
                                   class_="swatch", aria_hidden="true"), f" {c} ({sum(series[c])})") for c in series],
                class_="legend")  # fmt: skip
    caption = el("p", f"{total} alerts, bars of {bucket_name(bucket)}, from ", utc(chart["since"]), " to ",
                 utc(chart["until"]), class_="caption")  # fmt: skip
    return el("figure", svg, legend if series else el("p", "No alerts in this range.", class_="empty"), caption)


def nice_ceiling(value: int) -> int:
    """1, 2 or 5 times a power of ten, at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def bucket_name(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} s"


def short_time(ts: float, bucket: int) -> str:
    when = datetime.fromtimestamp(ts, timezone.utc)
    return when.strftime("%m-%d" if bucket >= 86400 else "%m-%d %H:%M" if bucket >= 3600 * 3 else "%H:%M")


def endpoint(ip: Any, port: Any) -> str:
    if ip is None:
        return "-"
    text = f"[{ip}]" if ":" in str(ip) and port is not None else str(ip)
    return text if port is None else f"{text}:{port}"


def alerts_table(alerts: list[dict[str, Any]]) -> Markup:
    rows = [[
        utc(a["received_at"]), el("span", a["device"], el("small", " ", a["fleet"])), el("span", a["class"], class_="cls"),
        f"{a['confidence']:.2f}", [endpoint(a["source_ip"], a["source_port"]), el("small", " ", a["source_mac"] or "")],
        endpoint(a["victim_ip"], a["victim_port"]), fmt(a["packets"]), a["action"],
    ] for a in alerts]  # fmt: skip
    return table(["Received", "Device", "Class", "Confidence", "Source", "Victim", "Packets", "Action"], rows,
                 "No alerts match.", "alerts")  # fmt: skip


def more_alerts(alerts: list[dict[str, Any]], q: AlertQuery, params: dict[str, str]) -> Markup | None:
    """The list stops at the query's limit: say so, and link to a longer one with the same filters."""
    if len(alerts) < q.limit:
        return None
    more = urlencode({**params, "limit": MORE_ALERTS}) if q.limit < MORE_ALERTS else None
    return el("p", f"The newest {q.limit} alerts. ", el("a", f"Show {MORE_ALERTS}", href=f"/?{more}#alerts") if more else None,
              class_="caption")  # fmt: skip


def blocks_table(blocks: list[dict[str, Any]], viewer: Viewer) -> Markup:
    rows = []
    for b in blocks:
        action = (el("form", csrf_field(viewer), el("input", type="hidden", name="fleet", value=b["fleet"]),
                     el("input", type="hidden", name="source", value=b["source"]),
                     el("button", "Unblock", type="submit", class_="danger"),
                     method="post", action="/unblock", class_="inline")
                  if viewer.admin else el("small", "admin only"))  # fmt: skip
        rows.append([b["fleet"], el("code", b["source"]), b["origin"], b["reason"], utc(b["created_at"]),
                     utc(b["expires"]) if b["expires"] else "never", action])  # fmt: skip
    return table(["Fleet", "Source", "Origin", "Reason", "Since", "Expires", ""], rows, "Nothing is blocked.", "blocks")


def rulesets_table(rulesets: list[dict[str, Any]]) -> Markup:
    rows = []
    for r in rulesets:
        acks = [el("li", a["device"], " ", badge(a["status"], "ok" if a["status"] == "applied" else "bad"), " ",
                   utc(a["received_at"]), el("small", " ", a["reason"], class_="error") if a["reason"] else None)
                for a in r["acks"]] + [el("li", d, " ", badge("pending", "warn")) for d in r["pending"]]  # fmt: skip
        summary = f"{r['applied']} applied, {r['rejected']} rejected, {len(r['pending'])} pending"
        detail = el("details", el("summary", summary), el("ul", acks, class_="acks")) if acks else summary
        rows.append([r["fleet"], r["target"], r["version"], utc(r["issued_at"]), r["rules"], detail])
    return table(["Fleet", "Target", "Version", "Issued", "Rules", "Acknowledgements"], rows, "No rule set issued yet.")


def models_table(models: list[dict[str, Any]]) -> Markup:
    rows = []
    for m in models:
        targets = [el("li", t["target"], " ", badge("installed", "ok") if t["installed"] else
                      badge(f"reports {t['reported'] or 'nothing'}", "warn")) for t in m["targets"]]  # fmt: skip
        rows.append([m["version"], m["bundle_version"] or "-", size(m["bytes"]), el("code", m["sha256"][:12]),
                     utc(m["pushed_at"]), el("ul", targets, class_="acks")])  # fmt: skip
    return table(["Version", "Bundle", "Size", "sha256", "Pushed", "Devices"], rows, "No model pushed yet.")


def rejected_table(rejected: list[dict[str, Any]]) -> Markup:
    rows = [[utc(r["received_at"]), el("code", r["topic"]), r["reason"]] for r in rejected]
    return table(["Received", "Topic", "Reason"], rows, "None.")
