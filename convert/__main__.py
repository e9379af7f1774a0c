"""Command line of the build-time converter: python -m convert SUBCOMMAND (or iotguard-convert SUBCOMMAND).

Subcommands:
  synth         generate a labelled capture (pcap + labels.csv + meta.json) from a named scenario
  train         train the CNN, quantise it to int8, write a model bundle (default: the agent's own)
  evaluate      baselines vs the CNN, and generalisation to held-out options: docs/*.md and plots
  anomaly       train the anomaly detector on benign traffic (default: agent/model/anomaly.json)
  real-check    the model on the real captures and N-BaIoT rows in ../shared/data
  demo-capture  rebuild the capture the agent's demo runs on

Default outputs are the repository's own files in a source checkout and folders under the current
directory in a normal install (convert/paths.py).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from agent.capture.pcap import CaptureFormatError
from agent.console import add_logging_flags, broken_pipe, configure_logging, program_name, version_text
from agent.detect.model import BundleError
from agent.features.csv_file import FeatureCSVError
from agent.progress import Progress

from .paths import default_output, default_shared_data
from .usage import UsageError

log = logging.getLogger("convert")


def _synth(args: argparse.Namespace) -> int:
    from .synth import SCENARIOS, synthesise, write

    if args.list:
        width = max(len(name) for name in SCENARIOS)
        for name, scenario in SCENARIOS.items():
            print(f"{name:<{width}}  {scenario.description}")
        return 0
    if not args.scenario or not args.output:
        print("synth: --scenario and -o/--output are required (or --list)", file=sys.stderr)
        return 2
    if args.scenario not in SCENARIOS:
        print(f"synth: unknown scenario {args.scenario!r}; see --list", file=sys.stderr)
        return 2
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        print(f"synth: --seconds must be a positive number of seconds, got {args.seconds:g}", file=sys.stderr)
        return 2
    folder = Path(args.output).parent
    if not folder.is_dir():  # checked first: a typo in the path must not cost a whole synthesis, nor make folders
        print(f"synth: {folder}: no such directory (create it first)", file=sys.stderr)
        return 2
    try:
        options = _option_space(args)
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    # The synthesiser reports nothing while it works: a stage line says which of its two steps runs.
    with Progress(f"synth: synthesising {args.seconds:g} s of {args.scenario}") as progress:
        started = time.perf_counter()
        synth = synthesise(args.scenario, args.seconds, args.seed, options=options)
        built = time.perf_counter()
        progress.stage(f"synth: writing {len(synth)} packets ({built - started:.1f} s to synthesise)")
        pcap, labels, meta = write(synth, args.output)
        done = time.perf_counter()
        progress.stage(f"synth: {len(synth)} packets written")
    counts = ", ".join(f"{k} {v}" for k, v in synth.meta["packets_per_label"].items() if v)
    log.info(
        "%s: %d packets (%s) in %.2f s (+%.2f s writing): %s, %s, %s",
        args.scenario,
        len(synth),
        counts or "none",
        built - started,
        done - built,
        pcap,
        labels,
        meta,
    )
    return 0


def _option_value(name: str, text: str):
    """An attack option's value from the command line: numbers, true/false, a choice, or random (None)."""
    from .synth.options import DOMAINS

    if name not in DOMAINS:
        raise ValueError(f"unknown attack option {name!r}; known: {', '.join(DOMAINS)}")
    domain = DOMAINS[name]
    if text.lower() in ("random", "none") and domain.none_ok:
        return None
    for choice in domain.choices:
        if text.lower() == str(choice).lower():
            return choice
    try:
        return int(text, 0) if domain.integer else float(text)
    except ValueError:
        raise ValueError(f"{name}={text}: not a value of {name}") from None


