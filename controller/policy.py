"""Fleet policy: when does a source get blocked everywhere, and what the fleet rule set holds.

A source reported by at least ``k_devices`` distinct devices within
``window_s`` seconds (alerts at or above ``min_confidence``) is blocked
fleet-wide for ``block_ttl_s`` seconds.  One device alone never blocks a
source for the fleet: a compromised or confused board cannot take an address
off every network.  Sources in ``never_block`` (the broker, the controller,
gateways) are never blocked by policy.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from agent.wire import ALL_DEVICES, MAX_RULES, Rule, RuleSet
from controller.store import Block, Store

log = logging.getLogger(__name__)


@dataclass
class PolicyConfig:
    k_devices: int = 3
    window_s: float = 300.0
    block_ttl_s: float | None = 3600.0  # None: policy blocks last until unblocked
    min_confidence: float = 0.5
    never_block: tuple[str, ...] = ()  # CIDRs

    def __post_init__(self) -> None:
        if self.k_devices < 1:
            raise ValueError("k_devices must be at least 1")
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")
        self._never = [ipaddress.ip_network(n, strict=False) for n in self.never_block]

    def protected(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr.version == n.version and addr in n for n in self._never)


def host_network(ip: str) -> str:
    """An address as the one-host network a rule names ("192.0.2.7/32")."""
    return str(ipaddress.ip_network(ip))


@dataclass
class Policy:
    config: PolicyConfig = field(default_factory=PolicyConfig)

    def new_blocks(self, store: Store, fleet: str, sources: set[str], now: float) -> list[Block]:
        """The reported sources that now cross the K-devices threshold and are not yet blocked."""
        c = self.config
        candidates = {ip: host_network(ip) for ip in sorted(sources) if not c.protected(ip)}
        # One statement each for the whole batch's sources, not two per source.
        blocked = store.blocked_among(fleet, list(candidates.values()), now) if candidates else set()
        candidates = {ip: network for ip, network in candidates.items() if network not in blocked}
        counts = store.reporters_of(fleet, list(candidates), now - c.window_s, c.min_confidence) if candidates else {}
        blocks = []
        for ip, network in candidates.items():
            devices = counts.get(ip, 0)
            if devices >= c.k_devices:
                expires = None if c.block_ttl_s is None else now + c.block_ttl_s
                reason = f"reported by {devices} device{'' if devices == 1 else 's'} within {c.window_s:g} s"
                blocks.append(Block(fleet, network, "policy", reason, now, expires))
                log.info("fleet %s: blocking %s (%s)", fleet, network, reason)
        return blocks


def fleet_ruleset(fleet: str, version: int, blocks: list[Block], now: float) -> RuleSet:
    """The fleet-wide (target ``all``) rule set: one drop rule per active block (the newest MAX_RULES)."""
    if len(blocks) > MAX_RULES:
        log.warning("fleet %s: %d blocks, only the newest %d fit in a rule set", fleet, len(blocks), MAX_RULES)
        blocks = sorted(blocks, key=lambda b: b.created_at)[-MAX_RULES:]
    rules = tuple(
        Rule(
            id=f"{b.origin}:{b.source}",
            network=ipaddress.ip_network(b.source),
            proto=None,
            dport=None,
            action="drop",
            expires=b.expires,
            reason=b.reason[:256],
        )
        for b in blocks
    )
    return RuleSet(fleet=fleet, target=ALL_DEVICES, version=version, issued_at=now, rules=rules)
