"""Helpers shared by the benchmark scripts: cached large captures (mixed, realistic), timing, results files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("IOTGUARD_CACHE", Path.home() / ".cache" / "iotguard"))


def mixed_capture(packets: int = 1_000_000, seed: int = 42) -> Path:
    """A synthesised mixed Mirai + benign capture of at least ``packets`` records (built once, cached)."""
    from agent.capture.pcap import read_capture
    from convert.synth import synthesise, write

    path = CACHE / "bench" / f"mixed_{packets}_{seed}.pcap"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = 60.0
    while True:
        synth = synthesise("mixed", seconds, seed)
        if len(synth.frames) >= packets:
            break
        seconds *= max(1.2, 1.1 * packets / max(len(synth.frames), 1))
    write(synth, path)
    assert sum(len(b) for b in read_capture(path)) >= packets
    return path


def realistic_capture(packets: int = 1_000_000, seed: int = 42) -> Path:
    """A corpus of realistic shape of at least ``packets`` records (built once, cached; see benchmarks/corpus.py):
    real benign captures replayed as many re-addressed homes, under synthesised and real Mirai attacks, many
    of them spoofed.  Its ``.meta.json`` beside it holds the class mix, distinct sources and streams; its
    ``.labels.npy`` each record's class (built again where a cache from before it lacks it: the same capture)."""
    from benchmarks.corpus import VERSION, build_realistic, labels_path

    path = CACHE / "bench" / f"realistic_{packets}_{seed}_v{VERSION}.pcap"
    if not path.exists() or not labels_path(path).exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_realistic(path, packets, seed)
    return path


def median_of(runs: int, fn) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def save(results: dict, out: str | None, name: str) -> Path:
    results = {"benchmark": name, "machine": platform.machine(), "python": platform.python_version(),
               "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **results}
    path = Path(out) if out else REPO / "benchmarks" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path
