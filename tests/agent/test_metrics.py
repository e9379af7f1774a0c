"""/metrics: the live agent's counters in Prometheus's text format, scraped over HTTP and parsed here.

The agent runs the real pipeline on the bundled capture (frames handed to ``process()``, no root needed);
one test runs ``python -m agent run`` on the loopback interface as root.  The parser below is strict: every
sample's family has its HELP and TYPE line first, label values are unescaped as the format says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from agent.capture.packets import LABELS
from agent.config import EventsConfig, MqttConfig
from agent.metrics import Listen, MetricsError, MetricsServer, parse_listen
from controller.broker import free_port
from lab import REPO
from lab.live_lab import feed_capture, offline_agent
from lab.mqtt_helpers import wait_until

# --- a small parser of the text format (version 0.0.4) ---------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(rf"^(?P<name>{NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text: str) -> dict[str, str]:
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"malformed labels at {text[pos:]!r}"
        assert m[1] not in labels, f"label {m[1]} twice"
        labels[m[1]] = re.sub(r"\\(.)", lambda e: UNESCAPE[e[1]], m[2])
        pos = m.end()
    return labels


@dataclass
class Scrape:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        found = [v for got, v in self.samples.get("iotguard_agent_" + name, []) if got == labels]
        assert len(found) == 1, f"{name}{labels}: {self.samples.get('iotguard_agent_' + name)}"
        return found[0]

    def total(self, name: str) -> float:
        return sum(v for _, v in self.samples["iotguard_agent_" + name])


def parse_prometheus(text: str) -> Scrape:
    assert text.endswith("\n"), "the page must end with a line feed"
    out = Scrape()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in out.helps, f"HELP of {name} twice"
            out.helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name not in out.types and kind in ("counter", "gauge"), line
            out.types[name] = kind
        else:
            m = SAMPLE_RE.match(line)
            assert m, f"not a sample line: {line!r}"
            name = m["name"]
            assert name in out.helps and name in out.types, f"{name} before its HELP and TYPE"
            labels = parse_labels(m["labels"] or "")
            series = out.samples.setdefault(name, [])
            assert labels not in [s for s, _ in series], f"series {name}{labels} twice"
            series.append((labels, float(m["value"])))
    for name, kind in out.types.items():
        assert name.startswith("iotguard_agent_"), name
        assert (kind == "counter") == name.endswith("_total"), f"{name} is a {kind}"
    return out


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(agent) -> Scrape:
    host, port = agent.metrics.address
    status, content_type, body = get(f"http://{host}:{port}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
    return parse_prometheus(body)


# --- the parser itself must be able to fail --------------------------------------------------


@pytest.mark.parametrize("page", [
    "iotguard_agent_x_total 1\n",  # no HELP/TYPE
    "# HELP iotguard_agent_x a\n# TYPE iotguard_agent_x gauge\niotguard_agent_x{v=\"a\"b\"} 1\n",  # bare quote
    "# HELP iotguard_agent_x a\n# TYPE iotguard_agent_x gauge\niotguard_agent_x 1",  # no final line feed
    "# HELP iotguard_agent_x a\n# TYPE iotguard_agent_x counter\niotguard_agent_x 1\n",  # counter without _total
])  # fmt: skip
def test_the_parser_refuses_broken_pages(page):
    with pytest.raises(AssertionError):
        parse_prometheus(page)


# --- the agent ---------------------------------------------------------------------------------


def test_metrics_of_the_live_pipeline_on_the_bundled_capture(tmp_path):
    agent = offline_agent(tmp_path / "state", metrics=Listen("127.0.0.1", 0))
    agent.metrics.start()
    try:
        before = scrape(agent)
        assert before.value("frames_captured_total") == 0 and before.total("verdicts_total") == 0
        assert before.value("model_info", version=agent.classifier.bundle.version, runtime=agent.classifier.runtime) == 1

        feed_capture(agent, batches=5)
        agent.housekeeping(force=True)
        first = scrape(agent)
        feed_capture(agent, skip=5)
        agent.housekeeping(force=True)
        second = scrape(agent)
        c = agent.counters

        # Every family says what it is.
        for name in ("frames_captured_total", "packets_total", "verdicts_total", "rules_active", "uptime_seconds",
                     "resident_memory_bytes", "cpu_seconds_total", "model_info", "under_attack"):
            assert second.helps["iotguard_agent_" + name] and "iotguard_agent_" + name in second.types
        assert second.types["iotguard_agent_packets_total"] == "counter"
        assert second.types["iotguard_agent_rules_active"] == "gauge"
        # Counters grow with the traffic, and say what the agent counted.
        assert 0 < first.value("frames_captured_total") < second.value("frames_captured_total") == c.frames
        assert second.value("packets_decoded_total") == c.decoded and second.value("packets_filtered_total") == c.filtered
        for k, name in enumerate(LABELS):
            assert first.value("packets_total", **{"class": name}) <= second.value("packets_total", **{"class": name})
            assert second.value("packets_total", **{"class": name}) == c.per_class[k]
        assert second.total("packets_total") == c.classified > first.total("packets_total")
        assert second.total("verdicts_total") == c.verdicts > 0
        assert second.value("verdicts_total", **{"class": "mirai_udpplain", "basis": "headers"}) >= 1
        assert second.value("verdicts_total", **{"class": "mirai_ack", "basis": "model"}) >= 1
        assert second.value("rules_active", origin="local") == agent.rules.count("local") > 0
        assert second.value("rules_active", origin="fleet") == 0
        assert second.value("under_attack") == 1
        assert second.value("resident_memory_bytes") > 10e6 and second.value("cpu_seconds_total") > 0
        assert second.value("uptime_seconds") >= first.value("uptime_seconds") > 0
        assert "iotguard_agent_kernel_drops_total" not in second.samples  # no capture ring: nothing to report
        assert "iotguard_agent_alerts_sent_total" not in second.samples  # no fleet link

        # A hostile model version (it comes with a pushed bundle) cannot break the page.
        hostile = 'v2"} 1\n# TYPE x counter\\n\\'
        agent.classifier.bundle.meta["version"] = hostile
        third = scrape(agent)
        assert third.value("model_info", version=hostile, runtime=agent.classifier.runtime) == 1

        # Anything but /metrics is a 404; a query string is fine.
        host, port = agent.metrics.address
        assert get(f"http://{host}:{port}/")[0] == 404 and get(f"http://{host}:{port}/metrics/x")[0] == 404
        assert get(f"http://{host}:{port}/metrics?name[]=x")[0] == 200
    finally:
        agent.metrics.stop()


def test_fleet_alert_metrics_follow_the_alert_queue(broker, keys, tmp_path):
    mqtt = MqttConfig(host=broker.host, port=broker.port, fleet="lab", device="dev1", state_dir=tmp_path / "mqtt",
                      controller_public_key=keys.public, status_interval_s=3600)  # fmt: skip
    agent = offline_agent(tmp_path / "state", mqtt=mqtt, metrics=Listen("127.0.0.1", 0),
                          events=EventsConfig(tmp_path / "events.jsonl"))  # fmt: skip
    agent.metrics.start()
    agent.fleet.start()
    try:
        wait_until(lambda: agent.fleet.client.ready, "the fleet link connected")
        assert scrape(agent).value("fleet_connected") == 1
        alerts = [a for a in feed_capture(agent) if a["source"]["ip"] != "spoofed"]
        assert alerts
        wait_until(lambda: agent.fleet.summary()["alerts_sent"] == len(alerts), "alerts acknowledged by the broker")
        s = scrape(agent)
        assert s.value("alerts_queued_total") == s.value("alerts_sent_total") == len(alerts)
        assert s.value("alert_queue_depth") == 0 and s.value("alerts_dropped_total") == 0
        assert s.value("alerts_confirmed_total") == 0  # no controller here to confirm them
        assert s.value("events_written_total") == agent.events.written > 0 and s.value("event_write_failures_total") == 0

        # The Grafana dashboard plots what agents serve (the ring's drops need a capture: the root test).
        grafana = json.loads((REPO / "docs" / "grafana-agent.json").read_text())
        exprs = [t["expr"] for p in grafana["panels"] for t in p["targets"]] + [
            v["definition"] for v in grafana["templating"]["list"] if "definition" in v]  # fmt: skip
        used = set(re.findall(r"iotguard_agent_\w+", " ".join(exprs)))
        assert used - set(s.types) == {"iotguard_agent_kernel_drops_total"}, used - set(s.types)
        assert len(used) >= 15
    finally:
        agent.fleet.stop()
        agent.metrics.stop()


def test_an_address_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            MetricsServer(Listen("127.0.0.1", port), lambda: []).start()


@pytest.mark.parametrize(("text", "want"), [
    ("9464", Listen("127.0.0.1", 9464)), (":9464", Listen("127.0.0.1", 9464)), (9464, Listen("127.0.0.1", 9464)),
    ("0.0.0.0:80", Listen("0.0.0.0", 80)), ("[::1]:9464", Listen("::1", 9464)), ("board.lan:1", Listen("board.lan", 1)),
])  # fmt: skip
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["0", "65536", "-1", "x", "", "::1:9464", "host:", "a b:80", "１２３", True])
def test_bad_listen_addresses_are_refused(text):
    with pytest.raises(ValueError):
        parse_listen(text)


# --- the real command, as root ---------------------------------------------------------------


@pytest.mark.slow
def test_agent_run_serves_metrics_and_writes_events_on_loopback(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("capturing on lo needs root (CAP_NET_RAW)")
    port = free_port()
    events = tmp_path / "events.jsonl"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    log = open(tmp_path / "agent.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--profile", "x86_64-gateway", "--interface", "lo", "--enforcement",
         "none", "--config", str(config), "--metrics", f"127.0.0.1:{port}", "--events", str(events)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO,
    )  # fmt: skip
    try:
        def page() -> Scrape | None:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            try:
                status, _, body = get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None
            return parse_prometheus(body) if status == 200 else None

        first = wait_until(page, "the agent's metrics endpoint", timeout=60)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for k in range(200):
                s.sendto(b"x" * 64, ("127.0.0.1", 9))
                time.sleep(0.001)
        second = wait_until(lambda: (p := page()) and p.value("frames_captured_total") >= 200 and p, "frames counted")
        assert second.value("frames_captured_total") > first.value("frames_captured_total")
        assert second.value("kernel_drops_total") == 0
        assert second.value("uptime_seconds") > first.value("uptime_seconds")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "agent.log").read_text()
        log.close()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in lines][0] == "agent_started" and lines[-1]["event"] == "agent_stopped"
    assert lines[0]["interface"] == "lo" and lines[-1]["frames"] >= 200
    assert lines[0]["device"] == socket.gethostname()
