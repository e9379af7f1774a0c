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
