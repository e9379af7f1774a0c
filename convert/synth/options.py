"""Mirai's attack options (the flags of a C&C command), drawn over their real range.

A command such as ``udp 1.2.3.4 30 len=1400 dport=53 rand=0`` sets flags that each
attack function reads with ``attack_get_opt_int`` (mirai/bot/attack_tcp.c,
attack_udp.c).  What each flag does to the packets, in the public source:

=============  ==================  ==========================================================
option         attacks (default)   effect on the wire
=============  ==================  ==========================================================
len            ack, udp, udpplain  payload bytes (512); udp caps it at 1460 (we cap all at 1460)
rand           ack, udp, udpplain  1: fresh random bytes per packet.  0: never refreshed: ack
                                   keeps the random bytes drawn once per target at setup,
                                   udp and udpplain send the calloc'd buffer, i.e. zeros
tos, ttl       syn, ack, udp       IP TOS (0), IP TTL (64)
ident          syn, ack, udp       IP ID; 0xffff (default) = random per packet, else fixed
df             syn, ack, udp       DF bit (syn: set, ack and udp: clear)
sport, dport   all four            0xffff (default) = random per packet; udpplain instead binds
                                   one source port and connects one random port per target
urg..fin       syn, ack            TCP flag bits (syn: SYN, ack: ACK); syn with URG draws a random
                                   urgent pointer per packet
seqnum         syn, ack            0xffff (default) = random per packet.  Otherwise the code does
                                   ``seq = htons(value)`` into the 32-bit field: a little-endian
                                   bot puts ``(value & 0xffff) << 16`` on the wire, a big-endian
                                   one ``value & 0xffff``
acknum         syn, ack            0xffff = random per packet (ack's default); any other value is
                                   never written, so the field stays 0 (syn's default)
source         syn, ack, udp       the bot's own address; 255.255.255.255 = random per packet;
                                   any other address = that spoofed address on every packet
=============  ==================  ==========================================================

``AttackOptions`` holds what ends up on the wire (``seqnum`` and ``acknum`` as the
wire values above), plus the command's duration and each bot's send rate.
``sample_options`` draws them over the whole range with a mixture that keeps
Mirai's defaults common (operators often keep them) while every value of the
range keeps a real probability.  ``OptionSpace`` excludes values or ranges
(held out of training) and forces values (evaluation).

The scanner has no options in Mirai, but its descendants change the ports it
probes and a few drop the sequence-number fingerprint: ``SCANNER_VARIANTS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np

from agent.capture.headers import ACK, FIN, PSH, RST, SYN, URG

MAX_PAYLOAD = 1460  # attack_udp_generic: if (data_len > 1460) data_len = 1460


# ---------------------------------------------------------------- scanner variants


@dataclass(frozen=True)
class ScannerVariant:
    """How one family of Mirai-derived scanners probes: ports with their weights, fingerprint, burst size."""

    name: str
    ports: tuple[int, ...]
    weights: tuple[int, ...]  # whole numbers: a bot cycles through its ports in these proportions
    seq_is_dst: bool = True  # TCP sequence number = the probed address (Mirai's fingerprint)
    burst: int = 160  # SYNs per select() pass, one pass a second (SCANNER_RAW_PPS)
    share: float = 0.0  # how often this variant is drawn

    def port_probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def port_cycle(self) -> np.ndarray:
        """The ports one bot's SYNs go to in turn: Mirai's ``i % 10 == 0 ? 2323 : 23`` for (2323, 23), (1, 9)."""
        return np.repeat(np.asarray(self.ports, dtype=np.int64), np.asarray(self.weights, dtype=np.int64))


# Ports seen probed by Mirai's descendants: TR-064 (7547), Huawei HG532 (37215), Realtek SDK (52869),
# ADB (5555), GoAhead/web cameras (80, 81, 8080, 8443), DVRs (60001), SSH (22).
SCANNER_VARIANTS = {
    v.name: v
    for v in (
        ScannerVariant("mirai", (2323, 23), (1, 9), share=0.6),
        ScannerVariant("tr069", (7547, 23, 2323), (6, 3, 1), share=0.08),
        ScannerVariant("satori", (37215, 52869, 23), (4, 4, 2), share=0.08),
        ScannerVariant("adb", (5555, 23, 2323), (7, 2, 1), share=0.06),
        ScannerVariant("web", (80, 8080, 81, 8443, 60001, 23, 2323), (3, 3, 1, 1, 1, 2, 1), share=0.08),
        ScannerVariant("web-noseq", (80, 8080, 81, 8443, 23), (3, 2, 1, 1, 3), seq_is_dst=False, share=0.05),
        ScannerVariant("ssh-noseq", (22, 23, 2323), (5, 4, 1), seq_is_dst=False, burst=100, share=0.05),
    )
}


# ---------------------------------------------------------------- options of one attack


@dataclass(frozen=True)
class AttackOptions:
    """One attack command's options as they appear on the wire (``None``: random per packet)."""

    payload_len: int = 512
    payload_random: bool = True
    tos: int = 0
    ident: int | None = None
    ttl: int = 64
    df: bool = False
    sport: int | None = None  # udpplain: None = one random port bound for the attack
    dport: int | None = None  # udpplain: None = one random port per target
    tcp_flags: int = 0
    seqnum: int | None = None  # wire value
    acknum: int | None = 0  # wire value: 0 or None (Mirai never writes another fixed value)
    source: str = "real"  # "real", "random" (spoofed per packet) or "fixed" (one spoofed address)
    source_ip: int | None = None  # the spoofed address when source == "fixed"
    rate_pps: float = 1000.0  # each bot's send rate
    duration_s: float | None = None  # None: the scenario's attack window
    scan_variant: str = "mirai"
    scanners_per_s: float = 0.5  # scanned board: scanning bots arriving per second

    def meta(self, kind: str) -> dict:
        """The options that apply to ``kind``, for the capture's metadata (None: "random" or "attack window")."""
        out = {}
        for name in APPLIES[kind]:
            value = getattr(self, name)
            if name == "source_ip" and self.source != "fixed":
                continue
            if name == "source_ip" and value is not None:
                value = ".".join(str((int(value) >> s) & 0xFF) for s in (24, 16, 8, 0))
            elif name in ("rate_pps", "scanners_per_s", "duration_s") and value is not None:
                value = round(float(value), 4)
            out[name] = ("attack window" if name == "duration_s" else "random") if value is None else value
        return out


