"""The decision stage's rules, and how the packets they find hot become convictions.

Each rule reads one update of a ``Tracked`` table and gives, per packet: (hot, class index, confidence).
``convict`` combines a table's rules in order of precedence and finds the first packet at which each key
becomes hostile for each class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agent.capture.packets import LABELS, VERDICT_LABELS
from agent.detect.evidence import Evidence
from agent.detect.tracked import Tracked

if TYPE_CHECKING:
    from agent.detect.decide import DecisionConfig

_SCAN, _SYN, _ACK, _UDP, _UDPPLAIN = (
    LABELS.index(c) for c in ("mirai_scan", "mirai_syn", "mirai_ack", "mirai_udp", "mirai_udpplain")
)
_ANOMALY = len(LABELS)
# The closest class of a flood of each shape (Evidence.SHAPES): a ping flood is connectionless, as a UDP flood, and
# Mirai's GRE floods wrap UDP floods.
_SHAPE_LABELS = np.array([_SYN, _ACK, _UDP, _UDP, _SYN])
_PORTLESS_SHAPE, _SYN_ODD_SHAPE = Evidence.SHAPES.index("portless"), Evidence.SHAPES.index("syn_odd")
_UDP_SHAPE = Evidence.SHAPES.index("udp")
_PROBE_SHAPES = [Evidence.SHAPES.index(name) for name in ("syn_only", "ack", "portless")]  # what scanners send
STREAM_MIN_KBYTES = 0.3  # a key's mean frame size from which in-sequence TCP is a data stream, not a flood
OPAQUE_MIN_RATE = 10.0  # datagrams a second: a service polled with one unanswered command a few times a second is not
OPAQUE_SHARE = 0.8  # of a key's UDP with opaque payloads (a socket pair's first datagram has nothing to compare with)
# Of a source's UDP but media streams, the share that must be noise for a UDP flood on the headers alone: its earlier
# datagrams (a board's own mDNS and DNS) stay in the window as a slow flood begins, and its pairs' first ones
# (empty, or nothing to compare with) are no noise.
NOISE_SHARE = 0.5
# Share of full-option probes from new ephemeral ports that makes them a connect scan's (Linux's connect() may give a
# port again for another destination port: 41 of nmap -sT's 1,000, one of its first ten, after other connections
# to that host)...
KERNEL_PORTED = 0.8
CONNECT_SCAN_MIN = 20  # ...once there are so many recent ones (random ports land there by chance 6 times in 1,000;
# Mirai's own SYN flood is known by its zero window anyway, evidence.py)
TELNET_PORTS = (23, 2323)  # where Mirai and the IoT botnets after it guess passwords
EPHEMERAL_PORTS = 32768  # the lowest port a kernel's connect() takes (Linux; Windows and BSD start at 49152)



Rule = tuple[np.ndarray, np.ndarray, np.ndarray]


def _argmax_rows(a: np.ndarray, skip: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``a.argmax(axis=1)`` and the maxima (the first column of the maximum), column by column (the tables' columns
    are contiguous: ``Tracked.update``).  Column ``skip`` counts as -1 (below every score or share)."""
    best = np.zeros(len(a), dtype=np.int64)
    value = a[:, 0].copy() if skip != 0 else np.full(len(a), -1.0)
    for j in range(1, a.shape[1]):
        if j == skip:
            continue
        column = a[:, j]
        np.copyto(best, j, where=column > value)
        np.maximum(value, column, out=value)
    return best, value


def sweeping(r: dict, t: "Tracked") -> np.ndarray:
    """Each key's share of recent packets that probe as scanners do: short, empty probes (``sweep``), and a connect
    scan's probes, SYNs with the kernel's full option block to hosts and ports not tried, when nearly all of them
    (``KERNEL_PORTED``) come from new ephemeral ports, as a kernel's connect() takes one per connection (32768 and
    up: Linux, Windows, BSD, macOS).  Mirai's SYN flood at random ports sends the same SYNs from random source ports,
    half of them below 32768."""
    shares, x = r["shares"], t.extras.index
    out = shares[:, x("sweep")]
    if "full_probe" in t.extras:
        full, kernel_ported = _kernel_ported(r, t)
        out = out + np.where(kernel_ported & (full * r["weight"] >= CONNECT_SCAN_MIN), full, 0.0)
    return out


def _kernel_ported(r: dict, t: "Tracked") -> tuple[np.ndarray, np.ndarray]:
    """Each key's share of full-option probes, and whether they (if any) come from new ephemeral ports, nearly all
    (``KERNEL_PORTED``)."""
    full, kernel = r["shares"][:, t.extras.index("full_probe")], r["shares"][:, t.extras.index("kernel_probe")]
    return full, (full > 0) & (kernel >= KERNEL_PORTED * full)


