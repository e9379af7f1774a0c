"""Packets/s of parse + features on one core: the batch engine against the scalar reference.

    python benchmarks/features_speed.py [--packets 1000000] [--runs 3] [--out FILE]

Both engines read the same cached 1,000,000-packet mixed capture (synthesised
once); frames are loaded into memory first so disk speed is not measured.
The scalar reference runs on the same parsed packets, one packet at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_of, mixed_capture, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference-packets", type=int, default=0, help="limit the scalar run (0: the whole capture)")
    ap.add_argument("--out")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    from agent.capture.packets import DecodeStats, PacketBatch
    from agent.capture.parse import parse_frames
    from agent.capture.pcap import read_capture
    from agent.features.engine import FeatureExtractor
    from agent.features.reference import ReferenceExtractor

    path = mixed_capture(args.packets)
    frames = list(read_capture(path, batch_size=65536))
    n = sum(len(f) for f in frames)
    print(f"capture {path}: {n} packets")

    def parse_only():
        return [parse_frames(f, DecodeStats()) for f in frames]

    def batch_engine():
        fe = FeatureExtractor()
        for f in frames:
            fe.update(parse_frames(f, DecodeStats()))

    t_parse, _ = median_of(args.runs, parse_only)
    t_batch, runs = median_of(args.runs, batch_engine)
    packets = PacketBatch.concat(parse_only())
    if args.reference_packets:
        packets = packets.take(slice(0, args.reference_packets))
    start = time.perf_counter()
    ReferenceExtractor().process(packets)
    t_ref = time.perf_counter() - start
    ref_pps = len(packets) / t_ref
    results = {
        "capture": str(path),
        "packets": n,
        "parse_pps": n / t_parse,
        "batch_pps": n / t_batch,
        "batch_runs_s": runs,
        "reference_packets": len(packets),
        "reference_pps": ref_pps,
        "speedup": (n / t_batch) / ref_pps,
    }
    print(f"{'stage':38s} {'packets/s':>12s}")
    print(f"{'parse only (batch)':38s} {results['parse_pps']:12,.0f}")
    print(f"{'parse + features, batch engine':38s} {results['batch_pps']:12,.0f}")
    print(f"{'parse + features, scalar reference':38s} {ref_pps:12,.0f}")
    print(f"speed-up: {results['speedup']:.1f}x   (median of {args.runs} batch runs: {[round(r, 2) for r in runs]} s)")
    print("written to", save(results, args.out, "features_speed"))


if __name__ == "__main__":
    main()
