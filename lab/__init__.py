"""The test lab: helpers shared by the tests and the benchmarks (network namespaces and the live agent's
lab, crafted packets, frames, capture files and link layers, capture and MQTT fuzzers, a broker, an ARM
sysroot for QEMU).  Tests and benchmarks import this package, never each other."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # small files the tests own: fuzz corpora, a tiny model
# Real captures, N-BaIoT rows and reference features, kept beside the repository (not in it).
SHARED_DATA = Path(os.environ.get("IOTGUARD_SHARED_DATA", REPO.parent / "shared" / "data"))
