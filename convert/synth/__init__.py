"""Synthetic labelled IoT traffic: benign devices and Mirai's five attack classes (build time).

    from convert.synth import synthesise, write
    synth = synthesise("mixed", seconds=120, seed=7)   # FrameBatch + labels + roles + meta
    write(synth, "out/mixed.pcap")                    # + out/mixed.labels.csv, out/mixed.meta.json

Or ``python -m convert synth --scenario mixed --seconds 120 --seed 7 -o out/mixed.pcap``;
``python -m convert synth --list`` lists the scenarios.
"""

from .output import sidecar_paths, write
from .scenarios import SCENARIOS, Synthesised, synthesise

__all__ = ["SCENARIOS", "Synthesised", "sidecar_paths", "synthesise", "write"]
