"""``python -m agent demo``: detect Mirai in the capture bundled with the agent.

The capture (``agent/samples/mirai_demo.pcap``) is synthesised: benign
smart-home traffic with each Mirai variant over it in turn.  Its labels file
lets the demo say, next to the verdicts, how the per-packet classes compare
with the truth.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .decide import DecisionLayer
from .model import Classifier, load_bundle
from .packets import LABELS
from .pipeline import detect_capture

SAMPLE = Path(__file__).with_name("samples") / "mirai_demo.pcap"


def read_labels(capture: Path) -> dict[int, int] | None:
    path = capture.with_name(capture.stem + ".labels.csv")
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        return {int(row["index"]): LABELS.index(row["label"]) for row in csv.DictReader(fh)}


def run_demo(capture: Path = SAMPLE, model: str | None = None, runtime: str = "auto") -> int:
    bundle = load_bundle(model) if model else load_bundle()
    classifier = Classifier(bundle, runtime=runtime)
    result = detect_capture(capture, classifier, DecisionLayer())
    print(f"capture {capture.name}: {result.packets} packets, model {bundle.version} on {classifier.runtime}")
    print(f"\n{len(result.verdicts)} verdicts:")
    for v in result.verdicts:
        print("  " + v.describe())
    truth = read_labels(capture)
    if truth is not None:
        y = np.array([truth[i] for i in result.index.tolist()])
        print("\nper-packet classes against the capture's labels:")
        print(f"  {'true class':15s} {'packets':>9s} {'correct':>8s} {'called attack':>14s}")
        for k, name in enumerate(LABELS):
            sel = y == k
            if sel.any():
                correct = (result.labels[sel] == k).mean()
                attack = (result.labels[sel] != 0).mean()
                print(f"  {name:15s} {sel.sum():9d} {correct:8.2%} {attack:14.2%}")
    return 0
