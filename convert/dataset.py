"""Labelled feature datasets for training and evaluation.

Sources, all turned into (features, label, capture id) rows with the agent's
own feature engine:

* synthesised scenarios (``convert.synth``), one capture per (scenario, seed);
* public N-BaIoT CSVs in their own naming (``N.benign.csv``, ``N.mirai.ack.csv``
  ... ``N.mirai.udpplain.csv``), via ``--nbaiot DIR``;
* benign captures of the user's own network, via ``--benign-pcap FILE...``.

Splits are made per capture (and per seed), never by sampling packets of one
capture into several splits: neighbouring packets share stream state, so a
random split would leak the test set into training.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import agent
from agent.capture.packets import LABELS, DecodeStats
from agent.capture.parse import parse_frames
from agent.detect.protocol_classes import FAMILY_ANY, allowed_classes, protocol_family
from agent.features.columns import COLUMNS
from agent.features.csv_file import read_feature_csv
from agent.features.engine import FeatureExtractor
from agent.pipeline import features_from_capture
from agent.util import atomic_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The agent modules synthesised rows depend on (a change to any of them makes a new cache file).
FEATURE_MODULES = ("capture/packets", "capture/pcap", "capture/parse", "util", "features/columns", "features/decayed_sums",
                   "features/stream_table", "features/engine", "detect/protocol_classes")  # fmt: skip


def cache_file(folder: str, recipe_key: str) -> Path:
    """Where rows synthesised for a recipe are kept (under $IOTGUARD_CACHE or ~/.cache/iotguard).  The name
    hashes the recipe and every source the rows depend on (the synthesiser, the agent's feature modules,
    this module), so a stale cache is never read."""
    import os

    from . import synth

    h = hashlib.sha256(recipe_key.encode())
    features = [Path(agent.__file__).parent / f"{m}.py" for m in FEATURE_MODULES]
    for src in sorted(Path(synth.__file__).parent.glob("*.py")) + features + [Path(__file__)]:
        h.update(src.read_bytes())
    cache = Path(os.environ.get("IOTGUARD_CACHE", Path.home() / ".cache" / "iotguard"))
    return cache / folder / f"{h.hexdigest()[:16]}.npz"


def save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a cache file whole or not at all (a killed run leaves no half file to be read later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, mode=0o644) as tmp:  # the temporary name ends in .npz too: savez keeps it
        np.savez(tmp, **arrays)


@dataclass
class Dataset:
    X: np.ndarray  # (n, 115) float64 raw features
    y: np.ndarray  # (n,) int64 label index into LABELS
    capture: np.ndarray  # (n,) int64 index into ``captures``
    captures: list[str] = field(default_factory=list)
    family: np.ndarray | None = None  # (n,) int8 protocol family (agent.detect.evidence; -1: unknown, CSV rows)

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = np.full(len(self.y), FAMILY_ANY, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls) -> "Dataset":
        return cls(np.zeros((0, len(COLUMNS))), np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    def add(self, X: np.ndarray, y: np.ndarray, name: str, family: np.ndarray | None = None) -> None:
        self.X = np.concatenate([self.X, X])
        self.y = np.concatenate([self.y, np.asarray(y, dtype=np.int64)])
        self.capture = np.concatenate([self.capture, np.full(len(y), len(self.captures), dtype=np.int64)])
        fam = np.full(len(y), FAMILY_ANY, dtype=np.int8) if family is None else np.asarray(family, dtype=np.int8)
        self.family = np.concatenate([self.family, fam])
        self.captures.append(name)

    def allowed(self) -> np.ndarray:
        """(n, 6) bool: the classes each row's protocol allows (the agent restricts the model's scores so)."""
        return allowed_classes(self.family)

    def digest(self) -> str:
        """sha256 over features, labels and capture names: identifies the training data in the bundle."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.X).tobytes())
        h.update(self.y.tobytes())
        h.update("\n".join(self.captures).encode())
        return h.hexdigest()

    def class_counts(self) -> dict[str, int]:
        return {label: int((self.y == i).sum()) for i, label in enumerate(LABELS)}


