"""Writing a synthesised capture: a classic pcap plus the labels and metadata sidecars.

``OUT.pcap``: classic pcap, microsecond timestamps, link type 1 (Ethernet), via agent.capture.pcap.
``OUT.labels.csv``: ``index,label,role``, one row per pcap record.
``OUT.meta.json``: scenario, seed, board, attackers, victims, counts (sorted keys, so reruns are identical).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agent.capture.packets import LABELS, FrameBatch
from agent.capture.pcap import write_pcap

WRITE_CHUNK = 65536  # records per write: keeps each joined block cache-sized


def sidecar_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """OUT.pcap -> (OUT.pcap, OUT.labels.csv, OUT.meta.json)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix == ".pcap" else path
    pcap = path if path.suffix == ".pcap" else path.with_name(path.name + ".pcap")
    return pcap, stem.with_name(stem.name + ".labels.csv"), stem.with_name(stem.name + ".meta.json")


def _chunks(frames: FrameBatch, size: int = WRITE_CHUNK):
    """Zero-copy slices of a batch (they share ``buf``; offsets still point into it)."""
    for lo in range(0, len(frames), size):
        part = slice(lo, lo + size)
        yield FrameBatch(
            index=frames.index[part],
            ts=frames.ts[part],
            wire_len=frames.wire_len[part],
            cap_len=frames.cap_len[part],
            offset=frames.offset[part],
            linktype=frames.linktype[part],
            buf=frames.buf,
        )


def write_labels(path: str | Path, labels: np.ndarray, role_index: np.ndarray, role_names: tuple[str, ...]) -> None:
    # One "label,role" string per distinct pair, then one short f-string per row.
    pair = labels.astype(np.int64) * max(1, len(role_names)) + role_index
    uniq, inverse = np.unique(pair, return_inverse=True)
    text = [f"{LABELS[p // max(1, len(role_names))]},{role_names[p % max(1, len(role_names))]}" for p in uniq.tolist()]
    lines = [f"{i},{text[k]}\n" for i, k in enumerate(inverse.tolist())]
    with open(path, "w", newline="") as f:
        f.write("index,label,role\n")
        f.write("".join(lines))


def write(synth, path: str | Path) -> tuple[Path, Path, Path]:
    """Write ``synth`` (a Synthesised) as OUT.pcap + OUT.labels.csv + OUT.meta.json; returns the three paths."""
    pcap, labels, meta = sidecar_paths(path)
    pcap.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(pcap, _chunks(synth.frames))  # the agent's writer: microsecond records, link type 1
    write_labels(labels, synth.labels, synth.role_index, synth.role_names)
    with open(meta, "w") as f:
        json.dump(synth.meta, f, indent=2, sort_keys=True)
        f.write("\n")
    return pcap, labels, meta