def model_rule(r: dict, cfg: DecisionConfig, t: "Tracked | None" = None, floods_only: bool = False) -> Rule:
    """The key's recent average score of its best attack class.  ``floods_only``: a target is flooded, never
    "scanned" (scanners are judged by source).  With a table ``t`` that tracks the packets' shapes, the class
    comes from the headers where one shape dominates (``_closest_by_shape``)."""
    best, conf = _argmax_rows(r["avg"], skip=_SCAN - 1 if floods_only else None)
    attack = 1 + best
    # Mirai's udp and udpplain overlap (its udp flood with both ports set is one socket pair, as udpplain's): the model
    # splits a flood's scores between them (Gafgyt's 512-byte flood through one socket: 80% and 15%, neither class's
    # average at the threshold for two seconds).  Together they say "a UDP flood"; which one, the headers say.
    is_udp = (attack == _UDP) | (attack == _UDPPLAIN)
    if is_udp.any():
        conf = np.where(is_udp, np.maximum(conf, r["avg"][:, _UDP - 1] + r["avg"][:, _UDPPLAIN - 1]), conf)
    hot = (r["weight"] >= cfg.min_packets) & (conf >= cfg.threshold)
    if t is not None and "sweep" in t.extras:
        probing = sweeping(r, t)
        attack = _closest_by_shape(r, t, attack, floods_only, probing)
        if floods_only:  # probes mostly (a scan at one host, judged by its source) are no flood at it
            hot &= probing < 0.5
        # Data through TCP socket pairs in use, in sequence, is a stream (a bulk upload or download the agent met
        # mid-way, at a restart, looks like an ack flood of full-size segments to the model); Mirai's ack floods draw
        # new ports or numbers no stream carries (``fresh``: also its stomp, which repeats one sequence number).
        ack, fresh = r["shares"][:, t.extras.index("ack")], r["shares"][:, t.extras.index("fresh")]
        bulk = r["shares"][:, t.extras.index("kbytes")] >= STREAM_MIN_KBYTES  # (the key's mean frame, in kB)
        hot &= ~((attack == _ACK) & (ack >= 0.5) & (fresh < 0.5 * ack) & bulk)
        if "full_probe" in t.extras:
            # Too few full-option probes yet to tell a connect scan from a SYN flood: not a SYN flood yet.  (Mirai's
            # random source ports fall below 32768 within a few packets; a connect scan's never do.)
            full, kernel_ported = _kernel_ported(r, t)
            hot &= ~((attack == _SYN) & kernel_ported & (full * r["weight"] < CONNECT_SCAN_MIN))
        # A scanner probes: a key that sweeps no new hosts or ports is no scanner, whatever the model finds in
        # its packets (a phone's telnet session to the router looks much like the scanner's brute force).
        hot &= (attack != _SCAN) | (probing >= cfg.scan_min_sweep)
    if t is not None and "kbytes" in t.extras:
        # A flood carries volume, and lasts: Mirai's attacks have no rate option and send as fast as the bot's
        # uplink lets them.  A few bursts of small datagrams (a sensor's readings, a test's probes) are no flood,
        # however much each packet looks like one; over half a second at least, their volume shows it.
        # TCP through fresh socket pairs (or with numbers no stream carries) needs no volume: Mirai's syn and ack
        # floods draw new ports (and sequence numbers) per packet, as no benign sender's TCP does, and may carry no
        # payload at a few dozen packets a second.
        volume = _per_second(r, r["extra_weight"][:, t.extras.index("kbytes")], t.half_life_s, cfg.flood_min_span_s)
        shares, x = r["shares"], t.extras.index
        tcp = shares[:, x("syn_only")] + shares[:, x("syn_odd")] + shares[:, x("ack")]
        tcp_fresh = (tcp >= 0.5) & (shares[:, x("fresh")] >= cfg.flood_new_socket_share * tcp)
        # UDP whose payloads have no application's header (random or the same throughout, datagram after datagram on
        # its socket pair), faster than a poll, needs none either: Mirai's udpplain through one socket at a few dozen
        # datagrams a second.
        udp_opaque = np.zeros(len(hot), dtype=bool)
        if "opaque" in t.extras:
            udp = shares[:, x("udp")]
            udp_opaque = ((udp >= 0.5) & (shares[:, x("opaque")] >= OPAQUE_SHARE * udp)
                          & (rate(r, t.half_life_s) >= OPAQUE_MIN_RATE))  # fmt: skip
        hot &= (attack == _SCAN) | (volume >= cfg.flood_min_kbytes_per_s) | tcp_fresh | udp_opaque
    return hot, attack, conf


