"""Benchmark (not a test): live capture of a Mirai-like SYN flood over a veth pair.

A sender process in namespace A pushes 74-byte SYN frames (Mirai's attack_tcp
shape: DF, window 0, MSS/SACK/timestamp/NOP/wscale options, random ports and
sequence numbers) at increasing rates through an AF_PACKET socket; LiveCapture
reads them in namespace B, optionally parsing every batch.  For each rate we
report offered vs captured packets/s, the kernel's drop share and the capture's
own CPU time per frame.  Needs root.

    python benchmarks/live_capture.py --out live_capture.json --rates 20000,100000,0 --parse

Rate 0 means "as fast as one Python sender can go".  The machine's cores are
shared by sender, kernel and capture, so the numbers are a lower bound for a
board whose NIC does the sending.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from agent.capture.interface import LiveCapture  # noqa: E402
from benchmarks.common import save  # noqa: E402
from lab import netns  # noqa: E402  (namespaces and veth pairs)

PACKET_QDISC_BYPASS = 20
SOL_PACKET = 263


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mirai_syn_frames(count: int, src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str) -> list[bytes]:
    """``count`` distinct 74-byte SYNs shaped like Mirai's attack_tcp_syn."""
    rng = random.Random(7)
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    mss, tsval = 1400 + rng.randrange(16), rng.getrandbits(32)  # once per target
    options = struct.pack("!BBH BB BBII B BBB", 2, 4, mss, 4, 2, 8, 10, tsval, 0, 1, 3, 3, 6)
    frames = []
    for _ in range(count):
        tcp = struct.pack("!HHIIBBHHH", rng.getrandbits(16), rng.getrandbits(16), rng.getrandbits(32), 0,
                          10 << 4, 0x02, 0, 0, 0) + options  # fmt: skip
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), rng.getrandbits(16), 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        frames.append(dst_mac + src_mac + b"\x08\x00" + ip + tcp)
    return frames


def run_sender(interface: str, rate: float, seconds: float, src_mac: str, dst_mac: str, src: str, dst: str) -> None:
    """Child process (inside namespace A): send for ``seconds`` at ``rate`` frames/s, print counts as JSON."""
    frames = mirai_syn_frames(4096, bytes.fromhex(src_mac.replace(":", "")),
                              bytes.fromhex(dst_mac.replace(":", "")), src, dst)  # fmt: skip
    assert all(len(f) == 74 for f in frames)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    sock.bind((interface, 0))
    send, n, errors = sock.send, len(frames), 0
    sent, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = sent + 256 if rate <= 0 else min(int(rate * (now - start)), sent + 256)
        if due <= sent:
            time.sleep(min(0.001, (sent + 1) / rate - (now - start)))
            continue
        while sent < due:
            try:
                send(frames[sent % n])
            except OSError:  # ENOBUFS under overload: count and go on
                errors += 1
            sent += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"sent": sent - errors, "send_errors": errors, "seconds": elapsed}))


def from_mac(batch, mac: bytes) -> int:
    """How many frames of the batch carry source MAC ``mac`` (the flood, not the victim's RSTs)."""
    if not len(batch):
        return 0
    starts = batch.offset[:, None] + np.arange(6, 12)
    return int((batch.buf[starts] == np.frombuffer(mac, dtype=np.uint8)).all(axis=1).sum())