# How an attack runs rather than what its packets carry: drawn even when the command keeps its defaults.
RUN_OPTIONS = ("rate_pps", "duration_s", "scanners_per_s")

# Which options each attack reads, in the order they are drawn (fixed: seeds stay reproducible).
_RAW_IP = ("tos", "ident", "ttl", "df", "sport", "dport")
_SPOOF = ("source", "source_ip")
_RUN = ("rate_pps", "duration_s")
APPLIES: dict[str, tuple[str, ...]] = {
    "mirai_syn": _RAW_IP + ("tcp_flags", "seqnum", "acknum") + _SPOOF + _RUN,
    "mirai_ack": ("payload_len", "payload_random") + _RAW_IP + ("tcp_flags", "seqnum", "acknum") + _SPOOF + _RUN,
    "mirai_udp": ("payload_len", "payload_random") + _RAW_IP + _SPOOF + _RUN,
    "mirai_udpplain": ("payload_len", "payload_random", "sport", "dport") + _RUN,
    "mirai_scan": ("scan_variant", "scanners_per_s"),
}

# Mirai's defaults where they differ from the dataclass's.
_DEFAULTS: dict[str, dict] = {
    "mirai_syn": {"payload_len": 0, "df": True, "tcp_flags": SYN, "acknum": 0},
    "mirai_ack": {"tcp_flags": ACK, "acknum": None},
    "mirai_udp": {},
    "mirai_udpplain": {"df": True},  # the kernel's headers: DF set, TTL 64, TOS 0, IP ID counting
    "mirai_scan": {"payload_len": 0, "tcp_flags": SYN},
}


def default_options(kind: str) -> AttackOptions:
    """Mirai's defaults for one attack (what a bare ``syn 1.2.3.4 30`` sends)."""
    if kind not in APPLIES:
        raise ValueError(f"unknown attack {kind!r}; choose from: {', '.join(APPLIES)}")
    return AttackOptions(**_DEFAULTS[kind])


# ---------------------------------------------------------------- what values an option can take


@dataclass(frozen=True)
class Domain:
    """The values one option can take: integers or floats in [lo, hi], or one of ``choices``; maybe None."""

    lo: float = 0
    hi: float = 0
    integer: bool = True
    none_ok: bool = False
    choices: tuple = ()

    def contains(self, value: object) -> bool:
        if value is None:
            return self.none_ok
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return False
        if self.integer and int(value) != value:
            return False
        return self.lo <= value <= self.hi


