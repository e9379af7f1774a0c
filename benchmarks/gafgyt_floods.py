"""Detection of Gafgyt's floods, the other botnet of N-BaIoT, which neither the model nor the synthesiser knows.

    python benchmarks/gafgyt_floods.py [--seconds 5] [--out FILE]

Gafgyt (BASHLITE) sends its floods as its public client.c does: ``UDP`` through one socket with the
netmask 32 (a kernel's headers: one source port, one payload for the whole attack, the destination port fixed
or, with port 0, a new one every 11 datagrams; datagrams larger than a frame go out as IP fragments) or from a
raw socket with forged sources inside a netmask (TTL 255, random source port, IP id and address per datagram);
``TCP`` from a raw socket with any set of the flags syn, ack, psh, rst, fin (``all``: all five), random source
ports and sequence numbers, no options, a payload of ``psize`` bytes.  Each case runs in both views (a LAN bot
flooding the board; the board, infected, flooding a host on the internet) through the whole pipeline with the
bundled model, anomaly detector and decision stage.  Two benign streams close the table: a camera's RTP video
from the board (sizes varying as a frame's last packet does), which must raise nothing.

Printed per case and written to ``benchmarks/results/gafgyt_floods.json``: packets, the share of the
attack's packets the pipeline labels as an attack, the first verdict on the attack, its class and basis, and
how long after the attack's first packet it came.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save  # noqa: E402

BOARD, BOT, VICTIM = 0xC0A80132, 0xC0A80142, 0xCB007109  # 192.168.1.50, 192.168.1.66, 203.0.113.9
BOARD_MAC, BOT_MAC, GATEWAY_MAC = 0xB827EB000050, 0xB827EB000066, 0x001122334455
FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10}


@dataclass
class Case:
    name: str
    view: str  # "victim": a LAN bot floods the board; "bot": the board floods a host on the internet
    rate: float  # datagrams (or segments) a second
    benign: bool = False


@dataclass
class Row:
    name: str
    view: str
    packets: int
    labelled_attack: float  # share of the case's packets the pipeline labels as any attack
    verdict: str | None
    basis: str | None
    verdict_s: float | None  # after the case's first packet


def _ends(view: str) -> dict:
    """Addresses of the sender and receiver in a view."""
    if view == "victim":
        return dict(src_ip=BOT, dst_ip=BOARD, src_mac=BOT_MAC, dst_mac=BOARD_MAC)
    return dict(src_ip=BOARD, dst_ip=VICTIM, src_mac=BOARD_MAC, dst_mac=GATEWAY_MAC)


def _forged_sources(rng: np.random.Generator, n: int, own_ip: int, netmask: int) -> np.ndarray | int:
    """Gafgyt's getRandomIP: the sender's own address with its last ``32 - netmask`` bits random per packet (netmask 0:
    any address; 32: its own)."""
    if netmask == 32:
        return own_ip
    keep = ~((1 << (32 - netmask)) - 1) & 0xFFFFFFFF
    return (own_ip & keep) | rng.integers(0, 1 << (32 - netmask), n, dtype=np.uint64)


def udp_flood(rng: np.random.Generator, n: int, view: str, size: int, port: int, netmask: int):
    """Gafgyt's sendUDP: (times relative to the start are the caller's) a list of Frames, one per fragment position."""
    from convert.synth.frames import ipv4_fragments, udp_frames

    ends = _ends(view)
    payload = np.broadcast_to(rng.integers(0, 256, size, dtype=np.uint8), (n, size))  # made once (makeRandomStr)
    if netmask == 32:  # a datagram socket: the kernel's source port, counting ids, DF where it fits
        dport = np.repeat(rng.integers(1, 65536, n // 11 + 1), 11)[:n] if port == 0 else port
        frames = udp_frames(n, sport=int(rng.integers(32768, 61000)), dport=dport,
                            payload=np.ascontiguousarray(payload),
                            ip_id=(int(rng.integers(0, 65536)) + np.arange(n)) % 65536, df=28 + size <= 1500,
                            **ends)  # fmt: skip
        return ipv4_fragments(frames) if 28 + size > 1500 else [frames]
    ends["src_ip"] = _forged_sources(rng, n, ends["src_ip"], netmask)
    return [udp_frames(n, sport=rng.integers(0, 65536, n), dport=port or rng.integers(0, 65536, n),
                       payload=np.ascontiguousarray(payload), ip_id=rng.integers(0, 65536, n), ttl=255, **ends)]


def tcp_flood(rng: np.random.Generator, n: int, view: str, flags: str, psize: int, netmask: int):
    """Gafgyt's sendTCP (the destination port drawn once, for port 0)."""
    from convert.synth.frames import tcp_frames

    ends = _ends(view)
    ends["src_ip"] = _forged_sources(rng, n, ends["src_ip"], netmask)
    bits = sum(FLAGS.values()) if flags == "all" else sum(FLAGS[f] for f in flags.split(","))
    tcp = dict(sport=rng.integers(0, 65536, n), dport=int(rng.integers(1, 65536)), seq=rng.integers(0, 1 << 32, n),
               ack=0, flags=bits, window=int(rng.integers(0, 65536)))  # fmt: skip
    return [tcp_frames(n, tcp=tcp, payload=np.zeros((n, psize), np.uint8), ip_id=rng.integers(0, 65536, n), ttl=255,
                       **ends)]  # fmt: skip


