"""Verdicts as people read them: times in ISO 8601, the latency named for what it is, counts in good English.

Machine-readable output (``detect --jsonl``, alerts) keeps the verdict's own fields (unix seconds); this is
only for lines a person reads: ``python -m agent detect`` and the demo.
"""

from __future__ import annotations

from datetime import datetime

from agent.detect.decide import Verdict


def iso_time(ts: float) -> str:
    """A unix time as local ISO 8601 with milliseconds and the UTC offset, e.g. 2024-05-01T14:03:07.250+02:00."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 verdict``, ``2 verdicts``, ``0 verdicts``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def describe_verdict(v: Verdict) -> str:
    """One line per verdict: class, who, basis, confidence, packets, first and last packet, and the latency
    from the first packet of the source (or flood) to the packet that decided the verdict."""
    if v.kind == "spoofed" and v.victim_ip is None:
        who = f"spoofed flood from {v.src_mac} at many hosts, proto {v.proto}"
    elif v.kind == "spoofed":
        port = f"/{v.victim_port}" if v.victim_port is not None else ""
        who = f"spoofed flood at {v.victim_ip} proto {v.proto}{port}"
    else:
        who = f"{v.src_ip} ({v.src_mac})"
    whose = "flood's" if v.kind == "spoofed" else "source's"
    return (
        f"{v.label:15s} {who:45s} [{v.basis}] conf {v.confidence:.3f} packets {v.packets:8d} "
        f"first {iso_time(v.first_seen)} last {iso_time(v.last_seen)} "
        f"latency {v.latency * 1000:.1f} ms since the {whose} first packet"
    )
