"""The running controller: ingest alerts, status and acks; decide blocks; sign and push rules and models.

Threads: paho's network thread only queues incoming messages; one worker
thread stores them in the database (a batch per transaction), acknowledges them to
the broker *after* the commit (paho ``manual_ack``), confirms to each agent
whose alerts were in the batch how far its alerts are stored
(``{prefix}/{fleet}/{device}/alerts/ack``, see ``agent.wire.messages``), then
runs the policy on the sources the batch touched.  The controller keeps a
persistent MQTT session (fixed client id, clean start off), so alerts that
arrive while it is away wait at the broker; alerts that the broker loses (it
does not restore shared subscriptions after a restart) are sent again by the
agent until confirmed.

Replicas: start several with different ``name``s and the same database (an
SQLite file on one host, PostgreSQL across machines); they share state only
through the database and the broker (see ``controller.store``).  Alerts and
acks come through the shared subscription ``$share/{share_group}/...`` so each
message reaches one replica.  Status is subscribed normally, because retained
messages are not sent to shared subscriptions.  A rule set is published and
acknowledged by the broker before the transaction that allocated its version
commits, so the broker receives the versions of all replicas in order.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.wire import (
    ALL_DEVICES,
    DEFAULT_PREFIX,
    MODEL_SCHEMA,
    MessageError,
    RuleSet,
    alert_seq_of,
    alerts_ack,
    canonical_json,
    load_private_key,
    make_client,
    parse_ack,
    parse_alert,
    parse_status,
    parse_topic,
    sign,
    topic,
)
from controller.policy import Policy, PolicyConfig, fleet_ruleset
from controller.store import Block, Store

log = logging.getLogger(__name__)

BATCH_MAX = 1000  # messages per database transaction
BATCH_LINGER_S = 0.02  # a batch waits this long for more messages (each batch costs a few statements and a commit)
RECEIVE_MAXIMUM = 2 * BATCH_MAX  # QoS 1 messages the broker may send ahead of their acknowledgement (MQTT 5)
ATTEMPTS = 3  # of a batch's transaction, after a deadlock between replicas or a lost database connection
RECHECK_S = 1.0  # a device left behind its batch's highest stored seq has its mark looked at again after this
PUBACK_WAIT_S = 10.0  # for a rule set's PUBACK, inside the transaction that issued its version
Publish = Callable[[str, bytes, bool], None]  # (topic, payload, retain)


@dataclass
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class ControllerConfig:
    db: Path | str  # an SQLite file, or a PostgreSQL URL
    signing_key: Path
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    name: str = "controller"  # replica name: the MQTT client id is derived from it
    prefix: str = DEFAULT_PREFIX
    share_group: str = "controllers"  # "": plain subscriptions (one replica; brokers without MQTT 5)
    session_expiry_s: int = 86400
    tick_s: float = 5.0  # how often expired blocks are swept
    confirm_alerts: bool = True  # publish alerts/ack after storing; False: as controllers before confirmations
    policy: PolicyConfig = field(default_factory=PolicyConfig)


@dataclass
class ControllerStats:
    alerts_new: int = 0
    alerts_duplicate: int = 0
    statuses: int = 0
    acks: int = 0
    rulesets_published: int = 0
    confirmations: int = 0  # alerts/ack messages published
    rejected: Counter = field(default_factory=Counter)  # reason -> count


class FleetRules:
    """Signs and publishes rule sets and models; shared by the service and the one-shot CLI commands."""

    def __init__(self, store: Store, key: Ed25519PrivateKey, prefix: str, publish: Publish) -> None:
        self.store = store
        self.key = key
        self.prefix = prefix
        self.publish = publish

    def publish_fleet_rules(self, fleet: str, now: float | None = None) -> RuleSet:
        """A new version of the fleet's ``all`` rule set from the active blocks, published retained."""
        now = time.time() if now is None else now
        with self.store.transaction():  # version allocation and publish order follow the database
            # Versions are at least the unix time: a controller that lost its database still issues
            # versions newer than the ones the agents applied (they refuse anything not newer).
            version = self.store.next_ruleset_version(fleet, ALL_DEVICES, floor=int(now))
            ruleset = fleet_ruleset(fleet, version, self.store.blocks(fleet, now), now)
            envelope = canonical_json(sign(ruleset.to_json(), self.key))
            self.store.add_ruleset(fleet, ALL_DEVICES, version, now, len(ruleset.rules), envelope.decode())
            self.publish(topic(self.prefix, fleet, ALL_DEVICES, "rules"), envelope, True)
        log.info("fleet %s: published rule set v%d with %d rules", fleet, version, len(ruleset.rules))
        return ruleset

    def block(self, fleet: str, source: str, reason: str, ttl_s: float | None, origin: str = "manual") -> RuleSet:
        """Block an address or CIDR fleet-wide (manual block from the CLI)."""
        network = str(ipaddress.ip_network(source, strict=False))
        now = time.time()
        with self.store.transaction():
            self.store.put_block(Block(fleet, network, origin, reason, now, None if ttl_s is None else now + ttl_s))
            return self.publish_fleet_rules(fleet, now)

    def unblock(self, fleet: str, source: str) -> RuleSet | None:
        """Lift a block; None if there was none."""
        network = str(ipaddress.ip_network(source, strict=False))
        with self.store.transaction():
            if not self.store.remove_block(fleet, network):
                return None
            return self.publish_fleet_rules(fleet)

    def push_model(self, fleet: str, devices: list[str], meta: dict[str, Any], tflite: bytes, version: int | None = None) -> int:
        """Sign a model bundle and publish it to each device's model topic; returns the version."""
        version = self.store.next_model_version(floor=int(time.time())) if version is None else version
        digest = hashlib.sha256(tflite).hexdigest()
        payload = {
            "schema": MODEL_SCHEMA,
            "version": version,
            "bundle": meta,
            "tflite_b64": base64.b64encode(tflite).decode("ascii"),
            "sha256": digest,
        }
        envelope = canonical_json(sign(payload, self.key))
        for device in devices:
            self.publish(topic(self.prefix, fleet, device, "model"), envelope, False)
        self.store.add_model(version, digest, len(tflite), meta, time.time(), [f"{fleet}/{d}" for d in devices])
        log.info("model v%d (%d bytes) pushed to %d devices of fleet %s", version, len(tflite), len(devices), fleet)
        return version


