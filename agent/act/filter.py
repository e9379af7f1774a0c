"""The primary filter: a rule table applied to each batch before features (the seed paper's loop).

Rules come from three places, kept apart by ``origin``: the local decision
layer (``local``), the device's own rule set from the controller (``device``)
and the fleet-wide one (``all``).  Packets a rule matches are counted per rule
and skip the rest of the pipeline.  Addresses on the allowlist (gateway, DNS,
broker, configured ones) are never blocked, whatever a rule says.

Matching is vectorised: single-address rules (what verdicts produce) are
looked up by hash in one ``searchsorted``; the few CIDR rules are checked one
by one over the whole batch.  The local rules survive restarts: they are
written atomically to a JSON file and read back at start.  The fleet's rules
are not saved here: the fleet link keeps their signed rule sets and applies
them again at start, after checking their signatures.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from agent.capture.packets import L3_ARP, L3_IPV4, L3_IPV6, PORT_NUMBER, PacketBatch, ip_words
from agent.util import hash_words, write_atomically
from agent.wire.rules import SCHEMA as RULESET_SCHEMA
from agent.wire.rules import Rule, RuleSetError, parse_ruleset

log = logging.getLogger(__name__)

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1}
ORIGINS = ("local", "device", "all")
TABLE_SCHEMA = "iotguard.rule-table/1"


def entry_key(origin: str, rule_id: str) -> str:
    """Where a rule sits in the table: local rules by their id, the fleet's under their origin too, so that a
    device rule set and the fleet-wide one may use the same id without replacing each other's rule."""
    return rule_id if origin == "local" else f"{origin}/{rule_id}"


def _mask_words(network) -> tuple[int, int]:
    prefix = network.prefixlen + (96 if network.version == 4 else 0)
    mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1)
    return mask >> 64, mask & (2**64 - 1)


def _is_single(network) -> bool:
    return network.prefixlen == network.max_prefixlen


def parse_rule_json(item: dict) -> Rule:
    """One rule in the rule-set JSON form, checked by the same field table as pushed rule sets."""
    doc = {"schema": RULESET_SCHEMA, "fleet": "local", "target": "local", "version": 1, "issued_at": 0, "rules": [item]}
    return parse_ruleset(doc).rules[0]


def _packet_key(hi, lo, proto, dport) -> np.ndarray:
    return hash_words(21, hi, lo, proto, dport)


ANY = np.uint64(2**32)  # proto/port word for "any" (outside every real value)


@dataclass
class TableEntry:
    rule: Rule
    origin: str
    hits: int = 0


@dataclass
class FilterResult:
    keep: np.ndarray  # bool per packet
    dropped: int
    hits: dict[str, int] = field(default_factory=dict)  # rule id -> packets dropped in this batch


