"""Peak RSS of the feature engine under a spoofed SYN flood (a new random source per packet).

    python benchmarks/flood_memory.py [--packets 1000000] [--budget 100000] [--out FILE]

The same traffic as tests/agent/features/test_engine.py::test_spoofed_flood_stays_within_budget.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--budget", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--out")
    args = ap.parse_args()

    from agent.features.engine import Budgets, FeatureExtractor
    from lab.packet_factory import spoofed_syn_flood

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    b = args.budget
    fe = FeatureExtractor(Budgets(b, b, b, b, b))
    start = time.perf_counter()
    for i, lo in enumerate(range(0, args.packets, args.batch)):
        fe.update(spoofed_syn_flood(min(args.batch, args.packets - lo), seed=i, t0=1.6e9 + lo * 1e-5))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tables = {k: len(t) for k, t in fe.tables.items()}
    table_mb = sum(t.nbytes for t in fe.tables.values()) / 2**20
    print(f"{args.packets} spoofed SYNs, budget {b}: peak RSS {peak:.0f} MB (before: {base:.0f} MB), "
          f"stream tables {table_mb:.0f} MB, entries {tables}, {args.packets / seconds:,.0f} packets/s")  # fmt: skip
    print("written to", save({"packets": args.packets, "budget": b, "peak_rss_mb": peak, "start_rss_mb": base,
                              "table_mb": table_mb, "entries": tables}, args.out, "flood_memory"))  # fmt: skip


if __name__ == "__main__":
    main()
