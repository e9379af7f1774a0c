"""Subcommands of ``python -m agent``.

Each command is a small function taking the parsed arguments; the argparse
tables at the bottom are the whole user interface.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from .capture_file import CaptureFormatError
from .feature_columns import COLUMNS
from .packets import DecodeStats

log = logging.getLogger("agent")


def _report_skipped(stats: DecodeStats) -> None:
    print(stats.summary(), file=sys.stderr)


def cmd_features(args: argparse.Namespace) -> int:
    from .pipeline import features_from_capture

    stats = DecodeStats()
    out = sys.stdout if args.output == "-" else open(args.output, "w", newline="")
    try:
        out.write(",".join(("index",) + COLUMNS) + "\n")
        for fb in features_from_capture(args.capture, stats, batch_size=args.batch_size):
            rows = np.column_stack([fb.packets.index.astype(np.float64), fb.features])
            np.savetxt(out, rows, delimiter=",", fmt=["%d"] + ["%.17g"] * len(COLUMNS))
    finally:
        if out is not sys.stdout:
            out.close()
    _report_skipped(stats)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description="IoTGuard agent: on-board Mirai detection.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="write the 115 N-BaIoT features of every decoded packet of a capture as CSV")
    p.add_argument("capture", help="pcap or pcapng file")
    p.add_argument("-o", "--output", default="-", help="output CSV (default: standard output)")
    p.add_argument("--batch-size", type=int, default=65536, help="packets per batch (default: %(default)s)")
    p.set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CaptureFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