class RuleTable:
    """Rules by id, with origin and hit counters; ``apply(batch)`` -> which packets survive."""

    def __init__(self, allowlist: list[str] | None = None, max_local_rules: int = 1024, path: Path | None = None) -> None:
        self.set_allowlist(allowlist or [])
        self.max_local_rules = max_local_rules
        self.path = Path(path) if path else None
        self.entries: dict[str, TableEntry] = {}
        self._compiled = None
        self.save_failed = False  # the last save did not reach the disk: the agent retries it
        self.save_errors = 0

    # --- changes -------------------------------------------------------------

    def set_allowlist(self, allowlist: list[str]) -> None:
        self.allow = [ipaddress.ip_network(a, strict=False) for a in allowlist]

    def allowed(self, network) -> bool:
        """True when a rule on ``network`` would touch an allowlisted address."""
        return any(network.version == a.version and network.overlaps(a) for a in self.allow)

    def add(self, rule: Rule, origin: str = "local") -> bool:
        """Add or renew a rule; refused (False) for allowlisted sources or a full local table."""
        if origin not in ORIGINS:
            raise ValueError(f"unknown rule origin {origin!r}")
        if self.allowed(rule.network) and rule.network.prefixlen > 0:
            log.warning("not blocking %s: allowlisted", rule.network)
            return False
        key = entry_key(origin, rule.id)
        old = self.entries.get(key)
        if old is None and origin == "local" and self.count("local") >= self.max_local_rules:
            log.warning("local rule table full (%d): %s not added", self.max_local_rules, rule.id)
            return False
        self.entries[key] = TableEntry(rule, origin, old.hits if old else 0)
        self._compiled = None
        return True

    def renew(self, rule_id: str, expires: float) -> None:
        entry = self.entries[rule_id]
        entry.rule = replace(entry.rule, expires=expires)

    def remove(self, rule_id: str) -> None:
        if self.entries.pop(rule_id, None) is not None:
            self._compiled = None

    def replace_origin(self, origin: str, rules: list[Rule]) -> None:
        """Swap every rule of one origin (a new rule set) in one step."""
        kept = {k: e for k, e in self.entries.items() if e.origin != origin}
        for rule in rules:
            if not self.allowed(rule.network) or rule.network.prefixlen == 0:
                key = entry_key(origin, rule.id)
                old = self.entries.get(key)
                kept[key] = TableEntry(rule, origin, old.hits if old else 0)
        self.entries = kept
        self._compiled = None

    def expire(self, now: float) -> dict[str, TableEntry]:
        """Remove the rules whose time is up; what was removed, by key (the responder reports each)."""
        gone = {k: e for k, e in self.entries.items() if not e.rule.active(now)}
        for k in gone:
            del self.entries[k]
        if gone:
            self._compiled = None
        return gone

    def count(self, origin: str | None = None) -> int:
        return sum(1 for e in self.entries.values() if origin is None or e.origin == origin)

    def rules(self, origin: str | None = None) -> list[Rule]:
        return [e.rule for e in self.entries.values() if origin is None or e.origin == origin]

    # --- matching ------------------------------------------------------------

    def _compile(self) -> None:
        ids = list(self.entries)
        exact_keys, exact_idx, cidr = [], [], []
        for i, rid in enumerate(ids):
            r = self.entries[rid].rule
            proto = np.uint64(PROTO_NUMBERS[r.proto]) if r.proto else ANY
            port = np.uint64(r.dport) if r.dport is not None else ANY
            if _is_single(r.network):
                hi, lo = ip_words(r.network.network_address)
                key = _packet_key(np.array([hi], np.uint64), np.array([lo], np.uint64), np.array([proto]), np.array([port]))
                exact_keys.append(key[0])
                exact_idx.append(i)
            else:
                cidr.append((i, ip_words(r.network.network_address), _mask_words(r.network), proto, port))
        order = np.argsort(np.array(exact_keys, dtype=np.uint64), kind="stable")
        self._compiled = (
            ids,
            np.array(exact_keys, dtype=np.uint64)[order],
            np.array(exact_idx, dtype=np.int64)[order],
            cidr,
        )

    def apply(self, batch: PacketBatch, now: float | None = None) -> FilterResult:
        n = len(batch)
        if not self.entries or n == 0:
            return FilterResult(np.ones(n, dtype=bool), 0)
        if self._compiled is None:
            self._compile()
        ids, keys, key_rule, cidr = self._compiled
        has_ip = np.isin(batch.l3, (L3_IPV4, L3_IPV6, L3_ARP))
        proto = batch.proto.astype(np.uint64)
        port = np.where(batch.port_kind == PORT_NUMBER, batch.dport, -1).astype(np.int64)
        port_w = np.where(port >= 0, port, 2**33).astype(np.uint64)
        rule_of = np.full(n, -1, dtype=np.int64)
        hi, lo = batch.src_ip_hi, batch.src_ip_lo
        if len(keys):
            # A packet may match a rule on its source alone, with protocol, or with protocol and port.
            for p, q in ((ANY, ANY), (None, ANY), (None, None)):
                pk = _packet_key(hi, lo, proto if p is None else np.full(n, p), port_w if q is None else np.full(n, q))
                pos = np.minimum(np.searchsorted(keys, pk), len(keys) - 1)
                hit = (keys[pos] == pk) & has_ip & (rule_of < 0)
                rule_of[hit] = key_rule[pos[hit]]
        for i, (nhi, nlo), (mhi, mlo), rp, rport in cidr:
            hit = has_ip & (rule_of < 0) & ((hi & np.uint64(mhi)) == nhi) & ((lo & np.uint64(mlo)) == nlo)
            if rp != ANY:
                hit &= proto == rp
            if rport != ANY:
                hit &= port_w == rport
            rule_of[hit] = i
        # The allowlist wins over every rule.
        for a in self.allow:
            (ahi, alo), (mhi, mlo) = ip_words(a.network_address), _mask_words(a)
            rule_of[((hi & np.uint64(mhi)) == ahi) & ((lo & np.uint64(mlo)) == alo)] = -1
        dropped = rule_of >= 0
        hits = {}
        if dropped.any():
            counts = np.bincount(rule_of[dropped], minlength=len(ids))
            for i in np.flatnonzero(counts):
                hits[ids[i]] = int(counts[i])
                self.entries[ids[i]].hits += int(counts[i])
        return FilterResult(~dropped, int(dropped.sum()), hits)

    # --- persistence ---------------------------------------------------------

    def save(self) -> bool:
        """Write the local rules atomically, so that a crash leaves the old or the new file.

        A disk that refuses (full, read-only) is logged and reported as False, not raised: the
        rules still work from memory, and the agent retries (``save_failed``).
        """
        if not self.path:
            return True
        doc = {
            "schema": TABLE_SCHEMA,
            "saved_at": time.time(),
            "rules": [{"origin": e.origin, "hits": e.hits, **e.rule.to_json()} for e in self.entries.values()
                      if e.origin == "local"],
        }  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(doc).encode())
        except OSError as exc:
            self.save_failed = True
            self.save_errors += 1
            log.error("rule table not saved to %s (%s); the previous file stays, retrying later", self.path, exc)
            return False
        self.save_failed = False
        return True

    def load(self, now: float | None = None) -> int:
        """Read the saved local rules; expired rules are dropped, a corrupt file is reported and ignored."""
        if not self.path or not self.path.exists():
            return 0
        now = time.time() if now is None else now
        try:
            doc = json.loads(self.path.read_text())
            items = doc["rules"]
            if doc.get("schema") != TABLE_SCHEMA or not isinstance(items, list):
                raise ValueError("not a rule table")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable rule table %s: %s", self.path, exc)
            return 0
        loaded = 0
        for item in items:
            try:
                origin = item.pop("origin")
                hits = int(item.pop("hits", 0))
                rule = parse_rule_json(item)
            except (RuleSetError, KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("skipping bad saved rule %r: %s", item, exc)
                continue
            if rule.active(now) and origin == "local":  # fleet rules come back from their signed rule sets
                self.entries[rule.id] = TableEntry(rule, origin, hits)
                loaded += 1
        self._compiled = None
        return loaded

    def reload(self, now: float | None = None) -> int:
        """Replace the local rules with the saved ones (SIGHUP); the fleet's rules stay."""
        self.entries = {k: e for k, e in self.entries.items() if e.origin != "local"}
        self._compiled = None
        return self.load(now)
