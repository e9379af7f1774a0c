"""The act stage: verdicts -> local filter rules, kernel blocks and alerts.

Every change to the rule table goes through the ``Responder``: the local
rules that verdicts make, their renewal and expiry, and the fleet's signed
rule sets (which the fleet link hands over).  It keeps the kernel in step and
the local rules saved.

A hostile source gets a rule on its address with an expiry, renewed while
the attack lasts.  A spoofed flood (a new source per packet) must not fill the
rule table, so it gets one rule on what the flood has in common: its
protocol and destination port (any source), bounded in number like every local
rule.  Allowlisted addresses are never blocked (the rule table refuses them).

Being the one place rules change, it also writes what happened to the event
log (agent/events.py): each verdict, and each block added, renewed, expired or
removed (local rules, and the fleet's as its rule sets change them).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from agent.act.enforce import BlockEntry, EnforcementError, Enforcer
from agent.act.filter import RuleTable, entry_key
from agent.detect.decide import DecisionConfig, Verdict
from agent.events import NoEvents
from agent.wire.rules import Rule

log = logging.getLogger(__name__)

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}
FLOOD_RULE_PREFIX = "flood:"  # ids of the rules on what a spoofed flood has in common


@dataclass
class ResponseConfig:
    block_seconds: float = 600.0  # rule lifetime, renewed while the source stays hostile
    block_sources: bool = True
    block_floods: bool = True
    block_anomalies: bool = False  # anomaly verdicts are reported; blocked only when the configuration says so
    resync_s: float = 10.0  # after a failed kernel update, retry (whole table) at most this often
    # A flood rule (one protocol from any source) is renewed only while it drops a flood's rate;
    # ordinary traffic to the port would keep it for ever otherwise.
    flood_rate: float = DecisionConfig.flood_rate


def rule_for(verdict: Verdict, now: float, cfg: ResponseConfig) -> Rule | None:
    if verdict.basis == "anomaly" and not cfg.block_anomalies:
        return None
    expires = now + cfg.block_seconds
    reason = f"{verdict.label} conf {verdict.confidence:.2f} after {verdict.packets} packets"
    if verdict.kind == "source" and cfg.block_sources and verdict.src_ip:
        net = ipaddress.ip_network(verdict.src_ip)
        return Rule(f"src:{verdict.src_ip}", net, None, None, "drop", expires, reason)
    if verdict.kind == "spoofed" and cfg.block_floods and verdict.victim_ip:
        proto = PROTO_NAMES.get(verdict.proto or -1)
        if proto is None:
            return None
        family = ipaddress.ip_address(verdict.victim_ip).version
        anywhere = ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
        port = verdict.victim_port if proto in ("tcp", "udp") else None
        rid = f"{FLOOD_RULE_PREFIX}{verdict.victim_ip}:{proto}:{port}"
        return Rule(rid, anywhere, proto, port, "drop", expires, reason + " (spoofed sources)")
    return None


def block_entry(rule: Rule, now: float) -> BlockEntry:
    timeout = None if rule.expires is None else max(1.0, rule.expires - now)
    net = rule.network
    address = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return BlockEntry(address=address, proto=rule.proto, dport=rule.dport, timeout=timeout)


def sync_kernel(rules: RuleTable, enforcer: Enforcer, now: float | None = None) -> None:
    """Make the kernel hold exactly the table's active rules (start, SIGHUP, rule sets, recovery)."""
    now = time.time() if now is None else now
    enforcer.sync([block_entry(r, now) for r in rules.rules() if r.active(now)])


