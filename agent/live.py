"""The live agent: capture -> parse -> filter -> features -> model -> decide -> act/report, until stopped.

``LiveAgent`` wires the stages together for one interface.  It owns no
detection logic itself; each stage lives in its own module.  Signals:
SIGTERM/SIGINT stop it cleanly (rules saved, kernel table removed), SIGHUP
reloads the configuration's allowlist and the saved rules (the metrics address
and the event log stay as they started).

What operators read, besides the log: ``/metrics`` for Prometheus
(agent/metrics.py: ``snapshot`` copies the counters kept here, so a scrape
costs the packet path nothing but a short hold of the lock), the event log
(agent/events.py), and the status heartbeat, which carries the current
packet rate and ``under_attack`` (Home Assistant reads both).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.act.allowlist import effective_allowlist
from agent.act.enforce import Enforcer, make_enforcer
from agent.act.filter import RuleTable
from agent.act.respond import Responder, ResponseConfig
from agent.capture.interface import LiveCapture, interface_index
from agent.capture.packets import LABELS, DecodeStats, FrameBatch
from agent.capture.parse import parse_frames
from agent.config import AgentConfig
from agent.detect.anomaly import AnomalyModelError, load_anomaly
from agent.detect.decide import DecisionConfig, DecisionLayer
from agent.detect.model import Bundle, Classifier, load_bundle
from agent.detect.protocol_classes import packet_classes
from agent.events import EventLog, NoEvents
from agent.features.engine import FeatureExtractor
from agent.fleet.home_assistant import DeviceInfo
from agent.metrics import AgentSnapshot, MetricsServer, families
from agent.profile import RING_BLOCK_KB, Profile
from agent.util import release_free_memory, require

try:
    import psutil
except ImportError:  # an agent dependency; without it /metrics lacks CPU and memory
    psutil = None

log = logging.getLogger(__name__)

STATUS_LOG_S = 60.0  # a summary line in the log this often: what an operator (or the soak run) reads
PIPELINE_DEPTH = 4  # sensed batches waiting for the judge: bounds the memory a burst can take
ATTACK_HOLD_S = 60.0  # "under attack" until this long after the last verdict or packet a rule dropped


@dataclass
class Counters:
    frames: int = 0
    decoded: int = 0
    filtered: int = 0
    classified: int = 0
    verdicts: int = 0
    per_class: list = field(default_factory=lambda: [0] * 6)
    verdict_kinds: Counter = field(default_factory=Counter)  # (class, basis) -> verdicts; changed under the lock
    started: float = field(default_factory=time.time)


class LiveAgent:
    def __init__(self, profile: Profile, config: AgentConfig, interface: str | None = None, enforcement: str | None = None):
        self.profile = profile
        self.config = config
        self.interface = interface or profile.interface
        self.enforcement = enforcement or profile.enforcement
        self.counters = Counters()
        self.decode = DecodeStats()
        b = profile.budgets
        self.features = FeatureExtractor(b, max_batch=profile.max_batch)
        self.classifier = self._make_classifier(load_bundle(config.model) if config.model else load_bundle())
        self.anomaly = load_anomaly(config.anomaly, config.anomaly_model)
        # As many tracked sources and targets as the profile allows source streams.
        self.decision = DecisionLayer(
            DecisionConfig(threshold=config.threshold, min_packets=config.min_packets, max_sources=b.h, max_targets=b.h)
        )
        state = Path(config.state_dir)
        allow = self._allowlist(config)
        self.rules = RuleTable(allow, config.max_local_rules, path=state / "rules.json")
        self.enforcer: Enforcer = make_enforcer(self.enforcement, allow=allow)
        self.device_id = config.mqtt.device if config.mqtt else socket.gethostname()
        e = config.events
        self.events = EventLog(e.path, self.device_id, e.max_bytes, e.backups) if e else NoEvents()
        self.responder = Responder(
            self.rules,
            self.enforcer,
            ResponseConfig(block_seconds=config.block_seconds, block_sources=config.block, block_floods=config.block,
                           block_anomalies=config.block and config.anomaly == "enforce",
                           flood_rate=self.decision.cfg.flood_rate),
            events=self.events,
        )
        self.capture: LiveCapture | None = None
        self.lock = threading.Lock()  # the MQTT thread changes rules and model while capture runs
        self.fleet = None
        if config.mqtt is not None:
            import agent
            from agent.fleet.link import FleetLink  # paho is imported only by agents in a fleet

            self.fleet = FleetLink(config.mqtt, self.responder, self.lock, swap_model=self._swap_model,
                                   make_classifier=self._make_classifier, events=self.events,
                                   device_info=DeviceInfo(model=profile.name, sw_version=agent.__version__))  # fmt: skip
        self.metrics: MetricsServer | None = None
        if config.metrics is not None:
            self.metrics = MetricsServer(config.metrics, lambda: families(self.snapshot()))
        self._process = psutil.Process() if psutil is not None else None
        self._last_housekeeping = 0.0
        self._last_status = 0.0
        self._last_status_log = time.time()
        self._last_hostile = 0.0  # wall time of the last verdict, or of the last packet a rule dropped
        self._filtered_seen = 0
        self._status_mark = (self.counters.started, 0)  # (time, frames) of the last status: its packet rate
        self._status_attack = False  # under_attack as the last status said

    @staticmethod
    def _allowlist(config: AgentConfig) -> list[str]:
        return effective_allowlist(config.allowlist, config.mqtt.host if config.mqtt else None)

    def _make_classifier(self, bundle: Bundle) -> Classifier:
        p = self.profile
        return Classifier(bundle, runtime=p.runtime, batch_size=p.infer_batch, num_threads=p.threads)

    def _swap_model(self, classifier: Classifier) -> None:
        self.classifier = classifier

    # --- life cycle --------------------------------------------------------------

    @staticmethod
    def check_privileges(enforcement: str) -> None:
        """Fail early, naming the missing capability (CAP_NET_RAW; CAP_NET_ADMIN for nftables)."""
        caps = ["CAP_NET_RAW"] + (["CAP_NET_ADMIN"] if enforcement == "nftables" else [])
        require(caps, "to capture traffic and install kernel drop rules")

    def check(self) -> None:
        """What start() needs, checked before it creates anything (state folder, kernel table)."""
        self.check_privileges(self.enforcement)
        interface_index(self.interface)
        self.enforcer.check()

    def start(self) -> None:
        """Start every stage, or (on failure) none: what was started is stopped again, and the error raised."""
        self.check()
        Path(self.config.state_dir).mkdir(parents=True, exist_ok=True)
        undo = []  # what to stop if a later stage fails; each stop is safe on a stage that did not start
        try:
            if self.metrics is not None:  # first: an address in use fails the start before anything else
                undo.append(self.metrics.stop)
                self.metrics.start()
            undo.append(self.enforcer.stop)
            self.enforcer.start()
            loaded = self.responder.restore()
            log.info("agent on %s: %d saved rules re-applied, enforcement %s", self.interface, loaded, self.enforcement)
            blocks = self.profile.capture_ring_kb // RING_BLOCK_KB
            self.capture = LiveCapture(self.interface, block_size=RING_BLOCK_KB * 1024, block_count=blocks, snaplen=256).open()
            undo.append(self.capture.close)
            if self.fleet is not None:
                undo.append(self.fleet.stop)
                self.fleet.start()
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception as exc:  # the start's own error is the one to report
                    log.warning("while undoing a failed start: %s", exc)
            self.capture = None
            raise
        self.events.write("agent_started", interface=self.interface, profile=self.profile.name,
                          enforcement=self.enforcement, model=self.classifier.bundle.version,
                          runtime=self.classifier.runtime, rules_restored=loaded)  # fmt: skip

    def reload(self, config: AgentConfig) -> None:
        """SIGHUP: new allowlist, thresholds and anomaly mode, rules re-read from disk and re-applied."""
        if (config.anomaly, config.anomaly_model) != (self.config.anomaly, self.config.anomaly_model):
            try:
                self.anomaly = load_anomaly(config.anomaly, config.anomaly_model)
            except AnomalyModelError as exc:
                log.error("anomaly model not reloaded, the old one stays: %s", exc)
        self.decision.cfg.threshold, self.decision.cfg.min_packets = config.threshold, config.min_packets
        rc = self.responder.config
        rc.block_sources = rc.block_floods = config.block
        rc.block_anomalies = config.block and config.anomaly == "enforce"
        self.config = config
        self.responder.reload(self._allowlist(config))
        log.info("reloaded configuration and %d rules", self.rules.count())

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        self.rules.save()
        try:
            self.enforcer.stop()
        finally:
            if self.capture is not None:
                self.capture.close()
            if self.metrics is not None:
                self.metrics.stop()
        summary = self.summary()
        log.info("agent stopped: %s", summary)
        self.events.write("agent_stopped", frames=summary["frames"], verdicts=summary["verdicts"],
                          rules=summary["rules"], kernel_drops=summary["kernel_drops"])  # fmt: skip
        self.events.close()

    def run(self, stop: threading.Event, reload_request: threading.Event | None = None, reload_config=None) -> None:
        """Process frames until ``stop`` is set.  On a board with two cores or more the stages run as a pipeline:
        one thread captures, parses, filters and computes features while the calling thread classifies, decides
        and acts on the batch before (the compiled kernels, numpy and the interpreter release the GIL)."""
        assert self.capture is not None, "start() first"
        if self.profile.cores < 2:
            for frames in self.capture.batches(stop):
                # The ring hands over every ready block at once: what arrived since the last round, up to the
                # profile's largest batch, goes through at once (few frames when idle, many under load).
                for batch in frames.split(self.profile.max_batch):
                    self.process(batch)
                self._between_batches(reload_request, reload_config)
        else:
            self._run_pipelined(stop, reload_request, reload_config)
        # batches() also returns on stop while idle; housekeeping once more
        self.housekeeping(force=True)

    def _run_pipelined(self, stop: threading.Event, reload_request, reload_config) -> None:
        # Bounded: a slow judge stalls the sensor, the ring then fills and the kernel counts the drops.
        sensed: queue.Queue = queue.Queue(maxsize=PIPELINE_DEPTH)
        failure: list[BaseException] = []

        def sensor() -> None:
            try:
                for frames in self.capture.batches(stop):
                    for batch in frames.split(self.profile.max_batch):
                        item = self.sense(batch)
                        while item is not None and not stop.is_set():
                            try:
                                sensed.put(item, timeout=0.2)
                                break
                            except queue.Full:
                                continue
            except BaseException as exc:  # handed to the calling thread, which stops the agent with it
                failure.append(exc)
            finally:
                with contextlib.suppress(queue.Full):
                    sensed.put(None, timeout=1.0)  # the end mark (the judge also stops on ``stop``)

        thread = threading.Thread(target=sensor, name="sensor", daemon=True)
        thread.start()
        try:
            while thread.is_alive() or not sensed.empty():
                try:
                    item = sensed.get(timeout=0.2)
                except queue.Empty:
                    self._between_batches(reload_request, reload_config)
                    continue
                if item is None:
                    break
                self.judge(*item)
                self._between_batches(reload_request, reload_config)
        finally:
            stop.set()
            while thread.is_alive():  # drain, so a sensor blocked on a full queue sees the stop
                with contextlib.suppress(queue.Empty):
                    sensed.get(timeout=0.1)
            thread.join()
        if failure:
            raise failure[0]

    def _between_batches(self, reload_request, reload_config) -> None:
        self.housekeeping()
        if reload_request is not None and reload_request.is_set():
            reload_request.clear()
            self.reload(reload_config() if reload_config else self.config)

    # --- the pipeline ----------------------------------------------------------------

    def process(self, frames: FrameBatch) -> list[dict]:
        """One batch through every stage; returns the alerts it raised."""
        item = self.sense(frames)
        return self.judge(*item) if item is not None else []

    def sense(self, frames: FrameBatch) -> tuple | None:
        """parse -> filter -> features: (packets, features), or None when the rules dropped every packet."""
        c = self.counters
        c.frames += len(frames)
        packets = parse_frames(frames, self.decode)
        c.decoded += len(packets)
        with self.lock:
            filtered = self.rules.apply(packets)
        c.filtered += filtered.dropped
        packets = packets.take(filtered.keep)
        if not len(packets):
            return None
        return packets, self.features.update(packets)

    def judge(self, packets, feats: np.ndarray) -> list[dict]:
        """model -> decide -> act/report for sensed packets; returns the alerts raised."""
        c = self.counters
        with self.lock:
            classifier = self.classifier
        scores = classifier.predict_scores(feats, packet_classes(packets, feats))
        labels = scores.argmax(axis=1)
        c.classified += len(packets)
        for k, n in enumerate(np.bincount(labels, minlength=6).tolist()):
            c.per_class[k] += n
        odd = self.anomaly.score(feats) if self.anomaly is not None else None
        verdicts = self.decision.update(packets, scores, feats, odd)
        if not verdicts:
            return []
        c.verdicts += len(verdicts)
        self._last_hostile = time.time()
        with self.lock:
            for v in verdicts:
                c.verdict_kinds[(v.label, v.basis)] += 1
            alerts = self.responder.act(verdicts)
        if self.fleet is not None:
            for a in alerts:
                if a["source"]["ip"] != "spoofed":  # the fleet policy acts on addresses only
                    self.fleet.send_alert(a)
        return alerts

    def housekeeping(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        release_free_memory()
        if now - self._last_status_log >= STATUS_LOG_S:
            self._last_status_log = now
            log.info("status: %s", self.summary())
        if self.counters.filtered != self._filtered_seen:  # a rule still drops an attacker's packets
            self._filtered_seen = self.counters.filtered
            self._last_hostile = now
        attack = self.under_attack(now)
        # The status goes out every status_interval_s, and at once when under_attack changes (Home Assistant).
        if self.fleet is not None and (now - self._last_status >= self.config.mqtt.status_interval_s
                                       or attack != self._status_attack):  # fmt: skip
            self._last_status, self._status_attack = now, attack
            stats = self.capture.stats() if self.capture is not None else None
            (then, frames), self._status_mark = self._status_mark, (now, self.counters.frames)
            self.fleet.client.publish_status(
                packets_per_s=round((self.counters.frames - frames) / max(now - then, 1e-3), 1),  # since the last one
                drops=getattr(stats, "kernel_drops", 0),
                model_version=self.classifier.bundle.version,
                under_attack=attack,
            )
        with self.lock:
            self.responder.housekeeping(now)

    def under_attack(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self._last_hostile < ATTACK_HOLD_S

    def snapshot(self) -> AgentSnapshot:
        """The numbers /metrics shows (called from the metrics server's thread)."""
        now = time.time()
        c = self.counters
        with self.lock:  # the MQTT thread swaps rule sets and the model
            rules = {"local": 0, "fleet": 0}
            for e in self.rules.entries.values():
                if e.rule.active(now):
                    rules["local" if e.origin == "local" else "fleet"] += 1
            verdicts = dict(c.verdict_kinds)
            bundle, runtime = self.classifier.bundle.version, self.classifier.runtime
        kernel_drops = None
        if self.capture is not None:
            try:
                kernel_drops = self.capture.stats().kernel_drops
            except OSError:  # closing as we read
                pass
        rss = cpu = None
        if self._process is not None:
            times = self._process.cpu_times()
            rss, cpu = self._process.memory_info().rss, times.user + times.system
        logging_events = not isinstance(self.events, NoEvents)
        return AgentSnapshot(
            now=now, started=c.started, frames=c.frames, decoded=c.decoded, filtered=c.filtered,
            per_class=dict(zip(LABELS, list(c.per_class))), verdicts=verdicts, rules=rules,
            model_version=bundle, runtime=runtime, under_attack=self.under_attack(now), kernel_drops=kernel_drops,
            rss_bytes=rss, cpu_seconds=cpu, fleet=self.fleet.summary() if self.fleet is not None else None,
            events_written=self.events.written if logging_events else None,
            event_failures=self.events.failures if logging_events else None,
        )  # fmt: skip

    def summary(self) -> dict:
        c = self.counters
        stats = self.capture.stats() if self.capture is not None else None
        return {
            "frames": c.frames,
            "decoded": c.decoded,
            "filtered": c.filtered,
            "classified": c.classified,
            "verdicts": c.verdicts,
            "per_class": dict(zip(LABELS, c.per_class)),
            "rules": self.rules.count(),
            "kernel_drops": getattr(stats, "kernel_drops", None),
            "skipped": dict(self.decode.skipped),
            **({"fleet": self.fleet.summary()} if self.fleet is not None else {}),
        }
