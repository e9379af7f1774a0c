"""``python -m convert train``: datasets -> CNN -> int8 TFLite -> model bundle.

The default bundle committed in ``agent/model/`` is exactly what
``python -m convert train`` writes with its defaults: synthesised traffic
only, fixed seeds, deterministic TensorFlow, so anyone can rebuild it bit for
bit from the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.model import restrict_logits
from agent.progress import Progress

from .dataset import (
    SPLITS,
    Dataset,
    SynthJob,
    add_benign_pcaps,
    add_nbaiot,
    cache_file,
    cap_per_class,
    save_cache,
    synth_rows,
)
from .metrics import score
from .paths import default_output
from .usage import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What the default model is trained on: scenarios x seeds, split by seed.

    Attack scenarios get seeds of their own (``attack_seeds``): every seed draws its own attack options
    (payload size, ports, rate, TTL, ...), so more, shorter captures cover more of what Mirai can send.
    ``options`` (a convert.synth OptionSpace) excludes or forces attack options in every capture.
    ``attack_cap_per_class`` (None: ``cap_per_class``) caps the rows per class of each attack capture: many
    short attack captures with a low cap give as many rows as few long ones, over many more option draws.
    """

    scenarios: tuple[tuple[str, float], ...]
    seeds: dict
    attack_seeds: dict | None = None
    cap_per_class: int = 3000
    seed: int = 7
    options: object = None
    attack_cap_per_class: int | None = None

    def cap(self, job: SynthJob) -> int:
        """Rows per class kept of one capture."""
        attack = job.scenario.startswith("mirai_") and self.attack_cap_per_class is not None
        return self.attack_cap_per_class if attack else self.cap_per_class

    def jobs(self, split: str) -> list[SynthJob]:
        jobs = []
        for name, seconds in self.scenarios:
            attack = name.startswith("mirai_") and self.attack_seeds is not None
            for seed in (self.attack_seeds if attack else self.seeds)[split]:
                jobs.append(SynthJob(name, seed, seconds, self.options))
        return jobs

    def key(self) -> str:
        """What identifies the data this recipe makes (with the code that makes it)."""
        parts = [self.scenarios, self.seeds, self.attack_seeds, self.cap_per_class, self.seed, repr(self.options)]
        if self.attack_cap_per_class is not None:
            parts.append(self.attack_cap_per_class)
        return json.dumps(parts, sort_keys=True)


def training_scenarios(attack_seconds: float = 20.0, benign_seconds: float = 600.0) -> list[tuple[str, float]]:
    """Every registered scenario except the all-in-one "mixed" (kept for demos and benchmarks).

    Benign-only scenarios run longer: some devices send a few packets a minute.
    """
    from .synth import SCENARIOS

    return [
        (name, attack_seconds if name.startswith("mirai_") else benign_seconds) for name in SCENARIOS if name != "mixed"
    ]


def default_recipe() -> Recipe:
    """100 attack captures of 5 s per scenario and split seeds (24 for validation, 32 for test) at 720 rows per class
    each: as many rows as 24 captures of 20 s at 3000, over four times the option draws.  With 24 the model
    learnt each draw's exact sizes and missed the val/test draws between them (int8 test accuracy 0.949)."""
    return Recipe(
        scenarios=tuple(training_scenarios(attack_seconds=5.0)),
        seeds={"train": tuple(range(1, 9)), "val": (101, 102), "test": (201, 202, 203)},
        attack_seeds={"train": tuple(range(1, 101)), "val": tuple(range(101, 125)), "test": tuple(range(201, 233))},
        attack_cap_per_class=720,
    )


def _job_rows(args: tuple[SynthJob, int, int]) -> tuple[str, np.ndarray, np.ndarray]:
    job, cap, seed = args
    X, y, family = synth_rows(job)
    rng = np.random.default_rng([seed, job.seed, zlib.crc32(job.scenario.encode())])
    X, y, family = cap_per_class(X, y, cap, rng, family)
    return job.name, X, y, family