def _closest_by_shape(r: dict, t: "Tracked", attack: np.ndarray, floods_only: bool,
                      sweep: np.ndarray) -> np.ndarray:
    """The model says *whether* a key's packets are an attack and of which protocol; where one shape makes up most
    of them and the headers are decisive, they say *which* attack, whatever options it was launched with (the model
    learned scans and floods at the payload sizes it saw).  SYNs mostly sweeping (to new hosts, or short ones to
    ports not tried) are a scan, other SYNs a SYN flood; SYNs with odd flags a SYN flood; TCP without SYN or RST
    through fresh socket pairs an ACK flood, or a scan when it probes (through few sockets it may be a telnet
    session, the scanner's brute force or not); UDP mostly through fresh socket pairs Mirai's udp flood, and a UDP
    flood the model finds through sockets reused packet after packet its udpplain, which sends through one connected
    socket per target, unless their IP ids jump about or repeat one non-zero id, as a raw socket's do (Mirai's udp
    flood with both ports set; with its ident option fixed at 0 too, no header tells them apart).  Where the headers
    are not decisive the model's class stands.  Only the class changes: whether the key is hot stays the model's best
    class's average (summing a protocol's classes would convict a phone's telnet session the model finds a little
    like a scan and a little like a flood)."""
    shares, x = r["shares"], t.extras.index
    syn, ack, udp, syn_odd = shares[:, x("syn_only")], shares[:, x("ack")], shares[:, x("udp")], shares[:, x("syn_odd")]
    fresh, id_jump = shares[:, x("fresh")], shares[:, x("id_jump")]
    udp_class = (attack == _UDP) | (attack == _UDPPLAIN)
    raw_ids = id_jump >= 0.5 * (udp - fresh)  # most reused-socket datagrams with random IP ids: a raw socket's
    dominant = [syn >= 0.5, syn_odd >= 0.5, (ack >= 0.5) & (fresh >= 0.5 * ack),
                (udp >= 0.5) & ((fresh >= 0.5 * udp) | (raw_ids & udp_class)),
                (udp >= 0.5) & (fresh < 0.2 * udp) & udp_class]  # fmt: skip

    def scan_or(flood: int, share: np.ndarray) -> np.ndarray:
        """A scan where the shape's packets mostly sweep (never at a flooded target), else the flood."""
        return np.where((sweep >= 0.5 * share) & (not floods_only), _SCAN, flood)

    by_shape = np.select(dominant, [scan_or(_SYN, syn), _SYN, scan_or(_ACK, ack), _UDP, _UDPPLAIN], -1)
    return np.where(by_shape >= 0, by_shape, attack)


def rate(r: dict, half_life_s: float) -> np.ndarray:
    """Packets/s of each key, from its decayed weight, corrected for episodes shorter than the window."""
    if "rate" not in r:
        r["rate"] = _per_second(r, r["weight"], half_life_s)
    return r["rate"]


def _per_second(r: dict, decayed: np.ndarray, half_life_s: float, min_span_s: float | None = None) -> np.ndarray:
    """A decayed sum of each key as an amount per second, corrected for episodes shorter than the window (but
    taken over at least ``min_span_s``: 5% of the half-life unless given)."""
    elapsed = np.maximum(r["t"] - r["episode"], 0.05 * half_life_s if min_span_s is None else min_span_s)
    filled = 1.0 - np.exp2(-elapsed / half_life_s)
    return decayed * np.log(2) / half_life_s / filled


def _udp_class(shares: np.ndarray, x, share: np.ndarray) -> np.ndarray:
    """The UDP flood class of each key (``shares``: its evidence shares, ``x``: their index) whose datagrams make up
    ``share`` of its packets: through one socket pair reused, with a kernel's IP ids, Mirai's udpplain (it sends
    through connected sockets); else its udp."""
    one_socket = (shares[:, x("fresh")] < 0.2 * share) & (shares[:, x("id_jump")] < 0.5 * share)
    return np.where(one_socket, _UDPPLAIN, _UDP)


def _cold(r: dict, maybe: np.ndarray, label: int) -> tuple:
    """A rule's arrays (hot, class, confidence) all cold, the rows ``maybe`` hot (a cheap necessary condition), and
    the shares of those rows: a rare rule computes the rest on them alone."""
    rows = np.flatnonzero(maybe)
    n = len(maybe)
    return np.zeros(n, dtype=bool), np.full(n, label), np.zeros(n), rows, r["shares"][rows]


