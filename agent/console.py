"""What the agent's and the converter's command lines share: the name the user typed, ``--version``, output
files that appear only whole, and a clean end when the reader of standard output goes away (``... | head``).

The controller takes nothing but the wire contract from the agent, so it keeps its own few lines of this.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import agent
from agent.util import atomic_path

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer killed by a closed pipe


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_TIME = "%Y-%m-%dT%H:%M:%S%z"  # ISO 8601 with the UTC offset, as every time the commands print
LOG_LEVELS = ("debug", "info", "warning", "error")


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    """The same logging flags on every command line of the project (agent, controller, converter)."""
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="what is logged (default: info)")
    parser.add_argument("-v", "--verbose", action="store_const", dest="log_level", const="debug",
                        help="the same as --log-level debug")  # fmt: skip


def configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, datefmt=LOG_TIME)


def program_name(module_form: str) -> str:
    """``iotguard-agent`` when run as the console script, else the module form (``python -m agent``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("iotguard-") else module_form


def version_text() -> str:
    return f"%(prog)s {agent.__version__}"


def broken_pipe() -> int:
    """Standard output was closed early: one line on standard error, and no second failure at exit."""
    # The interpreter flushes stdout on exit and would fail again on the closed pipe: point it at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    print("error: output closed before the end (broken pipe)", file=sys.stderr)
    return EXIT_BROKEN_PIPE


def _file_mode() -> int:
    """rw for whom the umask allows, as open() would give a new file (atomic_path chmods explicitly)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def output_file(path: str, newline: str | None = None) -> Iterator[TextIO]:
    """Standard output for "-"; else a file that appears only once complete (written beside it, then renamed),
    so a command that fails half-way leaves no truncated output behind and an older file intact."""
    if path == "-":
        yield sys.stdout
        return
    if os.path.exists(path) and not os.path.isfile(path):  # /dev/null, a FIFO: write to it, never rename over it
        with open(path, "w", newline=newline) as fh:
            yield fh
        return
    with atomic_path(Path(path), _file_mode()) as tmp:
        with open(tmp, "w", newline=newline) as fh:
            yield fh
