"""What each packet's headers say, beside the model's scores: the decision stage's second opinion.

The model judges a packet by its source's statistics, so it knows the attacks in the shapes it was
trained on.  A flood, a scan or Mirai's own scanner also show in plain header facts that hold whatever
options the attacker chose (payload size, ports, TTL, ToS, ...):

* the packet's shape: SYN only; SYN with other flags ("syn_odd": Mirai's syn attack lets the operator set
  any flag bits, e.g. SYN-FIN-PSH-ACK), except the plain SYN-ACK that answers a SYN; other TCP without SYN,
  but for a bare RST ("ack": Mirai's ack flood sets ACK and maybe PSH or URG, or any bits, RST among them;
  other tools flood with FIN, PSH, URG or no flag at all); UDP; ICMP echo requests (ping floods and sweeps, which no Mirai class has: the closest
  is the connectionless UDP flood); GRE version 0 carrying IPv4 or Ethernet ("tunnel": Mirai's greip and
  greeth floods wrap UDP floods in GRE, so the closest class is the UDP flood; PPTP's GRE is version 1).
  SYN-ACKs and bare RSTs (RST or RST-ACK, no data) answer somebody: a victim's replies never count (but for RSTs on a
  socket pair whose other end never sent on it: an RST flood's, "ack");
* whether its socket pair is fresh: floods draw fresh ports per packet, ordinary traffic reuses its
  connections.  The feature engine already tracks every socket pair, so this is read off its weights: a
  stream created by this very packet has weight 1 at every decay.  ``opens_socket_pair`` asks whether
  the packet created its stream (or the pair had been quiet for minutes: half-life 100 s); the flood
  evidence ``new_socket`` only whether the pair carried no other packet in about the last second
  (half-life 1 s), since a fast flood at one random port (the other fixed) revisits each of the 65,536
  pairs within seconds;
* Mirai's scanner fingerprint: a SYN whose sequence number is the destination address (scanner.c sets
  ``tcph->seq = iph->daddr``); a random sequence number matches by chance once in 2^32 packets;
* Mirai's SYN flood fingerprint: a SYN with a receive window of 0 and a 20-byte option block.  attack_tcp.c
  builds the MSS, SACK, timestamp and window-scale options of a real stack but never sets the window field of
  its zeroed header, whatever options the operator chose; no operating system opens a connection with a zero
  window, and the raw-socket tools use their own (nmap and masscan 1024, hping3 64, ZMap 65535);
* probe openers: TCP without ACK or RST (SYN, and the FIN, NULL and Xmas probes of stealth scans) and ICMP
  echo requests, which reach for a host or port;
* a later IP fragment carries no transport header: it takes its datagram's header facts (and, in the decision
  stage, its model scores) from the first fragment (``datagram_heads``), so a flood of large fragmented packets
  (hping3 ``-d 3000``, the "fragmentation" floods of public datasets) has the shape of its protocol's flood
  throughout instead of two thirds of packets with no shape;
* answers to them: SYN-ACKs, echo replies and a router's ICMP time exceeded (a scanner's probes mostly go
  unanswered; a traceroute's are answered hop by hop); for UDP, a datagram answering one on its socket pair (a
  resolver's answers to a Pi-hole's queries look like a DNS reflection flood, but the receiver asked for them),
  and every datagram a reflection-prone service (SSDP, CoAP, NTP, ...: ``REFLECTION_PORTS``) sends back on a pair
  its client opened, however many it sends per request; the decision stage adds the answers to a request sent to a
  group (an SSDP M-SEARCH to 239.255.255.250, answered unicast by every device that offers the service);
* datagrams from such services (and from DNS and SNMP, the largest amplifiers) on a pair their receiver never sent
  on: answers to nobody's request, a reflection flood at the receiver, whose address the attacker forged;
* requests to such services: a board that offers one is a reflector for whoever forges a victim's address; DNS
  queries, which a resolver (a Pi-hole) answers, and forwards; and requests to a web server (request-sized TCP
  data from a client port to 80, 443, 8080, ...): what an HTTP flood sends, request after request;
* frames to a group MAC address (multicast, broadcast): streams and announcements, at nobody in particular;
  among them discovery and control traffic to a group address (mDNS, SSDP, LLMNR, WS-Discovery, NetBIOS, CoAP,
  SLP; any UDP to the network's broadcast address but DHCP; ICMPv6 neighbour discovery and multicast listener
  messages to every node or router), which every host on the link takes in, and of which a device sends a few a
  second at most: floods of it hit every host at once (THC-IPv6's flood tools);
* for UDP, which opens nothing: a probe-sized datagram (a scanner's probes are empty or a protocol's
  smallest request) to a host its sender already talks with, through a socket pair it opens (a UDP port
  scan tries one port after another of one host), and refusals: ICMP destination unreachable (a closed
  port's answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.capture.headers import ACK, FIN, PSH, RST, SYN, URG  # noqa: F401  (the flags, for the stages after)
from agent.capture.packets import L3_IPV4, PacketBatch
from agent.features.columns import COLUMNS
from agent.util import hash_words

ECHO_REQUESTS, ECHO_REPLIES = (8, 128), (0, 129)  # ICMP, ICMPv6
UNREACHABLE = (3, 1)  # ICMP, ICMPv6 destination unreachable
TIME_EXCEEDED = (11, 3)  # ICMP, ICMPv6
# ICMP errors (destination unreachable, source quench, redirect, parameter problem; ICMPv6's unreachable, packet too
# big, parameter problem): each answers a packet its receiver sent.  (Time exceeded is left out: every router on a
# traceroute's path answers its probes, none of them asked by the tracer.)
ICMP_ERRORS, ICMPV6_ERRORS = (3, 4, 5, 12), (1, 2, 4)
GRE_FLOODS = (0x0800, 0x6558)  # what Mirai's greip and greeth carry: IPv4, Ethernet
# UDP services that answer a small request with more, or with many datagrams, and so serve reflection floods: the
# attacker forges the victim's address as the source of its requests (CERT's TA14-017A list and the vectors found
# since: QOTD, CharGEN, TFTP, portmap, NTP, NetBIOS, CLDAP, SLP, RIPv1, SSDP, ARD, WS-Discovery, NAT-PMP, CoAP,
# Ubiquiti discovery, memcached, Plex, DVR discovery).  IoT boards offer SSDP, WS-Discovery and CoAP to anybody.
# DNS and SNMP are left out: a home's own clients ask a Pi-hole or an agent of its monitoring many times a second.
REFLECTION_PORTS = (17, 19, 69, 111, 123, 137, 389, 427, 520, 1900, 3283, 3702, 5351, 5683, 10001, 11211, 32414,
                    37810)  # fmt: skip
# Services whose answers amplify a request (REFLECTION_PORTS, and DNS and SNMP, the largest amplifiers of all):
# datagrams from these ports that answer nothing their receiver sent are a reflection flood's at a forged victim.
AMPLIFIER_PORTS = (*REFLECTION_PORTS, 53, 161)
# Web servers, which an HTTP flood over persistent connections (GoldenEye, HULK, wrk, ab -k; Mirai's own http attack
# keeps its connections) sends request after request; an IoT board serves its web UI on one of these.
WEB_PORTS = (80, 443, 8000, 8008, 8080, 8081, 8443, 8888)
WEB_REQUEST_BYTES = 600  # a request's segment at most (GET with headers; HULK's random ones); an upload's are full
# Discovery and control services spoken to a group address (multicast or broadcast): NetBIOS name and datagram,
# SLP, SSDP, WS-Discovery, mDNS, LLMNR, CoAP.  Their answers go unicast, but for mDNS's, which responders send at most
# once a second per record (RFC 6762).  DHCP is left out: every client asks from 0.0.0.0, so a network's devices
# coming back after a power cut are one "source" of hundreds of requests.
DISCOVERY_PORTS = (137, 138, 427, 1900, 3702, 5353, 5355, 5683)
BROADCAST_MAC = 0xFFFF_FFFF_FFFF  # a network's broadcast: every host takes each frame in, whatever its port
DHCP_PORTS = (67, 68)
ROUTER_ADVERTISEMENT = 134  # ICMPv6: a router announcing itself and its prefixes (THC-IPv6's flood_router6 forges them)
# ICMPv6 neighbour discovery and multicast listener messages (MLD query, report, done; router solicitation and
# advertisement, neighbour solicitation and advertisement; MLDv2 report) to every node, every router or every MLDv2
# router of the link (ff02::1, ff02::2, ff02::16): a host sends a few at start-up or on an address change.  (Address
# resolution asks a solicited-node group, ff02::1:ffXX:XXXX, left out: a router resolving the absent hosts a flood
# at its prefix aims at sends one for each.)
LINK_CONTROL_TYPES = (130, 131, 132, 133, 134, 135, 136, 143)
LINK_GROUPS_HI = 0xFF02 << 48
LINK_GROUPS_LO = (0x1, 0x2, 0x16)
UDP_PROBE_BYTES = 256  # nmap's largest UDP probe payload is a 244-byte DHCP request


def _port_table(ports: tuple[int, ...], size: int = 65536) -> np.ndarray:
    """A lookup table over the 65,536 ports (or ``size`` values: 256 ICMP types), and -1 (none) at the end: True at
    ``ports``.  One gather per packet, where np.isin compares every packet with every port."""
    table = np.zeros(size + 1, dtype=bool)
    table[list(ports)] = True
    return table


_REFLECTION, _WEB, _DISCOVERY = _port_table(REFLECTION_PORTS), _port_table(WEB_PORTS), _port_table(DISCOVERY_PORTS)
_AMPLIFIER, _DHCP, _GRE_FLOOD = _port_table(AMPLIFIER_PORTS), _port_table(DHCP_PORTS), _port_table(GRE_FLOODS)
_ICMP_ERROR, _ICMPV6_ERROR, _LINK_CONTROL = (_port_table(types, 256) for types in (ICMP_ERRORS, ICMPV6_ERRORS,
                                                                                    LINK_CONTROL_TYPES))
# A stream whose weight is below this was created by the packet (weight 1) or has been quiet for a few
# half-lives of that weight's decay.
NEW_STREAM_WEIGHT = 1.5
SOCKET_WEIGHT = COLUMNS.index("HpHp_L0.01_weight")  # half-life 100 s
RECENT_SOCKET_WEIGHT = COLUMNS.index("HpHp_L1_weight")  # half-life 1 s
HOST_WEIGHT = COLUMNS.index("HH_L0.01_weight")  # half-life 100 s
HOST_MEAN, HOST_MAGNITUDE = COLUMNS.index("HH_L0.01_mean"), COLUMNS.index("HH_L0.01_magnitude")  # (as SOCKET_*)
# A socket pair's own mean size and its magnitude sqrt(mean^2 + reverse mean^2): equal while the reverse direction
# has sent nothing on the pair (the reverse mean is kept from its last own packet, whatever the decay rate).
SOCKET_MEAN = COLUMNS.index("HpHp_L0.01_mean")
SOCKET_MAGNITUDE = COLUMNS.index("HpHp_L0.01_magnitude")
RECENT_SOCKET_MEAN, RECENT_SOCKET_STD = COLUMNS.index("HpHp_L1_mean"), COLUMNS.index("HpHp_L1_std")
# A media stream's datagrams: their sizes on the socket pair spread by this share of their mean (a video frame's
# packets are full-size but its last; a flood's datagrams are one size, its len option).
MEDIA_SIZE_SPREAD = 0.05
# ...and between two hosts in their first 0.1 s or so, too soon to tell (a video's key frame is dozens of full-size
# datagrams in a row): their weight at a 0.2 s half-life is still this share of their weight at 100 s (a steady
# stream's share is 0.85 at 0.1 s, 0.72 at 0.2 s; a flood's first 0.1 s convict nothing yet).
HOST_SHORT_WEIGHT = COLUMNS.index("HH_L5_weight")
MEDIA_YOUNG_SHARE = 0.85
KEY_FRAME_BYTES = 1000  # (a key frame's frames are full-size: a small datagram's first 0.1 s is no key frame's)


@dataclass
class Evidence:
    """Per-packet booleans, aligned with the packet batch they were computed from."""

    syn_only: np.ndarray
    ack: np.ndarray  # TCP without SYN and no bare RST
    syn_odd: np.ndarray  # SYN with other flags, not a plain SYN-ACK
    udp: np.ndarray
    echo: np.ndarray  # ICMP echo request
    tunnel: np.ndarray  # GRE version 0 carrying IPv4 or Ethernet
    new_socket: np.ndarray  # no other packet on its socket pair in about the last second
    mirai_scan: np.ndarray  # Mirai's scanner fingerprint
    mirai_syn: np.ndarray  # Mirai's SYN flood fingerprint
    opener: np.ndarray  # TCP without ACK or RST, or an echo request: reaches for a host or port
    answer: np.ndarray  # SYN-ACK, echo reply or time exceeded
    echo_reply: np.ndarray  # ICMP echo reply (an answer if its receiver sent the request: see DecisionLayer)
    synack: np.ndarray  # a plain SYN-ACK (an answer if its receiver sent the SYN: see DecisionLayer)
    rst: np.ndarray  # a bare RST (or RST-ACK): an answer, or a scanner's kernel refusing the SYN-ACKs it drew
    udp_probe: np.ndarray  # probe-sized UDP opening a socket pair to a host its sender talked with recently
    refusal: np.ndarray  # ICMP destination unreachable
    one_way: np.ndarray  # UDP on a socket pair whose other end has sent nothing back on it
    time_exceeded: np.ndarray  # ICMP time exceeded: a router answering a packet whose TTL ran out
    two_way: np.ndarray  # UDP on a socket pair whose other end has sent on it too (without features: unknown, False)
    reply: np.ndarray  # UDP, the first in its direction on a socket pair the other end opened: an answer (DNS, ...);
    # or any from a reflection-prone service's port (REFLECTION_PORTS) on a pair its client opened (SSDP answers 3
    # times, NTP's monlist 100 times)
    to_group: np.ndarray  # to a group (multicast, broadcast) MAC or IP address: a stream or an announcement, no victim
    bare_ack: np.ndarray  # TCP with the ACK flag alone and no data
    ack_back: np.ndarray  # a bare ACK on a TCP socket pair whose other end has sent on it (acknowledging its data?)
    reflect_request: np.ndarray  # UDP to a reflection-prone service's port (REFLECTION_PORTS), no answer itself
    web_request: np.ndarray  # a request-sized TCP segment from a client port to a web server's port (WEB_PORTS)
    dns_query: np.ndarray  # UDP to port 53, no answer itself
    group_chatter: np.ndarray  # discovery or control traffic to a group address (DISCOVERY_PORTS, broadcast UDP but
    # DHCP, LINK_CONTROL_TYPES)
    tcp_two_way: np.ndarray  # TCP on a socket pair whose other end has sent on it (without features: unknown, False)
    icmp_error: np.ndarray  # an ICMP error to a host that has sent its sender nothing: it answers nothing (BlackNurse,
    # THC-IPv6's flood_unreach6 and toobig6)
    amplified: np.ndarray  # UDP from an amplifying service's port (AMPLIFIER_PORTS), unicast, on a socket pair its
    # receiver never sent on: an answer to nobody's request, a reflection flood's at the forged victim
    media: np.ndarray  # one-way UDP shaped like a media stream (a camera's RTP video): sizes on its socket pair that
    # vary, or too early between its two hosts to tell.  A flood's datagrams have one size (Mirai's len option,
    # hping3's -d).  The decision stage adds one-size streams whose payloads carry an application's header (RTP
    # audio, MPEG-TS, a sensor's frames: DecisionLayer._payload_kinds), which needs each pair's last datagram.

    SHAPES = ("syn_only", "ack", "udp", "portless", "syn_odd")

    def unsolicited(self, synack: np.ndarray, echo_reply: np.ndarray) -> None:
        """SYN-ACKs that answer no SYN are a flood's (Mirai's syn attack with the ACK bit set): a SYN shape.  Echo
        replies that answer no echo request are a flood's too (a smurf attack's victim; hping3 -1 -C 0): an echo
        request's shape, portless."""
        self.syn_odd = self.syn_odd | synack
        self.echo = self.echo | echo_reply
        self.answer = self.answer & ~synack & ~echo_reply

    @property
    def portless(self) -> np.ndarray:
        """Echo requests, GRE floods and ICMP errors that answer nothing: no ports, so no fresh socket pairs to show;
        all closest to a UDP flood."""
        return self.echo | self.tunnel | self.icmp_error

    def shape(self) -> np.ndarray:
        """(n, len(SHAPES)) float columns: the shapes a flood can have."""
        return np.stack([getattr(self, name) for name in self.SHAPES], axis=1).astype(np.float64)


