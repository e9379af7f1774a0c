"""Enforcement backends: make the kernel drop traffic from sources judged hostile.

Separate from the detector, in the spirit of CrowdSec's "bouncers": the
decide stage hands over ``BlockEntry`` items and a backend applies them.

``NftablesEnforcer`` owns one nftables table (``inet iotguard`` by default):

    table inet iotguard {
        set blocked4      { type ipv4_addr; flags timeout; }             single addresses
        set blocked4_net  { type ipv4_addr; flags interval, timeout; }   CIDR ranges
        set blocked4_port { type ipv4_addr . inet_proto . inet_service; flags interval, timeout; }
        (and the same three for IPv6)
        set allow4 { type ipv4_addr; flags interval; auto-merge; }        the allowlist (and allow6)
        chain prerouting {
            type filter hook prerouting priority raw; policy accept;
            iif "lo" accept                                              the board talking to itself
            ip saddr @allow4 accept                                      never blocked, whatever the rules
            ip saddr @blocked4 counter drop comment "blocked4"
            ...
        }
    }

One prerouting chain at raw priority covers what input and forward chains
would, and drops before connection tracking, so a flood neither reaches a
socket nor fills the conntrack table.  Every change is one ``nft -f -``
script: the kernel applies it as a single transaction, so the rule set is
never half-updated.  Element timeouts are kept by the kernel.

nftables refuses overlapping intervals in a set, so single addresses and
ranges live in separate sets (an address inside a blocked range is fine), and
nested ranges are merged into the widest one, which stays blocked until the
latest of their expiry times (never shorter than asked).  Entries with ports
may overlap (the kernel's concatenated-set backend accepts that; checked on
Linux 6.18).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IP protocol numbers for the names a BlockEntry accepts (nft gets numbers).
PROTOCOLS = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50, "ah": 51,
    "icmpv6": 58, "sctp": 132, "udplite": 136,
}  # fmt: skip
PORT_PROTOCOLS = {6, 17, 33, 132, 136}  # protocols with a destination port
ANY_PORT = "0-65535"
NFT_MAX_TIMEOUT_S = 99_999_999  # the largest number nft parses in a duration ("value too large" beyond)


class EnforcementError(RuntimeError):
    """The backend cannot apply rules; the message says what to do."""


@dataclass(frozen=True)
class BlockEntry:
    """Drop traffic from ``address`` (an address or CIDR, IPv4 or IPv6).

    With ``proto`` (name or number) only that protocol, with ``dport`` only
    that destination port.  ``timeout`` in seconds; None blocks until removed.
    """

    address: str
    proto: str | int | None = None
    dport: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        try:
            net = ipaddress.ip_network(str(self.address).strip(), strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {self.address!r}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.network_address.ipv4_mapped:
            net = ipaddress.IPv4Network((net.network_address.ipv4_mapped, net.prefixlen - 96))
        object.__setattr__(self, "address", str(net) if net.prefixlen < net.max_prefixlen else str(net.network_address))
        proto = self.proto
        if isinstance(proto, str):
            proto = PROTOCOLS.get(proto.strip().lower(), proto)
        if proto is not None and (not isinstance(proto, int) or not 0 <= proto <= 255):
            raise ValueError(f"unknown protocol {self.proto!r}: use one of {sorted(PROTOCOLS)} or a number 0-255")
        object.__setattr__(self, "proto", proto)
        if self.dport is not None:
            if proto not in PORT_PROTOCOLS:
                raise ValueError(
                    f"dport needs a protocol with ports (tcp, udp, sctp, dccp, udplite), got {self.proto!r}"
                )
            if not isinstance(self.dport, int) or not 0 <= self.dport <= 65535:
                raise ValueError(f"dport must be a port number 0-65535, got {self.dport!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {self.timeout!r}")

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.address)

    @property
    def key(self) -> tuple[str, int | None, int | None]:
        """What the entry blocks (without its timeout)."""
        return (self.address, self.proto, self.dport)


class Enforcer(Protocol):
    def check(self) -> None: ...
    def start(self) -> None: ...
    def set_allowlist(self, allow: Iterable[str]) -> None: ...
    def block(self, entries: list[BlockEntry]) -> None: ...
    def unblock(self, entries: list[BlockEntry]) -> None: ...
    def sync(self, entries: list[BlockEntry]) -> None: ...
    def counters(self) -> dict: ...
    def stop(self) -> None: ...


@dataclass
class NoneEnforcer:
    """Records what it is asked to do and enforces nothing (boards without nftables, tests)."""

    active: dict = field(default_factory=dict)  # key -> BlockEntry
    calls: list = field(default_factory=list)  # (method, entries) in call order
    allow: Iterable[str] = ()

    def check(self) -> None:
        pass

    def set_allowlist(self, allow: Iterable[str]) -> None:
        self.allow = list(allow)

    def start(self) -> None:
        self.calls.append(("start", []))

    def block(self, entries: list[BlockEntry]) -> None:
        self.calls.append(("block", list(entries)))
        self.active.update((e.key, e) for e in entries)

    def unblock(self, entries: list[BlockEntry]) -> None:
        self.calls.append(("unblock", list(entries)))
        for e in entries:
            self.active.pop(e.key, None)

    def sync(self, entries: list[BlockEntry]) -> None:
        self.calls.append(("sync", list(entries)))
        self.active = {e.key: e for e in entries}

    def counters(self) -> dict:
        return {}

    def stop(self) -> None:
        self.calls.append(("stop", []))
        self.active.clear()


@dataclass(frozen=True)
class NftSet:
    """One set of the table and the rule that drops what it matches."""

    name: str
    version: int  # 4 or 6
    kind: str  # "host" (single addresses), "net" (CIDR ranges) or "port" (address . proto . port)
    type: str
    flags: str
    match: str  # the rule's selector

    def declaration(self) -> str:
        return f"set {self.name} {{ type {self.type}; flags {self.flags}; }}"

    def rule(self) -> str:
        return f'{self.match} @{self.name} counter drop comment "{self.name}"'


SETS = (
    NftSet("blocked4", 4, "host", "ipv4_addr", "timeout", "ip saddr"),
    NftSet("blocked4_net", 4, "net", "ipv4_addr", "interval, timeout", "ip saddr"),
    NftSet("blocked4_port", 4, "port", "ipv4_addr . inet_proto . inet_service", "interval, timeout",
           "ip saddr . meta l4proto . th dport"),
    NftSet("blocked6", 6, "host", "ipv6_addr", "timeout", "ip6 saddr"),
    NftSet("blocked6_net", 6, "net", "ipv6_addr", "interval, timeout", "ip6 saddr"),
    NftSet("blocked6_port", 6, "port", "ipv6_addr . inet_proto . inet_service", "interval, timeout",
           "ip6 saddr . meta l4proto . th dport"),
)  # fmt: skip


# The allowlist: sources accepted before any drop rule (a spoofed-flood rule on "any source" included),
# so the gateway, DNS, the MQTT broker and the management hosts stay reachable.
ALLOW_SETS = (("allow4", 4, "ipv4_addr", "ip saddr"), ("allow6", 6, "ipv6_addr", "ip6 saddr"))


def set_for(entry: BlockEntry) -> NftSet:
    net = entry.network
    kind = "port" if entry.proto is not None else "host" if net.prefixlen == net.max_prefixlen else "net"
    return next(s for s in SETS if s.version == net.version and s.kind == kind)


def element_text(entry: BlockEntry) -> str:
    if entry.proto is None:
        return entry.address
    return f"{entry.address} . {entry.proto} . {ANY_PORT if entry.dport is None else entry.dport}"


@dataclass
class Installed:
    """An element we put in the kernel, and when the kernel will expire it (monotonic; None = never)."""

    entry: BlockEntry
    expires: float | None


def _later(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


class NftablesEnforcer:
    """Drops blocked sources with an nftables table of its own (see the module docstring).

    ``netns`` runs every ``nft`` inside that named network namespace
    (``ip netns exec``); leave it None when the agent already runs where the
    rules belong.  At most ``max_entries`` elements are installed; further
    ones are refused with a warning (a spoofed flood must not exhaust memory).
    """

    def __init__(
        self,
        table: str = "iotguard",
        nft: str = "nft",
        netns: str | None = None,
        max_entries: int = 65536,
        command_timeout: float = 30.0,
        allow: Iterable[str] = (),
    ) -> None:
        self.table = table
        self.allow = [ipaddress.ip_network(a, strict=False) for a in allow]
        self.nft = nft
        self.netns = netns
        self.max_entries = max_entries
        self.command_timeout = command_timeout
        self.refused = 0  # entries not installed because max_entries was reached
        self._installed: dict[tuple, Installed] = {}
        self._started = False

    # -- running nft ---------------------------------------------------------

    def _command(self) -> list[str]:
        nft = shutil.which(self.nft)
        if nft is None:
            raise EnforcementError(
                f"`{self.nft}` (nftables) not found in PATH: install it (apt-get install nftables) "
                "or choose the enforcement backend 'none'"
            )
        if self.netns is None:
            return [nft]
        ip = shutil.which("ip")
        if ip is None:
            raise EnforcementError("`ip` not found in PATH (needed for the netns option): apt-get install iproute2")
        return [ip, "netns", "exec", self.netns, nft]

    def _run(self, args: list[str], script: str | None = None) -> str:
        cmd = self._command() + args
        log.debug("nft %s\n%s", " ".join(args), script or "")
        try:
            proc = subprocess.run(
                cmd, check=False, input=script, capture_output=True, text=True, timeout=self.command_timeout
            )
        except subprocess.TimeoutExpired:
            raise EnforcementError(f"`{' '.join(cmd)}` did not finish within {self.command_timeout} s") from None
        if proc.returncode != 0:
            message = proc.stderr.strip() or f"exit status {proc.returncode}"
            hint = ""
            if "Operation not permitted" in message:
                hint = " (nft needs CAP_NET_ADMIN: run the agent as root or grant it that capability)"
            elif "Protocol not supported" in message or "Could not process rule: No such file" in message:
                hint = " (is the kernel's nf_tables support loaded? modprobe nf_tables)"
            raise EnforcementError(f"nft failed{hint}: {message}")
        return proc.stdout

    def _apply(self, script: str) -> None:
        self._run(["-f", "-"], script)

    # -- Enforcer interface --------------------------------------------------

    def check(self) -> None:
        """Raise EnforcementError unless nft is installed and may change rules here."""
        self._run(["list", "tables"])

    def start(self) -> None:
        """Create the table afresh (replacing a leftover one from an unclean exit)."""
        self.check()
        lines = [f"add table inet {self.table}", f"delete table inet {self.table}", f"table inet {self.table} {{"]
        lines += [f"    {s.declaration()}" for s in SETS]
        lines += [f"    set {name} {{ type {kind}; flags interval; auto-merge; }}" for name, _, kind, _ in ALLOW_SETS]
        lines += ["    chain prerouting {", "        type filter hook prerouting priority raw; policy accept;"]
        # The board talking to itself never drops: a verdict may name the board's own address (a flood forging it
        # as its source, Mirai running on the board), and its own connections to that address go through "lo".
        lines += ['        iif "lo" accept comment "loopback"']
        lines += [f'        {match} @{name} accept comment "{name}"' for name, _, _, match in ALLOW_SETS]
        lines += [f"        {s.rule()}" for s in SETS]
        lines += ["    }", "}"]
        self._apply("\n".join(lines + self._allow_lines()) + "\n")
        self._installed.clear()
        self._started = True
        log.info(
            "nftables enforcement ready: table inet %s%s", self.table, f" in netns {self.netns}" if self.netns else ""
        )

    def _allow_lines(self) -> list[str]:
        lines = []
        for name, version, _, _ in ALLOW_SETS:
            lines.append(f"flush set inet {self.table} {name}")
            nets = [str(n) for n in self.allow if n.version == version]
            if nets:
                lines.append(f"add element inet {self.table} {name} {{ {', '.join(nets)} }}")
        return lines

    def set_allowlist(self, allow: Iterable[str]) -> None:
        """Replace the allowlist (SIGHUP with a new configuration), in one transaction."""
        self.allow = [ipaddress.ip_network(a, strict=False) for a in allow]
        if self._started:
            self._apply("\n".join(self._allow_lines()) + "\n")

    def block(self, entries: list[BlockEntry]) -> None:
        self._require_started()
        now = time.monotonic()
        before = self._live(now)
        after = dict(before)
        for entry in entries:
            self._merge(after, entry, None if entry.timeout is None else now + entry.timeout)
        self._commit(before, after, now)

    def unblock(self, entries: list[BlockEntry]) -> None:
        self._require_started()
        now = time.monotonic()
        before = self._live(now)
        after = dict(before)
        for entry in entries:
            if after.pop(entry.key, None) is None:
                log.info("unblock %s: not blocked by this key (it may be part of a wider range)", entry.key)
        self._commit(before, after, now)

    def sync(self, entries: list[BlockEntry]) -> None:
        """Replace every element with ``entries`` in one transaction."""
        self._require_started()
        now = time.monotonic()
        wanted: dict[tuple, Installed] = {}
        for entry in entries:
            self._merge(wanted, entry, None if entry.timeout is None else now + entry.timeout)
        self._replace_all(wanted, now)

    def counters(self) -> dict:
        """{set name: {"packets", "bytes", "elements"}} read from the kernel."""
        self._require_started()
        listing = json.loads(self._run(["-j", "list", "table", "inet", self.table]))
        result: dict[str, dict] = {s.name: {"packets": 0, "bytes": 0, "elements": 0} for s in SETS}
        for item in listing.get("nftables", []):
            if "set" in item and item["set"]["name"] in result:
                result[item["set"]["name"]]["elements"] = len(item["set"].get("elem", []))
            elif "rule" in item and item["rule"].get("comment") in result:
                for expr in item["rule"]["expr"]:
                    if "counter" in expr:
                        result[item["rule"]["comment"]]["packets"] = expr["counter"]["packets"]
                        result[item["rule"]["comment"]]["bytes"] = expr["counter"]["bytes"]
        return result

    def stop(self) -> None:
        """Remove the table and everything in it."""
        if not self._started:
            return
        self._apply(f"add table inet {self.table}\ndelete table inet {self.table}\n")
        self._installed.clear()
        self._started = False
        log.info("nftables enforcement stopped: table inet %s removed", self.table)

    # -- bookkeeping ---------------------------------------------------------

    def _require_started(self) -> None:
        if not self._started:
            raise EnforcementError("the nftables enforcer is not started: call start() first")

    def _live(self, now: float) -> dict[tuple, Installed]:
        """Our record of installed elements, without those the kernel has expired by now."""
        self._installed = {k: v for k, v in self._installed.items() if v.expires is None or v.expires > now}
        return self._installed

    def _merge(self, elements: dict[tuple, Installed], entry: BlockEntry, expires: float | None) -> None:
        """Add one entry to ``elements``, keeping ranges free of the overlaps nftables refuses.

        Never mutates an Installed in place: a changed element is a new object,
        which is how _commit sees what to write.
        """
        target = set_for(entry)
        if target.kind == "net" and entry.key not in elements:
            net = entry.network
            nested = [k for k, v in elements.items() if set_for(v.entry) is target and v.entry.network.overlaps(net)]
            for k in nested:
                outer = elements[k]
                if outer.entry.network.supernet_of(net):
                    log.info(
                        "%s is inside blocked range %s: extending that range instead",
                        entry.address,
                        outer.entry.address,
                    )
                    if _later(outer.expires, expires) != outer.expires:
                        elements[k] = Installed(outer.entry, _later(outer.expires, expires))
                    return
            for k in nested:  # all of them lie inside the new range, which absorbs them
                expires = _later(expires, elements.pop(k).expires)
        if entry.key not in elements and len(elements) >= self.max_entries:
            self.refused += 1
            log.warning("not blocking %s: %d entries installed already (max_entries)", entry.address, len(elements))
            return
        elements[entry.key] = Installed(entry, expires)  # on an existing key, the latest decision wins

    def _commit(self, before: dict[tuple, Installed], after: dict[tuple, Installed], now: float) -> None:
        """Apply the difference between two states as one nft transaction."""
        changed = [v for k, v in before.items() if k not in after] + [
            v for k, v in after.items() if before.get(k) is not v
        ]
        if not changed:
            return
        # nft checks a new range against the set as it was before the
        # transaction, even if the same script deletes the range it overlaps,
        # so a range set that changes is rewritten whole (flush + add).
        ranges = {set_for(v.entry) for v in changed if set_for(v.entry).kind == "net"}
        lines = []
        for v in changed:
            if set_for(v.entry) not in ranges:
                # Refresh = delete + add.  Deleting an element the kernel has
                # already expired would fail the whole transaction, so each
                # delete is preceded by an add (a no-op when present).
                lines += [self._element_line("add", v), self._element_line("delete", v)]
                if v.entry.key in after:
                    lines.append(self._element_line("add", v, now))
        for target in ranges:
            lines.append(f"flush set inet {self.table} {target.name}")
            lines += [self._element_line("add", v, now) for v in after.values() if set_for(v.entry) is target]
        try:
            self._apply("\n".join(lines) + "\n")
        except EnforcementError as exc:
            # Our record and the kernel can disagree by a few ms around an
            # expiry; rebuilding every set from the record always applies.
            log.warning("incremental nft update failed, replacing all elements instead: %s", exc)
            self._replace_all(after, now)
            return
        self._installed = after

    def _replace_all(self, elements: dict[tuple, Installed], now: float) -> None:
        lines = [f"flush set inet {self.table} {s.name}" for s in SETS]
        lines += [self._element_line("add", v, now) for v in elements.values()]
        self._apply("\n".join(lines) + "\n")
        self._installed = dict(elements)

    def _element_line(self, verb: str, installed: Installed, now: float | None = None) -> str:
        """One ``add``/``delete element`` line; with ``now``, carrying the remaining timeout."""
        text = element_text(installed.entry)
        if now is not None and installed.expires is not None:
            # nft refuses any one number above 99999999 ("100000000ms" is "value too large", so a plain ms
            # count fails beyond 27.7 hours): write seconds and milliseconds, at most 99999999 s (3.2 years).
            remaining_ms = min(max(math.ceil((installed.expires - now) * 1000), 1), NFT_MAX_TIMEOUT_S * 1000)
            text += f" timeout {remaining_ms // 1000}s{remaining_ms % 1000}ms"
        return f"{verb} element inet {self.table} {set_for(installed.entry).name} {{ {text} }}"


BACKENDS = {"nftables": NftablesEnforcer, "none": NoneEnforcer}


def make_enforcer(backend: str, **options) -> Enforcer:
    """The backend a firmware profile names ("nftables" or "none")."""
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown enforcement backend {backend!r}: choose one of {sorted(BACKENDS)}") from None
    return cls(**options)
