"""``python -m iotguard demo``: the agent detects Mirai in its bundled capture, then the fleet loop runs
with the controller on an embedded broker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli import add_model_options, run_command
from agent.console import add_logging_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iotguard", description="IoTGuard: the agent and the controller together.")
    add_logging_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="detect Mirai in the capture bundled with the agent, then the fleet round trip")
    p.add_argument("--capture", help="another capture (with OUT.labels.csv beside it for the comparison)")
    p.add_argument("--no-fleet", action="store_true", help="skip the MQTT round trip with the controller")
    add_model_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(cmd_demo, args)


def cmd_demo(args: argparse.Namespace) -> int:
    from iotguard.demo import SAMPLE, run_demo

    return run_demo(Path(args.capture) if args.capture else SAMPLE, args.model, args.runtime, fleet=not args.no_fleet)


if __name__ == "__main__":
    sys.exit(main())