# What a later fragment takes from its datagram's first fragment: the facts of the transport header.
INHERITED = ("syn_only", "ack", "syn_odd", "udp", "echo", "tunnel", "new_socket", "one_way", "amplified",
             "group_chatter")


NOISE_MIN_DISTINCT = 13  # of a payload's first 16 bytes: random bytes give 13 or more 999 times in 1,000
NOISE_MAX_ZEROS = 1  # ...and at most one zero byte 99.8 times in 100 (a binary header has zero fields)


def one_byte_throughout(head_hi: np.ndarray, head_lo: np.ndarray) -> np.ndarray:
    """Per payload head (``PacketBatch.udp_head_hi``/``_lo``): its 16 bytes are one byte again and again (zeros)."""
    return (head_hi == head_lo) & (head_hi % np.uint64(0x0101_0101_0101_0101) == 0)


def noise_alone(packets: PacketBatch, which: np.ndarray | None = None) -> np.ndarray:
    """Per packet (of ``which``, if given): a UDP payload that reads as no application's by itself.  Random-looking:
    13 or more distinct values among its first 16 bytes, at most one of them zero, not all printable (a binary
    protocol's header has fields that are zero, a flag byte, a length; a text protocol's is printable: SSDP, syslog);
    or one byte throughout (zeros: Mirai's rand=0, hping3's -d).  A datagram shorter than 16 bytes, or whose first
    16 were not captured, is none; so is an empty one, which is as much a UDP port scan's probe (nmap -sU) as a
    flood's.  An encrypted stream's datagrams may read as random one by one (QUIC's short header, SRTP's payload),
    which is why the decision stage judges a datagram so only where there is nothing to compare it with on its
    socket pair (``DecisionLayer._payload_kinds``)."""
    out = np.zeros(len(packets), dtype=bool)
    full = (packets.proto == 17) & ~packets.frag & packets.udp_head_ok & (packets.payload_len >= 16)
    full = np.flatnonzero(full if which is None else full & which)
    if len(full):
        words = np.stack([packets.udp_head_hi[full], packets.udp_head_lo[full]], axis=1).astype(">u8")
        head = words.view(np.uint8).reshape(len(full), 16)
        ordered = np.sort(head, axis=1)
        distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(axis=1)
        zeros = (head == 0).sum(axis=1)
        printable = ((head >= 0x20) & (head <= 0x7E)).all(axis=1)
        random_looking = (distinct >= NOISE_MIN_DISTINCT) & (zeros <= NOISE_MAX_ZEROS) & ~printable
        out[full] = random_looking | one_byte_throughout(packets.udp_head_hi[full], packets.udp_head_lo[full])
    return out


