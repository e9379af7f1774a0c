"""The agent's MQTT side: alerts and status out, signed rule sets and models in.

Topics, schemas and the checks of what arrives are the wire contract shared
with the controller (``agent.wire``, topics in ``agent.wire.messages``).

Alerts are never lost to a broker outage: ``send_alert`` stores the alert in
the on-disk ``AlertQueue`` and a sender thread publishes from there, at most
``max_inflight`` at a time (paho re-sends unacknowledged ones after a
reconnect).  A PUBACK only says the broker has the alert; a broker restart can
still lose it (mosquitto does not restore shared subscriptions, so it reaches
no controller).  So where the controller confirms what it stored (on
``{prefix}/{fleet}/{device}/alerts/ack``), the alert stays on disk until a
confirmation covers it, and is sent again with the same seq when none came
``confirm_timeout_s`` after its PUBACK (then after twice that, and so on).
``confirm_alerts`` chooses when to wait for confirmations:

    auto    (default) once this device has received one confirmation (remembered on
            disk); before that, and for ever with a controller too old to confirm, an
            alert leaves the disk at its PUBACK, as before confirmations existed
    always  from the first alert (a fleet whose controllers all confirm: a new
            device's first alerts are covered too); a controller that never
            confirms gets every alert again and again, and the queue fills
    off     never (and no subscription to the confirmations)

A confirmation is not signed (alerts are not either; the broker's ACL lets
only controllers write to the topic).  One that does not parse, names another
device, or covers a seq this device has not sent yet is refused with a log
line and changes nothing.  The controller deduplicates by (device, seq), so
double deliveries are harmless.

A rule set is applied only if its signature, schema, fleet, target and version
(strictly newer than the last applied one for that target) are all good.  The
last applied envelope of each target is kept on disk and re-applied by
``start``, so a rebooted board enforces its rules before it reaches a broker.

Rule sets and model pushes, applied or refused, are also written to the
agent's event log (``events``, agent/events.py).  With ``home_assistant`` set,
every connection also publishes the Home Assistant discovery configs
(agent/fleet/home_assistant.py), retained, before the status they read.
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
from agent.events import NoEvents
from agent.fleet.alert_queue import Acked, AlertQueue
from agent.fleet.home_assistant import DeviceInfo, discovery_messages
from agent.util import write_atomically
from agent.wire import (
    ACK_SCHEMA,
    ALERT_FIELDS,
    ALERT_SCHEMA,
    MODEL_MAX_BYTES,
    MODEL_MAX_VERSION,
    RULES_MAX_BYTES,
    STATUS_SCHEMA,
    MessageError,
    SignatureError,
    TrustedKeys,
    canonical_json,
    check_model_push,
    load_json,
    make_client,
    open_envelope,
    parse_alerts_ack,
)
from agent.wire import rules as rs
from agent.wire import short_reason, topic

try:
    import psutil
except ImportError:  # an agent dependency; without it the status simply lacks CPU and RSS
    psutil = None

log = logging.getLogger(__name__)

# --- the client --------------------------------------------------------------


def _agent_version() -> str:
    import agent

    return agent.__version__


@dataclass
class _Applied:
    version: int
    digest: str  # sha256 of the canonical payload: tells a duplicate delivery from a replay


@dataclass
class AgentStats:
    # alerts_sent: alerts that left the queue delivered: confirmed by a controller, or acknowledged by the
    # broker where no confirmation is awaited (or let go unconfirmed to make room: queue.released)
    alerts_sent: int = 0
    alerts_confirmed: int = 0  # of those, covered by a controller's confirmation
    alerts_resent: int = 0  # publishes again of alerts the broker had acknowledged but no controller confirmed
    alerts_rejected_by_broker: int = 0  # PUBACK with an error reason (MQTT 5): dropped, logged
    confirmations: int = 0  # controller confirmations accepted
    confirmations_refused: int = 0  # malformed, for another device, or beyond what this device has sent
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
    installs a model and raises to keep the old one.  ``events`` (an
    ``agent.events.EventLog``) records rule sets and models applied or refused;
    ``device_info`` is what Home Assistant's device registry shows.
    """

    def __init__(
        self,
        config: MqttConfig,
        keys: TrustedKeys,
        apply_rules: Callable[[rs.RuleSet], None],
        on_model: Callable[[dict[str, Any], bytes], None] | None = None,
        events: Any = None,
        device_info: DeviceInfo | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.apply_rules = apply_rules
        self.on_model = on_model
        self.events = events if events is not None else NoEvents()
        self.device_info = device_info or DeviceInfo(model="unknown", sw_version=_agent_version())
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
        self.topic_alerts_ack = topic(c.prefix, c.fleet, c.device, "alerts/ack")
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
        # mid -> (alert seq or None, topic).  PUBACK can arrive before publish() has returned the mid to
        # us, so unmatched PUBACKs wait in _early_acks with their reason code; _mid_lock guards both, and the
        # stats that two threads count.
        self._mid_lock = threading.Lock()
        self._mids: dict[int, tuple[int | None, str]] = {}
        self._early_acks: dict[int, Any] = {}

        self.client = make_client(
            f"iotguard-{c.fleet}-{c.device}", c.protocol, c.tls_ca, c.tls_cert, c.tls_key, c.username, c.password
        )
        self.client.reconnect_delay_set(min_delay=max(1, round(c.reconnect_min_s)), max_delay=max(1, round(c.reconnect_max_s)))
        self.client.will_set(self.topic_status, canonical_json(self._status_doc("offline")), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

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

    @property
    def holding(self) -> bool:
        """Whether alerts wait on disk for a controller's confirmation after their PUBACK."""
        mode = self.config.confirm_alerts
        return mode == "always" or (mode == "auto" and self.queue.confirmations)

    def _count(self, **increments: int) -> None:
        """Add to the stats; the agent thread and paho's network thread both count."""
        with self._mid_lock:
            for name, n in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def send_alert(self, alert: dict[str, Any]) -> int:
        """Queue an alert durably and return its seq; it is published as soon as the broker is reachable."""
        missing = [f for f in ALERT_FIELDS if f not in alert]
        if missing:
            raise ValueError(f"alert lacks field(s): {', '.join(missing)}")
        doc = {**alert, "schema": ALERT_SCHEMA, "device": self.config.device, "fleet": self.config.fleet}
        released = self.queue.released
        seq = self.queue.put(doc)
        self._count(alerts_sent=self.queue.released - released)  # let go unconfirmed: the broker had them
        self._wake.set()
        return seq

    def _send_loop(self) -> None:
        """The only thread that hands alerts to paho (so no lock is held across publish())."""
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            room = self.config.max_inflight - self.queue.in_flight()
            if room <= 0:
                continue
            # Every seq below the first pending one is delivered or given up: the controller need not wait for it.
            first_pending = self.queue.first_pending()
            resend_after = self.config.confirm_timeout_s if self.holding else None
            for item in self.queue.take(room, time.time(), resend_after):
                if item.resend:
                    self._count(alerts_resent=1)
                    log.info("%s: alert seq %d not confirmed by a controller: sending it again", self.config.device,
                             item.seq)  # fmt: skip
                message = {**item.alert, "sent_at": time.time(), "first_pending": first_pending}
                self._publish(self.topic_alerts, canonical_json(message), retain=False, seq=item.seq)

    def _publish(self, name: str, payload: bytes, retain: bool, seq: int | None = None) -> None:
        info = self.client.publish(name, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # Not queued by paho at all (e.g. its own queue full): the alert stays on disk for the next pass.
            log.warning("%s: publish to %s failed: %s", self.config.device, name, mqtt.error_string(info.rc))
            if seq is not None:
                self.queue.unsend(seq)
            return
        with self._mid_lock:
            reason_code = self._early_acks.pop(info.mid, None)
            if reason_code is None:
                self._mids[info.mid] = (seq, name)
        if reason_code is not None:
            self._acked(seq, name, reason_code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Runs inside paho's message lock: only bookkeeping here, no publish().
        with self._mid_lock:
            if mid not in self._mids:
                self._early_acks[mid] = reason_code
                return
            seq, name = self._mids.pop(mid)
        self._acked(seq, name, reason_code)

    def _acked(self, seq: int | None, name: str, reason_code: Any) -> None:
        """The broker's PUBACK (MQTT 5 says why it refused; 3.1.1 brokers drop refused messages silently)."""
        failed = bool(getattr(reason_code, "is_failure", False))
        if seq is not None:
            self._delivered(seq, ok=not failed)
            if failed:
                log.error("%s: broker refused alert seq %d: %s", self.config.device, seq, reason_code)
        elif failed:  # e.g. Home Assistant discovery outside what the broker's ACL lets this device write
            log.warning("%s: broker refused the publish to %s: %s", self.config.device, name, reason_code)

    def _delivered(self, seq: int, ok: bool) -> None:
        outcome = self.queue.broker_acked(seq, time.time(), hold=ok and self.holding)
        if outcome in (Acked.DELIVERED, Acked.UNDROPPED):
            self._count(**{"alerts_sent" if ok else "alerts_rejected_by_broker": 1})
        self._wake.set()

    def _handle_confirmation(self, payload: bytes) -> None:
        """A controller stored this device's alerts up to some seq: forget them."""
        try:
            through = parse_alerts_ack(payload, self.config.fleet, self.config.device)
            if through > self.queue.sent_through:
                # Forged, or a controller database that outlived this device's state: acting on it would
                # drop alerts no controller has.
                raise MessageError(f"it confirms alerts up to seq {through}, but this device has sent only up to "
                                   f"seq {self.queue.sent_through}")  # fmt: skip
        except MessageError as exc:
            log.warning("%s: alert confirmation refused, nothing changed: %s", self.config.device, exc.reason)
            self._count(confirmations_refused=1)  # after the log line: whoever waits on the count sees both
            return
        if self.queue.note_confirmations():
            log.info("%s: the controller confirms stored alerts: alerts now wait on disk for its confirmation",
                     self.config.device)  # fmt: skip
        confirmed = self.queue.confirm(through)
        self._count(confirmations=1, alerts_confirmed=confirmed, alerts_sent=confirmed)
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
            ruleset_version=self.ruleset_versions(),
            rules_error=self.stats.last_rules_error,
            alerts_queued=len(self.queue),
            alerts_dropped=self.queue.dropped,
        )
        if self._process is not None:
            doc.update(cpu_percent=self._process.cpu_percent(None), rss_bytes=self._process.memory_info().rss)
        doc.update(self._metrics)
        doc["sent_at"] = time.time()
        return doc

    def ruleset_versions(self) -> dict[str, int]:
        """Target -> version of the rule set applied last."""
        return {target: a.version for target, a in list(self._applied.items())}

    def publish_discovery(self) -> None:
        """Home Assistant's discovery configs, retained (agent/fleet/home_assistant.py)."""
        c = self.config
        for name, payload in discovery_messages(c.discovery_prefix, c.fleet, c.device, self.topic_status, self.device_info):
            self._publish(name, payload, retain=True)

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
        self.queue.reconnected(time.time())  # confirmations sent while the broker was away are lost
        topics = [*self.rules_topics, self.topic_model]
        if self.config.confirm_alerts != "off":
            topics.append(self.topic_alerts_ack)
        client.subscribe([(name, 1) for name in topics])
        self._connected.set()
        if self.config.home_assistant:  # again on every connection: a broker without persistence forgets them
            self.publish_discovery()
        self._publish(self.topic_status, canonical_json(self.status()), retain=True)
        self._wake.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list, properties: Any) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:  # e.g. an ACL from before confirmations: no alerts/ack, so alerts leave at their PUBACK
            log.error("%s: broker refused a subscription: %s", self.config.device, ", ".join(refused))
        self._subscribed.set()

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
            elif name == self.topic_alerts_ack and self.config.confirm_alerts != "off":
                self._handle_confirmation(message.payload)
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
            self.events.write("ruleset_refused", target=target, version=version, reason=reason)
            self._ack(target, version, "rejected", reason)
            self._publish(self.topic_status, canonical_json(self.status()), retain=True)  # carries rules_error
            return
        write_atomically(self._rules_dir / f"{target}.json", envelope)
        self._applied[target] = _Applied(ruleset.version, digest)
        self.stats.rules_applied += 1
        self.stats.last_rules_error = None
        log.info("%s: applied rule set %s v%d (%d rules)", self.config.device, target, ruleset.version, len(ruleset.rules))
        self.events.write("ruleset_applied", target=target, version=ruleset.version, rules=len(ruleset.rules),
                          issued_at=ruleset.issued_at)  # fmt: skip
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
                self.events.write("ruleset_refused", target=target, version=None, reason=short_reason(str(exc)),
                                  restored=True)  # fmt: skip
                continue
            self._applied[target] = _Applied(ruleset.version, digest)
            self.events.write("ruleset_applied", target=target, version=ruleset.version, rules=len(ruleset.rules),
                              issued_at=ruleset.issued_at, restored=True)  # fmt: skip
        try:
            self.model_version = int(load_json(self._model_state.read_bytes())["version"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            log.error("%s: unreadable %s: %s", self.config.device, self._model_state, exc)

    # --- models --------------------------------------------------------------

    def _handle_model(self, envelope: bytes) -> None:
        version = None
        try:
            doc = open_envelope(envelope, self.keys, max_bytes=MODEL_MAX_BYTES)
            version = doc.get("version") if isinstance(doc, dict) else None
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
            known = isinstance(version, int) and not isinstance(version, bool) and 0 < version <= MODEL_MAX_VERSION
            self.events.write("model_refused", version=version if known else None, reason=self.stats.model_error)
        else:
            write_atomically(self._model_state, canonical_json({"version": version}))
            self.model_version = version
            self.stats.models_applied += 1
            self.stats.model_error = None
            log.info("%s: model version %d installed (%d bytes)", self.config.device, version, len(tflite))
            self.events.write("model_accepted", version=version, bundle=str(meta.get("version", "unknown")),
                              bytes=len(tflite))  # fmt: skip
        if self._connected.is_set():
            self._publish(self.topic_status, canonical_json(self.status()), retain=True)