def build_splits(
    recipe: Recipe | None,
    nbaiot: Path | None = None,
    benign_pcaps: list[Path] | None = None,
    workers: int = 2,
) -> dict[str, Dataset]:
    splits = {s: Dataset.empty() for s in SPLITS}
    if recipe is not None:
        total = sum(len(recipe.jobs(split)) for split in SPLITS)
        with Progress("synthesising captures", total, unit="captures") as progress:
            for split in SPLITS:
                progress.stage(f"synthesising captures ({split})")
                tasks = [(job, recipe.cap(job), recipe.seed) for job in recipe.jobs(split)]
                if workers > 1:
                    with multiprocessing.get_context("fork").Pool(workers) as pool:
                        results = list(_counted(pool.imap(_job_rows, tasks), progress))
                else:
                    results = list(_counted(map(_job_rows, tasks), progress))
                for name, X, y, family in results:  # in job order, whatever the worker finished first
                    splits[split].add(X, y, name, family)
    if nbaiot:
        add_nbaiot(splits, nbaiot, cap=recipe.cap_per_class if recipe else 10_000, seed=7)
    if benign_pcaps:
        add_benign_pcaps(splits, benign_pcaps, cap=20_000, seed=7)
    for split, ds in splits.items():
        log.info("%s: %d rows %s", split, len(ds), ds.class_counts())
    return splits


def _counted(items: Iterable, progress: Progress) -> Iterator:
    for item in items:
        progress.update(1)
        yield item


def cached_splits(recipe: Recipe, workers: int = 2) -> dict[str, Dataset]:
    """``build_splits(recipe)``, kept under the cache folder: the synthetic data depends only on the recipe
    and the code that makes it, so the cache key covers the recipe and the synthesiser and feature sources."""
    path = cache_file("datasets", recipe.key())
    if path.exists():
        data = np.load(path, allow_pickle=False)
        splits = {}
        for s in SPLITS:
            captures = [str(c) for c in data[f"{s}_captures"]]
            splits[s] = Dataset(data[f"{s}_X"], data[f"{s}_y"], data[f"{s}_capture"], captures, data[f"{s}_family"])
        log.info("datasets from cache %s", path)
        return splits
    splits = build_splits(recipe, workers=workers)
    arrays = {}
    for s, d in splits.items():
        arrays.update({f"{s}_X": d.X, f"{s}_y": d.y, f"{s}_capture": d.capture, f"{s}_captures": np.array(d.captures),
                       f"{s}_family": d.family})  # fmt: skip
    save_cache(path, arrays)
    return splits


def train_bundle(splits: dict[str, Dataset], out_dir: Path, name: str, seed: int, epochs: int, training: dict) -> dict:
    from .bundle import bundle_metadata, write_bundle
    from .quantize import quant_params, representative_sample, to_int8_tflite
    from .train import train_cnn

    tr, va, te = splits["train"], splits["val"], splits["test"]
    log.info("training the CNN on %d rows (validation %d, test %d), up to %d epochs", len(tr), len(va), len(te), epochs)
    trained = train_cnn(tr.X, tr.y, va.X, va.y, seed=seed, epochs=epochs, allowed_train=tr.allowed(), allowed_val=va.allowed())
    pre = trained.preprocessor
    rep = representative_sample(pre.transform(tr.X), tr.y, seed=seed)
    tflite = to_int8_tflite(trained.model, rep)
    qp = quant_params(tflite)

    from agent.detect.model import Classifier, parse_bundle

    x_test = pre.transform(te.X)
    # Scores restricted to the classes each row's protocol allows, as the agent does.
    float_pred = restrict_logits(trained.model.predict(x_test, batch_size=4096, verbose=0), te.allowed()).argmax(axis=1)
    meta = bundle_metadata(tflite, name, pre, qp, tr.digest(), metrics={}, training=training)
    clf = Classifier(parse_bundle(meta, tflite), runtime="auto")
    start = time.perf_counter()
    int8_pred, _ = clf.predict(te.X, te.allowed())
    int8_seconds = time.perf_counter() - start
    agreement = float((float_pred == int8_pred).mean())
    meta["metrics"] = {
        "test_rows": len(te),
        "float_vs_int8_agreement": agreement,
        "float": score(te.y, float_pred).as_dict(),
        "int8": score(te.y, int8_pred).as_dict(),
        "epochs": trained.epochs,
    }
    # Timings vary from run to run: logged, not stored, so the bundle is the same bit for bit on a rebuild.
    log.info("trained in %.1f s; int8 inference %.2f us/sample", trained.seconds, 1e6 * int8_seconds / max(len(te), 1))
    # A few test rows with their expected int8 output, for `python -m agent doctor` on the board: per class the
    # first row the model gets right with a margin, so that runtimes rounding a step apart agree on its label.
    raw = clf.predict_int8(te.X)
    picks = [_self_test_row(raw, te.y, c) for c in range(len(LABELS)) if (te.y == c).any()]
    meta["self_test"] = {
        "features": te.X[picks].tolist(),
        "int8": clf.predict_int8(te.X[picks]).astype(int).tolist(),
    }
    write_bundle(out_dir, name, tflite, meta)
    log.info("wrote %s/%s.json: %s", out_dir, name, meta["metrics"])
    return meta


