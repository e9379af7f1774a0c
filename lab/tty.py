"""Run a command with its standard error on a pseudo-terminal, as a person at a terminal sees it."""

from __future__ import annotations

import os
import pty
import subprocess


def run_with_tty_stderr(argv: list[str], timeout: float = 300, **kwargs) -> tuple[int, str, str]:
    """(exit status, standard output, what the terminal showed of standard error)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, **kwargs)
    finally:
        os.close(slave)  # the child holds its own copy: reading ends when it exits
    try:
        shown = drain(master)
    finally:
        os.close(master)
    stdout = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout=timeout), stdout.decode(), shown.decode(errors="replace")


def drain(master: int) -> bytes:
    """All a pseudo-terminal showed once its other side is closed (each write arrives on its own)."""
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        shown += chunk
    return bytes(shown)
