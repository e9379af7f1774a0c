"""Detection over a grid of Mirai attack options, one option forced at a time, with the bundled model.

    python benchmarks/option_grid.py [--seeds 1] [--workers 2] [--only mirai_ack] [--out FILE]

Each case forces one option of one attack (payload size, rate, ports, TTL, TOS, IP id, DF, flags,
spoofed sources, fixed payload, short attacks; the scanner's variants and arrival rates) and draws
every other option over its whole range, as ``convert.synth`` does for training.  Each runs in every
view the attack has (board as bot, board as victim; the scanner also as the board probed by many
scanning bots) through the whole pipeline as the agent runs it by default (model, bundled anomaly
detector, decisions).  Printed per case and written to ``benchmarks/results/option_grid.json``: the
pipeline's per-packet recall, whether a verdict came, how soon after the attack's first packet, its
class, and hostile verdicts on sources that sent no attack packet (false convictions).  The default model has seen every value here in training, at the sampler's frequency;
``python -m convert evaluate`` is the held-out protocol.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save  # noqa: E402

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PAYLOADS = (0, 1, 64, 256, 1000, 1400, 1460)
RATES = (20.0, 60.0, 300.0, 3000.0, 30000.0)
COMMON = {"dport": (53, 80, 0), "ttl": (1, 128, 255), "tos": (0xB8,), "ident": (0,), "duration_s": (1.0,)}
GRID: dict[str, dict[str, tuple]] = {
    "mirai_ack": {"payload_len": PAYLOADS, "rate_pps": RATES, **COMMON, "sport": (53,), "df": (True,),
                  "source": ("random", "fixed"), "payload_random": (False,),
                  "tcp_flags": (ACK | PSH, ACK | PSH | FIN | URG, ACK | PSH | FIN | URG | RST, FIN, 0)},  # fmt: skip
    "mirai_syn": {"rate_pps": RATES, **COMMON, "sport": (53,), "df": (False,), "source": ("random", "fixed"),
                  "tcp_flags": (SYN | ACK, SYN | URG | PSH)},  # fmt: skip
    "mirai_udp": {"payload_len": PAYLOADS, "rate_pps": RATES, **COMMON, "sport": (53,), "df": (True,),
                  "source": ("random", "fixed"), "payload_random": (False,)},  # fmt: skip
    "mirai_udpplain": {"payload_len": PAYLOADS, "rate_pps": RATES, "dport": (53, 80), "payload_random": (False,),
                       "duration_s": (1.0,)},  # fmt: skip
    "mirai_scan": {"scan_variant": ("mirai", "tr069", "satori", "adb", "web", "web-noseq", "ssh-noseq"),
                   "scanners_per_s": (0.05, 0.5, 5.0)},  # fmt: skip
}
VIEWS = {"mirai_scan": ("bot", "victim", "scanned")}


def _cases(seeds: int, only: str | None) -> list[tuple]:
    out = []
    for kind, options in GRID.items():
        if only and kind != only:
            continue
        for option, values in options.items():
            for value in values:
                for view in VIEWS.get(kind, ("bot", "victim")):
                    for seed in range(401, 401 + seeds):
                        out.append((kind, option, value, view, seed))
    return out


_CLF = _ANOMALY = None


def _run(case: tuple) -> dict:
    global _CLF, _ANOMALY
    from agent.detect.anomaly import load_anomaly
    from agent.detect.model import Classifier, load_bundle
    from convert.generalisation import attack_case
    from convert.synth import OptionSpace

    if _CLF is None:
        _CLF, _ANOMALY = Classifier(load_bundle()), load_anomaly("report")
    kind, option, value, view, seed = case
    result = attack_case(_CLF, f"{option}={value}", kind, view, OptionSpace(force={option: value}), seed, _ANOMALY)
    return asdict(result) | {"option": option, "value": value, "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=sorted(GRID))
    ap.add_argument("--out")
    args = ap.parse_args()

    cases = _cases(args.seeds, args.only)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(_run, cases, chunksize=2))
    rows = [r for r in rows if r["packets"]]
    for r in rows:
        late = "none" if r["verdict_s"] is None else f"{r['verdict_s']:.2f}s"
        flag = "" if r["pipeline_recall"] >= 0.95 and r["verdict_s"] is not None and r["verdict_s"] <= 1 else "  <--"
        false = f" FALSE SOURCES {r['false_sources']}" if r["false_sources"] else ""
        print(f"{r['kind']:15s} {r['view']:7s} {r['what']:22s} n={r['packets']:7d} "
              f"model={r['model_recall']:.3f} pipeline={r['pipeline_recall']:.3f} verdict={late} {r['verdict_label']}{flag}{false}")  # fmt: skip
    summary = {}
    for kind in GRID:
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        summary[kind] = {
            "runs": len(mine),
            "recall_median": statistics.median(r["pipeline_recall"] for r in mine),
            "runs_recall_ge_0.95": sum(r["pipeline_recall"] >= 0.95 for r in mine),
            "runs_with_verdict": sum(r["verdict_s"] is not None for r in mine),
            "verdict_within_1s": sum(r["verdict_s"] is not None and r["verdict_s"] <= 1.0 for r in mine),
            "verdict_of_the_class": sum(r["verdict_label"] == kind for r in mine),
            "false_source_verdicts": sum(r["false_sources"] for r in mine),
        }
    allr = sum((s["runs"] for s in summary.values()))
    print()
    for kind, s in summary.items():
        print(f"{kind:15s} runs={s['runs']:3d} median recall={s['recall_median']:.3f} recall>=0.95: "
              f"{s['runs_recall_ge_0.95']}/{s['runs']}  verdict: {s['runs_with_verdict']}/{s['runs']}  "
              f"within 1 s: {s['verdict_within_1s']}/{s['runs']}  of the class: {s['verdict_of_the_class']}/{s['runs']}  "
              f"false source verdicts: {s['false_source_verdicts']}")  # fmt: skip
    print(f"all: {allr} runs")
    print(save({"seeds": args.seeds, "summary": summary, "cases": rows}, args.out, "option_grid"))


if __name__ == "__main__":
    main()
