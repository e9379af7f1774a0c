"""The progress line: drawn on a terminal, throttled, ended by close; nothing at all off a terminal."""

from __future__ import annotations

import io
import os
import pty

from agent import progress as progress_module
from agent.progress import Progress
from lab.tty import drain


def test_a_terminal_sees_the_line_and_its_end():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        with Progress("reading", 2_000_000, unit="B", stream=tty) as p:
            p.update(1_000_000)
    shown = drain(master).decode()
    os.close(master)
    # The pty turns "\n" into "\r\n".
    assert "\rreading: 0 B of 2.0 MB (0%)" in shown
    assert shown.endswith("\rreading: 1.0 MB of 2.0 MB (50%)\x1b[K\r\n"), repr(shown)


def test_nothing_is_written_off_a_terminal():
    out = io.StringIO()
    with Progress("reading", 100, unit="B", stream=out) as p:
        p.update(50)
        p.stage("writing")
    assert out.getvalue() == ""


def test_redraws_are_throttled(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    out = Tty()
    p = Progress("synthesising captures", 100, unit="captures", stream=out)
    for _ in range(100):
        now[0] += 0.01  # 100 updates in 1 s: 5 redraws, and the one at the start
        p.update(1)
    assert out.getvalue().count("\r") == 6
    p.close()
    assert out.getvalue().endswith("\rsynthesising captures: 100 of 100 captures (100%)\x1b[K\n")