def _option_space(args: argparse.Namespace):
    """--force NAME=VALUE, --exclude NAME=VALUE or NAME=LO:HI, --mirai-defaults -> an OptionSpace (or None)."""
    from .synth import OptionSpace

    if not (args.force or args.exclude or args.mirai_defaults):
        return None
    force, exclude = {}, {}
    for item in args.force:
        name, _, text = item.partition("=")
        force[name] = _option_value(name, text)
    for item in args.exclude:
        name, _, text = item.partition("=")
        lo, colon, hi = text.partition(":")
        value = (_option_value(name, lo), _option_value(name, hi)) if colon else _option_value(name, text)
        exclude.setdefault(name, []).append(value)
    return OptionSpace(exclude=exclude, force=force, defaults=args.mirai_defaults)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a labelled capture from a scenario")
    p.add_argument("--scenario", help="scenario name (see --list)")
    p.add_argument("--seconds", type=float, default=60.0, help="capture duration in seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same arguments give identical files")
    p.add_argument("-o", "--output", help="OUT.pcap; OUT.labels.csv and OUT.meta.json are written beside it")
    p.add_argument("--list", action="store_true", help="list scenarios with a one-line description")
    p.add_argument("--force", action="append", default=[], metavar="NAME=VALUE",
                   help="an attack option every attack uses, e.g. payload_len=1400, dport=53, ttl=128, "
                        "rate_pps=3000 (random: per packet); repeatable")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME=VALUE|NAME=LO:HI",
                   help="an attack option value or range never drawn, e.g. payload_len=900:1100; repeatable")
    p.add_argument("--mirai-defaults", action="store_true",
                   help="Mirai's default command options unless forced (rates and durations still vary)")
    p.set_defaults(func=_synth)


def _add_build(sub: argparse._SubParsersAction) -> None:
    from . import anomaly, build_model, evaluate

    p = sub.add_parser("train", help="train the CNN, quantise it to int8 and write a model bundle")
    build_model.add_arguments(p)
    p.set_defaults(func=build_model.run)
    p = sub.add_parser("evaluate", help="baselines vs the CNN (float and int8): docs/evaluation.md and plots")
    evaluate.add_arguments(p)
    p.set_defaults(func=evaluate.run)
    p = sub.add_parser("anomaly", help="train the anomaly detector on benign traffic: agent/model/anomaly.json")
    anomaly.add_arguments(p)
    p.set_defaults(func=anomaly.run)
    p = sub.add_parser("real-check", help="score a model bundle on the real captures and N-BaIoT rows of ../shared/data")
    p.add_argument("--data", type=Path, default=default_shared_data(),
                   help="folder with real/ and nbaiot/ (default: %(default)s; $IOTGUARD_SHARED_DATA, else "
                        "../shared/data beside a source checkout, else ./data)")
    p.add_argument("--model", help="bundle JSON (default: the agent's bundled model)")
    p.set_defaults(func=_real_check)
    p = sub.add_parser("demo-capture", help="rebuild agent/samples/mirai_demo.pcap (the agent demo's capture)")
    p.add_argument("-o", "--output", type=Path, default=default_output("agent/samples/mirai_demo.pcap", "mirai_demo.pcap"),
                   help="capture to write (default: %(default)s; the agent's own in a source checkout)")
    p.set_defaults(func=_demo_capture)


def _real_check(args: argparse.Namespace) -> int:
    from agent.detect.model import Classifier, load_bundle

    from .real_check import markdown, missing_files, run

    # Checked before any work: one line saying what is missing, not a traceback half-way through.
    hint = "give --data DIR holding real/ and nbaiot/, or set IOTGUARD_SHARED_DATA"
    if not args.data.is_dir():
        raise UsageError(f"real-check: no data folder at {args.data} ({hint})")
    missing = missing_files(args.data)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UsageError(f"real-check: {missing[0]}{more} not found ({hint})")
    clf = Classifier(load_bundle(args.model) if args.model else load_bundle())
    print(markdown(run(args.data, clf)))
    return 0


def _demo_capture(args: argparse.Namespace) -> int:
    from .demo_capture import make_demo_capture

    if not args.output.parent.is_dir():
        raise UsageError(f"demo-capture: {args.output.parent}: no such directory")
    print("wrote", make_demo_capture(args.output))
    return 0


# Errors in what the user gave: one line on standard error, exit status 2, no traceback.
USER_ERRORS = (UsageError, CaptureFormatError, FeatureCSVError, BundleError, FileNotFoundError, IsADirectoryError,
               NotADirectoryError, PermissionError)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("python -m convert"), description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_text())
    add_logging_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    _add_build(sub)
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return broken_pipe()


if __name__ == "__main__":
    sys.exit(main())