DOMAINS: dict[str, Domain] = {
    "payload_len": Domain(0, MAX_PAYLOAD),
    "payload_random": Domain(choices=(False, True)),
    "tos": Domain(0, 255),
    "ident": Domain(0, 0xFFFE, none_ok=True),
    "ttl": Domain(1, 255),
    "df": Domain(choices=(False, True)),
    "sport": Domain(0, 0xFFFE, none_ok=True),
    "dport": Domain(0, 0xFFFE, none_ok=True),
    "tcp_flags": Domain(0, 0x3F),
    "seqnum": Domain(0, 0xFFFFFFFF, none_ok=True),
    "acknum": Domain(0, 0xFFFFFFFF, none_ok=True),
    "source": Domain(choices=("real", "random", "fixed")),
    "source_ip": Domain(0, 0xFFFFFFFF, none_ok=True),
    "rate_pps": Domain(1.0, 1e6, integer=False),
    "duration_s": Domain(0.5, 3600.0, integer=False, none_ok=True),
    "scan_variant": Domain(choices=tuple(SCANNER_VARIANTS)),
    "scanners_per_s": Domain(1e-3, 100.0, integer=False),
}
assert set(DOMAINS) == {f.name for f in fields(AttackOptions)}


# ---------------------------------------------------------------- holding values out, forcing values


@dataclass(frozen=True)
class OptionSpace:
    """Which option values attacks may use.

    ``exclude``: option name -> list of values and inclusive ``(lo, hi)`` ranges never drawn, e.g.
    ``{"payload_len": [(1000, 1100), 0], "dport": [53], "ident": [None]}`` (``None``: random per packet).
    ``force``: option name -> the value every attack that has this option uses, e.g.
    ``{"payload_len": 1400, "dport": None}``.  Options an attack does not have are ignored for it
    (``payload_len`` for syn).  ``defaults=True``: every command option not forced keeps Mirai's
    default (the scanner runs Mirai's own variant); the run's rate_pps, duration_s and scanners_per_s
    are still drawn.  Names are AttackOptions fields; unknown names, values outside an option's domain,
    malformed ranges and forced values that are also excluded raise ValueError.
    """

    exclude: dict = field(default_factory=dict)
    force: dict = field(default_factory=dict)
    defaults: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.exclude, dict) or not isinstance(self.force, dict):
            raise ValueError("OptionSpace: exclude and force must be dicts keyed by option name")
        unknown = sorted((set(self.exclude) | set(self.force)) - set(DOMAINS))
        if unknown:
            raise ValueError(f"OptionSpace: unknown option(s) {unknown}; known: {', '.join(DOMAINS)}")
        for name, entries in self.exclude.items():
            if not isinstance(entries, list):
                raise ValueError(
                    f"OptionSpace: exclude[{name!r}] must be a list of values and (lo, hi) ranges, got {entries!r}"
                )
            for entry in entries:
                if isinstance(entry, tuple):
                    if len(entry) != 2 or not all(DOMAINS[name].contains(x) for x in entry) or entry[0] > entry[1]:
                        raise ValueError(f"OptionSpace: exclude[{name!r}] has a bad range {entry!r}")
                elif not DOMAINS[name].contains(entry):
                    raise ValueError(f"OptionSpace: exclude[{name!r}] value {entry!r} is not a value of {name}")
        for name, value in self.force.items():
            if not DOMAINS[name].contains(value):
                raise ValueError(f"OptionSpace: force[{name!r}] = {value!r} is outside {name}'s domain")
            if self.excluded(name, value):
                raise ValueError(f"OptionSpace: force[{name!r}] = {value!r} is also excluded")

    def __hash__(self) -> int:
        return hash(repr(self))

    def excluded(self, name: str, value: object) -> bool:
        for entry in self.exclude.get(name, ()):
            if isinstance(entry, tuple):
                if value is not None and not isinstance(value, (str, bool)) and entry[0] <= value <= entry[1]:
                    return True
            elif value == entry and (value is None) == (entry is None):
                return True
        return False

    def allows(self, name: str, value: object) -> bool:
        """True when ``value`` may be drawn for option ``name``."""
        if name in self.force:
            return value == self.force[name] and (value is None) == (self.force[name] is None)
        return not self.excluded(name, value)

    def draw(self, name: str, rng: np.random.Generator, sampler: Callable[[np.random.Generator], object]):
        """The forced value, else ``sampler``'s draws until one is allowed (then the remaining domain)."""
        if name in self.force:
            return self.force[name]
        for _ in range(100):
            value = sampler(rng)
            if self.allows(name, value):
                return value
        return self._remaining(name, rng)

    def _remaining(self, name: str, rng: np.random.Generator):
        """A uniform draw from what the exclusions leave of the domain (the mixture kept hitting them)."""
        domain = DOMAINS[name]
        if domain.choices:
            left = [c for c in domain.choices if self.allows(name, c)]
            if left:
                return left[int(rng.integers(len(left)))]
        else:
            for _ in range(10_000):
                value = float(rng.uniform(domain.lo, domain.hi))
                value = int(round(value)) if domain.integer else value
                if self.allows(name, value):
                    return value
        if domain.none_ok and self.allows(name, None):
            return None
        raise ValueError(f"OptionSpace excludes every value of {name}")

    def choice_weights(self, name: str, choices: tuple, weights: np.ndarray) -> np.ndarray:
        """``weights`` with the disallowed choices zeroed and renormalised (for vectorised draws)."""
        w = np.asarray(weights, dtype=np.float64) * np.array([self.allows(name, c) for c in choices])
        if not w.sum():
            raise ValueError(f"OptionSpace excludes every value of {name}")
        return w / w.sum()


