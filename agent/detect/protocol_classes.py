"""Which classes a packet's protocol allows: the model's scores restricted to what the header permits.

The N-BaIoT features describe sizes, rates and timing, not protocols: a UDP flood and an ACK flood with
payload sizes 12 bytes apart look the same in all 115 columns, and Mirai's options let an attacker pick
any size.  The header says which it is.  Mirai's TCP attacks (syn, ack) can set any flag bits and its
scanner sends SYNs, RSTs and telnet; its UDP floods send UDP; nothing of Mirai's is ICMP, ARP or else.

Training restricts by protocol family only (the label follows the attack command, and a syn attack run
with ``ack=1 syn=0`` sends ACKs labelled mirai_syn).  On the board the flags narrow it further to the
closest class: a SYN without ACK is no ACK flood (Mirai's ack attack with ``syn=1 ack=0`` sends SYN
floods), an ACK without SYN no SYN flood.
"""

from __future__ import annotations

import numpy as np

from agent.capture.packets import LABELS, PacketBatch
from agent.detect.evidence import ACK, SYN, bare_rst, opens_socket_pair

FAMILY_OTHER, FAMILY_TCP, FAMILY_UDP = 0, 1, 2
FAMILY_ANY = -1  # unknown (rows of an N-BaIoT CSV): every class allowed
_ALLOWED = {
    FAMILY_OTHER: ("benign",),
    FAMILY_TCP: ("benign", "mirai_ack", "mirai_scan", "mirai_syn"),
    FAMILY_UDP: ("benign", "mirai_udp", "mirai_udpplain"),
}
ALLOWED = np.array([[label in _ALLOWED[f] for label in LABELS] for f in (FAMILY_OTHER, FAMILY_TCP, FAMILY_UDP)])


def protocol_family(packets: PacketBatch) -> np.ndarray:
    """FAMILY_TCP, FAMILY_UDP or FAMILY_OTHER per packet (non-first IP fragments carry no L4 header: other)."""
    family = np.full(len(packets), FAMILY_OTHER, dtype=np.int8)
    family[(packets.proto == 6) & ~packets.frag] = FAMILY_TCP
    family[(packets.proto == 17) & ~packets.frag] = FAMILY_UDP
    return family


def allowed_classes(family: np.ndarray) -> np.ndarray:
    """(n, 6) bool: the classes each protocol family allows (all of them for FAMILY_ANY)."""
    family = np.asarray(family)
    out = np.ones((len(family), len(LABELS)), dtype=bool)
    known = family >= 0
    out[known] = ALLOWED[family[known]]
    return out


def packet_classes(packets: PacketBatch, features: np.ndarray | None = None) -> np.ndarray:
    """(n, 6) bool: the classes each packet's header allows, its TCP flags included; with the packets'
    features, also whether it opens a new socket pair: Mirai's udpplain sends through one connected socket
    per target, and its scanner's TCP without SYN (brute-force sessions; its kernel's RSTs are bare) goes
    through connections its SYNs opened, so a UDP packet or such a TCP segment opening a socket pair is neither
    (an ack flood with RST among its flags scored half a scan, as the scanner's RSTs are labelled)."""
    out = allowed_classes(protocol_family(packets))
    tcp = (packets.proto == 6) & ~packets.frag
    flags = packets.tcp_flags & (SYN | ACK)
    out[tcp & (flags == SYN), LABELS.index("mirai_ack")] = False
    out[tcp & (flags == ACK), LABELS.index("mirai_syn")] = False
    if features is not None:
        fresh = opens_socket_pair(features)
        out[fresh & (packets.proto == 17) & ~packets.frag, LABELS.index("mirai_udpplain")] = False
        no_syn = tcp & ((packets.tcp_flags & SYN) == 0) & ~bare_rst(packets)
        out[fresh & no_syn, LABELS.index("mirai_scan")] = False
    return out


def restrict_scores(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The model's class scores with the classes not ``allowed`` set to 0 and the rest rescaled to sum 1
    (when nothing allowed scores above 0, all of it goes to benign)."""
    out = np.where(allowed, scores, 0.0)
    total = out.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    out[empty, 0], total[empty] = 1.0, 1.0
    return out / total