SELF_TEST_MARGIN = 4  # int8 steps between a self-test row's top output and the next


def _self_test_row(int8: np.ndarray, y: np.ndarray, c: int) -> int:
    """The first row of class ``c`` whose raw int8 output names ``c`` by ``SELF_TEST_MARGIN`` steps (the self-test
    compares raw outputs, unrestricted; logits of classes the header rules out can tie); else the first of ``c``."""
    top2 = np.sort(int8.astype(int), axis=1)[:, -2:]
    clear = (y == c) & (int8.argmax(axis=1) == c) & (top2[:, 1] - top2[:, 0] >= SELF_TEST_MARGIN)
    return int(np.flatnonzero(clear)[0]) if clear.any() else int(np.flatnonzero(y == c)[0])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(default_output("agent/model", "model")),
                   help="bundle directory (default: %(default)s; the agent's model folder in a source checkout, "
                        "./model in a normal install, whose own model is never overwritten)")
    p.add_argument("--name", default="default", help="bundle name (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="training seed (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs at most (default: %(default)s)")
    p.add_argument("--nbaiot", type=Path, help="directory of N-BaIoT CSVs (N.benign.csv, N.mirai.udp.csv, ...)")
    p.add_argument("--benign-pcap", type=Path, nargs="+", default=[], help="benign captures of your own network")
    p.add_argument("--no-synthetic", action="store_true", help="train only on --nbaiot / --benign-pcap data")
    p.add_argument("--workers", type=int, default=2, help="processes for synthesis and features")


def check_arguments(args: argparse.Namespace) -> None:
    """Everything ``train`` can be told is wrong before it spends minutes synthesising (UsageError, or the
    capture reader's own error for a file that is no capture)."""
    from agent.capture.pcap import read_capture

    from .dataset import nbaiot_files

    if args.no_synthetic and not args.nbaiot:
        raise UsageError("train: --no-synthetic needs --nbaiot (benign captures alone have no attacks to learn)")
    if args.epochs < 1:
        raise UsageError(f"train: --epochs must be at least 1, got {args.epochs}")
    if args.workers < 1:
        raise UsageError(f"train: --workers must be at least 1, got {args.workers}")
    if not args.name or args.name != Path(args.name).name or args.name.startswith("."):
        raise UsageError(f"train: --name {args.name!r} must be a plain file name (no folders, no leading dot)")
    check_writable_folder(Path(args.out))
    if args.nbaiot:
        if not args.nbaiot.is_dir():
            raise UsageError(f"train: --nbaiot {args.nbaiot}: no such directory")
        try:
            files = nbaiot_files(args.nbaiot)
        except ValueError as exc:
            raise UsageError(f"train: --nbaiot {exc}") from None
        for path, _ in files:
            with open(path, "rb"):  # unreadable: PermissionError, one line
                pass
    for path in args.benign_pcap:
        read_capture(path)  # reads the file's header: missing, unreadable or not a capture fails here


def check_writable_folder(folder: Path) -> None:
    """``folder`` (made later if missing, like its missing parents) can take the bundle: its nearest existing
    ancestor is a folder where a file can be created.  Tried for real (root passes every permission check)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"train: --out {folder}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f"train: --out {folder}: cannot write in {existing} ({exc.strerror})") from None


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    recipe = None if args.no_synthetic else default_recipe()
    if recipe is not None and not args.nbaiot and not args.benign_pcap:
        splits = cached_splits(recipe, workers=args.workers)
    else:
        splits = build_splits(recipe, args.nbaiot, args.benign_pcap, workers=args.workers)
    training = {
        "seed": args.seed,
        "synthetic": None if recipe is None else {"scenarios": [list(s) for s in recipe.scenarios], "seeds": recipe.seeds},
        "nbaiot": bool(args.nbaiot),
        "benign_pcaps": [p.name for p in args.benign_pcap],
        "rows": {s: len(d) for s, d in splits.items()},
        "class_counts": splits["train"].class_counts(),
    }
    meta = train_bundle(splits, Path(args.out), args.name, args.seed, args.epochs, training)
    m = meta["metrics"]
    print(
        f"bundle {meta['version']} ({meta['model_bytes']} bytes): int8 accuracy {m['int8']['accuracy']:.4f}, "
        f"G-mean {m['int8']['g_mean']:.4f}, false alarm {m['int8']['false_alarm']:.4%}, "
        f"float/int8 agreement {m['float_vs_int8_agreement']:.4%}"
    )
    return 0
