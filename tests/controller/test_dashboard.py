"""The controller's dashboard, JSON API and /metrics against a live controller on a real mosquitto: tokens and
roles, the unblock action (a signed rule set the agents apply), cross-site requests, escaping, the
Prometheus text."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

from agent.wire import canonical_json, open_envelope, parse_ruleset, topic
from controller.metrics import Metrics, ProcessView
from controller.oneshot import fleet_rules
from controller.service import BrokerSettings
from controller.store import Store
from lab import REPO
from lab.dashboard_lab import DashboardLab, WebClient
from lab.mqtt_helpers import FLEET, Listener, alert, make_agent, needs_mosquitto, wait_until

PREFIX = "iotguard/v1"
API = ("/api/devices", "/api/alerts", "/api/blocks", "/api/rulesets", "/api/models", "/metrics")
HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture
def lab(request, broker, keys, tmp_path):
    """The controller and its dashboard on SQLite, or on PostgreSQL where a test is parametrized with
    ``indirect=["lab"]``."""
    db = request.getfixturevalue("postgres_db") if getattr(request, "param", "sqlite") == "postgresql" else None
    lab = DashboardLab.start(broker.host, broker.port, tmp_path, keys.private, db=db, k_devices=99)
    wait_until(lab.controller.ready.is_set, "controller connected")
    yield lab
    lab.stop()


@pytest.fixture
def two_agents(broker, keys, tmp_path):
    """Devices dev1 and dev2 connected to the broker: (agent client, its applied rules) each."""
    agents = [make_agent(broker.host, broker.port, tmp_path / d, d, keys.trusted) for d in ("dev1", "dev2")]
    for a, _ in agents:
        a.start()
    try:
        wait_until(lambda: all(a.ready for a, _ in agents), "agents connected")
        yield agents
    finally:
        for a, _ in agents:
            a.stop()


def block(broker, keys, db, *sources: str) -> int:
    """Block sources as ``controller block`` does; the version of the last rule set."""
    with fleet_rules(lambda: Store(db), _key(keys), PREFIX,
                     BrokerSettings(broker.host, broker.port), "test-block") as rules:  # fmt: skip
        return [rules.block(FLEET, s, "seen scanning", None) for s in sources][-1].version


def _key(keys):
    from agent.wire import load_private_key

    return load_private_key(keys.private)


# --- tokens and roles --------------------------------------------------------------


def test_without_a_valid_token_the_api_says_401_and_the_page_sends_to_the_login(lab):
    web = lab.client()
    for path in API:
        for token in (None, "iotg_not-a-token", lab.viewer + "x", "Basic " + lab.viewer):
            done = web.get(path, token=token)
            assert done.status == 401, (path, token, done.status)
            assert done.headers["www-authenticate"].startswith("Bearer") and "error" in done.json()
        assert web.get(path, token=lab.viewer).status == 200, path
    page = web.get("/")
    assert page.status == 303 and page.headers["location"] == "/login"
    login = web.get("/login")
    assert login.status == 200 and 'name="token"' in login.text and 'type="password"' in login.text
    assert 'name="viewport"' in login.text
    # A revoked token stops working at once, also for the sessions it opened.
    (viewer_id,) = [t.id for t in lab.tokens.list() if t.role == "viewer"]
    assert web.login(lab.viewer).status == 303 and web.get("/").status == 200
    assert lab.tokens.revoke(viewer_id)
    assert web.get("/api/devices", token=lab.viewer).status == 401
    assert web.get("/").status == 303, "the session of a revoked token still works"
    bad = lab.client().login("iotg_wrong")
    assert bad.status == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers


@pytest.mark.parametrize("lab", ["sqlite", "postgresql"], indirect=True)
def test_devices_and_alerts_with_their_filters(lab, two_agents):
    agents = two_agents
    web = lab.client()
    agents[0][0].publish_status(packets_per_s=12.5, drops=3, model_version="bundle-7")
    agents[0][0].send_alert(alert("203.0.113.5", "mirai_syn"))
    agents[0][0].send_alert(alert("203.0.113.6", "mirai_udp"))
    agents[1][0].send_alert(alert("203.0.113.5", "mirai_scan"))
    wait_until(lambda: len(web.get("/api/alerts", lab.viewer).json()["alerts"]) == 3, "3 alerts listed")

    def devices():
        return {d["device"]: d for d in web.get("/api/devices", lab.viewer).json()["devices"]}

    d1 = wait_until(lambda: (d := devices().get("dev1")) and d["packets_per_s"] == 12.5 and d, "dev1's heartbeat")
    assert d1["online"] and d1["state"] == "online" and d1["drops"] == 3 and d1["model_version"] == "bundle-7"
    assert abs(d1["last_heartbeat"] - time.time()) < 60 and d1["rules"] == [] and d1["rules_current"] is None

    def count(**params):
        query = "&".join(f"{k}={v}" for k, v in params.items())
        done = web.get(f"/api/alerts?{query}", lab.viewer)
        assert done.status == 200, done.text
        return len(done.json()["alerts"])

    assert count(device="dev1") == 2 and count(device="dev2") == 1
    assert count(**{"class": "mirai_udp"}) == 1 and count(device="dev2", **{"class": "mirai_syn"}) == 0
    assert count(fleet=FLEET, range="1h") == 3 and count(fleet="other") == 0
    iso = datetime.fromtimestamp(time.time() + 3600, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    assert count(since=iso) == 0 and count(until=f"{time.time() - 3600:.0f}") == 0
    assert count(since=f"{time.time() - 60:.0f}", until=iso) == 3
    assert web.get("/api/alerts?since=yesterday", lab.viewer).status == 400
    chart = web.get("/api/alerts?device=dev1", lab.viewer).json()["chart"]
    assert {c: sum(s) for c, s in chart["series"].items()} == {"mirai_syn": 1, "mirai_udp": 1}
    assert chart["buckets"] in (48, 49) and chart["bucket_s"] == 1800  # 24 h in half hours, from a round time

    agents[1][0].stop()
    wait_until(lambda: devices()["dev2"]["state"] == "offline", "dev2 offline (its last status)")
    assert not devices()["dev2"]["online"]


# --- unblock ----------------------------------------------------------------------------


@pytest.mark.parametrize("lab", ["sqlite", "postgresql"], indirect=True)
def test_viewers_cannot_unblock_and_an_admin_unblock_publishes_a_signed_rule_set(lab, broker, keys, tmp_path):
    agent, recorder = make_agent(broker.host, broker.port, tmp_path / "dev1", "dev1", keys.trusted)
    agent.start()
    retained = Listener(broker.host, broker.port, [topic(PREFIX, FLEET, "all", "rules")])
    web = lab.client()
    try:
        wait_until(lambda: agent.ready, "agent connected")
        first = block(broker, keys, lab.controller.config.db, "192.0.2.0/24", "198.51.100.7")
        wait_until(lambda: recorder.versions()[-1:] == [first], "agent applied the blocks")
        blocks = web.get("/api/blocks", lab.viewer).json()["blocks"]
        assert sorted(b["source"] for b in blocks) == ["192.0.2.0/24", "198.51.100.7/32"]

        refused = web.request("POST", "/api/unblock", lab.viewer, body={"fleet": FLEET, "source": "192.0.2.0/24"})
        assert refused.status == 403 and "admin" in refused.json()["error"]
        assert lab.tokens.store.count("rulesets") == 2 and len(web.get("/api/blocks", lab.viewer).json()["blocks"]) == 2

        done = web.request("POST", "/api/unblock", lab.admin, body={"fleet": FLEET, "source": "192.0.2.0/24"})
        assert done.status == 200, done.text
        version = done.json()["version"]
        assert version > first and done.json()["rules"] == 1
        # The device took it: signature, fleet, target and a newer version checked by the agent.
        wait_until(lambda: recorder.versions()[-2:] == [first, version], "agent applied the unblock")
        assert [str(r.network) for r in recorder.applied[-1].rules] == ["198.51.100.7/32"]
        # And the retained message itself opens with the controller's key and parses as the wire's rule set.
        wait_until(lambda: retained.messages and parse_ruleset(open_envelope(retained.messages[-1][1], keys.trusted)).version == version,
                   "the retained rule set is the new one")  # fmt: skip
        assert [b["source"] for b in web.get("/api/blocks", lab.viewer).json()["blocks"]] == ["198.51.100.7/32"]
        wait_until(lambda: web.get("/api/rulesets", lab.viewer).json()["rulesets"][0]["applied"] == 1, "the ack listed")
        newest = web.get("/api/rulesets", lab.viewer).json()["rulesets"][0]
        assert newest["version"] == version and [(a["device"], a["status"]) for a in newest["acks"]] == [("dev1", "applied")]
        assert newest["pending"] == []
        dev1 = web.get("/api/devices", lab.viewer).json()["devices"][0]
        assert dev1["rules"][0]["latest"] == version and dev1["rules_current"] is True

        again = web.request("POST", "/api/unblock", lab.admin, body={"fleet": FLEET, "source": "192.0.2.0/24"})
        assert again.status == 404 and "not blocked" in again.json()["error"]
        assert web.request("POST", "/api/unblock", lab.admin, body={"fleet": FLEET, "source": "nope"}).status == 400
        assert web.request("POST", "/api/unblock", lab.admin, body={"fleet": "a/b", "source": "192.0.2.1"}).status == 400
        assert lab.tokens.store.count("rulesets") == 3, "a refused unblock issued a rule set"
    finally:
        retained.close()
        agent.stop()


def test_an_unblock_the_broker_does_not_take_changes_nothing(lab, broker, keys, tmp_path):
    block(broker, keys, lab.controller.config.db, "192.0.2.9")
    lab.server.backend.broker = BrokerSettings(broker.host, 1)  # nothing listens there
    done = lab.client().request("POST", "/api/unblock", lab.admin, body={"fleet": FLEET, "source": "192.0.2.9"})
    assert done.status == 503 and "nothing changed" in done.json()["error"]
    assert lab.tokens.store.count("rulesets") == 1 and lab.tokens.store.count("blocks") == 1


def test_cross_site_requests_are_refused(lab, broker, keys, tmp_path):
    block(broker, keys, lab.controller.config.db, "192.0.2.0/24")
    web = lab.client()
    login = web.login(lab.admin)
    cookie = login.headers["set-cookie"]
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Strict", "Path=/")), cookie
    assert web.csrf, "the page carries a CSRF token"
    form = {"fleet": FLEET, "source": "192.0.2.0/24", "csrf": web.csrf}
    # The session cookie alone does nothing: another origin, another site, or no CSRF token is refused.
    for headers, fields in (
        ({"Origin": "http://evil.example"}, form),
        ({"Origin": f"http://evil.example:{web.port}"}, form),
        ({"Origin": "null"}, form),
        ({"Origin": web.origin, "Sec-Fetch-Site": "cross-site"}, form),
        ({"Origin": web.origin}, {**form, "csrf": "forged"}),
        ({"Origin": web.origin}, {k: v for k, v in form.items() if k != "csrf"}),
    ):
        done = web.request("POST", "/unblock", form=fields, headers=headers)
        assert done.status == 403, (headers, fields, done.status)
    api = web.request("POST", "/api/unblock", body={"fleet": FLEET, "source": "192.0.2.0/24"}, headers={"Origin": web.origin})
    assert api.status == 403 and "CSRF" in api.json()["error"], "the API with only the cookie"
    api = web.request("POST", "/api/unblock", lab.admin, body={"fleet": FLEET, "source": "192.0.2.0/24"},
                      headers={"Origin": "http://evil.example"}, cookie=False)  # fmt: skip
    assert api.status == 403, "a bearer request sent from another origin"
    assert web.request("POST", "/login", form={"token": lab.admin}, headers={"Origin": "http://evil.example"},
                       cookie=False).status == 403  # fmt: skip
    assert lab.tokens.store.count("blocks") == 1 and lab.tokens.store.count("rulesets") == 1

    done = web.request("POST", "/unblock", form=form, headers={"Origin": web.origin, "Sec-Fetch-Site": "same-origin"})
    assert done.status == 303 and done.headers["location"] == "/#blocks"
    assert lab.tokens.store.count("blocks") == 0 and lab.tokens.store.count("rulesets") == 2
    assert "Unblocked 192.0.2.0/24 in fleet lab" in web.get("/").text
    # A viewer's session may not unblock even with its own CSRF token.
    block(broker, keys, lab.controller.config.db, "192.0.2.1")
    viewer = lab.client()
    viewer.login(lab.viewer)
    page = viewer.get("/").text
    assert "192.0.2.1/32" in page and "admin only" in page and "Unblock</button>" not in page
    assert "Unblock</button>" in web.get("/").text
    done = viewer.request("POST", "/unblock", form={**form, "source": "192.0.2.1", "csrf": viewer.csrf},
                          headers={"Origin": viewer.origin})  # fmt: skip
    assert done.status == 403 and lab.tokens.store.count("blocks") == 1
    logout = web.request("POST", "/logout", form={"csrf": web.csrf}, headers={"Origin": web.origin})
    assert logout.status == 303 and "Max-Age=0" in logout.headers["set-cookie"]
    assert web.get("/").status == 303


# --- escaping -------------------------------------------------------------------------------


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_hostile_strings_are_escaped_everywhere_on_the_page(lab, broker, keys, tmp_path):
    # What MQTT lets a device say: any text in its status, and another device's name in its messages.
    pub = Listener(broker.host, broker.port, [])
    status = {"schema": "iotguard.status/1", "state": "online", "device": "dev1", "fleet": FLEET,
              "packets_per_s": HOSTILE, "model_version": HOSTILE, "rules_error": HOSTILE, "model_error": HOSTILE,
              "ruleset_version": {HOSTILE: HOSTILE}, "rss_bytes": "<b>1</b>"}  # fmt: skip
    pub.publish(topic(PREFIX, FLEET, "dev1", "status"), canonical_json(status))
    forged = {**alert("192.0.2.50"), "schema": "iotguard.alert/1", "device": HOSTILE, "fleet": FLEET, "seq": 1}
    pub.publish(topic(PREFIX, FLEET, "dev1", "alerts"), canonical_json(forged))
    pub.publish(f"{PREFIX}/{FLEET}/{HOSTILE}/alerts", canonical_json(forged))
    pub.close()
    # And what a database could hold beyond the wire's checks (another controller's, an older version's).
    store = lab.tokens.store
    store.set_status(FLEET, HOSTILE, {"state": "online", "schema": "x", "device": HOSTILE, "fleet": FLEET}, time.time())
    store.add_alert({"fleet": HOSTILE, "device": HOSTILE, "seq": 1, "class": HOSTILE, "confidence": 0.9,
                     "source": {"ip": HOSTILE, "mac": HOSTILE, "port": None}, "victim": {"ip": HOSTILE},
                     "packets": 1, "first_seen": 0, "last_seen": 0, "action": HOSTILE, "rule_id": HOSTILE,
                     "sent_at": 0}, time.time())  # fmt: skip
    block(broker, keys, lab.controller.config.db, "192.0.2.0/24")
    with store.transaction() as db:
        db.execute("UPDATE blocks SET reason=?", (HOSTILE,))
        db.execute("INSERT INTO acks VALUES (?, ?, 'all', 1, 'rejected', ?, ?)", (FLEET, HOSTILE, HOSTILE, time.time()))
    store.add_model(5, "ab" * 32, 10, {"version": HOSTILE}, time.time(), [f"{FLEET}/{HOSTILE}"])
    wait_until(lambda: store.count("rejected") == 2 and any(d["device"] == "dev1" for d in store.devices()),
               "the device's messages stored")  # fmt: skip

    web = lab.client()
    web.login(lab.admin)
    for path in ("/", "/?" + urlencode({"device": HOSTILE, "class": HOSTILE, "range": "all"})):
        page = web.get(path)
        assert page.status == 200
        assert HOSTILE not in page.text and "<b>1</b>" not in page.text
        assert page.text.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 10
        parser = Tags()
        parser.feed(page.text)
        assert not {t for t, _ in parser.tags} & {"img", "iframe", "object", "embed"}
        assert [a for t, a in parser.tags if t == "script"] == [{"src": "/static/dashboard.js", "defer": None}]
        assert not [(t, a) for t, a in parser.tags for name in a if name.startswith("on")], "an event handler attribute"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and page.headers["x-content-type-options"] == "nosniff"
    # The API hands out JSON, never HTML, and gives the device's non-numbers as no number at all.
    devices = {d["device"]: d for d in web.get("/api/devices", lab.viewer).json()["devices"]}
    assert devices["dev1"]["packets_per_s"] is None and devices["dev1"]["rss_bytes"] is None
    assert devices["dev1"]["model_version"] == HOSTILE and devices["dev1"]["ruleset_version"] == {}


# --- metrics ---------------------------------------------------------------------------------


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prometheus(text: str) -> dict[str, dict]:
    """The text format 0.0.4, strictly: families with HELP and TYPE before their samples, label values
    escaped, values numbers; histograms with cumulative buckets ending at +Inf equal to _count."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families and help_text, line
            families[name] = {"help": help_text, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert families[name]["type"] is None and kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            families[name]["type"] = kind
        else:
            assert not line.startswith("#") and line.strip(), f"unexpected line {line!r}"
            found = SAMPLE.match(line)
            assert found, f"not a sample: {line!r}"
            name, label_text, value = found.groups()
            labels, rest = {}, label_text or ""
            while rest:
                pair = LABEL.match(rest)
                assert pair, f"bad labels in {line!r}"
                labels[pair.group(1)] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), pair.group(2))
                rest = rest[pair.end():]
            family = next(f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in families)
            kind = families[family]["type"]
            assert kind is not None, f"{name} before its TYPE"
            assert name == family or kind == "histogram", line
            if kind == "counter":
                assert family.endswith("_total")
            families[family]["samples"].append((name, labels, float(value)))
    for family, f in families.items():
        if f["type"] == "histogram":
            buckets = [(float(lab["le"]), v) for n, lab, v in f["samples"] if n.endswith("_bucket")]
            assert buckets and buckets[-1][0] == math.inf and [b for b, _ in buckets] == sorted(b for b, _ in buckets)
            assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "buckets not cumulative"
            (count,) = [v for n, _, v in f["samples"] if n == f"{family}_count"]
            assert buckets[-1][1] == count
    return families


