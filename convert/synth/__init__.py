"""Synthetic labelled IoT traffic: benign devices and Mirai's five attack classes (build time).

    from convert.synth import synthesise, write
    synth = synthesise("mixed", seconds=120, seed=7)   # FrameBatch + labels + roles + meta
    write(synth, "out/mixed.pcap")                    # + out/mixed.labels.csv, out/mixed.meta.json

Or ``python -m convert synth --scenario mixed --seconds 120 --seed 7 -o out/mixed.pcap``;
``python -m convert synth --list`` lists the scenarios.

Every attack draws its command's options (payload size, ports, TTL, flags, spoofing, rate...) over
Mirai's whole range; ``synthesise(..., options=OptionSpace(exclude=..., force=...))`` holds values out
of a capture or forces them (see convert/synth/options.py).
"""

from .options import AttackOptions, OptionSpace, sample_options
from .output import sidecar_paths, write
from .scenarios import SCENARIOS, Synthesised, synthesise

__all__ = [
    "SCENARIOS",
    "AttackOptions",
    "OptionSpace",
    "Synthesised",
    "sample_options",
    "sidecar_paths",
    "synthesise",
    "write",
]
