"""Footprint per firmware profile: model size, interpreter arena, peak RSS and packets/s (x86_64 as a proxy).

    python benchmarks/footprint.py [--packets 1000000] [--out FILE]

Each profile runs in its own process (so peak RSS is its own): the pcap-mode
pipeline (read, parse, features with the profile's stream budgets and batch
size, int8 inference, decisions) over the same cached 1,000,000-packet mixed
capture.  The arena is the sum of the interpreter's tensor buffers at the
inference batch size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import mixed_capture, save  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import numpy as np
from agent.capture.pcap import read_capture
from agent.detect.decide import DecisionLayer
from agent.detect.protocol_classes import packet_classes
from agent.features.engine import FeatureExtractor
from agent.util import release_free_memory
from agent.detect.model import Classifier, load_bundle
from agent.capture.packets import DecodeStats
from agent.capture.parse import parse_frames
from agent.profile import load_profile
p = load_profile(sys.argv[1])
b = p.budgets
bundle = load_bundle()
clf = Classifier(bundle, runtime="auto", batch_size=min(1024, 4 * p.batch_size))
arena = sum(int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize for t in clf.interpreter.get_tensor_details())
fe = FeatureExtractor(b, max_batch=p.batch_size)
from agent.detect.decide import DecisionConfig
dec, stats, n, batches = DecisionLayer(DecisionConfig(max_sources=b.h, max_targets=b.h)), DecodeStats(), 0, 0
start = time.perf_counter()
for frames in read_capture(sys.argv[2], batch_size=max(p.batch_size, 4096), stats=stats):
    packets = parse_frames(frames, stats)
    feats = fe.update(packets)
    dec.update(packets, clf.predict_scores(feats, packet_classes(packets, feats)), feats)
    n += len(packets)
    batches += 1
    if batches % 32 == 0:
        release_free_memory()  # as the live agent does once a second
seconds = time.perf_counter() - start
print(json.dumps({"profile": p.name, "packets": n, "pps": n / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "model_bytes": len(bundle.tflite), "arena_bytes": arena, "memory_budget_mb": p.memory_budget_mb,
                  "batch_size": p.batch_size, "budgets": [b.mi_dir, b.h, b.hh, b.hh_jit, b.hphp]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    from agent.profile import shipped_profiles

    capture = mixed_capture(args.packets)
    rows = []
    for name in shipped_profiles():
        out = subprocess.run([sys.executable, "-c", CHILD, name, str(capture)], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['profile']:18s} model {r['model_bytes'] / 1024:5.1f} KB  arena {r['arena_bytes'] / 1024:7.1f} KB  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB (budget {r['memory_budget_mb']} MB)  {r['pps']:9,.0f} packets/s", flush=True)  # fmt: skip
    print("written to", save({"capture": str(capture), "profiles": rows}, args.out, "footprint"))


if __name__ == "__main__":
    main()
