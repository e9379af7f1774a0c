"""Where the bundled model errs on its own synthetic test split: confusion matrix, top confusions, per scenario.

    python benchmarks/model_errors.py [--model BUNDLE.json] [--out FILE]

Scores are restricted to the classes each row's protocol allows, as the agent
does.  The test split comes from the dataset cache (``python -m convert train``
builds it; synthesising it takes ~25 minutes the first time).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="bundle JSON (default: the agent's bundled model)")
    ap.add_argument("--out")
    args = ap.parse_args()

    from agent.capture.packets import LABELS
    from agent.detect.model import DEFAULT_BUNDLE, Classifier, load_bundle
    from convert.build_model import cached_splits, default_recipe

    te = cached_splits(default_recipe())["test"]
    pred, _ = Classifier(load_bundle(args.model or DEFAULT_BUNDLE)).predict(te.X, te.allowed())
    cm = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(cm, (te.y, pred), 1)
    errors = int(cm.sum() - np.trace(cm))
    print("rows: true class; columns: predicted", " ".join(LABELS))
    for k, name in enumerate(LABELS):
        print(f"{name:15s}", " ".join(f"{v:7d}" for v in cm[k]), f"  recall {cm[k, k] / max(cm[k].sum(), 1):.4f}")
    print(f"accuracy {np.trace(cm) / cm.sum():.4f}, {errors} errors of {cm.sum()} rows")
    top = sorted(((int(cm[i, j]), LABELS[i], LABELS[j]) for i in range(len(LABELS)) for j in range(len(LABELS)) if i != j),
                 reverse=True)[:8]  # fmt: skip
    for v, a, b in top:
        print(f"  {a:15s} -> {b:15s} {v:7d} ({v / max(errors, 1):.1%} of errors)")
    scenario = np.array([c.split(":")[1] if ":" in c else c for c in te.captures])[te.capture]
    wrong, rows = collections.Counter(scenario[pred != te.y].tolist()), collections.Counter(scenario.tolist())
    print("errors by scenario:")
    for name, n in wrong.most_common(12):
        print(f"  {name:28s} {n:7d} / {rows[name]:7d} ({n / rows[name]:.2%})")
    path = save({
        "model": load_bundle(args.model or DEFAULT_BUNDLE).version, "labels": list(LABELS), "confusion": cm.tolist(),
        "accuracy": float(np.trace(cm) / cm.sum()), "errors": errors,
        "top_confusions": [{"true": a, "predicted": b, "rows": v} for v, a, b in top],
        "errors_by_scenario": {name: {"errors": n, "rows": rows[name]} for name, n in wrong.most_common()},
    }, args.out, "model_errors")  # fmt: skip
    print(f"written to {path}")


if __name__ == "__main__":
    main()
