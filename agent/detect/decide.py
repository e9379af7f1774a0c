"""The decision stage: per-packet class scores and header evidence -> per-source verdicts.

Every verdict says what decided it (``basis``):

* ``model``: a source's recent packets score as one attack class.  A single odd packet must not
  raise an alert, and neither must a few odd packets spread over hours: every source keeps decayed
  sums (half-life ``half_life_s``) of its packets and of their class scores, and becomes hostile when
  its *recent* packets (the decayed count, the same window the scores are averaged over) number at
  least ``min_packets`` and one attack class's average reaches ``threshold``.  It is released when
  that average falls below ``release`` (hysteresis).
* ``headers``: what the headers show whatever the model says (``agent.detect.evidence``): a flood from one
  source (a high rate of one shape of Evidence.SHAPES, with fresh ports per packet), a UDP flood at any rate whose
  payloads carry no application's header (``rules.noise_flood_rule``), a scan
  (SYNs to hosts and ports not tried before, mostly unanswered), Mirai's scanner fingerprint (one packet suffices),
  a reflection through the board (many answered requests to its SSDP, CoAP, NTP, ... service from one forged
  address), an HTTP flood over connections kept open (requests to a web server many times a second), a DNS query
  flood at a resolver (unless the source forwards what it is asked), and floods at one target from many sources
  (spoofed or rotating), which no per-source count can judge.  Each gets the closest Mirai class.
* ``anomaly``: most of a source's recent packets are far from the traffic the anomaly detector
  learned (``agent.detect.anomaly``); label ``anomaly``.

A flood at one target from sources that are each too light to convict (a spoofed flood shows a new
source for nearly every packet) is named by its target ("spoofed flood at 10.0.0.5 tcp/80"), so the
responder can drop what it has in common instead of filling the rule table with addresses.

The statistics use the same exact, vectorised decayed sums as the features (``agent.detect.tracked``); the
rules and how their hot packets become convictions live in ``agent.detect.rules``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from agent.capture.packets import L3_IPV4, LABELS, PORT_NUMBER, VERDICT_LABELS, PacketBatch, format_ip, format_mac
from agent.detect.evidence import ACK as ACK_FLAG
from agent.detect.evidence import (
    Evidence,
    datagram_heads,
    inherit_headers,
    noise_alone,
    one_byte_throughout,
    opens_socket_pair,
    packet_evidence,
)
from agent.detect.rules import (
    EPHEMERAL_PORTS,
    TELNET_PORTS,
    amplification_rule,
    anomaly_rule,
    brute_force_rule,
    connection_flood_rule,
    convict,
    fingerprint_rule,
    flood_rule,
    group_flood_rule,
    lone_probe_rule,
    matching,
    model_rule,
    noise_flood_rule,
    query_flood_rule,
    rate,
    reflection_rule,
    request_flood_rule,
    scan_rule,
    shape_fits,
)
from agent.detect.tracked import N_CLASSES, Tracked, argsort_keys
from agent.features.decayed_sums import Segments
from agent.features.stream_table import StreamTable
from agent.report import iso_time
from agent.util import hash_words

_SCAN, _SYN = LABELS.index("mirai_scan"), LABELS.index("mirai_syn")
GROUP_REQUESTS = 4096  # recent UDP requests to groups remembered (LRU): a home's discovery clients are few

@dataclass
class DecisionConfig:
    half_life_s: float = 2.0
    threshold: float = 0.7  # average score of one attack class to call a source hostile
    release: float = 0.3  # below this the verdict ends
    min_packets: int = 10  # recent packets (decayed count over half_life_s) behind a model verdict
    max_sources: int = 65536  # bounded table of tracked sources (LRU eviction)
    max_targets: int = 65536
    spoofed_share: float = 0.6  # share of a target's hostile packets from never-seen sources
    link_spoofed_share: float = 0.9  # ...of an Ethernet sender's scattered packets, for a model verdict on them
    # Header floods, from one source or at one target: a sustained rate of one shape with fresh sockets.
    flood_rate: float = 200.0  # packets/s
    flood_min_packets: int = 100  # recent packets behind a header flood verdict
    flood_min_kbytes_per_s: float = 8.0  # recent volume behind a model flood verdict (64 kbit/s)...
    flood_min_span_s: float = 0.5  # ...over at least this long (a 40 ms burst is no flood)
    flood_shape_share: float = 0.9  # share of one shape (Evidence.SHAPES)
    syn_flood_rate: float = 50.0  # one source's SYNs/s through the same socket pairs (no kernel retries so fast)...
    syn_flood_min_packets: int = 50  # ...and so many recent ones
    small_udp_flood_rate: float = 1000.0  # one source's small datagrams/s that nothing answers: a flood through...
    small_udp_max_bytes: float = 300.0  # ...one socket (udpplain), when they average at most this many bytes a frame
    # Recent one-way datagrams with no application's header (random, zeros or empty: rules.noise_flood_rule) behind a
    # UDP flood verdict on the headers: a flood of 20 a second reaches it in 0.6 s; a sender of 4 a second never (11.5).
    noise_flood_min: float = 12.0
    fragment_flood_rate: float = 2000.0  # one source's frames/s of fragmented datagrams through one socket, one-way
    connect_flood_rate: float = 100.0  # one source's SYNs a second to services it tried before: an HTTP flood...
    connect_flood_min: int = 150  # ...with so many recent SYNs behind it
    flood_new_socket_share: float = 0.8  # share through fresh socket pairs (random ports) or out of sequence; not for
    # one source's SYNs
    # Scans: SYNs to hosts and ports not tried before, mostly unanswered, over a longer window.
    scan_half_life_s: float = 10.0
    scan_min_probes: int = 20  # recent probes (decayed count over scan_half_life_s)
    scan_answered_max: float = 0.2  # at most this share of the probes answered (SYN-ACK, echo reply)
    scan_settle_s: float = 0.5  # answers to the first probes of an episode have had time to come back
    scan_burst_probes: int = 100  # ...or so many probes came at once (nmap, masscan) that no settling is needed
    scan_min_sweep: float = 0.1  # a model scan verdict needs this share of recent packets sweeping (probes)
    lone_probe_max_rate: float = 20.0  # bare SYN probes/s (all the board sees) below which one convicts its sender
    brute_force_min: int = 10  # recent connections to a telnet service (decayed over scan_half_life_s): guessing
    # Recent requests (decayed over half_life_s: about 14 a second, sustained) to reflection-prone UDP services
    # (evidence.REFLECTION_PORTS), mostly answered, that make their source the victim of a reflection flood through
    # the board, its address forged (an SSDP client sends 3 M-SEARCHes, an NTP client one request a minute).
    reflection_min_requests: int = 40
    request_flood_rate: float = 300.0  # one source's requests/s to a web server over its connections: an HTTP flood...
    request_flood_min: int = 300  # ...with so many recent ones
    target_request_flood_rate: float = 500.0  # requests/s at one web server from sources each too light: a botnet's...
    target_request_flood_min: int = 600  # ...with so many recent ones
    # One source's DNS queries at a resolver (the board as a Pi-hole: Mirai's dns attack from a LAN bot whose resolver
    # it is; an open resolver's forged asker), answered or not, unless the source is a resolver itself, asked at
    # least ``forwarder_share`` as many queries as it sends (a Pi-hole forwarding to its upstream).
    query_flood_rate: float = 500.0
    query_flood_min: int = 1000
    forwarder_share: float = 0.25
    # A resolver forwarding upstream answers a query after 5-100 ms: a burst of queries is not judged as a UDP flood
    # (not answered, so no conversation) before its first answers have had this long to come back.
    answer_wait_s: float = 0.2
    # Discovery traffic to a group (evidence.DISCOVERY_PORTS, ICMPv6 neighbour discovery) from one source, or from
    # forged ones at a group, at ``flood_rate``: so many recent packets (a device announcing its services at start-up
    # sends a few dozen at once; a gateway reflecting mDNS between networks, a few dozen more).
    group_flood_min_packets: int = 200
    udp_scan_min_probes: int = 10  # a scan of mostly UDP probes needs so many (nmap -sU sends ~25, then waits)
    udp_scan_min_refusals: float = 3.0  # recent ICMP unreachables behind a scan of mostly UDP probes
    # A traceroute: routers answer its probes with ICMP time exceeded, hop after hop (a flood's TTL stays put, and a
    # router answers it once a second at most).  A source that draws this share of its recent packets is tracing.
    tracing_share: float = 0.1
    # A key's datagrams in conversation: answers (which count for their receiver) make up this share of them, i.e. at
    # least two of three are answered (a Pi-hole's queries all are; a server refusing a flood answers some, slowly).
    answered_share: float = 0.4
    # A media stream (Evidence.media) from a source sending fewer packets a second than this: no UDP flood verdict
    # of the model's or of one socket's headers (a 4K camera's 25 Mbit/s is 2,300 datagrams a second).
    stream_max_rate: float = 5000.0
    # Anomaly verdicts: most recent packets anomalous (only when an anomaly detector runs).
    anomaly_share: float = 0.8
    anomaly_min_packets: int = 20


@dataclass
class Verdict:
    """One hostile source (or one target of a flood from many sources)."""

    kind: str  # "source", or "spoofed": a flood from many sources at one target (or, victim None, at many)
    label: str  # one of VERDICT_LABELS
    confidence: float
    packets: int
    first_seen: float
    last_seen: float
    decided_at: float  # timestamp of the packet that tipped the decision
    src_ip: str | None = None
    src_mac: str | None = None
    src_port: int | None = None
    victim_ip: str | None = None
    victim_port: int | None = None
    proto: int | None = None
    basis: str = "model"  # "model", "headers" or "anomaly" (see the module's docstring)

    @property
    def latency(self) -> float:
        return self.decided_at - self.first_seen

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_s"] = round(self.latency, 6)
        return d

    def describe(self) -> str:
        """One line for people: class, who, basis, confidence, packets, first and last packet (local ISO 8601), and
        the latency from the first packet of the source (or flood) to the packet that decided the verdict."""
        if self.kind == "spoofed" and self.victim_ip is None:
            who = f"spoofed flood from {self.src_mac} at many hosts, proto {self.proto}"
        elif self.kind == "spoofed":
            port = f"/{self.victim_port}" if self.victim_port is not None else ""
            who = f"spoofed flood at {self.victim_ip} proto {self.proto}{port}"
        else:
            who = f"{self.src_ip} ({self.src_mac})"
        whose = "flood's" if self.kind == "spoofed" else "source's"
        return (
            f"{self.label:15s} {who:45s} [{self.basis}] conf {self.confidence:.3f} packets {self.packets:8d} "
            f"first {iso_time(self.first_seen)} last {iso_time(self.last_seen)} "
            f"latency {self.latency * 1000:.1f} ms since the {whose} first packet"
        )


def _attempt_key(src_hi, src_lo, dst_hi, dst_lo, dport) -> np.ndarray:
    """The attempts table's key: (source, destination, destination port)."""
    return hash_words(13, src_lo, dst_hi ^ src_hi, dst_lo, np.asarray(dport).astype(np.uint64))


