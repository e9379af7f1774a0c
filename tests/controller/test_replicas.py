"""Three controller replicas on one database (PostgreSQL, as on several machines; and one SQLite file) and a
real mosquitto: they share state only through the database and the broker."""

from __future__ import annotations

import threading
import time

import pytest

from agent.wire import canonical_json, open_envelope, parse_ruleset, topic
from controller.store import Store
from lab.mqtt_helpers import FLEET, Listener, alert, make_controller, wait_until

PREFIX = "iotguard/v1"
K = 3
SOURCES = [f"203.0.113.{i}" for i in range(1, 16)]


def raw_alert(device: str, seq: int, source: str) -> dict:
    return {**alert(source), "schema": "iotguard.alert/1", "device": device, "fleet": FLEET, "seq": seq,
            "sent_at": time.time()}


def _recording(store: Store, name: str, seen: list[tuple[str, str]], guard: threading.Lock) -> None:
    """Note which replica stored each alert's source."""
    add = store.add_alerts

    def add_alerts(alerts, received_at):
        new = add(alerts, received_at)
        with guard:
            seen.extend((name, alert["source"]["ip"]) for alert, is_new in zip(alerts, new) if is_new)
        return new

    store.add_alerts = add_alerts


def _slow_policy(controller) -> None:
    """Count reporters a moment after the batch's commit, as a loaded replica would: the replicas that stored a
    source's reports then all see K devices, and all decide the same block."""
    decide = controller.policy.new_blocks

    def new_blocks(*args):
        time.sleep(0.3)
        return decide(*args)

    controller.policy.new_blocks = new_blocks


@pytest.mark.slow
def test_reports_reaching_different_replicas_give_one_rule_set_per_source_in_version_order(broker, keys, tmp_path,
                                                                                          database):  # fmt: skip
    replicas = [make_controller(broker.host, broker.port, tmp_path, keys.private, name=f"c{i}", db=database,
                                k_devices=K, block_ttl_s=10.0) for i in (1, 2, 3)]  # fmt: skip
    seen: list[tuple[str, str]] = []
    guard = threading.Lock()
    for c in replicas:
        _recording(c.store, c.config.name, seen, guard)
        _slow_policy(c)
        c.start()
    rules = Listener(broker.host, broker.port, [topic(PREFIX, FLEET, "all", "rules")])
    pub = Listener(broker.host, broker.port, [])
    try:
        wait_until(lambda: all(c.ready.is_set() for c in replicas), "replicas subscribed")
        # Each source reported by K devices one after the other: the shared subscription hands consecutive
        # messages to different replicas, so the K-th report of a source meets the others only in the database.
        for seq, source in enumerate(SOURCES, 1):
            for d in range(1, K + 1):
                pub.publish(topic(PREFIX, FLEET, f"dev{d}", "alerts"), canonical_json(raw_alert(f"dev{d}", seq, source)))
        wait_until(lambda: len(seen) == K * len(SOURCES), "every alert stored")

        def published() -> list:
            return [parse_ruleset(open_envelope(p, keys.trusted)) for _, p, _ in rules.messages if p]

        wait_until(lambda: published() and len(published()[-1].rules) == len(SOURCES), "every source blocked")
        spread = {s: {name for name, ip in seen if ip == s} for s in SOURCES}
        assert all(c.stats.alerts_new > 0 for c in replicas), [c.stats for c in replicas]
        assert any(len(names) == K for names in spread.values()), f"no source reached {K} replicas: {spread}"

        store = replicas[0].store
        wait_until(lambda: len(published()) == store.count("rulesets"), "every rule set issued arrived")
        sets = published()
        versions = [r.version for r in sets]
        assert versions == sorted(set(versions)), f"versions not strictly increasing as published: {versions}"
        sizes = [len(r.rules) for r in sets]
        assert sizes == sorted(set(sizes)), f"a rule set that blocked nothing new (a block decided twice): {sizes}"
        firsts = {}
        for r in sets:
            for rule in r.rules:
                firsts.setdefault(str(rule.network), r.version)
        assert sorted(firsts) == sorted(f"{s}/32" for s in SOURCES)
        assert store.count("blocks") == len(SOURCES)

        # Expiry: swept by one replica at a time, each expiry in exactly one new version.
        wait_until(lambda: len(published()[-1].rules) == 0, "every block expired", timeout=60)
        wait_until(lambda: len(published()) == store.count("rulesets"), "every rule set issued arrived")
        after = published()[len(sets):]
        versions = [r.version for r in published()]
        assert versions == sorted(set(versions)), f"versions not strictly increasing as published: {versions}"
        sizes = [len(r.rules) for r in after]
        assert sizes == sorted(set(sizes), reverse=True), f"an expiry published twice: {sizes}"
        assert store.count("blocks") == 0
    finally:
        for client in (rules, pub):
            client.close()
        for c in replicas:
            c.stop()


def test_a_batch_rolled_back_by_a_deadlock_is_stored_once_on_the_next_attempt(broker, keys, tmp_path):
    import sqlite3

    controller = make_controller(broker.host, broker.port, tmp_path, keys.private, k_devices=99)
    advance, failures = controller.store.advance_marks, []

    def advance_marks(*args):  # the last statement of the batch's transaction fails once, as a deadlock would
        if not failures:
            failures.append(args)
            raise sqlite3.OperationalError("database is locked")
        return advance(*args)

    controller.store.advance_marks = advance_marks
    controller.start()
    pub = Listener(broker.host, broker.port, [topic(PREFIX, FLEET, "dev1", "alerts/ack")])
    try:
        wait_until(controller.ready.is_set, "controller subscribed")
        pub.publish(topic(PREFIX, FLEET, "dev1", "alerts"), canonical_json(raw_alert("dev1", 1, "192.0.2.1")))
        wait_until(lambda: pub.json_on("alerts/ack"), "the alert confirmed")
        assert failures and controller.store.alert_seqs(FLEET, "dev1") == [1]
        assert (controller.stats.alerts_new, controller.stats.alerts_duplicate) == (1, 0), "counted once"
        assert pub.json_on("alerts/ack")[0]["stored_through"] == 1
    finally:
        pub.close()
        controller.stop()
