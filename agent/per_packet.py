"""``detect --per-packet OUT.csv``: one row per decoded packet, what the pipeline and the model said of it
beside the packet's time, addresses, ports and protocol.

A capture may hold millions of packets, so every column is formatted a batch at a time with numpy (addresses
once per distinct address) and csv.writer only joins the finished strings.  The header fields are read
again from the capture rather than kept beside the results during detection, which would double its memory.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

import numpy as np

from agent.capture.packets import (L3_ARP, L3_OTHER, LABELS, VERDICT_LABELS, DecodeStats, PacketBatch, format_ip,
                                  format_mac)

HEADER = ("index", "label", "confidence", "model_label", "time", "ts", "src", "dst", "sport", "dport", "proto",
          "proto_name")  # fmt: skip

# IP protocol numbers by name (the ones an IoT network carries; others are shown as their number).
PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 50: "esp", 58: "icmpv6", 132: "sctp"}


def write_per_packet(out: TextIO, capture: str | Path, result, batch_size: int = 65536) -> None:
    """Rows for ``result`` (a pipeline Detection of ``capture``, kept per packet) written to ``out``."""
    from agent.pipeline import packets_from_capture

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    # Names as object arrays: each row refers to one of a few strings, none made per packet.
    verdict_names, model_names = np.asarray(VERDICT_LABELS, dtype=object), np.asarray(LABELS, dtype=object)
    final = result.final_labels()
    done = 0
    for packets in packets_from_capture(capture, DecodeStats(), batch_size):
        part = slice(done, done + len(packets))
        if not np.array_equal(packets.index, result.index[part]):  # the same file read twice: never expected
            raise RuntimeError(f"{capture}: packets differ from the detection's on a second reading")
        confidence = np.char.mod("%.4f", result.confidence[part])
        writer.writerows(zip(packets.index.tolist(), verdict_names[final[part]].tolist(), confidence.tolist(),
                             model_names[result.labels[part]].tolist(), *header_columns(packets)))  # fmt: skip
        done += len(packets)
    if done != len(result.index):
        raise RuntimeError(f"{capture}: fewer packets on a second reading ({done} of {len(result.index)})")


def header_columns(p: PacketBatch) -> list[list[str]]:
    """time, ts, src, dst, sport, dport, proto, proto_name of each packet, as text."""
    micros = np.round(p.ts * 1e6).astype(np.int64)
    time = np.char.add(np.datetime_as_string(micros.astype("datetime64[us]"), unit="us"), "Z")
    ts = np.char.mod("%.6f", micros / 1e6)
    ip = p.l3 != L3_OTHER
    src = addresses(p.src_ip_hi, p.src_ip_lo, ip)
    dst = addresses(p.dst_ip_hi, p.dst_ip_lo, ip)
    sport, dport = port_text(p.sport), port_text(p.dport)
    is_ip = ip & (p.l3 != L3_ARP)
    proto = np.where(is_ip, p.proto.astype(str), "")
    names = np.array([PROTO_NAMES.get(k, str(k)) for k in range(256)])
    proto_name = np.where(is_ip, names[p.proto], np.where(p.l3 == L3_ARP, "arp", "ethernet"))
    return [c.tolist() for c in (time, ts, src, dst, sport, dport, proto, proto_name)]


def addresses(hi: np.ndarray, lo: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """Each packet's address as text, formatted once per distinct address: IP (ARP's too), else the MAC
    that a non-IP frame's address words hold."""
    words = np.stack([hi, lo, ip.astype(np.uint64)], axis=1)
    distinct, inverse = np.unique(words, axis=0, return_inverse=True)
    text = [format_ip(h, l) if is_ip else format_mac(l) for h, l, is_ip in distinct.tolist()]
    return np.asarray(text, dtype=object)[inverse.reshape(-1)]


def port_text(port: np.ndarray) -> np.ndarray:
    """The port number, or the empty string for a packet without ports (-1)."""
    return np.where(port >= 0, port.astype(str), "")