def datagram_heads(packets: PacketBatch) -> np.ndarray | None:
    """Per packet, the packet whose transport header stands for it: itself, or for a later IP fragment, which has
    none, the packet before it between the same two hosts with the same protocol that is no later fragment (its
    datagram's first fragment: fragments are sent in order, and a flood's datagrams one after another).  A later
    fragment with no such packet in the batch stands for itself.  None when the batch has no later fragment
    (nearly always: nothing to do)."""
    frag = packets.frag
    if not frag.any():
        return None
    key = hash_words(14, packets.src_ip_hi, packets.src_ip_lo, packets.dst_ip_hi, packets.dst_ip_lo,
                     packets.proto.astype(np.uint64))  # fmt: skip
    order = np.argsort(key, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order[1:]] != key[order[:-1]]
    # In key order, each position points at the latest head at or before it within its run of one flow.
    head_at = np.maximum.accumulate(np.where(~frag[order] | first, np.arange(len(order)), 0))
    heads = np.empty(len(order), dtype=np.int64)
    heads[order] = order[head_at]
    return heads


def inherit_headers(ev: "Evidence", heads: np.ndarray) -> None:
    """Later fragments take their datagram's transport facts (``INHERITED``) from their heads (``datagram_heads``)."""
    for name in INHERITED:
        setattr(ev, name, getattr(ev, name)[heads])