def flood_rule(r: dict, t: "Tracked", cfg: DecisionConfig, one_source: bool) -> Rule:
    """A sustained rate of one shape (Evidence.SHAPES) with fresh sockets, from one source or at one target
    (or one Ethernet sender, whose table holds fresh packets only).  One source's SYNs and anybody's echo
    requests need no fresh sockets: nothing benign sends them at that rate.  A source's own RSTs are set aside:
    they neither count against its shape (a SYN flooder's kernel refuses every SYN-ACK its flood draws) nor make
    up a flood (a victim refusing a spoofed ACK flood sends as many RSTs as it receives ACKs).  From one source,
    probes mostly (SYNs to new hosts, short SYNs, FIN/NULL/Xmas segments or echo requests to hosts and ports
    not tried before) are a scan."""
    shares = r["shares"]
    shape_share = shares[:, : len(Evidence.SHAPES)]
    shape, share = _argmax_rows(shape_share)
    rst = shares[:, t.extras.index("rst")] if "rst" in t.extras else np.zeros(len(shape))
    kept = np.maximum(1.0 - rst, 1e-9)  # the share of the key's packets that are no RSTs
    share = np.minimum(share / kept, 1.0)
    if "fresh" in t.extras:
        fresh = shares[:, t.extras.index("fresh")]
        if "new_source" in t.extras:  # a never-seen source's packet opens a new socket pair too
            fresh = np.maximum(fresh, shares[:, t.extras.index("new_source")])
        fresh = np.clip((fresh - rst) / kept, 0.0, 1.0)  # at least this share of the other packets is fresh
        fresh_enough = fresh >= cfg.flood_new_socket_share
    else:
        fresh_enough = np.ones(len(shape), dtype=bool)
    # Nothing benign sends echo requests at a flood's rate, or one source's SYNs, and a home's GRE tunnels are PPTP's
    # (version 1): no fresh sockets needed.
    fresh_enough |= shape == _PORTLESS_SHAPE
    if one_source:
        fresh_enough |= (shape == 0) | (shape == _SYN_ODD_SHAPE)
    one_socket_udp = np.zeros(len(shape), dtype=bool)
    if one_source and "one_way" in t.extras:
        # Small datagrams through one socket pair, faster than a thousand a second, and nothing ever sent back on
        # it: Mirai's udpplain with short payloads (no benign stream of that shape: a QUIC download's ACKs are
        # answered by the download itself, a camera's one-way video is large datagrams, a call's 50 a second).
        # Datagrams too large for one frame, one-way through one socket pair, in more frames a second than a 4K
        # camera's video (24 Mbit/s): a flood of 4,000-byte datagrams (Gafgyt's udp with its packet size option set
        # large; the model, which learned frames of a single datagram, finds them benign).
        one_way = np.clip((shares[:, t.extras.index("one_way")]) / kept, 0.0, 1.0)
        mean_bytes = 1000.0 * shares[:, t.extras.index("kbytes")] / kept
        fragmented = shares[:, t.extras.index("fragment")] / kept >= 0.4  # (two frames or more a datagram)
        fast = rate(r, t.half_life_s) * kept
        one_socket_udp = ((shape == _UDP_SHAPE) & (one_way >= 0.9)
                          & (((mean_bytes <= cfg.small_udp_max_bytes) & (fast >= cfg.small_udp_flood_rate))
                             | (fragmented & (fast >= cfg.fragment_flood_rate))))  # fmt: skip
        fresh_enough |= one_socket_udp
    min_packets, min_rate = np.full(len(shape), float(cfg.flood_min_packets)), np.full(len(shape), cfg.flood_rate)
    if one_source and "fresh" in t.extras:
        # One source's SYNs again and again through the same socket pairs: a kernel retries a SYN after a second,
        # never dozens of times a second (Mirai's syn flood with both ports set).
        at_most_fresh = shares[:, t.extras.index("fresh")] / kept  # (were none of its RSTs fresh)
        repeated = ((shape == 0) | (shape == _SYN_ODD_SHAPE)) & (at_most_fresh < 0.5)
        min_packets[repeated], min_rate[repeated] = cfg.syn_flood_min_packets, cfg.syn_flood_rate
    hot = (
        (r["weight"] * kept >= min_packets)
        & (rate(r, t.half_life_s) * kept >= min_rate)
        & (share >= cfg.flood_shape_share)
        & fresh_enough
    )
    label = _SHAPE_LABELS[shape]
    if one_socket_udp.any():  # through one connected socket, as udpplain sends, unless the IP ids jump as a raw one's
        label = np.where(one_socket_udp, _udp_class(shares, t.extras.index, share), label)
    if one_source:
        probing = np.isin(shape, _PROBE_SHAPES) & (sweeping(r, t) >= 0.5 * share)
        label = np.where(probing, _SCAN, label)
    return hot, label, share


