"""Per-packet labels against the truth on the realistic corpus: the model alone, the pipeline as it goes (a verdict's
class once its source or flood stands convicted, else the model's), and the pipeline in hindsight
(``Detection.final_labels``, agent/detect/hindsight.py).

    python benchmarks/per_packet_labels.py [--packets 1000000] [--out FILE]

The corpus (benchmarks/corpus.py) keeps every record's class beside it.  Its replies to attacks (a board's RSTs to
a scanner) count as benign, the real non-Mirai attacks as their closest class (spoofed SYN flood and DoS: syn;
masscan: scan).  Printed and written to benchmarks/results/per_packet_labels.json: per class, its packets and the
share of them each labelling gives the class (recall) and any attack class; for benign packets, the share called an
attack (false alarms); per attack class, the share of the packets given the class that are of it (precision).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import realistic_capture, save  # noqa: E402

# The corpus's classes that are not the agent's own, as the class closest to them.
CLOSEST = {"reply": "benign", "real:syn_spoofed": "mirai_syn", "real:dos": "mirai_syn", "real:scan": "mirai_scan"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--out")
    args = ap.parse_args()

    from agent.capture.packets import VERDICT_LABELS
    from agent.detect.anomaly import load_anomaly
    from agent.detect.model import Classifier, load_bundle
    from agent.pipeline import detect_capture
    from benchmarks.corpus import labels_path

    path = realistic_capture(args.packets)
    corpus_classes = list(json.loads(path.with_suffix(".meta.json").read_text())["packets_per_class"])
    as_verdict = np.array([VERDICT_LABELS.index(CLOSEST.get(c, c)) for c in corpus_classes])
    result = detect_capture(path, Classifier(load_bundle()), anomaly=load_anomaly("report"))
    truth = as_verdict[np.load(labels_path(path))[result.index]]
    online = np.where(result.flooded >= 0, result.flooded, result.decided)
    labellings = {"model": result.labels, "as it goes": np.where(online >= 0, online, result.labels),
                  "hindsight": result.final_labels()}  # fmt: skip
    benign = VERDICT_LABELS.index("benign")
    rows = []
    for k, name in enumerate(VERDICT_LABELS):
        mine = truth == k
        if not mine.any():
            continue
        row = {"class": name, "packets": int(mine.sum())}
        for how, labels in labellings.items():
            if k == benign:
                row[f"{how}: false alarms"] = float((labels[mine] != benign).mean())
            else:
                row[f"{how}: recall"] = float((labels[mine] == k).mean())
                row[f"{how}: any attack"] = float((labels[mine] != benign).mean())
                given = labels == k
                row[f"{how}: precision"] = float((truth[given] == k).mean()) if given.any() else float("nan")
        rows.append(row)
    print(f"{path.name}: {len(truth):,} packets")
    for row in rows:
        print(f"  {row['class']:15s} {row['packets']:9,d}  "
              + "  ".join(f"{key.split(': ')[0]} {key.split(': ')[1]} {value:.4f}" for key, value in row.items()
                          if key not in ("class", "packets")))  # fmt: skip
    print(save({"capture": str(path), "packets": len(truth), "classes": rows}, args.out, "per_packet_labels"))


if __name__ == "__main__":
    main()
