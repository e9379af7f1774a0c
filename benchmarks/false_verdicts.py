"""False verdicts per device-day on long synthesised benign traffic of every benign scenario.

    python benchmarks/false_verdicts.py [--hours 2] [--seeds 3] [--out FILE]

Every benign scenario (the registered scenarios without an attack) is synthesised for ``--hours`` with
several seeds and run through the whole pipeline as the agent runs it by default (features, model, the
bundled anomaly detector, decisions).  Every verdict on this traffic is a false one.  Device-days count every host of the
scenario's LAN (devices + the board) over the synthesised time.  Hostile verdicts (model and header
basis: the ones that block) and anomaly verdicts (reported only) are counted apart.  Per packet, the packets the
model alone calls an attack and the ones the pipeline does (``Detection.final_labels``: in hindsight, an attack only
where the decision stage convicted someone the packet belongs to) are false alarms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save  # noqa: E402


def benign_scenarios() -> list[str]:
    from convert.synth import SCENARIOS

    return [name for name in SCENARIOS if not name.startswith("mirai_") and name != "mixed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()

    from agent.capture.packets import DecodeStats
    from agent.capture.parse import parse_frames
    from agent.detect.anomaly import load_anomaly
    from agent.detect.decide import DecisionLayer
    from agent.detect.model import Classifier, load_bundle
    from agent.pipeline import detect_packets, split_packets
    from convert.synth import synthesise

    clf = Classifier(load_bundle())
    anomaly = load_anomaly("report")  # as the agent runs by default
    rows = []
    for name in benign_scenarios():
        for seed in range(1000, 1000 + args.seeds):
            synth = synthesise(name, args.hours * 3600.0, seed)
            devices = 1 + len(synth.meta["devices"])
            stats = DecodeStats()
            packets = parse_frames(synth.frames, stats)
            result = detect_packets(split_packets(packets), stats, clf, DecisionLayer(), keep_per_packet=True,
                                    anomaly=anomaly)  # fmt: skip
            hostile = [v for v in result.verdicts if v.basis != "anomaly"]
            odd = [v for v in result.verdicts if v.basis == "anomaly"]
            device_days = devices * args.hours / 24.0
            model_alarms, pipeline_alarms = int((result.labels != 0).sum()), int((result.final_labels() != 0).sum())
            rows.append({"scenario": name, "seed": seed, "packets": result.packets, "devices": devices,
                         "device_days": device_days, "hostile_verdicts": len(hostile), "anomaly_verdicts": len(odd),
                         "model_false_alarms": model_alarms, "pipeline_false_alarms": pipeline_alarms,
                         "verdicts": [v.describe() for v in result.verdicts[:10]]})  # fmt: skip
            print(f"{name:16s} seed {seed}: {result.packets:9,d} packets, {devices:3d} hosts, "
                  f"{len(hostile)} hostile, {len(odd)} anomaly verdicts; packets called an attack: model "
                  f"{model_alarms:,}, pipeline {pipeline_alarms:,}", flush=True)  # fmt: skip
    total_days = sum(r["device_days"] for r in rows)
    hostile = sum(r["hostile_verdicts"] for r in rows)
    odd = sum(r["anomaly_verdicts"] for r in rows)
    packets = sum(r["packets"] for r in rows)
    model_rate = sum(r["model_false_alarms"] for r in rows) / max(packets, 1)
    pipeline_rate = sum(r["pipeline_false_alarms"] for r in rows) / max(packets, 1)
    print(f"\n{total_days:.1f} device-days: {hostile} hostile verdicts ({hostile / total_days:.3f} per device-day), "
          f"{odd} anomaly verdicts ({odd / total_days:.3f} per device-day); per packet false alarms of "
          f"{packets:,}: model {model_rate:.4%}, pipeline {pipeline_rate:.4%}")  # fmt: skip
    path = save({"hours": args.hours, "seeds": args.seeds, "device_days": total_days,
                 "hostile_per_device_day": hostile / total_days, "anomaly_per_device_day": odd / total_days,
                 "packets": packets, "model_false_alarm_rate": model_rate, "pipeline_false_alarm_rate": pipeline_rate,
                 "runs": rows}, args.out, "false_verdicts")  # fmt: skip
    print("wrote", path)


if __name__ == "__main__":
    main()