def noise_flood_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """One source's UDP, nearly all of it one-way noise (payloads random, one byte throughout or empty, datagram
    after datagram: ``DecisionLayer._payload_kinds``), ``noise_flood_min`` of them recently: a UDP flood, whatever
    the model makes of its packets and however little volume it carries (Mirai's udp at a subnet's random hosts and
    ports, or its udpplain through one socket a target, at a few dozen datagrams a second).  A count, not a rate: a
    source's rate over a window that holds its traffic from before the flood reaches 20 a second only after two.
    An application's datagrams carry its header (a DNS query's flags and counts, QUIC's version or connection id,
    RTP's SSRC, a sensor's magic number), or are answered.  A media stream beside it spares it nothing: the
    stream's datagrams are not noise."""
    shares, x = r["shares"], t.extras.index
    udp, noise = shares[:, x("udp")], shares[:, x("noise")]
    # Of its UDP but media streams, however much else it sends: a board that floods slowly may stream its camera's
    # video and serve its app over TCP meanwhile.
    other = udp - shares[:, x("media")]
    hot = (other > 0) & (noise >= NOISE_SHARE * other) & (noise * r["weight"] >= cfg.noise_flood_min)
    # Mostly through fresh socket pairs, or with a raw socket's IP ids: Mirai's udp; else its udpplain.
    label = np.where(shares[:, x("raw_noise")] >= 0.5 * noise, _UDP, _UDPPLAIN)
    return hot, label, np.minimum(noise / np.maximum(other, 1e-9), 1.0)


def connection_flood_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """One source connecting again and again to services it has connected to before (SYNs through new socket pairs
    to a host and port it already tried: a retransmitted SYN reuses its pair), faster than ``connect_flood_rate`` a
    second and sustained (``connect_flood_min`` recent ones): an HTTP flood or a connect() flood, whose complete
    handshakes and requests leave SYNs a fifth of its packets, too few for a SYN flood's shape (a source of SYNs
    alone is ``flood_rule``'s, at a flood's rate; SYNs to ports not tried before are a scan's).  Nothing benign in a
    home reconnects a hundred times a second for seconds on end (a browser opens a few dozen connections in a
    burst); the closest Mirai class is the SYN flood."""
    again = r["shares"][:, t.extras.index("reconnect")]
    syn = r["shares"][:, t.extras.index("syn_only")]
    hot = (again * rate(r, t.half_life_s) >= cfg.connect_flood_rate) & (again * r["weight"] >= cfg.connect_flood_min)
    hot &= syn < cfg.flood_shape_share
    return hot, np.full(len(syn), _SYN), np.minimum(again * rate(r, t.half_life_s) / cfg.connect_flood_rate, 1.0)


def scan_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """Probes (openers to a host and port their sender had not tried) from an initiator, few of them answered, after
    the first answers have had time to come back.  An answer the initiator itself resets was not wanted: raw-socket
    SYNs (a stealth scan, a SYN flood at open ports) draw SYN-ACKs that the sender's kernel refuses. Probes mostly
    with a full TCP option block are a SYN flood (Mirai's at a subnet or at random ports) unless nearly all come from
    a kernel's new ephemeral ports (a connect scan: ``sweeping``); short ones a scan.  Nothing answers UDP probes:
    mostly UDP, they are a scan once closed ports have refused some (a peer-to-peer client trying ports of a peer
    behind NAT gets none), and when they come from few source ports (a flood at random ports of one host draws a new
    one per packet)."""
    x = t.extras.index
    probes, answered, full, kernel = (r["extra_weight"][:, x(name)]
                                      for name in ("probe", "answered", "full_options", "kernel_probe"))
    reset, refused, udp = (r["extra_weight"][:, x(name)] for name in ("reset", "refused", "udp"))
    answered = np.maximum(answered - reset, 0.0)
    unanswered = 1.0 - answered / np.maximum(probes, 1e-9)
    mostly_udp = udp >= 0.5 * probes
    new_sport = r["extra_weight"][:, x("udp_new_sport")]
    # No SYN-ACK answers UDP, so its scans need not wait for answers: the refusals are the evidence.
    settled = (r["t"] - r["episode"] >= cfg.scan_settle_s) | (probes >= cfg.scan_burst_probes) | mostly_udp
    enough = np.where(mostly_udp, cfg.udp_scan_min_probes, cfg.scan_min_probes)
    hot = (probes >= enough) & (answered <= cfg.scan_answered_max * probes) & settled
    hot &= ~mostly_udp | ((refused >= cfg.udp_scan_min_refusals) & (new_sport <= 0.5 * udp))
    flood = (full >= 0.5 * probes) & (kernel < KERNEL_PORTED * full)
    return hot, np.where(flood, _SYN, _SCAN), np.clip(unanswered, 0.0, 1.0)


