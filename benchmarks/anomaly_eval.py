"""What the anomaly detector (agent/detect/anomaly.py) catches, what it costs, and how fast it is.

    python benchmarks/anomaly_eval.py [--data ../shared/data] [--model FILE] [--no-loo] [--ablation] [--out FILE]

* real captures in DATA/real: per packet, the share scored > 1; per source (source address), the
  share of sources whose packets are mostly (> 50%) anomalous; and the number of sources that
  would become a verdict: at least 10 packets in a 10 s window (fixed windows from the capture's
  start) with more than half of them anomalous.  On the benign captures every such source is a
  false verdict.
* leave-one-out: for every real benign capture, a detector trained like the default plus every
  *other* real benign capture (``--benign-pcap``), scored on that one.  The default model has seen
  none of them, so its own numbers are already "unseen".
* synthesised Mirai (every ``mirai_*`` scenario, test seeds, 20 s): share of attack packets and of
  benign packets > 1, and sources mostly anomalous; held-out synthesised benign traffic of every
  benign scenario (a seed the model never learned, one hour).
* speed: microseconds per packet of ``score()`` at batch 4,096 (median of 5 runs, one core).
* ``--ablation``: the default recipe with the features' asinh turned off, on synthesised data
  only (the choice the transform was decided by).

Nothing here feeds back into training: the real captures are the measurement.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, save  # noqa: E402

log = logging.getLogger("anomaly_eval")

REAL_ATTACKS = (
    "stopddos_pkt.TCP.synflood.spoofed.pcap",
    "esnet_masscan_tcp_0_1000_20190821.pcap",
    "chrissanders_ppa1e_dosattack.pcap",
)
MIRAI_SEEDS = (201, 202, 203)
BENIGN_SEED = 201
WINDOW = 10.0  # seconds
MIN_PACKETS = 10


def source_ids(packets) -> np.ndarray:
    """One integer per distinct source address (IPv4/IPv6, or ARP sender)."""
    keys = np.stack([packets.src_ip_hi, packets.src_ip_lo], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def per_source(scores: np.ndarray, src: np.ndarray, ts: np.ndarray) -> dict:
    """Per-source figures: mostly anomalous over the capture; would-be verdicts in 10 s windows."""
    odd = scores > 1
    n_src = int(src.max()) + 1 if len(src) else 0
    packets = np.bincount(src, minlength=n_src)
    anomalous = np.bincount(src, weights=odd, minlength=n_src)
    mostly = anomalous > 0.5 * packets
    window = np.floor((ts - ts.min()) / WINDOW).astype(np.int64) if len(ts) else ts.astype(np.int64)
    pair = src * (int(window.max()) + 1 if len(window) else 1) + window
    cells, inverse = np.unique(pair, return_inverse=True)
    cell_packets = np.bincount(inverse)
    cell_odd = np.bincount(inverse, weights=odd)
    hot = (cell_packets >= MIN_PACKETS) & (cell_odd > 0.5 * cell_packets)
    flagged = np.unique(cells[hot] // (int(window.max()) + 1 if len(window) else 1))
    return {
        "sources": n_src,
        "sources_mostly_anomalous": int(mostly.sum()),
        "share_sources_mostly_anomalous": float(mostly.mean()) if n_src else 0.0,
        "sources_verdict": int(len(flagged)),  # >= 10 packets in a 10 s window, > 50% anomalous
    }


def capture(path: Path):
    """(features, packets) of every decoded packet of a capture, through the agent's own pipeline."""
    from agent.capture.packets import DecodeStats, PacketBatch
    from agent.pipeline import features_from_capture

    batches = list(features_from_capture(path, DecodeStats()))
    X = np.concatenate([fb.features for fb in batches])
    return X, PacketBatch.concat([fb.packets for fb in batches])


def evaluate_real(det, real: Path, benign_files: list[Path]) -> list[dict]:
    rows = []
    for name in list(REAL_ATTACKS) + [p.name for p in benign_files]:
        path = real / name
        if not path.exists():
            log.warning("%s: missing, skipped", path)
            continue
        X, packets = capture(path)
        scores = det.score(X)
        rows.append({"capture": name, "kind": "attack" if name in REAL_ATTACKS else "benign", "packets": len(X),
                     "share_anomalous": float((scores > 1).mean()), "median_score": float(np.median(scores)),
                     **per_source(scores, source_ids(packets), packets.ts)})  # fmt: skip
    return rows