def rtp_video(rng: np.random.Generator, n: int, view: str):
    """A camera's RTP video from the board to a viewer on the LAN: full-size datagrams but a frame's last."""
    from convert.synth.frames import udp_frames

    sizes = np.where(rng.random(n) < 0.15, rng.integers(100, 1400, n), 1400)
    payload = np.zeros((n, 1400), np.uint8)
    return [udp_frames(n, sport=5004, dport=50000, payload=payload, payload_len=sizes, ip_id=np.arange(n) % 65536,
                       df=True, src_ip=BOARD, dst_ip=BOT, src_mac=BOARD_MAC, dst_mac=BOT_MAC)]  # fmt: skip


def cases() -> list[tuple[Case, callable]]:
    out = []
    for view in ("victim", "bot"):
        for size in (64, 512, 1400, 4000):
            for rate in (50.0, 1000.0, 20000.0):
                for port in (80, 0):
                    name = f"udp size={size} port={port or 'hopping'} {rate:g}/s"
                    out.append((Case(name, view, rate),
                                lambda r, n, v=view, s=size, p=port: udp_flood(r, n, v, s, p, 32)))
        for netmask in (0, 24):
            for size in (512, 1400):
                out.append((Case(f"udp size={size} spoofed /{netmask}", view, 2000.0),
                            lambda r, n, v=view, s=size, m=netmask: udp_flood(r, n, v, s, 0, m)))
        for flags in ("syn", "ack", "psh", "rst", "fin", "all", "ack,psh", "fin,ack", "syn,ack"):
            for netmask in (32, 0):
                for psize in (0, 1024):
                    name = f"tcp flags={flags} psize={psize} {'spoofed' if netmask < 32 else 'own'}"
                    out.append((Case(name, view, 2000.0),
                                lambda r, n, v=view, f=flags, p=psize, m=netmask: tcp_flood(r, n, v, f, p, m)))
    for rate in (500.0, 1700.0):
        out.append((Case(f"benign: RTP video {rate * 1400 * 8 / 1e6:.0f} Mbit/s", "bot", rate, benign=True),
                    lambda r, n: rtp_video(r, n, "bot")))
    return out


def run_case(case: Case, build, seconds: float, clf, anomaly, seed: int = 11) -> Row:
    from agent.capture.packets import DecodeStats, VERDICT_LABELS
    from agent.capture.parse import parse_frames
    from agent.detect.decide import DecisionLayer
    from agent.pipeline import detect_packets, split_packets
    from convert.synth.timeline import Timeline

    rng = np.random.default_rng(seed)
    n = int(case.rate * seconds)
    t = 1.0 + np.cumsum(rng.exponential(1.0 / case.rate, n))
    timeline = Timeline(seconds + 2.0)
    for k, frames in enumerate(build(rng, n)):  # (fragment k of each datagram right after the one before)
        timeline.add(t + 2e-6 * k, frames, "benign" if case.benign else "mirai_udp", case.name)
    merged = timeline.merge(base_us=1_700_000_000_000_000)
    stats = DecodeStats()
    packets = parse_frames(merged.frames, stats)
    result = detect_packets(split_packets(packets), stats, clf, DecisionLayer(), anomaly=anomaly)
    attack = np.asarray(result.final_labels()) != VERDICT_LABELS.index("benign")
    start = float(packets.ts.min())
    first = min(result.verdicts, key=lambda v: v.decided_at) if result.verdicts else None
    return Row(case.name, case.view, len(packets), float(attack.mean()), first and first.label, first and first.basis,
               None if first is None else round(first.decided_at - start, 3))  # fmt: skip


def run_cases(cases: list[tuple[Case, callable]], seconds: float, width: int = 40) -> list[dict]:
    """Every case through the pipeline with the bundled model and anomaly detector; a line printed for each."""
    from agent.detect.anomaly import load_anomaly
    from agent.detect.model import Classifier, load_bundle

    clf, anomaly = Classifier(load_bundle()), load_anomaly("report")
    rows = []
    for case, build in cases:
        row = run_case(case, build, seconds, clf, anomaly)
        rows.append(asdict(row) | {"benign": case.benign})
        late = "none" if row.verdict_s is None else f"{row.verdict_s:.2f}s"
        print(f"{row.view:6s} {row.name:{width}s} n={row.packets:7d} labelled attack={row.labelled_attack:.3f} "
              f"first verdict={late} {row.verdict or ''} [{row.basis or ''}]")  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each attack")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = run_cases(cases(), args.seconds)
    attacks = [r for r in rows if not r["benign"]]
    summary = {
        "attack_cases": len(attacks),
        "with_verdict": sum(r["verdict_s"] is not None for r in attacks),
        "verdict_within_1s": sum(r["verdict_s"] is not None and r["verdict_s"] <= 1.0 for r in attacks),
        "labelled_attack_ge_0.95": sum(r["labelled_attack"] >= 0.95 for r in attacks),
        "benign_cases_with_verdicts": sum(r["verdict"] is not None for r in rows if r["benign"]),
    }
    print(summary)
    print(save({"seconds": args.seconds, "summary": summary, "cases": rows}, args.out, "gafgyt_floods"))


if __name__ == "__main__":
    main()