def value(families: dict, family: str, suffix: str = "", **labels: str) -> float:
    return sum(v for n, lab, v in families[family]["samples"] if n == family + suffix and labels.items() <= lab.items())


@pytest.mark.parametrize("lab", ["sqlite", "postgresql"], indirect=True)
def test_metrics_parse_as_prometheus_text_and_count_the_fleet(lab, two_agents, broker, keys):
    agents = two_agents
    web = lab.client()
    for source, cls in (("203.0.113.1", "mirai_syn"), ("203.0.113.2", "mirai_syn"), ("203.0.113.3", "mirai_udp")):
        agents[0][0].send_alert(alert(source, cls))
    agents[1][0].send_alert(alert("203.0.113.1", "mirai_syn"))
    wait_until(lambda: lab.tokens.store.count("alerts") == 4, "alerts stored")
    before = parse_prometheus(web.get("/metrics", lab.viewer).text)
    assert value(before, "iotguard_controller_rulesets_issued_total") == 0
    block(broker, keys, lab.controller.config.db, "203.0.113.1", "203.0.113.2")
    wait_until(lambda: all(len(r.versions()) == 2 for _, r in agents), "both devices applied both rule sets")
    wait_until(lambda: lab.tokens.store.count("acks") == 4, "acks stored")
    agents[1][0].stop()
    wait_until(lambda: [d["state"] for d in lab.tokens.store.devices()] == ["online", "offline"], "dev2 offline")

    done = web.get("/metrics", lab.viewer)
    assert done.status == 200 and done.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_prometheus(done.text)
    assert m["iotguard_controller_alerts_ingested_total"]["type"] == "counter"
    assert value(m, "iotguard_controller_alerts_ingested_total", fleet=FLEET, **{"class": "mirai_syn"}) == 3
    assert value(m, "iotguard_controller_alerts_ingested_total", fleet=FLEET, **{"class": "mirai_udp"}) == 1
    assert value(m, "iotguard_controller_devices_online", fleet=FLEET) == 1
    assert value(m, "iotguard_controller_devices", fleet=FLEET, state="offline") == 1
    assert value(m, "iotguard_controller_rulesets_issued_total", fleet=FLEET) == 2
    latency = "iotguard_controller_ruleset_ack_latency_seconds"
    assert m[latency]["type"] == "histogram" and value(m, latency, "_count") == 4
    assert 0 <= value(m, latency, "_sum") < 4 * 30, "issue to ack within seconds here"
    assert value(m, latency, "_bucket", le="+Inf") == 4
    assert value(m, "iotguard_controller_mqtt_connected") == 1
    # Counters only grow, also when read again (kept incrementally).
    again = parse_prometheus(web.get("/metrics", lab.admin).text)
    assert value(again, "iotguard_controller_alerts_ingested_total") == 4 and value(again, latency, "_count") == 4