def brute_force_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """One source connecting again and again to a telnet service (``brute_force_min`` recent connections): a
    password guesser, one guess or a few per connection (hydra, medusa, and the IoT botnets that spread by telnet,
    Mirai's scanner among them).  Nothing in a home logs in by telnet ten times in a few seconds.  The closest Mirai
    class is the scan, of which Mirai's brute force is a part."""
    logins = r["extra_weight"][:, t.extras.index("login")]
    hot = logins >= cfg.brute_force_min
    return hot, np.full(len(hot), _SCAN), np.minimum(logins / cfg.brute_force_min, 1.0)


def request_flood_rule(r: dict, t: "Tracked", cfg: DecisionConfig, one_source: bool) -> Rule:
    """Requests to a web server (``Evidence.web_request``) faster than a flood's rate, sustained: from one source
    (``request_flood_rate`` a second, ``request_flood_min`` recent ones, its frames small on average), an HTTP flood
    over connections it keeps (GoldenEye, HULK, wrk, ``ab -k``; Mirai's http attack keeps its connections too),
    which opens too few connections for a connection flood and, its segments in sequence, draws no fresh sockets
    for an ack flood; at one target (``target_request_flood_rate``, ``target_request_flood_min``), a botnet's HTTP
    flood, each bot making a few requests a second.  A browser sends a few dozen requests for a page, a hundred or
    two for a heavy one; an upload's segments are full-size.  The closest Mirai class: through new connections
    mostly (a SYN for every other request or more), the SYN flood, as a connection flood; else the ack flood
    (ACK/PSH segments with data through established connections, as Mirai's stomp)."""
    x = t.extras.index
    min_rate = cfg.request_flood_rate if one_source else cfg.target_request_flood_rate
    min_recent = cfg.request_flood_min if one_source else cfg.target_request_flood_min
    hot, label, conf, rows, shares = _cold(r, r["extra_weight"][:, x("web_request")] >= min_recent, _ACK)
    if len(rows):
        requests = shares[:, x("web_request")]
        per_second = requests * rate(r, t.half_life_s)[rows]
        hot[rows] = per_second >= min_rate
        if "kbytes" in t.extras:
            hot[rows] &= shares[:, x("kbytes")] < STREAM_MIN_KBYTES
        label[rows] = np.where(shares[:, x("syn_only")] >= 0.5 * requests, _SYN, _ACK)
        conf[rows] = np.minimum(per_second / min_rate, 1.0)
    return hot, label, conf


def query_flood_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """One source's DNS queries faster than ``query_flood_rate`` a second, ``query_flood_min`` recent ones, answered
    or not: Mirai's dns attack from a bot whose resolver the board is (random names under the target's domain, which
    a Pi-hole answers or forwards, so the conversation rules let it pass), or a forged victim's queries at an open
    resolver.  A home's router forwarding its clients' queries sends a few hundred in a burst, a busy Pi-hole 400
    a second for seconds (as a test has it), not a thousand in two seconds; resolvers forwarding what they are
    asked are set aside by the caller.  The closest class is the UDP flood (``_udp_class``: udpplain through one
    socket, as Mirai's udpplain at port 53)."""
    x = t.extras.index
    hot, label, conf, rows, shares = _cold(r, r["extra_weight"][:, x("dns_query")] >= cfg.query_flood_min, _UDP)
    if len(rows):
        share = shares[:, x("dns_query")]
        per_second = share * rate(r, t.half_life_s)[rows]
        hot[rows] = per_second >= cfg.query_flood_rate
        label[rows] = _udp_class(shares, x, share)
        conf[rows] = np.minimum(per_second / cfg.query_flood_rate, 1.0)
    return hot, label, conf