@dataclass
class _Batch:
    """What one batch of messages stores, read and checked before its transaction."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (fleet, device, status)
    acks: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (fleet, device, rules ack)
    rejected: list[tuple[str, str, bytes]] = field(default_factory=list)  # (topic, reason, payload)
    refused: list[tuple[str, str, int]] = field(default_factory=list)  # (fleet, device, seq) refused for good
    floors: dict[tuple[str, str], int] = field(default_factory=dict)  # (fleet, device) with alerts -> first_pending
    reasons: Counter = field(default_factory=Counter)  # refusal reason -> count


class ControllerService:
    def __init__(self, config: ControllerConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store or Store(config.db)
        self.policy = Policy(config.policy)
        self.stats = ControllerStats()
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        # (fleet, device) -> (the mark last confirmed, when to look again): see _process.
        self._lagging: dict[tuple[str, str], tuple[int, float]] = {}
        self.ready = threading.Event()  # connected and subscribed
        b = config.broker
        self.client = make_client(
            f"iotguard-controller-{config.name}", b.protocol, b.tls_ca, b.tls_cert, b.tls_key, b.username, b.password,
            manual_ack=True, persistent_session=True,
        )
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda client, userdata, message: self._inbox.put(message)
        self.rules = FleetRules(self.store, load_private_key(config.signing_key), config.prefix, self._publish)

    # --- life cycle ----------------------------------------------------------

    def start(self) -> None:
        b = self.config.broker
        properties = None
        kwargs: dict[str, Any] = {}
        if b.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.config.session_expiry_s
            # Without it the broker sends at most its max_inflight_messages (mosquitto: 20) unacknowledged
            # messages, and a replica acknowledges only after its batch commits: batches of 20 at most.
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
            kwargs = {"clean_start": False, "properties": properties}
        self._worker = threading.Thread(target=self._work, name=f"controller-{self.config.name}", daemon=True)
        self._worker.start()
        self.client.connect_async(b.host, b.port, keepalive=30, **kwargs)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(10)
        self.client.disconnect()
        self.client.loop_stop()

    def _publish(self, name: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(name, payload, qos=1, retain=retain)
        if retain:
            # A rule set: acknowledged by the broker before its version's transaction commits, so that
            # another replica's next version cannot overtake it; otherwise rolled back (the next report of the
            # source, or the next sweep, tries again).
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"rule set to {name} not published: {mqtt.error_string(info.rc)}")
            try:
                info.wait_for_publish(PUBACK_WAIT_S)
            except (RuntimeError, ValueError) as exc:
                raise RuntimeError(f"rule set to {name} not published: {exc}") from None
            if not info.is_published():
                raise RuntimeError(f"rule set to {name} not acknowledged by the broker within {PUBACK_WAIT_S:g} s")
            self.stats.rulesets_published += 1
        elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho sends it after reconnecting
            raise RuntimeError(f"publish to {name} failed: {mqtt.error_string(info.rc)}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("controller %s: broker refused connection: %s", self.config.name, reason_code)
            return
        p, g = self.config.prefix, self.config.share_group
        share = f"$share/{g}/" if g else ""
        client.subscribe([
            (f"{share}{p}/+/+/alerts", 1),
            (f"{share}{p}/+/+/rules/ack", 1),
            (f"{p}/+/+/status", 1),  # not shared: retained status must reach every replica
        ])
        log.info("controller %s: connected (session present: %s)", self.config.name, flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list, properties: Any) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            log.error("controller %s: subscriptions refused: %s", self.config.name, ", ".join(refused))
        log.info("controller %s: subscribed", self.config.name)
        self.ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.ready.clear()
        if not self._stopping.is_set():
            log.warning("controller %s: disconnected (%s)", self.config.name, reason_code)

    # --- the worker ----------------------------------------------------------

    def _work(self) -> None:
        next_sweep = time.monotonic() + self.config.tick_s
        while not self._stopping.is_set():
            batch = []
            wait = min(1.0, self.config.tick_s)
            if self._lagging:
                wait = max(0.01, min(wait, min(due for _, due in self._lagging.values()) - time.monotonic()))
            try:
                batch.append(self._inbox.get(timeout=wait))
                deadline = time.monotonic() + BATCH_LINGER_S
                while len(batch) < BATCH_MAX:
                    try:
                        batch.append(self._inbox.get_nowait())
                    except queue.Empty:
                        batch.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pass
            if batch:
                self._process(batch)
            if self._lagging:
                self._recheck()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.config.tick_s
                self._sweep()

    def _process(self, batch: list[mqtt.MQTTMessage]) -> None:
        """Store a batch in one transaction of a few multi-row statements (not several per message), then
        acknowledge it to the broker, confirm once per device, and run the policy once per fleet."""
        now = time.time()
        work = _Batch()
        for message in batch:
            self._read(message, work)  # checks only: nothing is stored or counted until the commit
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.store.transaction():
                    if work.rejected:
                        self.store.add_rejected_many(work.rejected, now)
                    if work.refused:
                        self.store.refuse_seqs(work.refused)  # resending them would be refused again
                    new = self.store.add_alerts(work.alerts, now) if work.alerts else []
                    if work.statuses:
                        self.store.set_statuses(work.statuses, now)
                    if work.acks:
                        self.store.add_acks(work.acks, now)
                    # In key order: replicas lock the marks in one order, which keeps them out of deadlocks.
                    marks = self.store.advance_marks(work.floors)
                break
            except Exception as exc:
                if attempt < ATTEMPTS and self.store.is_transient(exc):
                    log.warning("controller %s: batch rolled back (%s); trying again", self.config.name, exc)
                    continue
                # Nothing acknowledged: the broker redelivers this batch when the session resumes.
                log.exception("controller %s: storing a batch of %d messages failed", self.config.name, len(batch))
                return
        touched: dict[str, set[str]] = {}
        for alert, is_new in zip(work.alerts, new):
            if is_new:
                touched.setdefault(alert["fleet"], set()).add(alert["source"]["ip"])
        fresh = sum(new)
        stats = self.stats
        stats.alerts_new += fresh
        stats.alerts_duplicate += len(new) - fresh
        stats.statuses += len(work.statuses)
        stats.acks += len(work.acks)
        stats.rejected.update(work.reasons)
        for message in batch:
            if message.qos > 0:
                self.client.ack(message.mid, message.qos)
        if self.config.confirm_alerts:
            self._confirm(marks)
            # A device whose alerts here were stored above the mark confirmed: the seqs between may be in another
            # replica's batch committed at the same moment (neither saw the other's rows), so that neither
            # confirmed the whole run.  Looked at once more shortly, rather than left to the agent's resending.
            top: dict[tuple[str, str], int] = {}
            for alert in work.alerts:
                key = (alert["fleet"], alert["device"])
                top[key] = max(top.get(key, 0), alert["seq"])
            due = time.monotonic() + RECHECK_S
            for key, mark in marks.items():
                self._lagging.pop(key, None)  # this confirmation is the newest
                if mark < top.get(key, 0):
                    self._lagging[key] = (mark, due)
        for fleet, sources in touched.items():
            try:
                # Reporters are counted in the database, after the commit above: across replicas, whoever
                # commits last sees every report.  Another replica may add the same block meanwhile: only one
                # adds it (add_policy_block), so the counting needs no transaction of its own.
                candidates = self.policy.new_blocks(self.store, fleet, sources, now)
                if not candidates:
                    continue
                with self.store.transaction():
                    blocks = [b for b in candidates if self.store.add_policy_block(b)]
                    if blocks:
                        self.rules.publish_fleet_rules(fleet, now)
            except Exception:
                log.exception("controller %s: policy for fleet %s failed", self.config.name, fleet)

    def _read(self, message: mqtt.MQTTMessage, work: _Batch) -> None:
        """Check one message and add it to what the batch stores; a refused one is kept with its reason."""
        parts = parse_topic(self.config.prefix, message.topic)
        try:
            if parts is None or parts.device == ALL_DEVICES:
                raise MessageError("not an agent topic of ours")
            if parts.kind == "alerts":
                key = (parts.fleet, parts.device)
                floors = work.floors
                floors.setdefault(key, 1)  # confirmed even if refused or a duplicate: the agent waits for it
                alert = parse_alert(message.payload, parts.fleet, parts.device)
                floors[key] = max(floors[key], alert["first_pending"] or 1)
                work.alerts.append(alert)
            elif parts.kind == "status":
                if not message.payload:
                    return  # a cleared retained status
                work.statuses.append((parts.fleet, parts.device, parse_status(message.payload, parts.fleet, parts.device)))
            elif parts.kind == "rules/ack":
                work.acks.append((parts.fleet, parts.device, parse_ack(message.payload, parts.fleet, parts.device)))
            else:
                raise MessageError(f"controller does not take {parts.kind!r} messages")
        except MessageError as exc:
            work.reasons[exc.reason.split(":")[0]] += 1
            log.warning("controller %s: refused message on %s: %s", self.config.name, message.topic, exc.reason)
            work.rejected.append((message.topic, exc.reason, message.payload))
            seq = alert_seq_of(message.payload) if parts is not None and parts.kind == "alerts" else None
            if seq is not None and parts.device != ALL_DEVICES:
                work.refused.append((parts.fleet, parts.device, seq))

    def _recheck(self) -> None:
        """Confirm again the lagging devices (see _process) whose mark moved since their last confirmation."""
        now = time.monotonic()
        due = {key: mark for key, (mark, at) in self._lagging.items() if at <= now}
        if not due:
            return
        for key in due:
            del self._lagging[key]
        try:
            with self.store.transaction():
                marks = self.store.advance_marks({key: 1 for key in due})
        except Exception as exc:  # the agent sends its alerts again after a while and is confirmed then
            log.warning("controller %s: marks of %d devices not looked at again: %s", self.config.name, len(due), exc)
            return
        self._confirm({key: mark for key, mark in marks.items() if mark > due[key]})

    def _confirm(self, marks: dict[tuple[str, str], int]) -> None:
        """After the commit: tell each agent how far its alerts are stored, so it can forget them."""
        for (fleet, device), mark in marks.items():
            doc = alerts_ack(fleet, device, mark, time.time())
            try:
                self._publish(topic(self.config.prefix, fleet, device, "alerts/ack"), canonical_json(doc), False)
            except RuntimeError as exc:  # the agent sends its alerts again after a while and is confirmed then
                log.warning("controller %s: confirmation to %s/%s not sent: %s", self.config.name, fleet, device, exc)
                continue
            self.stats.confirmations += 1

    def _sweep(self) -> None:
        """Publish a new fleet rule set wherever a block expired, in the transaction that deletes them (one
        replica at a time: a failed publish keeps the blocks for the next sweep)."""
        try:
            with self.store.transaction():
                for fleet in self.store.expire_blocks(time.time()):
                    self.rules.publish_fleet_rules(fleet)
        except Exception:
            log.exception("controller %s: expiry sweep failed", self.config.name)

    # --- for tests and the CLI -----------------------------------------------

    def idle(self) -> bool:
        return self._inbox.empty()


def publish_once(broker: BrokerSettings, client_id: str, messages: list[tuple[str, bytes, bool]], timeout: float = 10.0) -> None:
    """Connect, publish ``(topic, payload, retain)`` at QoS 1, wait for every PUBACK, disconnect."""
    client = make_client(client_id, broker.protocol, broker.tls_ca, broker.tls_cert, broker.tls_key, broker.username, broker.password)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=1, retain=r) for t, p, r in messages]
        for info in infos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise RuntimeError(f"broker {broker.host}:{broker.port} did not acknowledge within {timeout} s")
    finally:
        client.disconnect()
        client.loop_stop()