def _target_key(hi, lo, proto) -> np.ndarray:
    """The targets table's key: (destination address, protocol)."""
    return hash_words(12, hi, lo, np.asarray(proto).astype(np.uint64))


def _group_key(hi, lo, port, service_port) -> np.ndarray:
    """The group requests table's key: (requester, its port, the service's port)."""
    ports = (np.asarray(port).astype(np.uint64) << np.uint64(16)) | np.asarray(service_port).astype(np.uint64)
    return hash_words(16, hi, lo, ports)


def _columns(*columns: np.ndarray) -> np.ndarray:
    """``np.column_stack(columns)`` as float64 (C-contiguous: what the tables' compiled sums read), filled in place."""
    widths = [1 if col.ndim == 1 else col.shape[1] for col in columns]
    out = np.empty((len(columns[0]), sum(widths)))
    at = 0
    for col, width in zip(columns, widths):
        out[:, at : at + width] = col if col.ndim == 2 else col[:, None]
        at += width
    return out


@lru_cache(maxsize=4096)
def _ip_text(hi: int, lo: int) -> str:
    """``format_ip`` of Python ints, remembered: verdicts name the same victims again and again."""
    return format_ip(hi, lo)


@lru_cache(maxsize=4096)
def _mac_text(mac: int) -> str:
    return format_mac(mac)


def _unless(rule: tuple[np.ndarray, np.ndarray, np.ndarray], ok: np.ndarray) -> tuple:
    """``rule`` hot only where ``ok``."""
    hot, label, conf = rule
    return hot & ok, label, conf


_UDP_CLASSES = [LABELS.index("mirai_udp"), LABELS.index("mirai_udpplain")]
_FORGED_KEY = 0x9E3779B97F4A7C15  # the sources table's key of every forged (LAND) packet
# A key's UDP is a media stream when this share of it is (a socket pair's first datagram never is: nothing before it to
# compare with; a model verdict may come at a stream's tenth datagram).
MEDIA_SHARE = 0.8


def _streaming(r: dict, udp: np.ndarray, media: np.ndarray, cfg: "DecisionConfig") -> np.ndarray:
    """Per packet of a table's keys (their UDP and media shares): the key's UDP is a media stream (Evidence.media),
    below a flood's rate: no UDP flood verdict for it."""
    return (udp > 0) & (media >= MEDIA_SHARE * udp) & (rate(r, cfg.half_life_s) < cfg.stream_max_rate)


def _unless_udp(rule: tuple[np.ndarray, np.ndarray, np.ndarray], talking: np.ndarray) -> tuple:
    """``rule``, whose UDP flood verdicts need a key that is not in conversation (``talking``)."""
    hot, label, conf = rule
    return hot & ~(talking & np.isin(label, _UDP_CLASSES)), label, conf


def _rekeyed(keys: np.ndarray, packets: PacketBatch, which: np.ndarray, by: str, tag: int,
             proto: bool = False) -> np.ndarray:
    """``keys``, with the packets ``which`` keyed by their ``by`` ("src" or "dst") address instead (and protocol)."""
    if not which.any():
        return keys
    keys = keys.copy()
    hi, lo = getattr(packets, f"{by}_ip_hi")[which], getattr(packets, f"{by}_ip_lo")[which]
    last = (packets.proto if proto else packets.l3)[which].astype(np.uint64)
    keys[which] = hash_words(tag, hi, lo, last)
    return keys


def _first_per_source_and_class(verdicts: list[Verdict]) -> list[Verdict]:
    """In time order; of a source's verdicts of one class from several tables (source, pair, initiator) in one
    batch, the earliest."""
    out, seen = [], set()
    for v in sorted(verdicts, key=lambda v: v.decided_at):
        key = (v.src_ip, v.label) if v.kind == "source" else None
        if key is None or key not in seen:
            out.append(v)
            seen.add(key)
    return out


@dataclass
class _Chunk:
    """One chunk of packets as the decision stage's tables see it (filled in table by table)."""

    packets: PacketBatch
    scores: np.ndarray  # (n, 6): answers (RSTs, SYN-ACKs, echo replies) set to benign
    ev: Evidence
    shape: np.ndarray  # (n, len(Evidence.SHAPES)) bool: the shapes a flood's packets can have
    anomalous: np.ndarray  # (n,) 1.0 where the anomaly detector flags the packet
    probe: np.ndarray  # openers to a host and port their sender had not tried
    sweep: np.ndarray  # short, empty probes: what scanners send
    full_options: np.ndarray  # TCP with a header of 32 bytes or more (the kernel's option block)
    full_probe: np.ndarray  # SYNs with the full option block to a host and port their sender had not tried
    kernel_probe: np.ndarray  # ...from an ephemeral port (32768 and up), as a kernel's connect() sends them
    reconnect: np.ndarray  # SYNs through a new socket pair to a host and port their sender tried before
    src_key: np.ndarray
    forged: np.ndarray  # source address = destination address (LAND): forged, never its source's
    out_of_sequence: np.ndarray  # TCP with numbers no stream of its socket pair would carry
    fresh: np.ndarray  # through a socket pair new (or quiet) for it, or with TCP numbers no stream of it carries
    opaque: np.ndarray  # one-way UDP whose payload has no header: random or the same throughout (_payload_kinds)
    noise: np.ndarray  # ...random, one byte throughout or empty: a flood's, not a repeated message's (_payload_kinds)
    media_at_target: np.ndarray  # media, or a pair's first datagram with the header of the one before to its host
    server: np.ndarray  # TCP from a service's port on a pair whose client has sent on it: answering its client
    light_src: np.ndarray | None = None  # from a source too light to be a flood on its own (targets)
    new_source: np.ndarray | None = None  # from a source seen for the first time, or forged (sources)
    verdicts: list[Verdict] = field(default_factory=list)

    @cached_property
    def shaped(self) -> np.ndarray:
        """Of one of the shapes a flood can have (a row of ``shape`` not all zero)."""
        return np.logical_or.reduce([getattr(self.ev, name) for name in Evidence.SHAPES])


