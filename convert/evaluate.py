"""``python -m convert evaluate``: the baselines and the CNN (float and int8) on the same splits.

Writes ``docs/evaluation.md`` (the table the seed paper reports: accuracy,
precision, recall, false alarm rate, G-mean, training time, inference time per
10,000 samples) and PNG plots beside it: accuracy with recall, with false
alarm and with G-mean for each algorithm, and the int8 CNN's confusion matrix.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.model import restrict_logits

from .baselines import baselines, stratified_subsample
from .metrics import confusion, score
from .paths import default_output, default_shared_data

log = logging.getLogger(__name__)


def _timed_predict(predict, X: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    y = predict(X)
    return y, (time.perf_counter() - start) * 10_000 / max(len(X), 1)


def _one_hot_family(family: np.ndarray) -> np.ndarray:
    return (np.asarray(family)[:, None] == np.arange(3)[None, :]).astype(np.float32)


def evaluate(splits: dict, seed: int, epochs: int, test_rows: int) -> tuple[list[dict], np.ndarray]:
    from agent.detect.model import Classifier, parse_bundle

    from .bundle import bundle_metadata
    from .quantize import quant_params, representative_sample, to_int8_tflite
    from .train import train_cnn

    tr, va, te = splits["train"], splits["val"], splits["test"]
    test_idx = stratified_subsample(te.y, test_rows, seed)
    X_test, y_test = te.X[test_idx], te.y[test_idx]
    allowed_test, family_test = te.allowed()[test_idx], te.family[test_idx]
    results = []

    trained = train_cnn(tr.X, tr.y, va.X, va.y, seed=seed, epochs=epochs, verbose=0,
                        allowed_train=tr.allowed(), allowed_val=va.allowed())  # fmt: skip
    pre = trained.preprocessor
    x_test = pre.transform(X_test)
    pred, t10k = _timed_predict(
        lambda x: restrict_logits(trained.model.predict(x, batch_size=1024, verbose=0), allowed_test).argmax(axis=1), x_test
    )
    results.append({"model": "CNN (float)", "train_rows": len(tr), "train_s": trained.seconds, "infer_ms_10k": t10k * 1e3, **score(y_test, pred).as_dict()})

    start = time.perf_counter()
    tflite = to_int8_tflite(trained.model, representative_sample(pre.transform(tr.X), tr.y, seed=seed))
    quant_s = time.perf_counter() - start
    meta = bundle_metadata(tflite, "eval", pre, quant_params(tflite), tr.digest(), {}, {})
    clf = Classifier(parse_bundle(meta, tflite))
    pred_int8, t10k = _timed_predict(lambda x: clf.predict(x, allowed_test)[0], X_test)  # preprocessing included
    results.append({"model": f"CNN (int8, {len(tflite) / 1024:.1f} KB)", "train_rows": len(tr), "train_s": trained.seconds + quant_s,
                    "infer_ms_10k": t10k * 1e3, **score(y_test, pred_int8).as_dict()})  # fmt: skip
    cnn_confusion = confusion(y_test, pred_int8)

    # The baselines get the protocol as three one-hot inputs: the same knowledge the CNN gets as a restriction.
    flat_train = np.hstack([pre.transform(tr.X).reshape(len(tr), -1), _one_hot_family(tr.family)])
    flat_test = np.hstack([x_test.reshape(len(x_test), -1), _one_hot_family(family_test)])
    for b in baselines():
        idx = stratified_subsample(tr.y, b.max_train, seed)
        model = b.make(seed)
        start = time.perf_counter()
        model.fit(flat_train[idx], tr.y[idx])
        train_s = time.perf_counter() - start
        pred, t10k = _timed_predict(model.predict, flat_test)
        results.append({"model": b.name, "train_rows": len(idx), "train_s": train_s, "infer_ms_10k": t10k * 1e3, **score(y_test, pred).as_dict()})
        log.info("%s: %s", b.name, results[-1])
    return results, cnn_confusion


def markdown_table(results: list[dict], test_rows: int) -> str:
    head = "| algorithm | accuracy | precision | recall | false alarm | G-mean | training rows | training time (s) | inference per 10,000 (ms) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['accuracy']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | {r['false_alarm']:.4%} | "
            f"{r['g_mean']:.4f} | {r['train_rows']:,} | {r['train_s']:.1f} | {r['infer_ms_10k']:.1f} |"
        )
    lines.append(f"\nScored on {test_rows:,} rows of the held-out test scenarios (stratified sample); precision and recall are macro averages.")
    return "\n".join(lines)


def plots(results: list[dict], cm: np.ndarray, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"].split(" (")[0] + (" int8" if "int8" in r["model"] else " float" if "float" in r["model"] else "") for r in results]
    x = np.arange(len(results))
    written = []
    for other, label in (("recall", "recall"), ("false_alarm", "false alarm rate"), ("g_mean", "G-mean")):
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.bar(x - 0.2, [r["accuracy"] for r in results], 0.4, label="accuracy")
        ax2 = ax.twinx() if other == "false_alarm" else ax
        ax2.bar(x + 0.2, [r[other] for r in results], 0.4, label=label, color="tab:orange")
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylim(min(0.9, min(r["accuracy"] for r in results) - 0.01), 1.0)
        if other != "false_alarm":
            ax.set_ylim(min(0.9, min(min(r["accuracy"], r[other]) for r in results) - 0.01), 1.0)
        else:
            ax2.set_ylabel("false alarm rate")
        ax.set_title(f"Accuracy and {label} per algorithm")
        fig.legend(loc="lower right")
        fig.tight_layout()
        path = out / f"accuracy_{other}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=30)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("int8 CNN confusion matrix (test scenarios)")
    fig.tight_layout()
    path = out / "cnn_confusion.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=default_output("docs", "evaluation"),
                   help="where the tables and plots go (default: %(default)s; docs/ in a source checkout, "
                        "./evaluation in a normal install)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--test-rows", type=int, default=30_000, help="stratified test rows scored by every model")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", choices=("all", "baselines", "generalisation"), default="all",
                   help="baselines: the algorithms on the test scenarios (evaluation.md); generalisation: a model "
                        "trained without whole option values and backgrounds, tested on them (generalisation.md)")
    p.add_argument("--data", type=Path, default=default_shared_data(),
                   help="the shared data folder, for the real benign captures (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from .build_model import cached_splits, default_recipe

    if args.only in ("all", "generalisation"):
        from .generalisation import evaluate_generalisation

        print(evaluate_generalisation(args.out, args.seed, args.epochs, args.workers, args.data))
        print("wrote", args.out / "generalisation.md", "and", args.out / "generalisation.png")
        if args.only == "generalisation":
            return 0
    splits = cached_splits(default_recipe(), workers=args.workers)
    results, cm = evaluate(splits, args.seed, args.epochs, args.test_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, min(args.test_rows, len(splits["test"])))
    (args.out / "evaluation.md").write_text("# Evaluation: the int8 CNN against the seed paper's baselines\n\n" + table + "\n")
    for p in plots(results, cm, args.out):
        print("wrote", p)
    print(table)
    return 0
