"""The live agent: capture -> parse -> filter -> features -> model -> decide -> act/report, until stopped.

``LiveAgent`` wires the stages together for one interface.  It owns no
detection logic itself; each stage lives in its own module.  Signals:
SIGTERM/SIGINT stop it cleanly (rules saved, kernel table removed), SIGHUP
reloads the configuration's allowlist and the saved rules.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .capture_live import LiveCapture
from .config import AgentConfig
from .decide import DecisionConfig, DecisionLayer
from .enforce import Enforcer, make_enforcer
from .features import Budgets, FeatureExtractor
from .filter import RuleTable
from .model import Classifier, load_bundle
from .packets import DecodeStats, FrameBatch
from .parse import parse_frames
from .privileges import require
from .profile import Profile
from .respond import Responder, ResponseConfig, block_entry

log = logging.getLogger(__name__)


@dataclass
class Counters:
    frames: int = 0
    decoded: int = 0
    filtered: int = 0
    classified: int = 0
    verdicts: int = 0
    per_class: list = field(default_factory=lambda: [0] * 6)
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
        self.features = FeatureExtractor(Budgets(b.mi_dir, b.h, b.hh, b.hh_jit, b.hphp), max_batch=profile.batch_size)
        bundle = load_bundle(config.model) if config.model else load_bundle()
        self.classifier = Classifier(bundle, runtime=profile.runtime, batch_size=min(1024, profile.batch_size * 4))
        self.decision = DecisionLayer(DecisionConfig(threshold=config.threshold, min_packets=config.min_packets))
        state = Path(config.state_dir)
        self.rules = RuleTable(config.allowlist, config.max_local_rules, path=state / "rules.json")
        self.enforcer: Enforcer = make_enforcer(self.enforcement)
        self.responder = Responder(self.rules, self.enforcer, ResponseConfig(block_seconds=config.block_seconds))
        self.capture: LiveCapture | None = None
        self.reporter = None  # set by attach_reporter (MQTT)
        self._last_housekeeping = 0.0

    # --- life cycle --------------------------------------------------------------

    @staticmethod
    def check_privileges(enforcement: str) -> None:
        """Fail early, naming the missing capability (CAP_NET_RAW; CAP_NET_ADMIN for nftables)."""
        caps = ["CAP_NET_RAW"] + (["CAP_NET_ADMIN"] if enforcement == "nftables" else [])
        require(caps, "to capture traffic and install kernel drop rules")

    def check(self) -> None:
        self.check_privileges(self.enforcement)
        self.enforcer.check()

    def start(self) -> None:
        self.check()
        Path(self.config.state_dir).mkdir(parents=True, exist_ok=True)
        loaded = self.rules.load()
        self.enforcer.start()
        now = time.time()
        self.enforcer.sync([block_entry(r, now) for r in self.rules.rules()])
        log.info("agent on %s: %d saved rules re-applied, enforcement %s", self.interface, loaded, self.enforcement)
        self.capture = LiveCapture(self.interface, snaplen=256).open()

    def reload(self, config: AgentConfig) -> None:
        """SIGHUP: new allowlist and thresholds, rules re-read from disk and re-applied."""
        self.config = config
        self.rules.allow = RuleTable(config.allowlist).allow
        self.rules.entries.clear()
        self.rules.load()
        self.enforcer.sync([block_entry(r, time.time()) for r in self.rules.rules()])
        log.info("reloaded configuration and %d rules", self.rules.count())

    def stop(self) -> None:
        self.rules.save()
        try:
            self.enforcer.stop()
        finally:
            if self.capture is not None:
                self.capture.close()
        log.info("agent stopped: %s", self.summary())

    def run(self, stop: threading.Event, reload_request: threading.Event | None = None, reload_config=None) -> None:
        assert self.capture is not None, "start() first"
        for frames in self.capture.batches(stop):
            self.process(frames)
            self.housekeeping()
            if reload_request is not None and reload_request.is_set():
                reload_request.clear()
                self.reload(reload_config() if reload_config else self.config)
        # batches() also returns on stop while idle; housekeeping once more
        self.housekeeping(force=True)

    # --- the pipeline ----------------------------------------------------------------

    def process(self, frames: FrameBatch) -> list[dict]:
        c = self.counters
        c.frames += len(frames)
        packets = parse_frames(frames, self.decode)
        c.decoded += len(packets)
        filtered = self.rules.apply(packets)
        c.filtered += filtered.dropped
        packets = packets.take(filtered.keep)
        if not len(packets):
            return []
        feats = self.features.update(packets)
        scores = self.classifier.dequantize(self.classifier.predict_int8(feats))
        labels = scores.argmax(axis=1)
        c.classified += len(packets)
        for k, n in enumerate(np.bincount(labels, minlength=6).tolist()):
            c.per_class[k] += n
        verdicts = self.decision.update(packets, scores)
        c.verdicts += len(verdicts)
        alerts = self.responder.act(verdicts)
        if alerts:
            self.rules.save()
            if self.reporter is not None:
                for a in alerts:
                    self.reporter.send_alert(a)
        return alerts

    def housekeeping(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        gone = self.rules.expire(now)
        if gone:
            self.rules.save()
        # Renew the rules of sources that are still hostile.
        active = [rid for rid, e in self.rules.entries.items() if e.origin == "local" and e.hits and e.rule.expires]
        if active:
            self.responder.renew([rid for rid in active if self.rules.entries[rid].rule.expires - now < 0.5 * self.config.block_seconds])

    def summary(self) -> dict:
        c = self.counters
        stats = self.capture.stats() if self.capture is not None else None
        return {
            "frames": c.frames,
            "decoded": c.decoded,
            "filtered": c.filtered,
            "classified": c.classified,
            "verdicts": c.verdicts,
            "rules": self.rules.count(),
            "kernel_drops": getattr(stats, "kernel_drops", None),
            "skipped": dict(self.decode.skipped),
        }