FULL_SPACE = OptionSpace()


# ---------------------------------------------------------------- the sampler


def _mixture(rng: np.random.Generator, parts: list[tuple[float, Callable[[], object]]]):
    """Pick one part by its weight and return its draw."""
    weights = np.array([w for w, _ in parts], dtype=np.float64)
    return parts[int(rng.choice(len(parts), p=weights / weights.sum()))][1]()


def _pick(rng: np.random.Generator, values: tuple) -> object:
    return values[int(rng.integers(len(values)))]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


COMMON_PAYLOADS = (0, 1, 8, 16, 32, 64, 100, 128, 256, 500, 768, 1000, 1024, 1200, 1400, 1450, 1460)
COMMON_DPORTS = (53, 80, 443, 123, 1900, 23, 22, 8080, 3074, 27015, 25565, 19, 161, 389, 3478, 5060, 11211, 554, 0)
COMMON_SPORTS = (0, 1, 53, 80, 123, 443, 1900, 11211, 1024, 12345, 31337)
COMMON_TOS = (0x02, 0x04, 0x08, 0x10, 0x20, 0x28, 0x88, 0xB8, 0xC0, 0xFF)
COMMON_TTLS = (1, 16, 30, 32, 60, 100, 120, 128, 200, 250, 255)
COMMON_IDENTS = (0, 1, 256, 1337, 0x1234, 31337, 54321)


def _often(rng: np.random.Generator, p: float, usual: object, other: Callable[[], object]) -> object:
    """``usual`` with probability ``p`` (operators keep the defaults), else a draw of ``other``."""
    return usual if rng.random() < p else other()


def _common_or_any(rng: np.random.Generator, common: tuple, lo: int, hi: int, p_common: float) -> int:
    """One of the values operators like, or any value of [lo, hi]."""
    return int(_pick(rng, common)) if rng.random() < p_common else int(rng.integers(lo, hi + 1))


def _payload_len(rng: np.random.Generator, kind: str) -> int:
    return _mixture(
        rng,
        [
            (0.35, lambda: 512),
            (0.30, lambda: int(_pick(rng, COMMON_PAYLOADS))),
            (0.20, lambda: int(_log_uniform(rng, 1, MAX_PAYLOAD + 2)) - 1),
            (0.15, lambda: int(rng.integers(0, MAX_PAYLOAD + 1))),
        ],
    )


def _tcp_flags(rng: np.random.Generator, kind: str) -> int:
    """syn floods keep SYN, ack floods ACK: alone three times in four, else with at least one more bit."""
    if kind == "mirai_syn":
        base, extras = SYN, ((ACK, 0.35), (PSH, 0.3), (URG, 0.25), (FIN, 0.15), (RST, 0.1))
    else:
        base, extras = ACK, ((PSH, 0.6), (URG, 0.2), (FIN, 0.2), (RST, 0.15), (SYN, 0.1))
    if rng.random() < 0.75:
        return base
    while True:
        value = base
        for bit, p in extras:
            if rng.random() < p:
                value |= bit
        if value != base:
            return value