def leave_one_out(real: Path, benign_files: list[Path]) -> list[dict]:
    from convert.anomaly import AnomalyRecipe, build

    rows = []
    for held in benign_files:
        others = [p for p in benign_files if p != held]
        started = time.perf_counter()
        det = build(AnomalyRecipe(), others)
        X, packets = capture(held)
        scores = det.score(X)
        rows.append({"capture": held.name, "trained_with": [p.name for p in others], "packets": len(X),
                     "share_anomalous": float((scores > 1).mean()), **per_source(scores, source_ids(packets), packets.ts),
                     "train_seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        log.info("leave-one-out %s: %.3f%% anomalous", held.name, 100 * rows[-1]["share_anomalous"])
    return rows


def synthesised(name: str, seed: int, seconds: float):
    from agent.capture.packets import DecodeStats
    from agent.capture.parse import parse_frames
    from agent.features.engine import FeatureExtractor
    from convert.synth import synthesise

    synth = synthesise(name, seconds, seed)
    packets = parse_frames(synth.frames, DecodeStats())
    X = FeatureExtractor().update(packets)
    return X, np.asarray(synth.labels)[packets.index], packets


def evaluate_mirai(det, seconds: float) -> list[dict]:
    """Per Mirai scenario: attack and benign packets > 1, the attack packets of sources that sent at least
    10 packets (not spoofed one-offs, which look like any stranger's first packet), and sources mostly > 1."""
    from convert.synth import SCENARIOS

    rows = []
    for name in [n for n in SCENARIOS if n.startswith("mirai_")]:
        c = dict.fromkeys(("attack", "attack_odd", "steady", "steady_odd", "benign", "benign_odd",
                           "attack_sources", "attack_sources_mostly", "benign_sources", "benign_sources_mostly"), 0)  # fmt: skip
        for seed in MIRAI_SEEDS:
            X, y, packets = synthesised(name, seed, seconds)
            odd = det.score(X) > 1
            src = source_ids(packets)
            counts = np.bincount(src)
            steady = (counts[src] >= MIN_PACKETS) & (y > 0)
            mostly = np.bincount(src, weights=odd) > 0.5 * counts
            attacker = np.bincount(src, weights=y > 0, minlength=len(counts)) > 0
            for key, sel in (("attack", y > 0), ("steady", steady), ("benign", y == 0)):
                c[key] += int(sel.sum())
                c[key + "_odd"] += int(odd[sel].sum())
            c["attack_sources"] += int(attacker.sum())
            c["attack_sources_mostly"] += int((mostly & attacker).sum())
            c["benign_sources"] += int((~attacker).sum())
            c["benign_sources_mostly"] += int((mostly & ~attacker).sum())
        rows.append({"scenario": name, **c,
                     "share_attack_anomalous": c["attack_odd"] / max(c["attack"], 1),
                     "share_steady_attack_anomalous": c["steady_odd"] / max(c["steady"], 1),
                     "share_benign_anomalous": c["benign_odd"] / max(c["benign"], 1)})  # fmt: skip
        log.info("%s: %.1f%% of attack packets anomalous", name, 100 * rows[-1]["share_attack_anomalous"])
    return rows


def evaluate_benign(det, seconds: float) -> list[dict]:
    from convert.anomaly import benign_scenarios

    rows = []
    for name in benign_scenarios():
        X, y, packets = synthesised(name, BENIGN_SEED, seconds)
        scores = det.score(X)
        rows.append({"scenario": name, "seed": BENIGN_SEED, "seconds": seconds, "packets": len(X),
                     "share_anomalous": float((scores > 1).mean()),
                     **per_source(scores, source_ids(packets), packets.ts)})  # fmt: skip
    return rows


def speed(det, runs: int = 5, batch: int = 4096, batches: int = 64) -> dict:
    X, _, _ = synthesised("smart_home", BENIGN_SEED, 3600.0)
    X = X[: batch * batches]
    det.score(X[:batch])  # warm up (the scorer compiles its float32 parameters once)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for lo in range(0, len(X), batch):
            det.score(X[lo : lo + batch])
        times.append((time.perf_counter() - start) / len(X) * 1e6)
    return {"batch": batch, "packets_per_run": len(X), "us_per_packet": statistics.median(times), "runs_us_per_packet": times}


def ablation() -> list[dict]:
    """The default recipe with and without the asinh, judged on synthesised data only."""
    from agent.detect.anomaly import AnomalyDetector
    from convert.anomaly import AnomalyRecipe, benign_scenarios, cached_synthetic_rows
    from convert.synth import SCENARIOS

    recipe = AnomalyRecipe()
    learn, threshold = cached_synthetic_rows(recipe)
    held_out = np.concatenate([synthesised(n, BENIGN_SEED, 3600.0)[0] for n in benign_scenarios()])
    attacks = []
    for name in [n for n in SCENARIOS if n.startswith("mirai_")]:
        X, y, _ = synthesised(name, MIRAI_SEEDS[0], 20.0)
        attacks.append((name, X[y > 0]))
    rows = []
    for transform in ("asinh", "none"):
        det = AnomalyDetector(seed=recipe.seed, transform=transform)
        for _ in range(recipe.epochs):
            det.learn(learn)
        det.fix_threshold(threshold, recipe.quantile, recipe.margin)
        caught = {name: float((det.score(X) > 1).mean()) for name, X in attacks}
        rows.append({"transform": transform, "held_out_benign_anomalous": float((det.score(held_out) > 1).mean()),
                     "mean_attack_anomalous": float(np.mean(list(caught.values()))), "attack_anomalous": caught})  # fmt: skip
    return rows


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, help="anomaly model JSON (default: the agent's)")
    ap.add_argument("--no-loo", action="store_true", help="skip the leave-one-out trainings (about 2 minutes each)")
    ap.add_argument("--ablation", action="store_true", help="also train the recipe without asinh (synthesised data only)")
    ap.add_argument("--attack-seconds", type=float, default=20.0)
    ap.add_argument("--benign-seconds", type=float, default=3600.0)
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from agent.detect.anomaly import DEFAULT_MODEL, AnomalyDetector

    model = args.model or DEFAULT_MODEL
    det = AnomalyDetector.load(model)
    results: dict = {"model": str(model), "model_bytes": model.stat().st_size, "autoencoders": len(det.groups),
                     "threshold": det.threshold}  # fmt: skip
    real = args.data / "real"
    benign_files = sorted(p for p in real.glob("*.pcap") if p.name not in REAL_ATTACKS) if real.is_dir() else []

    if real.is_dir():
        results["real"] = evaluate_real(det, real, benign_files)
        print(f"\nReal captures (default model, trained on none of them; threshold {det.threshold:.5f})")
        print(f"{'capture':44} {'kind':6} {'packets':>8} {'> 1':>8} {'sources':>8} {'mostly > 1':>10} {'verdicts':>8}")
        for r in results["real"]:
            print(f"{r['capture']:44} {r['kind']:6} {r['packets']:8d} {pct(r['share_anomalous']):>8} {r['sources']:8d} "
                  f"{r['sources_mostly_anomalous']:10d} {r['sources_verdict']:8d}")  # fmt: skip
        if not args.no_loo:
            results["leave_one_out"] = leave_one_out(real, benign_files)
            print("\nLeave-one-out: trained on the synthesised traffic and every other real benign capture")
            print(f"{'capture':44} {'packets':>8} {'> 1':>8} {'mostly > 1':>10} {'verdicts':>8}")
            for r in results["leave_one_out"]:
                print(f"{r['capture']:44} {r['packets']:8d} {pct(r['share_anomalous']):>8} {r['sources_mostly_anomalous']:10d} "
                      f"{r['sources_verdict']:8d}")  # fmt: skip
    else:
        print(f"{real}: not found; real captures skipped")

    results["mirai"] = evaluate_mirai(det, args.attack_seconds)
    print(f"\nSynthesised Mirai (seeds {', '.join(map(str, MIRAI_SEEDS))}, {args.attack_seconds:g} s each)")
    print(f"{'scenario':24} {'attack > 1':>10} {'of sources >= 10 pkts':>22} {'benign > 1':>10} "
          f"{'attack sources mostly > 1':>26} {'benign sources mostly > 1':>26}")  # fmt: skip
    for r in results["mirai"]:
        steady = f"{pct(r['share_steady_attack_anomalous'])} of {r['steady']}"
        print(f"{r['scenario']:24} {pct(r['share_attack_anomalous']):>10} {steady:>22} "
              f"{pct(r['share_benign_anomalous']):>10} "
              f"{r['attack_sources_mostly']:>12d} of {r['attack_sources']:<11d} "
              f"{r['benign_sources_mostly']:>12d} of {r['benign_sources']:<11d}")  # fmt: skip

    results["benign_synthetic"] = evaluate_benign(det, args.benign_seconds)
    print(f"\nHeld-out synthesised benign traffic (seed {BENIGN_SEED}, {args.benign_seconds:g} s)")
    print(f"{'scenario':24} {'packets':>8} {'> 1':>8} {'sources':>8} {'mostly > 1':>10} {'verdicts':>8}")
    for r in results["benign_synthetic"]:
        print(f"{r['scenario']:24} {r['packets']:8d} {pct(r['share_anomalous']):>8} {r['sources']:8d} "
              f"{r['sources_mostly_anomalous']:10d} {r['sources_verdict']:8d}")  # fmt: skip

    results["speed"] = speed(det)
    s = results["speed"]
    print(f"\nscore(): {s['us_per_packet']:.3f} us/packet at batch {s['batch']} (median of {len(s['runs_us_per_packet'])} "
          f"runs); model file {results['model_bytes']} bytes, {results['autoencoders']} autoencoders")  # fmt: skip

    if args.ablation:
        results["ablation"] = ablation()
        print("\nAblation (synthesised data only): held-out benign > 1; attack packets > 1, mean over the Mirai scenarios")
        for r in results["ablation"]:
            each = " ".join(f"{k.replace('mirai_', '')}={100 * v:.0f}%" for k, v in r["attack_anomalous"].items())
            print(f"  transform {r['transform']:6} benign {pct(r['held_out_benign_anomalous']):>8}  "
                  f"attacks {pct(r['mean_attack_anomalous']):>8}  {each}")  # fmt: skip

    print("wrote", save(results, args.out, "anomaly_eval"))


if __name__ == "__main__":
    main()
