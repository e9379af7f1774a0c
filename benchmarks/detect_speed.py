"""End-to-end pcap-mode speed on one core: read, parse, features, int8 inference, decisions.

    python benchmarks/detect_speed.py [--packets 1000000] [--runs 3] [--out FILE]

Prints packets/s for the whole pipeline, the time split per stage, and int8
inference microseconds per packet for every installed runtime at several
batch sizes.  Medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import mixed_capture, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from agent.capture.packets import DecodeStats
    from agent.capture.parse import parse_frames
    from agent.capture.pcap import read_capture
    from agent.detect.decide import DecisionLayer
    from agent.detect.model import Classifier, installed_runtimes, load_bundle
    from agent.detect.protocol_classes import packet_classes
    from agent.features.engine import FeatureExtractor

    path = mixed_capture(args.packets)
    bundle = load_bundle()
    stages = ("read", "parse", "features", "inference", "decide")
    runs = []
    n = 0
    for _ in range(args.runs):
        clf = Classifier(bundle, runtime="auto", batch_size=1024)
        fe, dec, stats = FeatureExtractor(), DecisionLayer(), DecodeStats()
        spent = dict.fromkeys(stages, 0.0)
        n = 0
        t = time.perf_counter()
        it = read_capture(path, stats=stats)
        while True:
            frames = next(it, None)
            now = time.perf_counter()
            spent["read"] += now - t
            if frames is None:
                break
            t = now
            packets = parse_frames(frames, stats)
            now = time.perf_counter(); spent["parse"] += now - t; t = now  # noqa: E702
            feats = fe.update(packets)
            now = time.perf_counter(); spent["features"] += now - t; t = now  # noqa: E702
            scores = clf.predict_scores(feats, packet_classes(packets, feats))
            now = time.perf_counter(); spent["inference"] += now - t; t = now  # noqa: E702
            dec.update(packets, scores, feats)
            now = time.perf_counter(); spent["decide"] += now - t; t = now  # noqa: E702
            n += len(packets)
        runs.append(spent)
    total = [sum(r.values()) for r in runs]
    med = statistics.median(total)
    split = {s: statistics.median(r[s] for r in runs) for s in stages}
    print(f"capture {path}: {n} packets; runtime {clf.runtime}")
    print(f"end to end: {n / med:,.0f} packets/s (median of {args.runs}: {[round(x, 2) for x in total]} s)")
    for s in stages:
        print(f"  {s:10s} {split[s]:7.2f} s  {1e6 * split[s] / n:6.2f} us/packet  {100 * split[s] / sum(split.values()):5.1f} %")

    feats = FeatureExtractor().update(next(iter([parse_frames(f) for f in read_capture(path, batch_size=65536)])))
    infer = {}
    for rt in installed_runtimes():
        for batch in (1, 64, 256, 1024):
            clf = Classifier(bundle, runtime=rt, batch_size=batch)
            x = feats[: max(batch * 20, 4096)] if batch > 1 else feats[:2000]
            clf.predict_int8(x[:batch])  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                clf.predict_int8(x)
                times.append((time.perf_counter() - start) / len(x))
            infer[f"{rt}@{batch}"] = 1e6 * statistics.median(times)
            print(f"  int8 inference {rt:15s} batch {batch:5d}: {infer[f'{rt}@{batch}']:7.2f} us/packet (incl. preprocessing)")
    print("written to", save({"packets": n, "end_to_end_pps": n / med, "runs_s": total, "stage_s": split, "inference_us": infer}, args.out, "detect_speed"))


if __name__ == "__main__":
    main()