def cap_per_class(X: np.ndarray, y: np.ndarray, cap: int, rng: np.random.Generator, *more: np.ndarray) -> tuple:
    """At most ``cap`` rows per class from one capture (features were computed on the whole capture);
    ``more``: further per-row arrays cut the same way."""
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        keep.append(idx)
    keep = np.sort(np.concatenate(keep))
    return (X[keep], y[keep], *(m[keep] for m in more))


@dataclass(frozen=True)
class SynthJob:
    scenario: str
    seed: int
    seconds: float
    options: object = None  # a convert.synth OptionSpace: attack options excluded or forced (None: all)

    @property
    def name(self) -> str:
        return f"synth:{self.scenario}:seed{self.seed}:{self.seconds:g}s"


def synth_rows(job: SynthJob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and protocol families of every decoded packet of one synthesised capture."""
    from .synth import synthesise

    synth = synthesise(job.scenario, job.seconds, job.seed, options=job.options)
    packets = parse_frames(synth.frames, DecodeStats())
    X = FeatureExtractor().update(packets)
    return X, np.asarray(synth.labels, dtype=np.int64)[packets.index], protocol_family(packets)


def synth_features(job: SynthJob) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every decoded packet of one synthesised capture."""
    X, y, _ = synth_rows(job)
    return X, y


def add_synthetic(ds: Dataset, jobs: list[SynthJob], cap: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for job in jobs:
        X, y, family = synth_rows(job)
        X, y, family = cap_per_class(X, y, cap, rng, family)
        ds.add(X, y, job.name, family)
        log.info("%s: %d rows %s", job.name, len(y), np.bincount(y, minlength=len(LABELS)).tolist())


# --- N-BaIoT CSVs -------------------------------------------------------------

NBAIOT_FILE = re.compile(r"^(?P<device>\d+)\.(?P<kind>benign|mirai\.(ack|scan|syn|udp|udpplain))\.csv$")


def nbaiot_label(kind: str) -> int:
    return LABELS.index("benign" if kind == "benign" else kind.replace(".", "_"))


def nbaiot_files(directory: Path) -> list[tuple[Path, int]]:
    files = []
    for p in sorted(Path(directory).iterdir()):
        m = NBAIOT_FILE.match(p.name)
        if m:
            files.append((p, nbaiot_label(m.group("kind"))))
    if not files:
        raise ValueError(f"{directory}: no N-BaIoT files named like 1.benign.csv or 1.mirai.udp.csv")
    return files


def contiguous_split(n: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, slice]:
    """Train/val/test as consecutive blocks of one recording (time order kept, no interleaving)."""
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return {"train": slice(0, a), "val": slice(a, b), "test": slice(b, n)}


def add_nbaiot(splits: dict[str, Dataset], directory: Path, cap: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for path, label in nbaiot_files(directory):
        X = read_feature_csv(path)
        for split, sl in contiguous_split(len(X)).items():
            part = X[sl]
            if len(part) > cap:
                part = part[np.sort(rng.choice(len(part), cap, replace=False))]
            splits[split].add(part, np.full(len(part), label), f"nbaiot:{path.name}:{split}")


def add_benign_pcaps(splits: dict[str, Dataset], paths: list[Path], cap: int, seed: int) -> None:
    """The user's own benign traffic, split into consecutive blocks of each capture."""
    rng = np.random.default_rng(seed)
    for path in paths:
        stats = DecodeStats()
        batches = list(features_from_capture(path, stats))
        X = np.concatenate([fb.features for fb in batches] or [np.zeros((0, len(COLUMNS)))])
        family = np.concatenate([protocol_family(fb.packets) for fb in batches] or [np.zeros(0, np.int8)])
        log.info("%s: %s", path, stats.summary())
        for split, sl in contiguous_split(len(X)).items():
            part, fam = X[sl], family[sl]
            if len(part) > cap:
                pick = np.sort(rng.choice(len(part), cap, replace=False))
                part, fam = part[pick], fam[pick]
            splits[split].add(part, np.zeros(len(part), np.int64), f"pcap:{Path(path).name}:{split}", fam)