def _seqnum(rng: np.random.Generator, kind: str) -> int | None:
    if rng.random() < 0.85:
        return None
    value = _common_or_any(rng, (0, 1, 1337, 0x1234), 0, 0xFFFE, 0.4)
    # seq = htons(value) written into a 32-bit field: little-endian bots (x86, ARM, MIPSEL) shift it up.
    return (value << 16) & 0xFFFFFFFF if rng.random() < 0.7 else value


def _other_acknum(kind: str) -> int | None:
    return None if default_options(kind).acknum == 0 else 0


def _variant(rng: np.random.Generator, kind: str) -> str:
    shares = np.array([v.share for v in SCANNER_VARIANTS.values()])
    return str(rng.choice(list(SCANNER_VARIANTS), p=shares / shares.sum()))


# One sampler per option: (rng, kind) -> value.  Mirai's default is the most common value of each.
_SAMPLERS: dict[str, Callable[[np.random.Generator, str], object]] = {
    "payload_len": _payload_len,
    "payload_random": lambda rng, kind: bool(rng.random() < 0.8),
    "tos": lambda rng, kind: _often(rng, 0.85, 0, lambda: _common_or_any(rng, COMMON_TOS, 0, 255, 0.5)),
    "ident": lambda rng, kind: _often(rng, 0.8, None, lambda: _common_or_any(rng, COMMON_IDENTS, 0, 0xFFFE, 0.4)),
    "ttl": lambda rng, kind: _often(rng, 0.7, 64, lambda: _common_or_any(rng, COMMON_TTLS, 1, 255, 0.4)),
    "df": lambda rng, kind: bool(_often(rng, 0.6, default_options(kind).df, lambda: not default_options(kind).df)),
    "sport": lambda rng, kind: _often(rng, 0.8, None, lambda: _common_or_any(rng, COMMON_SPORTS, 0, 0xFFFE, 0.6)),
    "dport": lambda rng, kind: _often(rng, 0.55, None, lambda: _common_or_any(rng, COMMON_DPORTS, 0, 0xFFFE, 0.6)),
    "tcp_flags": _tcp_flags,
    "seqnum": _seqnum,
    # Mirai writes only a random acknum (0xffff); any other value leaves the field 0: the other of the two.
    "acknum": lambda rng, kind: _often(rng, 0.85, default_options(kind).acknum, lambda: _other_acknum(kind)),
    "source": lambda rng, kind: str(rng.choice(["real", "random", "fixed"], p=[0.6, 0.3, 0.1])),
    "source_ip": lambda rng, kind: int(rng.integers(1 << 24, 224 << 24)),  # any unicast-looking address
    "rate_pps": lambda rng, kind: _log_uniform(rng, 20.0, 40_000.0),
    "duration_s": lambda rng, kind: _often(rng, 0.7, None, lambda: float(rng.uniform(1.0, 5.0))),
    "scan_variant": _variant,
    "scanners_per_s": lambda rng, kind: _log_uniform(rng, 3 / 60, 6.0),
}
assert set(_SAMPLERS) == set(DOMAINS)


def draw_option(rng: np.random.Generator, kind: str, name: str, space: OptionSpace | None = None):
    """One more draw of a single option (each further bot's rate, say), within ``space``."""
    space = FULL_SPACE if space is None else space
    return space.draw(name, rng, lambda r: _SAMPLERS[name](r, kind))


def sample_options(rng: np.random.Generator, kind: str, space: OptionSpace | None = None) -> AttackOptions:
    """One attack's options, drawn over the real range of every option ``kind`` has, within ``space``."""
    space = FULL_SPACE if space is None else space
    if not isinstance(space, OptionSpace):
        raise TypeError(f"space must be an OptionSpace or None, got {type(space).__name__}")
    values: dict[str, object] = {}
    base = default_options(kind)  # also rejects unknown kinds
    for name in APPLIES[kind]:
        if name == "source_ip" and values.get("source") != "fixed":
            continue  # only a fixed spoofed source has an address
        if space.defaults and name not in RUN_OPTIONS and name not in space.force:
            if not space.allows(name, getattr(base, name)):
                raise ValueError(f"OptionSpace keeps Mirai's defaults but excludes {kind}'s default {name}")
            continue
        values[name] = space.draw(name, rng, lambda r, name=name: _SAMPLERS[name](r, kind))
    return replace(base, **values)