def reflection_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """A source whose requests to reflection-prone UDP services (SSDP, WS-Discovery, CoAP, NTP, memcached, ...:
    ``evidence.REFLECTION_PORTS``) come many times a second and are answered (at least one answer for two requests):
    the board is used as a reflector, and the "source" is the victim whose address the attacker forges.  Dropping
    what comes from that address stops the board's share of the flood; nothing benign asks such a service ten
    times a second for seconds on end (discovery clients send a few requests, an NTP client one a minute).  The
    answers are a UDP flood at the victim: the closest Mirai class; requests through one socket pair reused, their
    IP ids a kernel's (Mirai's udpplain at a service that answers it), udpplain."""
    x = t.extras.index
    requests = r["extra_weight"][:, x("reflect")]
    hot, label, conf, rows, shares = _cold(r, requests >= cfg.reflection_min_requests, _UDP)
    if len(rows):
        hot[rows] = r["extra_weight"][rows, x("answered")] >= 0.5 * requests[rows]
        label[rows] = _udp_class(shares, x, shares[:, x("reflect")])
        conf[rows] = np.minimum(requests[rows] / cfg.reflection_min_requests, 1.0)
    return hot, label, conf


def group_flood_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """Discovery or control traffic to a group address (``Evidence.group_chatter``: mDNS, SSDP, WS-Discovery, ...,
    ICMPv6 neighbour discovery) at a flood's rate (``flood_rate``, ``group_flood_min_packets`` recent), nearly all of
    the key's packets: every host on the link takes each one in.  A device sends a few such packets a second (a phone's
    discovery burst, a router's advertisement every few seconds); a flood of them is an attack on the whole link
    (THC-IPv6's flood_router6, a forged victim's M-SEARCHes that every device answers: the SSDP floods of IoT
    datasets) or a broken device's storm.  They open no connection, so the closest class is the UDP flood (through one
    socket pair with a kernel's IP ids, udpplain: ``_udp_class``, where the table tracks them)."""
    x = t.extras.index
    hot, label, conf, rows, shares = _cold(r, r["extra_weight"][:, x("group")] >= cfg.group_flood_min_packets, _UDP)
    if len(rows):
        share = shares[:, x("group")]
        per_second = share * rate(r, t.half_life_s)[rows]
        hot[rows] = (per_second >= cfg.flood_rate) & (share >= cfg.flood_shape_share)
        if "id_jump" in t.extras:
            udp = shares[:, x("udp")] >= 0.5 * share
            label[rows] = np.where(udp, _udp_class(shares, x, share), _UDP)
        conf[rows] = np.minimum(per_second / cfg.flood_rate, 1.0)
    return hot, label, conf


def amplification_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    """Datagrams at one target from amplifying services that answer nothing it asked (``Evidence.amplified``: DNS,
    NTP, SSDP, CLDAP, memcached, ... answers on socket pairs the target never sent on) at a flood's rate
    (``flood_rate``, ``flood_min_packets`` recent), most of what it receives: a reflection flood at the target, whose
    address the attacker forged in requests to many reflectors, each of which may send it only a few a second.  A
    board gets answers to what it asks; the closest class is the UDP flood."""
    x = t.extras.index
    hot, label, conf, rows, shares = _cold(r, r["extra_weight"][:, x("amplified")] >= cfg.flood_min_packets, _UDP)
    if len(rows):
        share = shares[:, x("amplified")]
        per_second = share * rate(r, t.half_life_s)[rows]
        hot[rows] = (per_second >= cfg.flood_rate) & (share >= 0.5)
        conf[rows] = np.minimum(per_second / cfg.flood_rate, 1.0)
    return hot, label, conf


def lone_probe_rule(r: dict, lone: np.ndarray) -> Rule:
    """A single probe with no TCP options, to a port its sender never tried, that the model scores as a scan
    convicts its sender: a board probed by many scanning bots sees one to three SYNs from each, and every
    operating system's SYN carries options (only raw-socket tools leave them out).  ``lone``: per packet, in
    the key order of ``r``."""
    return lone, np.full(len(lone), _SCAN), np.ones(len(lone))


def fingerprint_rule(fingerprint: np.ndarray, label: int = _SCAN) -> Rule:
    """One packet with a fingerprint of Mirai's convicts its sender: its scanner's (a chance match: once in 2^32),
    or its SYN flood's (``label`` _SYN)."""
    return fingerprint, np.full(len(fingerprint), label), np.ones(len(fingerprint))


def anomaly_rule(r: dict, t: "Tracked", cfg: DecisionConfig) -> Rule:
    share = r["shares"][:, t.extras.index("anomalous")]
    hot = (r["weight"] >= cfg.anomaly_min_packets) & (share >= cfg.anomaly_share)
    return hot, np.full(len(share), _ANOMALY), share