def measure(link, rate: float, seconds: float, senders: int, parse, ring: dict) -> dict:
    flood_mac = bytes.fromhex(link.mac_a.replace(":", ""))
    with netns.entered(link.b):
        cap = LiveCapture(link.if_b, **ring).open()
    with cap:
        procs = [
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    link.a.name,
                    sys.executable,
                    __file__,
                    "--sender",
                    "--interface",
                    link.if_a,
                    "--rate",
                    str(rate / senders),
                    "--seconds",
                    str(seconds),
                    "--src-mac",
                    link.mac_a,
                    "--dst-mac",
                    link.mac_b,
                    "--src",
                    link.ip4_a,
                    "--dst",
                    link.ip4_b,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(senders)
        ]
        stop = threading.Event()

        def finish() -> None:
            for proc in procs:
                proc.wait()
            time.sleep(0.3)  # let the last partly filled block time out
            stop.set()

        threading.Thread(target=finish, daemon=True).start()
        frames = flood = batches = decoded = 0
        cpu = time.process_time()
        for batch in cap.batches(stop):
            frames += len(batch)
            flood += from_mac(batch, flood_mac)
            batches += 1
            if parse is not None:
                packets = parse(batch)
                decoded += len(packets[0] if isinstance(packets, tuple) else packets)
        while (batch := cap.read_ready()) is not None:
            frames += len(batch)
            flood += from_mac(batch, flood_mac)
            batches += 1
        cpu = time.process_time() - cpu
        reports = [json.loads(proc.stdout.read()) for proc in procs]
        stats = cap.stats()
    sent = sum(r["sent"] for r in reports)
    send_seconds = max(r["seconds"] for r in reports)
    return {
        "target_pps": rate,
        "senders": senders,
        "offered_pps": round(sent / send_seconds),
        "captured_pps": round(flood / send_seconds),
        "sent": sent,
        "send_errors": sum(r["send_errors"] for r in reports),
        "captured_flood": flood,
        "captured_all": frames,  # with the victim's RST answers
        "kernel_packets": stats.packets,
        "kernel_drops": stats.kernel_drops,
        "drop_share": round(stats.drop_share, 4),
        "ring_freezes": stats.freeze_count,
        "batches": batches,
        "mean_batch": round(frames / batches, 1) if batches else 0,
        "capture_cpu_s": round(cpu, 3),
        "capture_cpu_us_per_frame": round(cpu / frames * 1e6, 3) if frames else None,
        "parsed": decoded if parse is not None else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="results JSON (default benchmarks/results/live_capture.json)")
    ap.add_argument("--rates", default="10000,30000,100000,200000,0", help="frames/s, comma-separated; 0 = max")
    ap.add_argument("--seconds", type=float, default=3.0, help="send time per rate")
    ap.add_argument("--senders", type=int, default=1, help="sender processes sharing each rate")
    ap.add_argument("--parse", action="store_true", help="run agent.capture.parse.parse_frames on every batch")
    ap.add_argument("--block-size", type=int, default=1 << 18)
    ap.add_argument("--block-count", type=int, default=16)
    ap.add_argument("--block-timeout-ms", type=int, default=50)
    # Sender mode (run by the benchmark itself inside namespace A).
    ap.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    for name in ("--interface", "--rate", "--src-mac", "--dst-mac", "--src", "--dst"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sender:
        run_sender(args.interface, float(args.rate), args.seconds, args.src_mac, args.dst_mac, args.src, args.dst)
        return

    if netns.skip_reason():
        sys.exit(f"cannot run: {netns.skip_reason()}")
    parse = None
    if args.parse:
        if importlib.util.find_spec("agent.capture.parse") is None:
            print("agent.capture.parse not available: capturing without parsing", file=sys.stderr)
        else:
            from agent.capture.parse import parse_frames as parse
    ring = {"block_size": args.block_size, "block_count": args.block_count, "block_timeout_ms": args.block_timeout_ms}
    results = []
    with netns.veth_pair() as link:
        for rate in (float(r) for r in args.rates.split(",")):
            row = measure(link, rate, args.seconds, args.senders, parse, ring)
            results.append(row)
            print(
                f"target {rate:>9.0f}/s  offered {row['offered_pps']:>8}/s  captured {row['captured_pps']:>8}/s  "
                f"drops {row['drop_share']:6.1%}  batch {row['mean_batch']:>7}  "
                f"capture CPU {row['capture_cpu_us_per_frame']} us/frame",
                flush=True,
            )
    report = {
        "frame_bytes": 74,
        "ring": ring,
        "snaplen": 256,
        "parse": parse is not None,
        "seconds_per_rate": args.seconds,
        "kernel": platform.release(),
        "loadavg_1min_at_end": os.getloadavg()[0],
        "results": results,
    }
    print(f"wrote {save(report, args.out, 'live_capture')}")


if __name__ == "__main__":
    main()
