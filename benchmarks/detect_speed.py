"""End-to-end pcap-mode speed on one core: read, parse, features, int8 inference, decisions.

    python benchmarks/detect_speed.py [--packets 1000000] [--runs 3] [--corpus realistic|mixed|both]
                                      [--profile] [--out FILE]

Prints packets/s for the whole pipeline, the time split per stage, and int8
inference microseconds per packet for every installed runtime at several
batch sizes.  Medians of ``--runs`` runs.

Two corpora (benchmarks/common.py): ``mixed``, the synthesiser's mixed scenario
(one household, a few high-rate single-bot floods), and ``realistic`` (real
benign captures replayed as hundreds of homes, Mirai floods many of them spoofed,
scans from many bots: far more sources and short streams; benchmarks/corpus.py).
With ``both`` (the default) the runs alternate, realistic then mixed, in one
process, so the two are measured side by side.  The JSON's top-level
packets / end_to_end_pps / runs_s / stage_s stay those of the mixed corpus
(when measured); ``corpora`` holds each corpus's.  ``--profile`` runs cProfile
over one realistic-corpus run and prints the top 25 functions by cumulative and
by total time.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import mixed_capture, realistic_capture, save  # noqa: E402


STAGES = ("read", "parse", "features", "inference", "decide")


def run_once(path: Path, bundle) -> tuple[dict[str, float], int, str]:
    """One pass over the capture: seconds per stage, packets, the inference runtime used."""
    from agent.capture.packets import DecodeStats
    from agent.capture.parse import parse_frames
    from agent.capture.pcap import read_capture
    from agent.detect.decide import DecisionLayer
    from agent.detect.model import Classifier
    from agent.detect.protocol_classes import packet_classes
    from agent.features.engine import FeatureExtractor

    clf = Classifier(bundle, runtime="auto", batch_size=1024)
    fe, dec, stats = FeatureExtractor(), DecisionLayer(), DecodeStats()
    spent = dict.fromkeys(STAGES, 0.0)
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
    return spent, n, clf.runtime


def summarise(name: str, path: Path, runs: list[dict[str, float]], n: int, runtime: str) -> dict:
    total = [sum(r.values()) for r in runs]
    med = statistics.median(total)
    split = {s: statistics.median(r[s] for r in runs) for s in STAGES}
    print(f"{name} corpus {path}: {n} packets; runtime {runtime}")
    print(f"  end to end: {n / med:,.0f} packets/s (median of {len(runs)}: {[round(x, 2) for x in total]} s)")
    for s in STAGES:
        print(f"    {s:10s} {split[s]:7.2f} s  {1e6 * split[s] / n:6.2f} us/packet  {100 * split[s] / sum(split.values()):5.1f} %")
    return {"capture": str(path), "packets": n, "end_to_end_pps": n / med, "runs_s": total, "stage_s": split}


def corpus_shape(path: Path) -> dict:
    """What the realistic corpus holds, from the meta JSON its builder wrote beside it."""
    meta_path = path.with_suffix(".meta.json")
    if not meta_path.exists():
        return {}
    meta = json.loads(meta_path.read_text())
    keys = ("homes", "span_s", "packets_per_class", "attack_share", "spoofed_share_of_attacks",
            "distinct_sources", "distinct_streams")
    return {k: meta[k] for k in keys if k in meta}


def profile(path: Path, bundle) -> None:
    prof = cProfile.Profile()
    prof.enable()
    _, n, _ = run_once(path, bundle)
    prof.disable()
    print(f"cProfile of one realistic-corpus run ({n} packets):")
    for order in ("cumulative", "tottime"):
        print(f"--- top 25 by {order} ---")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(order).print_stats(25)
        print(out.getvalue().split("\n", 4)[-1].strip("\n"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--corpus", choices=("realistic", "mixed", "both"), default="both")
    ap.add_argument("--profile", action="store_true", help="cProfile one realistic-corpus run (top 25 functions)")
    ap.add_argument("--out")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from agent.capture.parse import parse_frames
    from agent.capture.pcap import read_capture
    from agent.detect.model import Classifier, installed_runtimes, load_bundle
    from agent.features.engine import FeatureExtractor

    bundle = load_bundle()
    if args.profile:
        profile(realistic_capture(args.packets), bundle)
        return
    names = ("realistic", "mixed") if args.corpus == "both" else (args.corpus,)
    paths = {name: (realistic_capture if name == "realistic" else mixed_capture)(args.packets) for name in names}
    runs: dict[str, list] = {name: [] for name in names}
    n: dict[str, int] = {}
    runtime = ""
    for _ in range(args.runs):
        for name in names:  # alternating: realistic, mixed, realistic, mixed, ...
            spent, n[name], runtime = run_once(paths[name], bundle)
            runs[name].append(spent)
    corpora = {name: summarise(name, paths[name], runs[name], n[name], runtime) for name in names}
    if "realistic" in corpora:
        corpora["realistic"]["shape"] = shape = corpus_shape(paths["realistic"])
        if shape:
            print(f"  realistic corpus: {shape.get('homes')} homes over {shape.get('span_s')} s, "
                  f"{shape.get('distinct_sources'):,} distinct sources, {shape.get('distinct_streams'):,} streams, "
                  f"attacks {100 * shape.get('attack_share', 0):.0f} % (spoofed {100 * shape.get('spoofed_share_of_attacks', 0):.0f} % of them)")
    if len(corpora) == 2:
        ratio = corpora["realistic"]["end_to_end_pps"] / corpora["mixed"]["end_to_end_pps"]
        print(f"realistic / mixed packets/s: {ratio:.2f}")

    first = paths[names[-1]]
    feats = FeatureExtractor().update(next(iter([parse_frames(f) for f in read_capture(first, batch_size=65536)])))
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
    main_corpus = corpora.get("mixed") or corpora[names[0]]
    results = {"corpus": "mixed" if "mixed" in corpora else names[0],
               **{k: main_corpus[k] for k in ("packets", "end_to_end_pps", "runs_s", "stage_s")},
               "inference_us": infer, "corpora": corpora}
    print("written to", save(results, args.out, "detect_speed"))


if __name__ == "__main__":
    main()