def _combine(rules: list[tuple[Rule, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first rule that is hot at a packet decides it (rules in order of precedence)."""
    n = len(rules[0][0][0])
    hot = np.zeros(n, dtype=bool)
    label = np.zeros(n, dtype=np.int64)
    conf = np.zeros(n)
    basis = np.zeros(n, dtype=np.int8)  # index into the rules' names
    for k, ((h, lab, c), _name) in enumerate(rules):
        take = h & ~hot
        label[take], conf[take], basis[take] = lab[take], c[take], k
        hot |= take
    return hot, label, conf, basis


def convict(t: Tracked, r: dict, cfg: DecisionConfig, rules: list[tuple[Rule, str]],
            judging: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Find the verdicts in ``r``: for each key, the first packet at which each class becomes hot, once per
    class until the key cools down.  So a host that floods with UDP and later scans is reported for both.
    ``judging`` (per packet, key order): the packets that may release their key; the others (answers counted for
    the source they answer, which convict nobody) neither convict nor release it.

    Returns (segment ids, packet positions) of the verdicts, in time order per key.
    """
    hot, attack, conf, basis = _combine(rules)
    r["attack"], r["conf"], r["basis"], r["basis_names"] = attack, conf, basis, [name for _, name in rules]
    seg, state, col = r["seg"], r["state"], t.col
    reported = state[:, col["reported"]].astype(np.int64)  # bit c: class c already reported for this key
    pos = np.arange(len(hot))
    seg_ids, positions = [], []
    hot_at = np.flatnonzero(hot)  # only hot packets can convict
    hot_seg, hot_attack = seg.ids[hot_at], attack[hot_at]
    for c in range(1, len(VERDICT_LABELS)):
        of_class = hot_attack == c
        if not of_class.any():
            continue
        cand_seg, cand_at = hot_seg[of_class], hot_at[of_class]
        ok = (reported[cand_seg] >> c) & 1 == 0
        if c == _ANOMALY:  # a key convicted of an attack class is not also reported as anomalous
            ok &= (reported[cand_seg] & ((1 << _ANOMALY) - 2)) == 0
        cand_seg, cand_at = cand_seg[ok], cand_at[ok]
        if len(cand_seg):
            # Each key's first candidate (key order: segment ids ascend, packets in time order within each).
            first = np.flatnonzero(np.concatenate(([True], cand_seg[1:] != cand_seg[:-1])))
            sid = cand_seg[first]
            seg_ids.append(sid)
            positions.append(cand_at[first])
            reported[sid] |= 1 << c
    sids = np.concatenate(seg_ids) if seg_ids else np.zeros(0, np.int64)
    at = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    by_time = np.argsort(at, kind="stable")
    sids, at = sids[by_time], at[by_time]
    hostile_before = state[:, col["hostile"]].copy()
    state[sids, col["hostile"]] = attack[at]  # the latest class reported
    # Per packet: the class its key stands convicted of at that packet (-1: none).
    since = np.full(len(seg), len(hot))
    np.minimum.at(since, sids, at)
    convicted = np.where(hostile_before[seg.ids] >= 0, hostile_before[seg.ids], -1)
    convicted = np.where(pos >= since[seg.ids], state[seg.ids, col["hostile"]], convicted)
    r["convicted"] = convicted.astype(np.int64)
    # Release keys that cooled down by the end of the batch (at their last packet that judges): they may be reported
    # afresh later.
    last = seg.last
    if judging is not None:
        last = np.maximum.reduceat(np.where(judging, pos, -1), seg.start) if len(seg) else last
    cooled = (reported != 0) & (last >= 0) & ~hot[last] & (conf[last] < cfg.release)
    reported[cooled] = 0
    state[cooled, col["hostile"]] = -1
    state[:, col["reported"]] = reported
    return sids, at


def shape_fits(ev: Evidence, sweep: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    """(verdict classes, n) bool: whether each packet has the shape of each class's attack.  A scan's packets
    are its probes."""
    fits = np.zeros((len(VERDICT_LABELS), len(sweep)), dtype=bool)
    fits[_SYN] = ev.syn_only | ev.syn_odd
    fits[_SCAN] = (sweep > 0) | ev.mirai_scan
    fits[_ACK] = ev.ack
    fits[_UDP] = ev.udp | ev.portless | ev.group_chatter
    fits[_UDPPLAIN] = ev.udp
    fits[_ANOMALY] = anomalous
    return fits


def matching(labels: np.ndarray, fits: np.ndarray) -> np.ndarray:
    """Keep a packet's verdict label only where the packet has the attack's shape (``shape_fits``): a convicted
    host's other traffic (an infected camera still streams video, a scanning bot floods too) stays the model's
    to label."""
    ok = (labels >= 0) & fits[np.maximum(labels, 0), np.arange(len(labels))]
    return np.where(ok, labels, -1)