def to_group_address(packets: PacketBatch) -> np.ndarray:
    """Per packet: to a group IP address: IPv4 multicast (224.0.0.0/4) or the broadcast address, IPv6 multicast
    (ff00::/8).  (Captures without link headers show no group MAC address.)"""
    v4 = packets.dst_ipv4
    return np.where(packets.l3 == L3_IPV4, ((v4 >> 28) == 0xE) | (v4 == 0xFFFF_FFFF),
                    (packets.dst_ip_hi >> np.uint64(56)) == 0xFF)  # fmt: skip


def bare_rst(packets: PacketBatch) -> np.ndarray:
    """Per packet: a stack's RST, bare (RST or RST-ACK, no data).  RST with FIN, PSH, URG or SYN, or with a
    payload, answers nobody: Mirai's floods take any flag bits."""
    tcp = (packets.proto == 6) & ~packets.frag
    return tcp & ((packets.tcp_flags & (RST | SYN | FIN | PSH | URG)) == RST) & (packets.payload_len == 0)


def _heard_back(features: np.ndarray, mean: int, magnitude: int) -> np.ndarray:
    """Per packet: the other end of its stream (socket pair or host pair: the columns ``mean`` and ``magnitude`` of
    that stream, at one decay) has sent on it too: the magnitude sqrt(mean^2 + reverse mean^2) exceeds the mean."""
    return features[:, magnitude] > features[:, mean] * (1 + 1e-6)