def test_the_prometheus_parser_of_these_tests_refuses_what_is_not_the_text_format():
    good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"uote"} 3\n'
    assert value(parse_prometheus(good), "a_total", x='q"uote') == 3
    for bad in (good.rstrip("\n"), good.replace("# TYPE a_total counter\n", ""), good + "a_total 1 2 3\n",
                good.replace('x="q\\"uote"', 'x="q"uote"'), good.replace("a_total counter", "a_total counterx"),
                "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"):
        with pytest.raises((AssertionError, StopIteration, KeyError, ValueError)):
            parse_prometheus(bad)


def test_the_grafana_dashboard_plots_what_the_controller_serves(tmp_path):
    served = {f for f in parse_prometheus(Metrics(Store(tmp_path / "c.sqlite"), ProcessView(connected=lambda: True)).render())}
    doc = json.loads((REPO / "docs" / "grafana-controller.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"iotguard_controller_\w+", e)}
    assert used <= served, used - served
    assert {"iotguard_controller_alerts_ingested_total", "iotguard_controller_devices_online",
            "iotguard_controller_rulesets_issued_total", "iotguard_controller_ruleset_ack_latency_seconds"} <= used
    assert all(p["datasource"]["uid"] == "${datasource}" for p in doc["panels"]), "a data source fixed to one Grafana"


def test_the_page_is_made_for_phones_too(lab):
    web = lab.client()
    web.login(lab.viewer)
    page = web.get("/").text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    css = web.get("/static/dashboard.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media (max-width: 760px)" in css.text and "attr(data-label)" in css.text
    assert 'data-label="Device"' in page or "No device has reported yet." in page
    assert web.get("/static/../store.py").status == 404 and web.get("/static/nothing.js").status == 404


def test_web_client_is_not_a_browser_without_origin(lab, broker, keys, tmp_path):
    """Scripts (curl with a bearer token) send no Origin: they may act with an admin token."""
    block(broker, keys, lab.controller.config.db, "192.0.2.3")
    done = WebClient(*lab.server.address).request("POST", "/api/unblock", lab.admin, body={"fleet": FLEET, "source": "192.0.2.3"})
    assert done.status == 200 and done.json()["rules"] == 0


@pytest.mark.slow
@needs_mosquitto
def test_controller_run_with_http_serves_the_dashboard(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "controller", "--log-level", "WARNING"]
    db, key = tmp_path / "c.sqlite", tmp_path / "signing.key"
    subprocess.run([*base, "keygen", "--out", str(tmp_path)], env=env, check=True, capture_output=True, timeout=60)
    token = subprocess.run([*base, "token", "create", "--db", str(db)], env=env, check=True, capture_output=True,
                           text=True, timeout=60).stdout.strip()  # fmt: skip
    proc = subprocess.Popen([*base, "run", "--db", str(db), "--key", str(key), "--http", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        (url,) = [m.group(1) for line in lines if (m := re.match(r"dashboard on (http://127\.0\.0\.1:\d+)/", line))]
        host, port = url.removeprefix("http://").split(":")
        web = WebClient(host, int(port))
        assert web.get("/api/devices").status == 401
        assert web.get("/api/devices", token).json() == {"devices": []}
        wait_until(lambda: "iotguard_controller_mqtt_connected 1" in web.get("/metrics", token).text, "connected")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
