"""The agent's MQTT side: alerts and status out, signed rule sets and models in.

Topics (DESIGN 7), with ``prefix`` = ``iotguard/v1`` by default::

    {prefix}/{fleet}/{device}/alerts      agent -> controller, QoS 1
    {prefix}/{fleet}/{device}/status      agent -> controller, QoS 1, retained, last will "offline"
    {prefix}/{fleet}/{device}/rules       controller -> agent, QoS 1, retained, signed
    {prefix}/{fleet}/all/rules            controller -> agent, QoS 1, retained, signed
    {prefix}/{fleet}/{device}/rules/ack   agent -> controller, QoS 1
    {prefix}/{fleet}/{device}/model       controller -> agent, QoS 1, signed

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

import base64
import binascii
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from agent.wire import rules as rs
from agent.fleet.alert_queue import AlertQueue, write_atomically
from agent.wire.jsonio import canonical_json, load_json
from agent.wire.signing import SignatureError, TrustedKeys, open_envelope

try:
    import psutil
except ImportError:  # an agent dependency; without it the status simply lacks CPU and RSS
    psutil = None

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "iotguard/v1"
ALERT_SCHEMA = "iotguard.alert/1"
STATUS_SCHEMA = "iotguard.status/1"
ACK_SCHEMA = "iotguard.rules-ack/1"
MODEL_SCHEMA = "iotguard.model-push/1"
MODEL_MAX_BYTES = 16 * 1024 * 1024  # envelope of a model push (base64 inflates the .tflite by 4/3)
RULES_MAX_BYTES = rs.MAX_BYTES * 4 // 3 + 4096  # envelope around a rule set of at most MAX_BYTES
MODEL_FIELDS = ("schema", "version", "bundle", "tflite_b64", "sha256")
MODEL_MAX_VERSION = 2**53  # as for rule sets: exact in every JSON reader, and far above unix seconds
REASON_MAX_CHARS = 512  # a rejection reason travels in acks and in every status: enough to act on, never a payload

# What the agent's detector must fill in; the client adds schema, device, fleet, seq, sent_at.
ALERT_FIELDS = ("class", "confidence", "source", "victim", "packets", "first_seen", "last_seen", "action", "rule_id")
# The topic kinds below {prefix}/{fleet}/{device}/.
KINDS = ("alerts", "status", "rules", "rules/ack", "model")


# --- topics ------------------------------------------------------------------


class TopicParts(NamedTuple):
    fleet: str
    device: str  # "all" for the fleet-wide rule set
    kind: str  # one of KINDS


def topic(prefix: str, fleet: str, device: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{prefix}/{fleet}/{device}/{kind}"


def short_reason(reason: str) -> str:
    """A rejection reason fit to publish: bounded, and UTF-8 (a JSON "\\ud800" escape decodes to a lone surrogate)."""
    reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    return reason if len(reason) <= REASON_MAX_CHARS else reason[: REASON_MAX_CHARS - 1] + "\u2026"


def parse_topic(prefix: str, name: str) -> TopicParts | None:
    """Split a topic of ours into (fleet, device, kind); None for anything else."""
    if not name.startswith(prefix + "/"):
        return None
    parts = name[len(prefix) + 1 :].split("/", 2)
    if len(parts) != 3 or parts[2] not in KINDS or not all(rs.NAME_RE.match(p) for p in parts[:2]):
        return None
    return TopicParts(*parts)


# --- configuration -----------------------------------------------------------


@dataclass
class MqttConfig:
    host: str
    fleet: str
    device: str
    state_dir: Path  # alert queue + applied rule sets + model version live here
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    protocol: str = "5"  # "5" or "3.1.1"
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    max_inflight: int = 32  # alerts handed to paho and not yet acknowledged
    queue_max_items: int = 10_000
    tls_ca: Path | None = None  # TLS is on when this is set
    tls_cert: Path | None = None  # client certificate (its CN is the device name on our brokers)
    tls_key: Path | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        for what in ("fleet", "device"):
            value = getattr(self, what)
            if not rs.NAME_RE.match(value):
                raise ValueError(f"{what} name {value!r} must match {rs.NAME_RE.pattern}")
        if self.device == rs.ALL_DEVICES:
            raise ValueError(f"device name {rs.ALL_DEVICES!r} is reserved for the fleet-wide rule set")
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', got {self.protocol!r}")
        self.state_dir = Path(self.state_dir)


def make_client(client_id: str, protocol: str, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None,
                username: str | None = None, password: str | None = None, manual_ack: bool = False,
                persistent_session: bool = False) -> mqtt.Client:
    """A paho 2 client with TLS and credentials set up (shared with the controller).

    ``persistent_session`` only matters for MQTT 3.1.1 here; MQTT 5 sets it at connect time.
    """
    v5 = protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent_session,
        manual_ack=manual_ack,
    )
    if tls_ca is not None:
        client.tls_set(
            ca_certs=str(tls_ca),
            certfile=str(tls_cert) if tls_cert else None,
            keyfile=str(tls_key) if tls_key else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if username is not None:
        client.username_pw_set(username, password)
    return client


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
            meta, tflite, version = self._check_model(doc)
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

    def _check_model(self, doc: dict[str, Any]) -> tuple[dict[str, Any], bytes, int]:
        if doc.get("schema") != MODEL_SCHEMA:
            raise ValueError(f"model push schema {doc.get('schema')!r}, want {MODEL_SCHEMA!r}")
        unknown = sorted(set(doc) - set(MODEL_FIELDS))
        if unknown:  # as strict as rule sets and envelopes: a field we do not know is not silently dropped
            raise ValueError(f"unknown model push field(s): {', '.join(map(repr, unknown))}")
        version = doc.get("version")
        # Bounded: a signed push of version 10**400 would otherwise be installed and lock out every later one.
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MODEL_MAX_VERSION:
            raise ValueError(f"model push version must be an integer in 1..{MODEL_MAX_VERSION}, got {version!r}")
        if version <= self.model_version:
            raise ValueError(f"model version {version} is not newer than installed version {self.model_version}")
        meta, b64, digest = doc.get("bundle"), doc.get("tflite_b64"), doc.get("sha256")
        if not isinstance(meta, dict) or not isinstance(b64, str) or not isinstance(digest, str):
            raise ValueError("model push needs bundle (object), tflite_b64 (string) and sha256 (string)")
        try:
            tflite = base64.b64decode(b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("tflite_b64 is not valid base64") from None
        actual = hashlib.sha256(tflite).hexdigest()
        if actual != digest.lower():
            raise ValueError(f"model sha256 mismatch: got {actual}, message says {digest!r}")
        return meta, tflite, version