@dataclass
class Responder:
    """Turns verdicts into rules (and kernel blocks) and alerts; keeps them fresh."""

    rules: RuleTable
    enforcer: Enforcer
    config: ResponseConfig = field(default_factory=ResponseConfig)
    events: Any = field(default_factory=NoEvents)  # an agent.events.EventLog, or NoEvents
    kernel_stale: bool = field(default=False, init=False)  # a kernel update failed: it lacks rules the table has
    enforcement_errors: int = field(default=0, init=False)
    _last_resync: float = field(default=0.0, init=False, repr=False)
    _renewed: dict[str, tuple[int, float]] = field(default_factory=dict, init=False, repr=False)  # id -> (hits, time)

    # --- the rule table's life: start, reload, stop -----------------------------------

    def restore(self) -> int:
        """At start: the saved local rules back in the table and the kernel."""
        loaded = self.rules.load()
        sync_kernel(self.rules, self.enforcer)
        return loaded

    def reload(self, allowlist: list[str]) -> int:
        """SIGHUP: a new allowlist, the local rules re-read from disk, the kernel re-synced."""
        self.rules.set_allowlist(allowlist)
        self.enforcer.set_allowlist(allowlist)
        loaded = self.rules.reload()
        sync_kernel(self.rules, self.enforcer)
        return loaded

    def apply_ruleset(self, origin: str, rules: list[Rule], now: float | None = None) -> None:
        """A verified rule set from the fleet replaces the rules of its origin (``all`` or ``device``), in the
        table and the kernel.  If the kernel refuses, the table goes back to what the kernel still has and
        the error is raised (the fleet link then rejects the rule set)."""
        now = time.time() if now is None else now
        previous = self.rules.rules(origin)
        self.rules.replace_origin(origin, rules)
        try:
            sync_kernel(self.rules, self.enforcer, now)
        except Exception:
            self.rules.replace_origin(origin, previous)
            raise
        before, after = {r.id: r for r in previous}, {r.id: r for r in self.rules.rules(origin)}
        for rid in after.keys() - before.keys():
            self.events.write("block_added", **rule_fields(after[rid], origin))
        for rid in before.keys() - after.keys():
            self.events.write("block_removed", **rule_fields(before[rid], origin))

    def act(self, verdicts: list[Verdict], now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        new_entries, sent = [], []
        for v in verdicts:
            rule = rule_for(v, now, self.config)
            action, rule_id, existed = "none", None, False
            if rule is not None:
                existed = entry_key("local", rule.id) in self.rules.entries
            if rule is not None and self.rules.add(rule, origin="local"):
                action, rule_id = "drop", rule.id
                new_entries.append(block_entry(rule, now))
            sent.append(alert_document(v, action, rule_id))
            log.warning("hostile: %s -> %s", v.describe(), action)
            self.events.write("verdict", **v.to_dict(), action=action, rule_id=rule_id)
            if rule_id is not None:
                self.events.write("block_renewed" if existed else "block_added", **rule_fields(rule, "local"))
        if new_entries:
            self._block(new_entries, now)
            self.rules.save()
        return sent

    def housekeeping(self, now: float | None = None) -> None:
        """Once a second: drop expired rules, retry a failed save or kernel update, renew the local rules
        whose attack goes on once half their time is up."""
        now = time.time() if now is None else now
        expired = self.rules.expire(now)
        for rid, entry in expired.items():  # a rule made again later starts counting its hits afresh
            self._renewed.pop(rid, None)
            self.events.write("block_expired", **rule_fields(entry.rule, entry.origin), hits=entry.hits)
        if expired or self.rules.save_failed:
            self.rules.save()
        self.resync(now)
        due = [
            rid
            for rid, e in self.rules.entries.items()
            if e.origin == "local" and e.rule.expires and e.rule.expires - now < 0.5 * self.config.block_seconds
            and self._attack_goes_on(rid, e.hits, e.rule.expires, now)
        ]  # fmt: skip
        for rid in due:
            self._renewed[rid] = (self.rules.entries[rid].hits, now)
        if due:
            self.renew(due, now)

    def _attack_goes_on(self, rule_id: str, hits: int, expires: float, now: float) -> bool:
        """Whether a local rule still catches its attack: any hit for a source rule; a flood's rate for a
        flood rule."""
        hits0, since = self._renewed.get(rule_id, (0, expires - self.config.block_seconds))
        if rule_id.startswith(FLOOD_RULE_PREFIX):
            return hits - hits0 >= self.config.flood_rate * max(now - since, 1.0)
        return hits > hits0

    def renew(self, active_rule_ids: list[str], now: float | None = None) -> None:
        """Push the expiry of rules whose source is still hostile."""
        now = time.time() if now is None else now
        entries = []
        for rid in active_rule_ids:
            if rid in self.rules.entries:
                self.rules.renew(rid, now + self.config.block_seconds)
                entry = self.rules.entries[rid]
                entries.append(block_entry(entry.rule, now))
                self.events.write("block_renewed", **rule_fields(entry.rule, entry.origin), hits=entry.hits)
        if entries:
            self._block(entries, now)

    def _block(self, entries: list[BlockEntry], now: float) -> None:
        # A failing or hanging nft must not stop detection (nor lose the alert or the saved rule):
        # the rule stays in the filter table, and resync() puts the kernel right later.
        try:
            self.enforcer.block(entries)
        except EnforcementError as exc:
            self.enforcement_errors += 1
            self.kernel_stale = True
            self._last_resync = now
            log.error("kernel enforcement failed, rules kept in the filter table and retried: %s", exc)

    def resync(self, now: float | None = None) -> None:
        """After a failed kernel update: rebuild the kernel table from the rule table (housekeeping calls this)."""
        now = time.time() if now is None else now
        if not self.kernel_stale or now - self._last_resync < self.config.resync_s:
            return
        self._last_resync = now
        try:
            self.enforcer.start()  # recreates the table too, should someone have flushed the ruleset
            sync_kernel(self.rules, self.enforcer, now)
        except EnforcementError as exc:
            self.enforcement_errors += 1
            log.error("kernel enforcement still failing, retrying in %.0f s: %s", self.config.resync_s, exc)
            return
        self.kernel_stale = False
        log.info("kernel enforcement back: %d rules re-applied", self.rules.count())


def rule_fields(rule: Rule, origin: str) -> dict:
    """A rule as an event's fields: its JSON form, the id named as alerts name it, and where it came from."""
    doc = rule.to_json()
    return {"rule_id": doc.pop("id"), "origin": origin, **doc}


def alert_document(v: Verdict, action: str, rule_id: str | None) -> dict:
    """The alert fields of DESIGN 7 (the reporter adds schema, device, fleet, seq and sent_at)."""
    return {
        "class": v.label,
        "basis": v.basis,
        "confidence": round(v.confidence, 4),
        "source": {"ip": v.src_ip if v.kind == "source" else "spoofed", "mac": v.src_mac, "port": v.src_port},
        "victim": {"ip": v.victim_ip, "port": v.victim_port},
        "packets": v.packets,
        "first_seen": v.first_seen,
        "last_seen": v.last_seen,
        "action": action,
        "rule_id": rule_id,
    }
