"""A progress line on standard error for long work, shown only to a person at a terminal.

When stderr is not a TTY (a log file, a pipe, CI) nothing at all is written, so logs stay clean.  The line
is redrawn in place (``\\r``) at most ``RATE`` times a second, and ended with a newline by ``close``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

RATE = 5.0  # redraws per second at most


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Progress:
    """``update(n)`` adds ``n`` done; ``close()`` draws the last state and ends the line (a no-op off a TTY)."""

    def __init__(self, label: str, total: float | None = None, unit: str = "", stream: TextIO | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream)
        self.done = 0.0
        self._drawn = 0.0  # monotonic time of the last redraw
        self._closed = False
        if self.enabled:
            self._draw()  # at once: the first update may be far off

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._drawn >= 1.0 / RATE:
            self._draw()

    def stage(self, label: str) -> None:
        """Rename what is being done (the count goes on)."""
        self.label = label
        if self.enabled:
            self._draw()

    def close(self) -> None:
        if self.enabled and not self._closed:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True

    def text(self) -> str:
        if self.total is None and not self.unit:  # a stage line: what is being done, nothing to count
            return self.label
        shown = min(self.done, self.total or self.done)
        if self.unit == "B":
            done, total = _size(shown), _size(self.total or 0)
        else:
            done, total = f"{shown:.0f}", f"{self.total or 0:.0f} {self.unit}".rstrip()
        if not self.total:
            return f"{self.label}: {done}" + ("" if self.unit == "B" or not self.unit else f" {self.unit}")
        return f"{self.label}: {done} of {total} ({min(1.0, self.done / self.total):.0%})"

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        # \033[K clears what a longer earlier line left behind.
        self.stream.write("\r" + self.text() + "\033[K")
        self.stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def file_progress(label: str, path: str | os.PathLike) -> Progress:
    """Progress over the bytes of a file (its size as the total, when it has one)."""
    try:
        size = os.stat(path).st_size or None
    except OSError:
        size = None  # the reader says what is wrong with the path
    return Progress(label, size, unit="B")