def opens_socket_pair(features: np.ndarray) -> np.ndarray:
    """Per packet (its 115 features): the packet created its socket pair's stream (or the pair had been quiet
    for minutes)."""
    return features[:, SOCKET_WEIGHT] < NEW_STREAM_WEIGHT


def packet_evidence(packets: PacketBatch, features: np.ndarray | None = None) -> Evidence:
    """Header evidence of every packet; without features (tests of the header rules alone) no packet
    counts as using a fresh socket pair."""
    tcp = (packets.proto == 6) & ~packets.frag  # a later fragment has no TCP header (its flags read 0)
    flags = packets.tcp_flags
    rst = bare_rst(packets)  # (an ack flood with RST among its flags was taken for answers and never judged)
    syn_only = tcp & ((flags & (SYN | ACK | RST | FIN)) == SYN)
    ack = tcp & ((flags & SYN) == 0) & ~rst
    opener = tcp & ((flags & (ACK | RST)) == 0)
    synack = tcp & ((flags & (SYN | ACK | RST | FIN | PSH | URG)) == (SYN | ACK))  # ECN bits allowed
    syn_odd = tcp & ((flags & SYN) == SYN) & ~syn_only & ~synack
    v4, v6 = packets.proto == 1, packets.proto == 58

    def icmp(types: tuple[int, int]) -> np.ndarray:
        """ICMP of ``types[0]`` or ICMPv6 of ``types[1]``."""
        return v4 & (packets.icmp_type == types[0]) | v6 & (packets.icmp_type == types[1])

    echo, echo_reply = icmp(ECHO_REQUESTS), icmp(ECHO_REPLIES)
    fingerprint = syn_only & (packets.l3 == L3_IPV4) & (packets.tcp_seq.astype(np.uint32) == packets.dst_ipv4)
    syn_no_ack = opener & ((flags & SYN) != 0)  # (its operator may add FIN, PSH or URG)
    zero_window = syn_no_ack & (packets.tcp_win == 0) & (packets.tcp_hdr_len == 40)
    udp = packets.proto == 17  # a fragmented datagram's later fragments too: all of a flood's volume
    bare_ack = tcp & ((flags & 0x3F) == ACK) & (packets.payload_len == 0)
    icmp_error = v4 & _ICMP_ERROR[packets.icmp_type] | v6 & _ICMPV6_ERROR[packets.icmp_type]
    if features is None:
        new_socket = udp_probe = one_way = two_way = reply = ack_back = np.zeros(len(packets), dtype=bool)
        icmp_error = tcp_two_way = media = np.zeros(len(packets), dtype=bool)
    else:
        heard_back = _heard_back(features, SOCKET_MEAN, SOCKET_MAGNITUDE)
        # A RST on a socket pair whose other end never sent on it refuses nothing: an RST flood's (hping3 -R), TCP
        # without SYN as an ack flood's.
        unsolicited_rst = rst & ~heard_back
        if unsolicited_rst.any():
            rst, ack = rst & ~unsolicited_rst, ack | unsolicited_rst
        one_way = udp & ~heard_back
        tcp_two_way = tcp & heard_back
        ack_back = bare_ack & heard_back
        new_socket = features[:, RECENT_SOCKET_WEIGHT] < NEW_STREAM_WEIGHT
        two_way = udp & heard_back
        # (nothing from this end on the pair for a second or so; or from a service that answers with several)
        reply = two_way & (new_socket | _REFLECTION[packets.sport])
        known_host = features[:, HOST_WEIGHT] >= NEW_STREAM_WEIGHT
        probe_sized = (packets.payload_len <= UDP_PROBE_BYTES) & ~packets.frag
        udp_probe = udp & probe_sized & known_host & opens_socket_pair(features) & ~reply  # (a refused answer: none)
        if icmp_error.any():  # (only to a host that has sent the error's sender nothing, which it could answer)
            icmp_error &= ~_heard_back(features, HOST_MEAN, HOST_MAGNITUDE)
        # (a stream is one socket pair, used again; later fragments carry no ports: their own socket pair's sizes say
        # nothing of the datagrams')
        media = one_way & ~packets.frag & ~new_socket
        rows = np.flatnonzero(media)
        if len(rows):  # (four columns of those rows, not whole rows)
            varied = features[rows, RECENT_SOCKET_STD] > MEDIA_SIZE_SPREAD * features[rows, RECENT_SOCKET_MEAN]
            young = ((features[rows, HOST_SHORT_WEIGHT] >= MEDIA_YOUNG_SHARE * features[rows, HOST_WEIGHT])
                     & (packets.wire_len[rows] >= KEY_FRAME_BYTES))  # fmt: skip
            media[rows] = varied | young
    tunnel = (packets.proto == 47) & _GRE_FLOOD[packets.gre_proto]
    reflect_request = udp & _REFLECTION[packets.dport] & ~reply
    dns_query = udp & (packets.dport == 53) & ~reply
    # (a group IP address too: captures without link headers show no MAC, and a packet is the same packet whatever
    # link type it was captured with)
    to_group = ((packets.dst_mac >> np.uint64(40)) & np.uint64(1)).astype(bool) | to_group_address(packets)
    # (broadcast: anything but DHCP, where every client asks from 0.0.0.0; nothing streams to every host of a network)
    broadcast = (packets.dst_mac == np.uint64(BROADCAST_MAC)) & ~_DHCP[packets.dport]
    group_chatter = udp & (_DISCOVERY[packets.dport] | broadcast) & ~packets.frag
    link_control = (packets.proto == 58) & _LINK_CONTROL[packets.icmp_type]
    if link_control.any():
        to_link = (packets.dst_ip_hi == np.uint64(LINK_GROUPS_HI)) & np.isin(packets.dst_ip_lo, LINK_GROUPS_LO)
        group_chatter |= link_control & (to_link | (packets.icmp_type == ROUTER_ADVERTISEMENT))
    amplified = one_way & _AMPLIFIER[packets.sport]
    group_chatter &= to_group
    amplified &= ~to_group
    web_request = (ack & (packets.payload_len > 0) & (packets.payload_len <= WEB_REQUEST_BYTES)
                   & _WEB[packets.dport] & (packets.sport >= 1024))  # fmt: skip
    return Evidence(syn_only, ack, syn_odd, udp, echo, tunnel, new_socket, fingerprint, zero_window, opener | echo,
                    synack | echo_reply | icmp(TIME_EXCEEDED), echo_reply, synack, rst,
                    udp_probe, icmp(UNREACHABLE), one_way, icmp(TIME_EXCEEDED), two_way, reply,
                    to_group, bare_ack, ack_back, reflect_request, web_request, dns_query, group_chatter, tcp_two_way,
                    icmp_error, amplified, media)  # fmt: skip
