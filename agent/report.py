"""Lines people read: times in ISO 8601, counts in good English (a verdict's own line: ``Verdict.describe``).

Machine-readable output (``detect --jsonl``, alerts) keeps the verdict's own fields (unix seconds); this is
only for lines a person reads: ``python -m agent detect`` and the demo.
"""

from __future__ import annotations

from datetime import datetime


def iso_time(ts: float) -> str:
    """A unix time as local ISO 8601 with milliseconds and the UTC offset, e.g. 2024-05-01T14:03:07.250+02:00."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 verdict``, ``2 verdicts``, ``0 verdicts``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def reported_line(verdicts: list) -> str:
    """What the live agent does with these verdicts beyond its own board: only a source verdict becomes an
    alert to the controller (agent/live.py), whose policy blocks addresses fleet-wide; a spoofed flood's
    sources are forged, so it is enforced on the board alone by a flood rule (agent/act/respond.py)."""
    sources = [v for v in verdicts if v.kind == "source"]
    floods = len(verdicts) - len(sources)
    addresses = len({v.src_ip for v in sources})
    line = (f"to the controller: {counted(len(sources), 'alert')} (one per source verdict"
            f"{', from ' + counted(addresses, 'address', 'addresses') if sources else ''})")
    if any(v.basis == "anomaly" for v in sources):
        line += "; anomaly alerts never count towards a fleet-wide block"
    if floods:
        line += (f"; {counted(floods, 'spoofed-flood verdict')} not sent: their sources are forged, a new address"
                 " per packet, so there is no address to block fleet-wide; the agent enforces them on this board"
                 " as flood rules (drop the flood's protocol and port from any source)")
    return line