class DecisionLayer:
    """``update(packets, scores, features, anomaly)`` -> the verdicts this batch raised (the layer keeps no
    history: a long-running agent must not grow with every verdict).  After each update,
    ``packet_labels`` holds, per packet, the index into VERDICT_LABELS of the verdict its source (or
    its flood's target) stands convicted of at that packet, or -1; ``packet_flood_labels`` the same for
    floods from many sources alone (judged on rate and shape at the target: no model opinion beats it)."""

    SOURCE_EXTRAS = (*Evidence.SHAPES, "fresh", "sweep", "kbytes", "id_jump", "anomalous", "rst", "one_way", "traced",
                     "reconnect", "full_probe", "kernel_probe", "answered", "two_way", "reflect",
                     "web_request", "dns_query", "group", "media", "fragment", "opaque", "noise",
                     "raw_noise")
    TARGET_EXTRAS = (*Evidence.SHAPES, "fresh", "new_source", "light_source", "answered", "web_request",
                     "dns_query", "group", "amplified", "media")
    PAIR_EXTRAS = (*Evidence.SHAPES, "fresh", "sweep", "kbytes", "id_jump", "full_probe", "kernel_probe", "opaque")
    _PAIR_COLUMNS = list(map(SOURCE_EXTRAS.index, PAIR_EXTRAS))  # where the pairs' columns sit in the sources' extras
    INITIATOR_EXTRAS = ("probe", "answered", "full_options", "reset", "refused", "udp", "udp_new_sport", "kernel_probe",
                        "login")

    def __init__(self, config: DecisionConfig | None = None) -> None:
        self.cfg = cfg = config or DecisionConfig()
        self.sources = Tracked(cfg.max_sources, cfg.half_life_s, self.SOURCE_EXTRAS)
        self.targets = Tracked(cfg.max_targets, cfg.half_life_s, self.TARGET_EXTRAS)
        # Source, destination subnet and protocol: a flood at one victim from a bot whose other traffic outweighs
        # it (a camera streaming video while it floods slowly) shows only in what the bot sends that victim.
        self.pairs = Tracked(cfg.max_sources, cfg.half_life_s, self.PAIR_EXTRAS)
        self.initiators = Tracked(cfg.max_sources, cfg.scan_half_life_s, self.INITIATOR_EXTRAS, with_scores=False)
        self.attempts = StreamTable(cfg.max_sources, np.zeros(0))  # (source, destination, port) tried
        # (source, destination, source port) of UDP probes; of full-option SYN probes (ports + 65536) and of bare ACKs
        # (ports + 2 * 65536) too
        self.udp_sports = StreamTable(cfg.max_sources, np.zeros(0))
        self.sequences = StreamTable(cfg.max_sources, np.array([-1.0, 0.0, -1.0]))  # per TCP socket: seq, size, ack
        self.ip_ids = StreamTable(cfg.max_sources, np.array([-1.0]))  # per UDP socket pair: the last IPv4 id
        # per one-way UDP socket pair: its last payload's first 16 bytes, as four 32-bit words
        self.payload_heads = StreamTable(cfg.max_sources, np.full(4, -1.0))
        # per receiving host: the last payload of a datagram opening a socket pair to it (from any source)
        self.service_payload_heads = StreamTable(cfg.max_targets, np.full(4, -1.0))
        # per sending host, and per sending host and destination port: the last payload of a datagram it opened a
        # socket pair with
        self.opener_payload_heads = StreamTable(cfg.max_sources, np.full(4, -1.0))
        self.opener_service_heads = StreamTable(cfg.max_sources, np.full(4, -1.0))
        # (requester, its port, the service port) of UDP requests sent to a group (multicast, broadcast)
        self.group_requests = StreamTable(GROUP_REQUESTS, np.zeros(0))
        self.links = Tracked(4096, cfg.half_life_s, (*Evidence.SHAPES, "new_source"))  # per Ethernet sender
        self.bare_probes = Tracked(1, cfg.half_life_s, (), with_scores=False)  # all bare probes the board sees
        self.packet_labels = np.zeros(0, dtype=np.int64)
        self.packet_flood_labels = np.zeros(0, dtype=np.int64)  # the part of packet_labels from floods at targets
        self.packet_fits = np.zeros(0, dtype=np.uint8)  # bit k: the packet has VERDICT_LABELS[k]'s shape (shape_fits)
        # an answer (SYN-ACK, bare RST, echo reply, a UDP reply, a server's segments to its client) or an
        # application's stream (media, or one header across senders): traffic the decision stage judged no attack's
        # on its own (agent.detect.hindsight)
        self.packet_spared = np.zeros(0, dtype=bool)
        self.anomaly_enabled = False  # set once an anomaly score has been given

    def update(
        self,
        packets: PacketBatch,
        scores: np.ndarray,
        features: np.ndarray | None = None,
        anomaly: np.ndarray | None = None,
    ) -> list[Verdict]:
        """Verdicts raised by this batch (processed in chunks no table budget can overflow).

        ``features``: the packets' 115 features (new sockets and hosts are read off them);
        ``anomaly``: the anomaly detector's per-packet score (> 1: anomalous), if one runs.
        """
        step = max(1, min(self.cfg.max_sources, self.cfg.max_targets))
        scores = np.asarray(scores, dtype=np.float64)
        out: list[Verdict] = []
        labels = []
        for lo in range(0, len(packets), step):
            sl = slice(lo, lo + step)
            chunk = packets.take(sl) if len(packets) > step else packets
            out += self._update_chunk(
                chunk,
                scores[sl],
                None if features is None else features[sl],
                None if anomaly is None else np.asarray(anomaly)[sl],
            )
            labels.append(self._chunk_labels)
        columns = list(zip(*labels)) or [[np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.uint8)],
                                         [np.zeros(0, bool)]]  # fmt: skip
        self.packet_labels, self.packet_flood_labels, self.packet_fits, self.packet_spared = map(np.concatenate, columns)
        return out

    def _update_chunk(
        self, packets: PacketBatch, scores: np.ndarray, features: np.ndarray | None, anomaly: np.ndarray | None
    ) -> list[Verdict]:
        c = self._chunk(packets, scores, features, anomaly)
        srcs, labels = self._judge_sources(c)
        tgts, labels, flood_labels = self._judge_targets(c, srcs, labels)
        self._judge_initiators(c, srcs, tgts, labels)
        self._judge_links(c, tgts, labels, flood_labels)
        self.sources.store(srcs)
        self.targets.store(tgts)
        fits = shape_fits(c.ev, c.sweep, c.anomalous > 0)
        bits = (fits.astype(np.uint8) << np.arange(len(fits), dtype=np.uint8)[:, None]).sum(axis=0, dtype=np.uint8)
        spared = c.media_at_target | c.server | c.ev.answer | c.ev.rst | c.ev.reply
        self._chunk_labels = (matching(labels, fits), matching(flood_labels, fits), bits, spared)
        return _first_per_source_and_class(c.verdicts)

    def _chunk(
        self, packets: PacketBatch, scores: np.ndarray, features: np.ndarray | None, anomaly: np.ndarray | None
    ) -> _Chunk:
        """What every table of the decision stage reads: the chunk's evidence, probes and answers."""
        n = len(packets)
        ev = packet_evidence(packets, features)
        heads = datagram_heads(packets)
        if heads is not None:  # later fragments: their first fragment's headers and the model's scores of it
            inherit_headers(ev, heads)
            scores = scores[heads]
        # Media streams whose datagrams are one size but whose payloads carry an application's header; and datagrams
        # whose payloads carry none (a flood's).
        # (a datagram of 16 bytes or more whose first 16 were not captured says nothing: a short snaplen)
        one_way = ev.one_way & ~packets.frag & (packets.udp_head_ok | (packets.payload_len < 16))
        structured, opaque, noise, judged = self._payload_kinds(packets, one_way & ~ev.new_socket, self.payload_heads)
        ev.media |= structured
        # Datagrams with nothing before them on their socket pair, from many sources to one host (sensors reporting
        # to a hub, heard again after the agent restarts), against each other: one protocol's header across its
        # senders, where a spoofed flood's payloads are random or one (and it hits few hosts: few keys).
        unjudged = one_way & ~judged
        across = self._payload_kinds(packets, unjudged, self.service_payload_heads, by="dst")[0]
        # ...and from one host to many socket pairs (a flood at random ports or hosts draws a new pair per datagram):
        # noise where it reads as none of an application's by itself (``noise_alone``) and is like neither the one
        # before it from its host (a VPN's discovery pings to a peer's every address carry one magic number and key)
        # nor the one before it from its host to the same port (a hub polling dead sensors by CoAP and SNMP in turn).
        familiar = np.zeros(len(packets), dtype=bool)
        for table, by in ((self.opener_payload_heads, "src"), (self.opener_service_heads, "src_dport")):
            alike, opaque_src, noise_src, _ = self._payload_kinds(packets, unjudged, table, by=by)
            familiar |= alike | (opaque_src & ~noise_src)  # (or the same message again, byte for byte)
        fresh_noise = noise_alone(packets, unjudged & ~familiar)
        noise |= fresh_noise
        opaque |= fresh_noise
        # (datagrams of many sizes, or a key frame's: a stream's, whatever its payload; to a group: an announcement's,
        # at nobody, such as a discovery request a vendor's app scrambles)
        noise &= ~ev.media & ~ev.to_group
        group_answers = self._answers_to_groups(packets, ev)
        ev.reply |= group_answers
        ev.udp_probe &= ~group_answers
        ev.amplified &= ~group_answers  # (the board's answers to a forged M-SEARCH: the reflection rule's)
        if anomaly is not None:
            self.anomaly_enabled = True
        anomalous = np.zeros(n) if anomaly is None else (anomaly > 1.0).astype(np.float64)
        # A packet whose source is its destination (a LAND packet, CIC-IoT's SynonymousIP flood) is forged: it never
        # convicts its "source", the victim itself (it probes nothing, and counts under no source); its target's
        # flood rules judge it.
        forged = (packets.src_ip_lo == packets.dst_ip_lo) & (packets.src_ip_hi == packets.dst_ip_hi)
        opener = ev.opener & ~forged
        probe = opener & self._first_attempt(packets, opener)
        probe |= self._ack_probes(packets, ev, features) & ~forged
        ev.unsolicited(ev.synack & ~self._tried(packets, ev.synack, answers=True),
                       ev.echo_reply & ~self._tried(packets, ev.echo_reply, answers=True))
        # (TCP on a pair quiet for a second is checked too where a server resumes it, from its service's port, lower
        # than its client's, the other end having sent on the pair: it answers its client)
        server = ev.ack & ev.tcp_two_way & (packets.sport < packets.dport)
        out_of_sequence, acknowledges, known = self._sequence_check(
            packets, (ev.ack & ~ev.new_socket) | (server & ev.new_socket) | ev.ack_back)
        # (a stream to continue: a flood at random ports revisits pairs its victim refused, with numbers of its own)
        continuing = server & known & ~out_of_sequence
        resumed = continuing & ev.new_socket
        # Fresh: through a socket pair fresh for it, or with TCP numbers no stream of the pair would carry.  A server's
        # segments after a pause (its FIN-ACKs when a slowloris tool closes hundreds of connections at once, tiny
        # segments to slow readers) continue their streams: not fresh.  A client's after a pause (a slowloris header
        # line every 10 s on each connection) still are.
        fresh = (ev.new_socket & ~resumed) | out_of_sequence
        # RSTs and SYN-ACKs answer somebody (a victim refusing a flood's or a scan's packets, a scanner's kernel
        # refusing the SYN-ACKs its raw probes drew), and so does a bare ACK of data the other end sent (a server
        # acknowledging a slowloris client's header line every 10 s on each of 500 connections, which the model
        # took for an ack flood): whatever the model or the anomaly detector makes of them, they convict nobody.
        answers = ev.rst | ev.answer | ev.reply | ev.to_group  # (multicast and broadcast: at nobody)
        answers |= ev.ack_back & acknowledges & ~out_of_sequence
        if answers.any():
            scores = scores.copy()
            scores[answers] = np.eye(N_CLASSES)[0]
            anomalous = np.where(answers, 0.0, anomalous)
        # A server's segments continuing connections its clients keep up (from its service's port, the lower, in
        # sequence, the client having sent on the pair) serve them: however unusual their pace (an MQTT broker's
        # PUBACKs to a publisher of a thousand messages a second, tiny segments to a slow reader), no anomaly of
        # the server's.
        anomalous = np.where(continuing, 0.0, anomalous)
        # Probes: openers (SYNs, stealth scans' FIN/NULL/Xmas, echo requests; an ACK scan's ACKs) to a destination
        # host and port their sender had not tried.  A sweep is made of short, empty ones: scanners send SYNs with no
        # TCP options or one and no data, while Mirai's SYN flood at a subnet or at random ports, which tries new hosts
        # and ports too, carries the kernel's 20-byte option block, and its ack flood with only FIN (or no flag) set,
        # its payload.
        # UDP opens nothing: a UDP probe (``Evidence.udp_probe``) opens a socket pair to a host its sender already
        # talks with (a port scan tries one port after another), judged by the initiators with the closed ports'
        # refusals (``scan_rule``); it sweeps nothing (a UDP flood at random ports of one host sends nothing else).
        full_options = packets.tcp_hdr_len >= 32
        sweep = probe & ~full_options & ((packets.payload_len == 0) | ev.echo)
        src_key = hash_words(11, packets.src_ip_hi, packets.src_ip_lo, packets.l3.astype(np.uint64))
        # A kernel's connect() takes a new ephemeral port for each connection (not one port for all, as a flood
        # with its source port option set sends).
        full_probe = probe & full_options & ev.syn_only
        in_range = full_probe & (packets.sport >= EPHEMERAL_PORTS)
        kernel_probe = in_range & self._first_seen(self.udp_sports, packets, in_range, packets.sport + 65536)
        # A new connection to a service tried before: a SYN through a new socket pair (a retransmitted SYN reuses its).
        reconnect = ev.syn_only & ~probe & ~forged
        reconnect &= opens_socket_pair(features) if features is not None else False
        return _Chunk(packets, scores, ev, ev.shape(), anomalous, probe, sweep, full_options, full_probe, kernel_probe,
                      reconnect, src_key, forged, out_of_sequence, fresh, opaque, noise, ev.media | across, server)

    def _judge_sources(self, c: _Chunk) -> tuple[dict, np.ndarray]:
        """Sources (and the pairs of the ones not convicted yet); the class each packet's source is convicted of."""
        packets, cfg = c.packets, self.cfg
        fresh = c.fresh
        id_jump = self._ip_id_jumps(packets, c.ev.udp & ~c.ev.new_socket & (packets.l3 == L3_IPV4))
        traced, answered = c.ev.time_exceeded, c.ev.reply
        extra = _columns(c.shape, fresh, c.sweep, packets.wire_len / 1000.0, id_jump, c.anomalous, c.ev.rst,
                         c.ev.one_way, traced, c.reconnect, c.full_probe, c.kernel_probe, answered,
                         c.ev.two_way, c.ev.reflect_request, c.ev.web_request, c.ev.dns_query, c.ev.group_chatter,
                         c.ev.media, packets.frag, c.opaque, c.noise, c.noise & (fresh | id_jump))
        # A router's time exceeded, and a datagram answering one, count for the source whose packet they answer (their
        # receiver), as benign: a traceroute's small datagrams to ever new ports look like a UDP flood at random ports
        # to the model, and so do a Pi-hole's bursts of queries to its resolver.
        to_receiver = traced | answered
        key = _rekeyed(c.src_key, packets, to_receiver, by="dst", tag=11)
        if c.forged.any():  # (all forged packets under one key of their own, which they never convict)
            key = np.where(c.forged, np.uint64(_FORGED_KEY), key)
        srcs = self.sources.update(key, packets.ts, c.scores, extra)
        # Neither a tracing source nor an answer (it carries the answerer's address) convicts, nor do UDP floods of a
        # source in conversation: answered, or through socket pairs the other end uses too (a VPN, a call, a game).
        x, shares = self.SOURCE_EXTRAS.index, srcs["shares"]
        tracing = shares[:, x("traced")] >= cfg.tracing_share
        calm = ~(tracing | to_receiver[srcs["order"]] | c.forged[srcs["order"]])
        udp = shares[:, x("udp")]
        talking = (udp > 0) & ((shares[:, x("answered")] >= cfg.answered_share * udp)
                               | (shares[:, x("two_way")] > 0.5 * udp))  # fmt: skip
        # A resolver's queries: it forwards what it is asked (a Pi-hole's upstream queries, as many as its clients'),
        # a conversation too, however fast its clients ask.
        queries = srcs["extra_weight"][:, x("dns_query")]
        forwarder = np.zeros(len(queries), dtype=bool)
        asking = np.flatnonzero(queries > 0)  # (the rows of keys that sent DNS queries lately)
        if len(asking):
            asked = self._dns_queries_received(packets, c.ev, srcs["order"][asking])
            forwarder[asking] = asked >= cfg.forwarder_share * queries[asking]
            mostly_dns = shares[asking, x("dns_query")] >= 0.5 * udp[asking]
            waiting = srcs["t"][asking] - srcs["episode"][asking] < cfg.answer_wait_s  # (a router's burst of queries)
            talking[asking] |= (forwarder[asking] | waiting) & mostly_dns
        # A media stream (Evidence.media) below a flood's rate: a camera's RTP video, a doorbell's audio, a sensor's
        # frames.  The model finds udpplain in a stream of datagrams through one socket pair, and so do the headers
        # when they are small and many; nothing in a packet's 115 features tells them apart, the spread of their
        # sizes does, or their payloads' headers.
        streaming = _streaming(srcs, udp, shares[:, x("media")], cfg)
        # A header UDP flood draws a new socket pair per datagram: in conversation so, only a DNS client is (a query
        # from a new port each, answered); a flood at a board's service that answers every datagram (an echo, a SIP
        # stack refusing junk) is a flood however answered.
        asking_dns = talking & (shares[:, x("dns_query")] >= 0.5 * (udp - shares[:, x("answered")]))  # (of its own)
        first = np.zeros(len(packets), dtype=bool)  # a never-seen source's first packet (in key order)
        first[srcs["seg"].start[srcs["state"][:, self.sources.col["count"]] == 0]] = True
        c.new_source = self.sources.per_packet(srcs, first) | c.forged
        # Mirai's SYN flood fingerprint convicts its sender, but not as a never-seen source's first packet: a spoofed
        # flood brings a new source with every packet, so its forged sources are never convicted (the flood is
        # judged at its target), while a bot is at its second (a few SYNs a second reach a board from each bot
        # of a flood at its subnet).
        flood_print = c.ev.mirai_syn & ~c.new_source
        rules = [
            (_unless(_unless_udp(model_rule(srcs, cfg, self.sources), talking | streaming), calm), "model"),
            (fingerprint_rule(c.ev.mirai_scan[srcs["order"]]), "headers"),
            (_unless(fingerprint_rule(flood_print[srcs["order"]], _SYN), calm), "headers"),
            (_unless(_unless_udp(flood_rule(srcs, self.sources, cfg, one_source=True), asking_dns | streaming), calm),
             "headers"),
            (_unless(_unless_udp(noise_flood_rule(srcs, self.sources, cfg), talking), calm), "headers"),
            (connection_flood_rule(srcs, self.sources, cfg), "headers"),
            (_unless(reflection_rule(srcs, self.sources, cfg), calm), "headers"),
            (request_flood_rule(srcs, self.sources, cfg, one_source=True), "headers"),
            (_unless(query_flood_rule(srcs, self.sources, cfg), calm & ~forwarder), "headers"),
            (_unless(group_flood_rule(srcs, self.sources, cfg), calm), "headers"),
        ]
        if self.anomaly_enabled:
            rules.append((_unless(anomaly_rule(srcs, self.sources, cfg), calm), "anomaly"))
        turned, at = convict(self.sources, srcs, cfg, rules, judging=calm)
        c.verdicts += self._source_verdicts(packets, srcs, turned, at)
        labels = self.sources.per_packet(srcs, srcs["convicted"])

        # Pairs: the model's flood classes (scans are judged by source) for sources not convicted of the class
        # already; a pair's verdict counts as its source's, so the source does not report the class again.
        # Only sources whose recent attack-scored packets could convict a pair are followed (a pair holds at
        # most its source's packets): benign sources and convicted ones cost nothing here.  A media stream's packets
        # are left out (a camera's video beside a flood of its own at another host: the flood's pair is judged).
        attack_mass = (srcs["avg"] * srcs["weight"][:, None]).max(axis=1)
        rows = np.flatnonzero((self.sources.per_packet(srcs, attack_mass) >= cfg.threshold * cfg.min_packets)
                              & (labels < 0) & self.sources.per_packet(srcs, calm)
                              & ~(self.sources.per_packet(srcs, talking) & c.ev.udp) & ~c.ev.media)  # fmt: skip
        if len(rows):
            self._judge_pairs(packets, c.scores, extra, rows, srcs, labels, c.verdicts)
        return srcs, labels

    def _judge_targets(self, c: _Chunk, srcs: dict, labels: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """Targets (victim, protocol: Mirai's floods randomise the destination port per packet).  A packet from a
        source seen for the first time counts towards "spoofed"; one from a source too light to be convicted as
        a flood on its own counts towards a flood from many sources.  Returns the targets and the labels with
        the packets of a flood at a convicted target, and those labels alone."""
        packets, cfg = c.packets, self.cfg
        heavy = rate(srcs, cfg.half_life_s) >= cfg.flood_rate  # (rate alone: heavy before it can be convicted)
        c.light_src = ~self.sources.per_packet(srcs, heavy) | c.forged  # (a forged source is as good as new)
        textra = _columns(c.shape, c.fresh, c.new_source, c.light_src, c.ev.reply, c.ev.web_request,
                          c.ev.dns_query, c.ev.group_chatter, c.ev.amplified, c.media_at_target)
        # A target's answers count for it: a resolver answering a Pi-hole's bursts of queries is no flood's victim.
        tgt_key = _target_key(packets.dst_ip_hi, packets.dst_ip_lo, packets.proto)
        tgt_key = _rekeyed(tgt_key, packets, c.ev.reply, by="src", tag=12, proto=True)
        tgts = self.targets.update(tgt_key, packets.ts, c.scores, textra)
        tx = self.TARGET_EXTRAS
        udp_t = tgts["shares"][:, tx.index("udp")]
        answered_t = (udp_t > 0) & (tgts["shares"][:, tx.index("answered")] >= cfg.answered_share * udp_t)
        # Media streams to the target (a hub hearing its sensors, an NVR its cameras), below a flood's rate: no UDP
        # flood at it, however many sources it hears at once.
        answered_t |= _streaming(tgts, udp_t, tgts["shares"][:, tx.index("media")], cfg)
        # "Spoofed" needs many never-seen sources recently, not just a high share: after a quiet spell a
        # target's decayed window holds only the newest packets, and one new attacker's first packet would
        # make the share 1.
        fresh_share = tgts["shares"][:, tx.index("new_source")]
        spoofed = (fresh_share >= cfg.spoofed_share) & (fresh_share * tgts["weight"] >= cfg.min_packets)
        hot_m, lab_m, conf_m = model_rule(tgts, cfg, floods_only=True)
        hot_f, lab_f, conf_f = flood_rule(tgts, self.targets, cfg, one_source=False)
        many = tgts["shares"][:, tx.index("light_source")] >= 0.5
        hot_r, lab_r, conf_r = request_flood_rule(tgts, self.targets, cfg, one_source=False)
        # Discovery traffic to a group from forged sources, a new one per packet (flood_router6's RAs): one source's is
        # judged by its source.
        hot_g, lab_g, conf_g = group_flood_rule(tgts, self.targets, cfg)
        # A reflection flood at the target: unsolicited answers from amplifying services, a few from each reflector (a
        # source that sends a flood's rate alone, a bot's udp flood from port 53, is judged by its source).
        hot_a, lab_a, conf_a = amplification_rule(tgts, self.targets, cfg)
        rules_t = [(_unless_udp((hot_m & spoofed, lab_m, conf_m), answered_t), "model"),
                   (_unless_udp((hot_f & many, lab_f, conf_f), answered_t), "headers"),
                   ((hot_r & many, lab_r, conf_r), "headers"),
                   ((hot_g & spoofed, lab_g, conf_g), "headers"),
                   ((hot_a & many, lab_a, conf_a), "headers")]
        turned_t, at_t = convict(self.targets, tgts, cfg, rules_t)
        c.verdicts += [self._target_verdict(packets, tgts, s, p) for s, p in zip(turned_t, at_t)]
        # Packets of a flood at a convicted target: the flood's shape (or discovery traffic, at a group) from a light
        # source; not the segments of a stream the target carries (its own connections, in sequence): a spoofed ACK
        # flood's are fresh (new socket pairs, numbers no stream carries).
        flood_class = self.targets.per_packet(tgts, tgts["convicted"])
        from_flood = (flood_class >= 0) & c.light_src & (c.shaped | c.ev.group_chatter) & (~c.ev.ack | c.fresh)
        flood_labels = np.where(from_flood, flood_class, -1)
        return tgts, np.where(labels < 0, flood_labels, labels), flood_labels

    def _judge_initiators(self, c: _Chunk, srcs: dict, tgts: dict, labels: np.ndarray) -> None:
        """Initiators of connection attempts: probes and the initiator's resets of its own attempts count for
        their sender, answers (SYN-ACK, echo reply) and refusals (ICMP unreachable) for their receiver.  Scan
        verdicts; their probes' labels go into ``labels``."""
        packets, ev, cfg = c.packets, c.ev, self.cfg
        bare_probe = c.sweep & ev.syn_only & (packets.tcp_hdr_len == 20)  # a SYN with no TCP options, to a port not tried
        reset = ev.rst & self._tried(packets, ev.rst)
        # A new connection to a telnet service tried before: a password guess (the probe that found the service counts
        # as one too).
        login = (c.reconnect | c.probe & ev.syn_only) & np.isin(packets.dport, TELNET_PORTS)
        rows = np.flatnonzero(c.probe | ev.udp_probe | ev.answer | reset | ev.refusal | login)
        if not len(rows):
            return
        p_probe, p_udp, p_reset = c.probe[rows] | ev.udp_probe[rows], ev.udp_probe[rows], reset[rows]
        # A port scan sends from one source port (nmap, masscan); a UDP flood at random ports draws one per packet.
        p_new_sport = self._first_seen(self.udp_sports, packets, ev.udp_probe, packets.sport)[rows]
        own = p_probe | p_reset | login[rows]  # packets the initiator sent: they carry its address
        answers_to_initiator = np.zeros(len(packets), dtype=bool)
        answers_to_initiator[rows[~own]] = True
        init_key = _rekeyed(c.src_key, packets, answers_to_initiator, by="dst", tag=11)[rows]
        # INITIATOR_EXTRAS, in order.
        columns = _columns(p_probe, ev.answer[rows] & ~own, p_probe & c.full_options[rows], p_reset,
                           ev.refusal[rows] & ~own, p_udp, p_new_sport, c.kernel_probe[rows], login[rows])  # fmt: skip
        inits = self.initiators.update(init_key, packets.ts[rows], None, columns)
        # A lone probe convicts while bare probes arrive slowly, as scanning bots come by one at a time, and not
        # at a flooded target (a spoofed flood of bare SYNs, at one target or at random ones, with random source
        # addresses and MACs, is judged as a flood: past its first packet its rate closes this door).
        quiet = self.targets.per_packet(tgts, tgts["convicted"] < 0) & self._bare_probes_slow(packets, bare_probe)
        lone = (bare_probe & quiet & (c.scores[:, _SCAN] >= cfg.threshold))[rows]
        # Only the initiator's own packets carry its address (answers are keyed by their receiver): a verdict
        # comes at one of them.  Its probes carry the verdict's class.
        is_probe, is_own = p_probe[inits["order"]], own[inits["order"]]  # in key order
        hot, label, conf = scan_rule(inits, self.initiators, cfg)
        lone_rule = lone_probe_rule(inits, lone[inits["order"]])
        rules_i = [((hot & is_own, label, conf), "headers"), (lone_rule, "headers"),
                   (_unless(brute_force_rule(inits, self.initiators, cfg), is_own), "headers")]
        turned_i, at_i = convict(self.initiators, inits, cfg, rules_i)
        # A source already convicted (a SYN flood at random ports is also a sweep of ports) is not re-reported.
        tipped = rows[inits["order"][at_i]]
        keep = is_own[at_i] & (labels[tipped] < 0)
        self._claim(srcs, tipped[keep], inits["attack"][at_i][keep])
        c.verdicts += self._source_verdicts(packets, inits, turned_i[keep], at_i[keep], rows)
        scan_labels = self.initiators.per_packet(inits, np.where(is_probe, inits["convicted"], -1))
        labels[rows] = np.where(labels[rows] >= 0, labels[rows], scan_labels)
        self.initiators.store(inits)

    def _judge_links(self, c: _Chunk, tgts: dict, labels: np.ndarray, flood_labels: np.ndarray) -> None:
        """Links: a flood from light sources to light targets (spoofed sources at a whole subnet or at random
        addresses) shows only in what one Ethernet sender puts on the wire.  Labels go into both arrays."""
        packets, cfg = c.packets, self.cfg
        light_tgt = ~self.targets.per_packet(tgts, rate(tgts, cfg.half_life_s) >= cfg.flood_rate)
        scattered = c.light_src & light_tgt & c.shaped & (c.fresh | c.new_source) & (labels < 0)
        rows = np.flatnonzero(scattered)
        if not len(rows):
            return
        links = self.links.update(packets.src_mac[rows], packets.ts[rows], c.scores[rows],
                                  _columns(c.shape[rows], c.new_source[rows]))  # fmt: skip
        # Below a header flood's rate, the model's flood classes for what mostly comes from never-seen sources
        # (a slow spoofed flood at a subnet; internet scanners' probes are no flood class).
        hot_m, lab_m, conf_m = model_rule(links, cfg, floods_only=True)
        spoofed_l = links["shares"][:, self.links.extras.index("new_source")] >= cfg.link_spoofed_share
        rules_l = [(flood_rule(links, self.links, cfg, one_source=False), "headers"),
                   ((hot_m & spoofed_l, lab_m, conf_m), "model")]  # fmt: skip
        turned_l, at_l = convict(self.links, links, cfg, rules_l)
        c.verdicts += self._link_verdicts(packets, links, turned_l, at_l, rows)
        link_class = self.links.per_packet(links, links["convicted"])
        flood_labels[rows] = np.where(flood_labels[rows] < 0, link_class, flood_labels[rows])
        labels[rows] = np.where(labels[rows] < 0, link_class, labels[rows])
        self.links.store(links)

    def _bare_probes_slow(self, packets: PacketBatch, bare_probe: np.ndarray) -> np.ndarray:
        """Per packet: all the bare probes the board sees recently come slower than ``lone_probe_max_rate``."""
        out = np.ones(len(packets), dtype=bool)
        rows = np.flatnonzero(bare_probe)
        if len(rows):
            one_key = np.zeros(len(rows), dtype=np.uint64)
            seen = self.bare_probes.update(one_key, packets.ts[rows], None, np.zeros((len(rows), 0)))
            slow = rate(seen, self.cfg.half_life_s) < self.cfg.lone_probe_max_rate
            out[rows] = self.bare_probes.per_packet(seen, slow)
            self.bare_probes.store(seen)
        return out

    def _tried(self, packets: PacketBatch, which: np.ndarray, answers: bool = False) -> np.ndarray:
        """Per packet (of ``which``): its (source, destination, destination port) is an attempt on record; with
        ``answers``, its (destination, source, source port): the packet answers an attempt (a SYN-ACK to a SYN)."""
        out = np.zeros(len(packets), dtype=bool)
        idx = np.flatnonzero(which)
        if len(idx):
            p = packets
            src, dst = (p.src_ip_hi, p.src_ip_lo), (p.dst_ip_hi, p.dst_ip_lo)
            (a_hi, a_lo), (b_hi, b_lo), port = (dst, src, p.sport) if answers else (src, dst, p.dport)
            out[idx] = self.attempts.contains(_attempt_key(a_hi[idx], a_lo[idx], b_hi[idx], b_lo[idx], port[idx]))
        return out

    def _claim(self, srcs: dict, tipped: np.ndarray, classes: np.ndarray) -> None:
        """Mark verdicts of another table (pairs, initiators) as their sources', so that the source table does not
        report the class again in later batches.  ``tipped``: the packets that raised them."""
        src_seg = self.sources.per_packet(srcs, srcs["seg"].ids)[tipped]
        bits = srcs["state"][:, self.sources.col["reported"]]  # a float column holding bit sets
        for s, c in zip(src_seg.tolist(), classes.tolist()):
            bits[s] = int(bits[s]) | 1 << c

    def _judge_pairs(self, packets: PacketBatch, scores: np.ndarray, extra: np.ndarray, rows: np.ndarray, srcs: dict,
                     labels: np.ndarray, verdicts: list) -> None:
        """The pair table's model verdicts over ``rows`` of the batch: appended to ``verdicts``, marked as their
        sources' in ``srcs``, and filled into ``labels`` (per packet) where the source is not convicted."""
        cfg = self.cfg
        # The destination's subnet (/24, IPv6 /64: Mirai's floods take subnet targets) and the protocol: a bot
        # streaming video while it floods a subnet with UDP shows the flood in this pair alone.
        v4 = packets.l3[rows] == L3_IPV4
        subnet = np.where(v4, packets.dst_ip_lo[rows] & np.uint64(0xFFFF_FF00), np.uint64(0))
        key = hash_words(14, packets.src_ip_hi[rows], packets.src_ip_lo[rows], packets.dst_ip_hi[rows], subnet,
                         packets.proto[rows].astype(np.uint64))  # fmt: skip
        prs = self.pairs.update(key, packets.ts[rows], scores[rows], extra[np.ix_(rows, self._PAIR_COLUMNS)])
        # (The header flood rule too: a bot whose other traffic dilutes its flood's shape, a UDP flood at a /24 at
        # 300 packets/s beside a camera's stream, was named only when the model was sure, after a second.)
        turned_p, at_p = convict(self.pairs, prs, cfg, [(model_rule(prs, cfg, self.pairs, floods_only=True), "model"),
                                                        (flood_rule(prs, self.pairs, cfg, one_source=True), "headers")])
        self._claim(srcs, rows[prs["order"][at_p]], prs["attack"][at_p])
        verdicts += self._source_verdicts(packets, prs, turned_p, at_p, rows)
        labels[rows] = np.where(labels[rows] >= 0, labels[rows], self.pairs.per_packet(prs, prs["convicted"]))
        self.pairs.store(prs)

    def _ip_id_jumps(self, packets: PacketBatch, which: np.ndarray) -> np.ndarray:
        """Per packet (of ``which``: UDP over IPv4 through a socket pair in use): its IP id is one no kernel would
        send after the previous one on its socket pair: far from it, or the same non-zero id again.  A kernel counts
        ids per socket, or sends 0 with DF (Mirai's udpplain, every benign sender); raw-socket floods draw them at
        random (Mirai's udp, even with both ports fixed) or repeat the one its ident option set."""
        out = np.zeros(len(packets), dtype=bool)
        idx, ids, before = self._previous_on_pair(self.ip_ids, packets, which,
                                                  lambda at: packets.ip_id[at, None].astype(np.float64))
        ids, before = ids[:, 0], before[:, 0]
        step = np.mod(ids - before, 65536.0)
        far = (step > 1024) & (step < 65536 - 1024)  # far ahead, or back (not a wrap-around)
        out[idx] = (before >= 0) & (far | (step == 0) & (ids != 0))
        return out

    def _payload_kinds(self, packets: PacketBatch, which: np.ndarray, table: StreamTable,
                       by: str = "pair") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per packet (of ``which``: one-way UDP through a socket pair in use), from the first 16 bytes of its payload
        against the datagram's before it on the pair (``by``: "dst", to its destination host; "src", from its source
        host; "src_dport", from its source host to its destination port), remembered in ``table``: structured, opaque,
        noise, and judged (there was a datagram before it to compare with).

        Structured: at least two bytes equal and at least one different: an application's header, some of whose fields
        stay (RTP's version, payload type and SSRC; a sensor's magic number; MPEG-TS's sync byte and PID; a LiDAR's
        block flag) while others move on (a sequence number, a clock, a counter).  Opaque: what a flood sends, random
        in every byte (two of 16 equal by chance once in 500 datagrams: Mirai's rand, its default) or the same in all
        (Mirai's rand=0, Gafgyt's one random string, hping3's zeros), in datagrams of 16 bytes or more; and empty
        datagrams (Mirai's len=0, hping3's default).  Noise: opaque, but for a message repeated byte for byte (a
        flood's one random string, or a device's one status message again and again): random, one byte throughout
        (zeros) or empty."""
        structured, opaque, noise, judged = (np.zeros(len(packets), dtype=bool) for _ in range(4))
        mask = np.uint64(0xFFFF_FFFF)

        def words(at: np.ndarray) -> np.ndarray:  # (four 32-bit words: exact as floats, which the table holds)
            hi, lo = packets.udp_head_hi[at], packets.udp_head_lo[at]
            return np.column_stack([hi >> np.uint64(32), hi & mask, lo >> np.uint64(32), lo & mask]).astype(np.float64)

        idx, now, before = self._previous_on_pair(table, packets, which, words, by)
        if not len(idx):
            return structured, opaque, noise, judged
        differ = now.astype(np.uint64) ^ np.maximum(before, 0).astype(np.uint64)
        equal = sum(((differ >> np.uint64(shift)) & np.uint64(0xFF)) == 0 for shift in (0, 8, 16, 24)).sum(axis=1)
        known, size = before[:, 0] >= 0, packets.payload_len[idx]
        # (a datagram of 1-15 bytes says nothing: an IMU's 12-byte readings read as 16 equal bytes; an empty one carries
        # no application's data at all)
        structured[idx] = known & (equal >= 2) & (equal < 16) & (size >= 16)
        opaque[idx] = known & (((equal < 2) | (equal == 16)) & (size >= 16) | (size == 0))
        one_byte = one_byte_throughout(packets.udp_head_hi[idx], packets.udp_head_lo[idx])
        noise[idx] = known & (((equal < 2) | one_byte) & (size >= 16) | (size == 0))
        judged[idx] = known
        return structured, opaque, noise, judged

    def _previous_on_pair(self, table: StreamTable, packets: PacketBatch, which: np.ndarray, values,
                          by: str = "pair") -> tuple:
        """The packets ``which`` (indices, by socket pair and in time order within each), their ``values(indices)``
        (rows of floats) and those of the packet before each on its socket pair (``by``: "dst", to its destination
        host; "src", from its source host; "src_dport", from it to its destination port): in this chunk, or remembered
        in ``table`` (its initial row for a key it does not know).  The table then remembers each key's last row."""
        idx = np.flatnonzero(which)
        if not len(idx):
            return idx, np.zeros((0, len(table.init_row))), np.zeros((0, len(table.init_row)))
        idx, key, seg = self._by_socket_pair(packets, idx, by)
        slots, _ = table.lookup(key[seg.start], packets.ts[idx][seg.start])
        now = values(idx)
        before = np.empty_like(now)
        before[1:] = now[:-1]
        before[seg.start] = table.state[slots]
        table.state[slots] = now[seg.last]
        table.t_last[slots] = packets.ts[idx][seg.last]
        return idx, now, before

    def _by_socket_pair(self, packets: PacketBatch, idx: np.ndarray,
                        by: str = "pair") -> tuple[np.ndarray, np.ndarray, Segments]:
        """``idx`` and their socket pairs' keys (``by``: "dst", their destination hosts'; "src", their source hosts';
        "src_dport", their source hosts' and destination ports') sorted by key (time order within each), and the
        segments."""
        p = packets
        if by == "dst":
            key = hash_words(16, p.dst_ip_hi[idx], p.dst_ip_lo[idx])
        elif by == "src":
            key = hash_words(17, p.src_ip_hi[idx], p.src_ip_lo[idx])
        elif by == "src_dport":
            key = hash_words(18, p.src_ip_hi[idx], p.src_ip_lo[idx], p.dport[idx].astype(np.uint64))
        else:
            ports = (p.sport[idx].astype(np.uint64) << np.uint64(16)) | p.dport[idx].astype(np.uint64)
            key = hash_words(15, p.src_ip_lo[idx], p.dst_ip_hi[idx] ^ p.src_ip_hi[idx], p.dst_ip_lo[idx], ports)
        order = argsort_keys(key, self.sources._sort)
        return idx[order], key[order], Segments.from_sorted(key[order])

    def _sequence_check(self, packets: PacketBatch, ack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per packet (of ``ack``: TCP without SYN or RST): whether its numbers do not continue its socket pair's
        stream, whether it acknowledges new data (its acknowledgement number moved on, less than 16 MB), and whether
        there was a stream to continue (the pair's previous packet in its direction is remembered).
        Out of sequence: the same sequence number again with data (a flood that never advances it: Mirai's ack
        with a fixed seqnum, its stomp), or a sequence or acknowledgement number more than 16 MB off (random per
        packet: Mirai's ack by default), where no receive window reaches.  A socket pair's first packet is in
        sequence and acknowledges nothing new."""
        out, moved_on, known = (np.zeros(len(packets), dtype=bool) for _ in range(3))
        idx = np.flatnonzero(ack)
        if not len(idx):
            return out, moved_on, known
        p = packets
        idx, key, seg = self._by_socket_pair(packets, idx)
        slots, _ = self.sequences.lookup(key[seg.start], p.ts[idx][seg.start])
        now = np.column_stack([p.tcp_seq[idx], p.payload_len[idx], p.tcp_ack[idx]]).astype(np.float64)
        before = np.empty_like(now)
        before[1:] = now[:-1]
        before[seg.start] = self.sequences.state[slots]
        seq, size, acked = now.T
        prev_seq, prev_size, prev_ack = before.T

        def off(value: np.ndarray, expected: np.ndarray) -> np.ndarray:
            d = np.mod(value - expected, 2.0**32)
            return np.minimum(d, 2.0**32 - d) > 2**24

        repeat = (size > 0) & (prev_size > 0) & (seq == prev_seq)
        odd = (prev_seq >= 0) & (repeat | off(seq, prev_seq + prev_size))
        with_ack = (p.tcp_flags[idx] & ACK_FLAG) != 0
        odd |= with_ack & (prev_ack >= 0) & off(acked, prev_ack)
        # The ACK flag with acknowledgement number 0: no stack sends it (but once in 2^32); Mirai's ack flood with
        # its acknum option at 0 does, with every other number fixed and no payload to advance.
        odd |= with_ack & (acked == 0)
        self.sequences.state[slots] = np.where(with_ack[seg.last, None], now[seg.last],
                                               np.column_stack([now[seg.last, :2], before[seg.last, 2]]))  # fmt: skip
        self.sequences.t_last[slots] = p.ts[idx][seg.last]
        out[idx] = odd
        moved_on[idx] = with_ack & (prev_ack >= 0) & (acked != prev_ack) & ~off(acked, prev_ack)
        known[idx] = prev_seq >= 0
        return out, moved_on, known

    def _ack_probes(self, packets: PacketBatch, ev: Evidence, features: np.ndarray | None) -> np.ndarray:
        """Per packet: an ACK scan's probe (nmap -sA, maps a firewall): a bare, empty ACK with no TCP options,
        opening a socket pair, to a host and port its sender had not tried, from a source port it already used with
        that host (a scanner sends from one port; Mirai's ack flood draws a new one per packet, and carries 512
        bytes unless told otherwise).  Opening, not merely quiet for a second: a server's ACK to a keep-alive
        after seconds of silence (a slowloris client's header line every 10 s) is no probe."""
        opening = opens_socket_pair(features) if features is not None else ev.new_socket
        bare = ev.bare_ack & (packets.tcp_hdr_len == 20) & opening
        if not bare.any():
            return bare
        # (In the table of UDP probes' source ports, offset so that the two never meet.)
        known_port = bare & ~self._first_seen(self.udp_sports, packets, bare, packets.sport + 2 * 65536)
        return known_port & self._first_attempt(packets, known_port)

    def _dns_queries_received(self, packets: PacketBatch, ev: Evidence, at: np.ndarray) -> np.ndarray:
        """For the packets ``at``: the DNS queries its source host received, as the targets table holds them (decayed
        to the packet's time), and all those to it in this chunk (a resolver is asked, then forwards)."""
        p = packets
        host = _target_key(p.src_ip_hi[at], p.src_ip_lo[at], np.full(len(at), 17))  # (the host as a UDP target)
        out = self.targets.recent(host, p.ts[at], "dns_query")
        q = np.flatnonzero(ev.dns_query)
        if len(q):
            keys, counts = np.unique(_target_key(p.dst_ip_hi[q], p.dst_ip_lo[q], p.proto[q]), return_counts=True)
            i = np.minimum(np.searchsorted(keys, host), len(keys) - 1)
            out += np.where(keys[i] == host, counts[i], 0)
        return out

    def _answers_to_groups(self, packets: PacketBatch, ev: Evidence) -> np.ndarray:
        """Per packet: a UDP datagram to a host and port that sent a request to a group (multicast or broadcast: an
        SSDP M-SEARCH to 239.255.255.250:1900) from the port it comes from.  Every device offering the service answers
        it unicast, through a socket pair nobody opened, so the answers would count as their sender's own traffic."""
        p = packets
        to_group = ev.udp & ev.to_group
        out = np.zeros(len(p), dtype=bool)
        asked = np.flatnonzero(to_group)
        if not len(asked) and not len(self.group_requests):
            return out
        maybe = ev.udp & ~to_group & ~ev.reply
        # In windows of at most half the table's requests each (a flood of them fills it within a batch); the
        # answers come within a few milliseconds of their request.
        bounds = [0, *asked[GROUP_REQUESTS // 2 :: GROUP_REQUESTS // 2].tolist(), len(p)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            i = asked[(asked >= lo) & (asked < hi)]
            if len(i):
                keys = _group_key(p.src_ip_hi[i], p.src_ip_lo[i], p.sport[i], p.dport[i])
                uniq, last = np.unique(keys[::-1], return_index=True)  # (each key's latest request)
                when = p.ts[i][::-1][last]
                slots, _ = self.group_requests.lookup(uniq, when)
                self.group_requests.t_last[slots] = when  # (LRU by the latest request)
            j = lo + np.flatnonzero(maybe[lo:hi])
            if len(j):
                out[j] = self.group_requests.contains(_group_key(p.dst_ip_hi[j], p.dst_ip_lo[j], p.dport[j], p.sport[j]))
        return out

    def _first_attempt(self, packets: PacketBatch, opener: np.ndarray) -> np.ndarray:
        """Per packet: an opener to a (source, destination, destination port) not seen before (bounded memory)."""
        return self._first_seen(self.attempts, packets, opener, packets.dport)

    def _first_seen(self, table: StreamTable, packets: PacketBatch, which: np.ndarray, ports: np.ndarray) -> np.ndarray:
        """Per packet (of ``which``): the first with its (source, destination, ``ports``) in ``table`` (bounded
        memory: LRU eviction).  Keys are hashed for ``which`` only: on the hot path most packets are neither."""
        out = np.zeros(len(packets), dtype=bool)
        idx = np.flatnonzero(which)
        if not len(idx):
            return out
        p = packets
        keys = _attempt_key(p.src_ip_hi[idx], p.src_ip_lo[idx], p.dst_ip_hi[idx], p.dst_ip_lo[idx], ports[idx])
        # np.unique(keys, return_index=True): the sorted distinct keys and where each first occurs.
        order = argsort_keys(keys, self.sources._sort)
        sorted_keys = keys[order]
        distinct = np.ones(len(keys), dtype=bool)
        distinct[1:] = sorted_keys[1:] != sorted_keys[:-1]
        uniq, first = sorted_keys[distinct], order[distinct]
        _, is_new = table.lookup(uniq, p.ts[idx][first])
        out[idx[first[is_new]]] = True
        return out

    @staticmethod
    def _common(r: dict, seg_ids: np.ndarray, at: np.ndarray) -> list[dict]:
        """The fields every verdict has, for the verdicts of ``r`` at segments ``seg_ids``, packets ``at`` (key
        order), read off the arrays for all of them at once."""
        seg = r["seg"]
        end = seg.start[seg_ids] + seg.length[seg_ids] - 1
        names = r["basis_names"]
        rows = zip(r["attack"][at].tolist(), r["conf"][at].tolist(), r["count"][end].tolist(),
                   r["episode"][at].tolist(), r["t"][end].tolist(), r["t"][at].tolist(), r["basis"][at].tolist())
        return [
            dict(
                label=VERDICT_LABELS[attack],
                confidence=conf,
                packets=int(count),
                first_seen=first,  # the start of this episode of the key's traffic
                last_seen=last,
                decided_at=decided,
                basis=names[basis],
            )
            for attack, conf, count, first, last, decided, basis in rows
        ]

    def _source_verdicts(self, packets: PacketBatch, r: dict, seg_ids: np.ndarray, at: np.ndarray, rows=None) -> list:
        """Source verdicts of ``r`` at segments ``seg_ids``, packets ``at`` (key order).  ``rows``: where the packets
        ``r`` was updated with sit in ``packets`` (None: all of them)."""
        if not len(at):
            return []
        i = r["order"][at] if rows is None else rows[r["order"][at]]
        p = packets
        ported = (p.port_kind[i] == PORT_NUMBER).tolist()
        fields = zip(p.src_ip_hi[i].tolist(), p.src_ip_lo[i].tolist(), p.src_mac[i].tolist(), p.sport[i].tolist(),
                     p.dst_ip_hi[i].tolist(), p.dst_ip_lo[i].tolist(), p.dport[i].tolist(), p.proto[i].tolist(), ported,
                     self._common(r, seg_ids, at))  # fmt: skip
        return [
            Verdict(
                kind="source",
                src_ip=_ip_text(src_hi, src_lo),
                src_mac=_mac_text(mac),
                src_port=int(sport) if has_ports else None,
                victim_ip=_ip_text(dst_hi, dst_lo),
                victim_port=int(dport) if has_ports else None,
                proto=int(proto),
                **common,
            )
            for src_hi, src_lo, mac, sport, dst_hi, dst_lo, dport, proto, has_ports, common in fields
        ]

    def _link_verdicts(self, packets: PacketBatch, r: dict, seg_ids: np.ndarray, at: np.ndarray,
                       rows: np.ndarray) -> list:
        if not len(at):
            return []
        i = rows[r["order"][at]]
        return [
            Verdict(kind="spoofed", src_mac=_mac_text(mac), proto=int(proto), **common)
            for mac, proto, common in zip(packets.src_mac[i].tolist(), packets.proto[i].tolist(),
                                          self._common(r, seg_ids, at))
        ]

    def _target_verdict(self, packets: PacketBatch, r: dict, seg_id: int, pos: int) -> Verdict:
        i = int(r["order"][pos])
        # A port only when the flood hit one port (in this batch): then a rule can name it.
        seg = r["seg"]
        members = r["order"][seg.start[seg_id] : seg.start[seg_id] + seg.length[seg_id]]
        ports = np.unique(np.where(packets.port_kind[members] == PORT_NUMBER, packets.dport[members], -1))
        return Verdict(
            kind="spoofed",
            victim_ip=format_ip(packets.dst_ip_hi[i], packets.dst_ip_lo[i]),
            victim_port=int(ports[0]) if len(ports) == 1 and ports[0] >= 0 else None,
            proto=int(packets.proto[i]),
            **self._common(r, np.array([seg_id]), np.array([pos]))[0],
        )
