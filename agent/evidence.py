"""What each packet's headers say, beside the model's scores: the decision stage's second opinion.

The model judges a packet by its source's statistics, so it knows the attacks in the shapes it was
trained on.  A flood, a scan or Mirai's own scanner also show in plain header facts that hold whatever
options the attacker chose (payload size, ports, TTL, ToS, ...):

* the packet's shape: SYN only, ACK without SYN/RST/FIN (an ACK flood may set PSH or URG), UDP;
* whether it opens a new socket pair or reaches a new host for its source: floods and scans draw
  fresh ports or addresses per packet, ordinary traffic reuses its connections.  The feature engine
  already tracks every socket pair and host pair, so this is read off the slowest-decay weights
  (half-life 100 s): a stream created by this very packet has weight 1;
* Mirai's scanner fingerprint: a SYN whose sequence number is the destination address (scanner.c sets
  ``tcph->seq = iph->daddr``); a random sequence number matches by chance once in 2^32 packets;
* SYN-ACKs, which answer a connection attempt (a scanner's probes mostly go unanswered).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .feature_columns import COLUMNS
from .packets import L3_IPV4, PacketBatch

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# A stream whose slowest-decay weight is below this was created by the packet (weight 1) or has
# been quiet for minutes (weights of older packets decay by half every 100 s).
NEW_STREAM_WEIGHT = 1.5
SOCKET_WEIGHT = COLUMNS.index("HpHp_L0.01_weight")
HOST_WEIGHT = COLUMNS.index("HH_L0.01_weight")


@dataclass
class Evidence:
    """Per-packet booleans, aligned with the packet batch they were computed from."""

    syn_only: np.ndarray
    ack_only: np.ndarray
    udp: np.ndarray
    new_socket: np.ndarray
    new_host: np.ndarray
    mirai_scan: np.ndarray  # Mirai's scanner fingerprint
    synack: np.ndarray

    def shape(self) -> np.ndarray:
        """(n, 3) float columns syn_only, ack_only, udp: the shapes a flood can have."""
        return np.stack([self.syn_only, self.ack_only, self.udp], axis=1).astype(np.float64)


def packet_evidence(packets: PacketBatch, features: np.ndarray | None = None) -> Evidence:
    """Header evidence of every packet; without features (tests of the header rules alone) no packet
    counts as opening a new socket or reaching a new host."""
    tcp = packets.proto == 6
    flags = packets.tcp_flags
    syn_only = tcp & ((flags & (SYN | ACK | RST | FIN)) == SYN)
    ack_only = tcp & ((flags & (SYN | ACK | RST | FIN)) == ACK)
    synack = tcp & ((flags & (SYN | ACK | RST)) == (SYN | ACK))
    fingerprint = syn_only & (packets.l3 == L3_IPV4) & (packets.tcp_seq.astype(np.uint32) == packets.dst_ipv4)
    if features is None:
        new_socket = new_host = np.zeros(len(packets), dtype=bool)
    else:
        new_socket = features[:, SOCKET_WEIGHT] < NEW_STREAM_WEIGHT
        new_host = features[:, HOST_WEIGHT] < NEW_STREAM_WEIGHT
    return Evidence(syn_only, ack_only, packets.proto == 17, new_socket, new_host, fingerprint, synack)
