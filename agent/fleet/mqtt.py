"""The agent's MQTT side: alerts and status out, signed rule sets and models in.

Topics, schemas and the checks of what arrives are the wire contract shared
with the controller (``agent.wire``, topics in ``agent.wire.messages``).

Alerts are never lost to a broker outage: ``send_alert`` stores the alert in
the on-disk ``AlertQueue`` and a sender thread publishes from there, at most
``max_inflight`` at a time; an alert leaves the disk only when its PUBACK
arrives (paho re-sends unacknowledged ones after a reconnect).  The controller
deduplicates by (device, seq), so the rare double delivery is harmless.

A rule set is applied only if its signature, schema, fleet, target and version
(strictly newer than the last applied one for that target) are all good.  The
last applied envelope of each target is kept on disk and re-applied by
``start``, so a rebooted board enforces its rules before it reaches a broker.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from agent.config import MqttConfig
from agent.fleet.alert_queue import AlertQueue
from agent.util import write_atomically
from agent.wire import (
    ACK_SCHEMA,
    ALERT_FIELDS,
    ALERT_SCHEMA,
    MODEL_MAX_BYTES,
    RULES_MAX_BYTES,
    STATUS_SCHEMA,
    SignatureError,
    TrustedKeys,
    canonical_json,
    check_model_push,
    load_json,
    make_client,
    open_envelope,
)
from agent.wire import rules as rs
from agent.wire import short_reason, topic

try:
    import psutil
except ImportError:  # an agent dependency; without it the status simply lacks CPU and RSS
    psutil = None

log = logging.getLogger(__name__)

# --- the client --------------------------------------------------------------


@dataclass
class _Applied:
    version: int
    digest: str  # sha256 of the canonical payload: tells a duplicate delivery from a replay


@dataclass
class AgentStats:
    alerts_sent: int = 0  # acknowledged by the broker
    alerts_rejected_by_broker: int = 0  # PUBACK with an error reason (MQTT 5): dropped, logged
    rules_applied: int = 0
    rules_rejected: int = 0
    models_applied: int = 0
    models_rejected: int = 0
    connects: int = 0
    last_rules_error: str | None = None
    model_error: str | None = None


class AgentMqtt:
    """One device's connection to the fleet.  Callbacks run on paho's network thread.

    ``apply_rules(ruleset)`` is called once per accepted rule set, for the
    ``all`` target and the device's own target separately (the filter keeps one
    set per target); it raises to reject.  ``on_model(bundle_meta, tflite)``
    installs a model and raises to keep the old one.
    """

    def __init__(
        self,
        config: MqttConfig,
        keys: TrustedKeys,
        apply_rules: Callable[[rs.RuleSet], None],
        on_model: Callable[[dict[str, Any], bytes], None] | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.apply_rules = apply_rules
        self.on_model = on_model
        self.stats = AgentStats()
        self.queue = AlertQueue(config.state_dir / "alerts", config.queue_max_items)
        self._rules_dir = config.state_dir / "rules"
        self._rules_dir.mkdir(parents=True, exist_ok=True)
        self._model_state = config.state_dir / "model.json"
        self._applied: dict[str, _Applied] = {}
        self.model_version = 0
        self._metrics: dict[str, Any] = {}
        self._process = psutil.Process() if psutil is not None else None  # cpu_percent() measures between calls

        c = config
        self.topic_alerts = topic(c.prefix, c.fleet, c.device, "alerts")
        self.topic_status = topic(c.prefix, c.fleet, c.device, "status")
        self.topic_ack = topic(c.prefix, c.fleet, c.device, "rules/ack")
        self.topic_model = topic(c.prefix, c.fleet, c.device, "model")
        # rules topic -> the target its rule sets must name
        self.rules_topics = {
            topic(c.prefix, c.fleet, c.device, "rules"): c.device,
            topic(c.prefix, c.fleet, rs.ALL_DEVICES, "rules"): rs.ALL_DEVICES,
        }

        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._sender: threading.Thread | None = None
        # mid -> alert seq (None for status/acks).  PUBACK can arrive before publish() has returned
        # the mid to us, so unmatched PUBACKs wait in _early_acks; _mid_lock guards both.
        self._mid_lock = threading.Lock()
        self._mids: dict[int, int | None] = {}
        self._early_acks: set[int] = set()
        self._inflight: set[int] = set()  # seqs handed to paho

        self.client = make_client(
            f"iotguard-{c.fleet}-{c.device}", c.protocol, c.tls_ca, c.tls_cert, c.tls_key, c.username, c.password
        )
        self.client.reconnect_delay_set(min_delay=max(1, round(c.reconnect_min_s)), max_delay=max(1, round(c.reconnect_max_s)))
        self.client.will_set(self.topic_status, canonical_json(self._status_doc("offline")), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda client, userdata, mid, codes, properties: self._subscribed.set()

    # --- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Re-apply the stored rule sets, then connect in the background (retrying with backoff)."""
        self._restore_state()
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{self.config.device}", daemon=True)
        self._sender.start()
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say "offline" (retained), disconnect and stop the threads.  Pending alerts stay on disk."""
        self._stopping.set()
        self._wake.set()
        if self._connected.is_set():
            info = self.client.publish(self.topic_status, canonical_json(self._status_doc("offline")), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("%s: offline status not published: %s", self.config.device, exc)
        self.client.disconnect()
        self.client.loop_stop()
        if self._sender is not None:
            self._sender.join(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def ready(self) -> bool:
        """Connected and subscribed: rule sets and models published from now on will reach us."""
        return self._connected.is_set() and self._subscribed.is_set()

    # --- alerts --------------------------------------------------------------

    def send_alert(self, alert: dict[str, Any]) -> int:
        """Queue an alert durably and return its seq; it is published as soon as the broker is reachable."""
        missing = [f for f in ALERT_FIELDS if f not in alert]
        if missing:
            raise ValueError(f"alert lacks field(s): {', '.join(missing)}")
        doc = {**alert, "schema": ALERT_SCHEMA, "device": self.config.device, "fleet": self.config.fleet}
        seq = self.queue.put(doc)
        self._wake.set()
        return seq

    def _send_loop(self) -> None:
        """The only thread that hands alerts to paho (so no lock is held across publish())."""
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            with self._mid_lock:
                busy = set(self._inflight)
            room = self.config.max_inflight - len(busy)
            if room <= 0:
                continue
            for item in self.queue.peek(room, skip=busy):
                message = {**item.alert, "sent_at": time.time()}
                with self._mid_lock:
                    self._inflight.add(item.seq)
                self._publish(self.topic_alerts, canonical_json(message), retain=False, seq=item.seq)

    def _publish(self, name: str, payload: bytes, retain: bool, seq: int | None = None) -> None:
        info = self.client.publish(name, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # Not queued by paho at all (e.g. its own queue full): the alert stays on disk for the next pass.
            log.warning("%s: publish to %s failed: %s", self.config.device, name, mqtt.error_string(info.rc))
            if seq is not None:
                with self._mid_lock:
                    self._inflight.discard(seq)
            return
        with self._mid_lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                acked = True
            else:
                self._mids[info.mid] = seq
                acked = False
        if acked and seq is not None:
            self._delivered(seq, ok=True)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Runs inside paho's message lock: only bookkeeping here, no publish().
        with self._mid_lock:
            if mid not in self._mids:
                self._early_acks.add(mid)
                return
            seq = self._mids.pop(mid)
        if seq is not None:
            self._delivered(seq, ok=not reason_code.is_failure)
            if reason_code.is_failure:
                log.error("%s: broker refused alert seq %d: %s", self.config.device, seq, reason_code)

    def _delivered(self, seq: int, ok: bool) -> None:
        if not self.queue.ack(seq):
            # Each seq is published once per process, so it was not pending because the full queue
            # dropped it while paho held it in flight (paho re-sends those after a reconnect).
            self.queue.uncount_drop()
        with self._mid_lock:
            self._inflight.discard(seq)
        if ok:
            self.stats.alerts_sent += 1
        else:
            self.stats.alerts_rejected_by_broker += 1
        self._wake.set()

    # --- status --------------------------------------------------------------

    def _status_doc(self, state: str) -> dict[str, Any]:
        return {"schema": STATUS_SCHEMA, "state": state, "device": self.config.device, "fleet": self.config.fleet}

    def status(self) -> dict[str, Any]:
        """The heartbeat document: the agent's last metrics plus what this client knows."""
        doc = self._status_doc("online")
        doc.update(
            packets_per_s=None,
            drops=None,
            cpu_percent=None,
            rss_bytes=None,
            model_version=self.model_version or None,
            model_error=self.stats.model_error,
            ruleset_version={target: a.version for target, a in self._applied.items()},
            rules_error=self.stats.last_rules_error,
            alerts_queued=len(self.queue),
            alerts_dropped=self.queue.dropped,
        )
        if self._process is not None:
            doc.update(cpu_percent=self._process.cpu_percent(None), rss_bytes=self._process.memory_info().rss)
        doc.update(self._metrics)
        doc["sent_at"] = time.time()
        return doc

    def publish_status(self, **metrics: Any) -> None:
        """Record the agent's metrics (packets_per_s, drops, model_version, ...) and publish the status."""
        self._metrics.update(metrics)
        if self._connected.is_set():
            self._publish(self.topic_status, canonical_json(self.status()), retain=True)

    # --- connection ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("%s: broker refused connection: %s", self.config.device, reason_code)
            return
        self.stats.connects += 1
        log.info("%s: connected to %s:%d", self.config.device, self.config.host, self.config.port)
        client.subscribe([(name, 1) for name in self.rules_topics] + [(self.topic_model, 1)])
        self._connected.set()
        self._publish(self.topic_status, canonical_json(self.status()), retain=True)
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("%s: disconnected (%s); paho reconnects with backoff", self.config.device, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            name = message.topic
        except UnicodeDecodeError as exc:
            # paho raises on a topic that is not UTF-8; raising from here would end its network thread.
            log.warning("%s: message on a topic that is not UTF-8 ignored: %r", self.config.device, exc.object[:200])
            return
        try:
            if name in self.rules_topics:
                self._handle_rules(self.rules_topics[name], message.payload)
            elif name == self.topic_model:
                self._handle_model(message.payload)
            else:
                log.warning("%s: message on unexpected topic %s ignored", self.config.device, name)
        except Exception:  # a bug here must not kill paho's network thread
            log.exception("%s: failed to handle message on %s", self.config.device, name)

    # --- rule sets -----------------------------------------------------------

    def _check_ruleset(self, target: str, envelope: bytes) -> tuple[rs.RuleSet, str]:
        """Signature, schema, fleet and target; returns the rule set and its payload digest."""
        doc = open_envelope(envelope, self.keys, max_bytes=RULES_MAX_BYTES, max_depth=rs.MAX_DEPTH)
        ruleset = rs.parse_ruleset(doc)
        if ruleset.fleet != self.config.fleet:
            raise rs.RuleSetError(f"rule set is for fleet {ruleset.fleet!r}, this device is in {self.config.fleet!r}")
        if ruleset.target != target:
            raise rs.RuleSetError(f"rule set names target {ruleset.target!r} but came on the rules topic of {target!r}")
        return ruleset, hashlib.sha256(canonical_json(doc)).hexdigest()

    def _handle_rules(self, target: str, envelope: bytes) -> None:
        if not envelope:
            return  # the retained rule set was cleared: nothing to apply
        version = None
        try:
            ruleset, digest = self._check_ruleset(target, envelope)
            version = ruleset.version
            applied = self._applied.get(target)
            if applied is not None and ruleset.version == applied.version and digest == applied.digest:
                log.debug("%s: rule set %s v%d already applied", self.config.device, target, ruleset.version)
                return  # the retained copy again, after a reconnect
            if applied is not None and ruleset.version <= applied.version:
                raise rs.RuleSetError(f"version {ruleset.version} is not newer than applied version {applied.version}")
            try:
                self.apply_rules(ruleset)
            except Exception as exc:
                raise rs.RuleSetError(f"apply failed: {exc}") from None
        except (SignatureError, rs.RuleSetError) as exc:
            reason = short_reason(exc.reason)
            self.stats.rules_rejected += 1
            self.stats.last_rules_error = reason
            log.error("%s: rule set for %s rejected: %s", self.config.device, target, reason)
            self._ack(target, version, "rejected", reason)
            self._publish(self.topic_status, canonical_json(self.status()), retain=True)  # carries rules_error
            return
        write_atomically(self._rules_dir / f"{target}.json", envelope)
        self._applied[target] = _Applied(ruleset.version, digest)
        self.stats.rules_applied += 1
        self.stats.last_rules_error = None
        log.info("%s: applied rule set %s v%d (%d rules)", self.config.device, target, ruleset.version, len(ruleset.rules))
        self._ack(target, ruleset.version, "applied", None)
        self._publish(self.topic_status, canonical_json(self.status()), retain=True)  # new ruleset_version

    def _ack(self, target: str, version: int | None, status: str, reason: str | None) -> None:
        doc = {
            "schema": ACK_SCHEMA,
            "target": target,
            "version": version,
            "status": status,
            "reason": reason,
            "device": self.config.device,
            "fleet": self.config.fleet,
            "sent_at": time.time(),
        }
        self._publish(self.topic_ack, canonical_json(doc), retain=False)

    def _restore_state(self) -> None:
        """Re-apply the rule sets applied before a restart (checked again: keys may have changed)."""
        for target in (rs.ALL_DEVICES, self.config.device):
            path = self._rules_dir / f"{target}.json"
            if not path.exists():
                continue
            try:
                ruleset, digest = self._check_ruleset(target, path.read_bytes())
                self.apply_rules(ruleset)
            except Exception as exc:
                log.error("%s: stored rule set %s not re-applied: %s", self.config.device, path, exc)
                continue
            self._applied[target] = _Applied(ruleset.version, digest)
        try:
            self.model_version = int(load_json(self._model_state.read_bytes())["version"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s: unreadable %s: %s", self.config.device, self._model_state, exc)

    # --- models --------------------------------------------------------------

    def _handle_model(self, envelope: bytes) -> None:
        try:
            doc = open_envelope(envelope, self.keys, max_bytes=MODEL_MAX_BYTES)
            meta, tflite, version = check_model_push(doc, self.model_version)
            if self.on_model is None:
                raise ValueError("this agent takes no model updates")
            try:
                self.on_model(meta, tflite)
            except Exception as exc:
                raise ValueError(f"model not installed, old model kept: {exc}") from None
        except (SignatureError, ValueError) as exc:
            self.stats.models_rejected += 1
            self.stats.model_error = short_reason(str(exc))
            log.error("%s: model update rejected: %s", self.config.device, self.stats.model_error)
        else:
            write_atomically(self._model_state, canonical_json({"version": version}))
            self.model_version = version
            self.stats.models_applied += 1
            self.stats.model_error = None
            log.info("%s: model version %d installed (%d bytes)", self.config.device, version, len(tflite))
        if self._connected.is_set():
            self._publish(self.topic_status, canonical_json(self.status()), retain=True)
