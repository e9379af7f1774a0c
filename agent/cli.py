"""Subcommands of ``python -m agent``.

Each command is a small function taking the parsed arguments; the argparse
tables at the bottom are the whole user interface.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from agent.act.enforce import EnforcementError
from agent.capture.interface import CaptureError
from agent.capture.packets import DecodeStats
from agent.capture.pcap import CaptureFormatError
from agent.config import AgentConfig, ConfigError, EventsConfig
from agent.console import add_logging_flags, broken_pipe, configure_logging, output_file, program_name, version_text
from agent.detect.anomaly import AnomalyModelError
from agent.detect.model import BundleError
from agent.features.columns import COLUMNS
from agent.features.csv_file import FeatureCSVError
from agent.metrics import Listen, MetricsError, parse_listen
from agent.profile import ProfileError, shipped_profiles

log = logging.getLogger("agent")


def _report_skipped(stats: DecodeStats) -> None:
    """`features` and `detect` end with this line on stderr: how many records were skipped, and why."""
    print(stats.summary(), file=sys.stderr)


def cmd_features(args: argparse.Namespace) -> int:
    from agent.pipeline import features_from_capture
    from agent.progress import file_progress

    stats = DecodeStats()
    with output_file(args.output, newline="") as out, file_progress("reading", args.capture) as progress:
        out.write(",".join(("index",) + COLUMNS) + "\n")
        for fb in features_from_capture(args.capture, stats, batch_size=args.batch_size, progress=progress):
            rows = np.column_stack([fb.packets.index.astype(np.float64), fb.features])
            np.savetxt(out, rows, delimiter=",", fmt=["%d"] + ["%.17g"] * len(COLUMNS))
    _report_skipped(stats)
    return 0


def _classifier(args: argparse.Namespace):
    from agent.detect.model import Classifier, load_bundle

    return Classifier(load_bundle(args.model), runtime=args.runtime, batch_size=args.infer_batch)


def cmd_detect(args: argparse.Namespace) -> int:
    import json

    from agent.capture.packets import LABELS, VERDICT_LABELS
    from agent.detect.anomaly import load_anomaly
    from agent.detect.decide import DecisionConfig, DecisionLayer
    from agent.per_packet import write_per_packet
    from agent.pipeline import detect_capture
    from agent.progress import file_progress
    from agent.report import counted, reported_line

    classifier = _classifier(args)
    anomaly = load_anomaly("report" if args.anomaly == "on" else "off", args.anomaly_model)
    decision = DecisionLayer(DecisionConfig(threshold=args.threshold, min_packets=args.min_packets))
    with file_progress("detecting", args.capture) as progress:
        result = detect_capture(args.capture, classifier, decision, keep_per_packet=True, anomaly=anomaly,
                                progress=progress)  # fmt: skip
    if args.per_packet:
        with output_file(args.per_packet, newline="") as fh:
            write_per_packet(fh, args.capture, result)
    if args.int8_out:
        np.save(args.int8_out, result.int8_scores)
    _report_skipped(result.stats)
    # Per packet: what the whole pipeline says (header rules and verdicts included), and the model alone.
    final = result.final_labels()
    counts = {name: int((final == k).sum()) for k, name in enumerate(VERDICT_LABELS)}
    model_counts = {name: int((result.labels == k).sum()) for k, name in enumerate(LABELS)}
    summary = {
        "capture": str(args.capture),
        "packets": result.packets,
        "skipped": dict(result.stats.skipped),
        "per_class_packets": counts,
        "model_per_class_packets": model_counts,
        "hostile_sources": sum(v.kind == "source" for v in result.verdicts),
        "spoofed_floods": sum(v.kind == "spoofed" for v in result.verdicts),
        # The live agent alerts the controller on source verdicts only (report.reported_line says why).
        "alerts_to_controller": sum(v.kind == "source" for v in result.verdicts),
        "model": classifier.bundle.version,
        "runtime": classifier.runtime,
    }
    if args.jsonl:
        for v in result.verdicts:
            print(json.dumps({"type": "verdict", **v.to_dict()}))
        print(json.dumps({"type": "summary", **summary}))
    else:
        for v in result.verdicts:
            print(v.describe())
        print(
            f"summary: {counted(result.packets, 'packet')} ({result.stats.total_skipped} skipped), "
            f"{counted(summary['hostile_sources'], 'hostile source')}, {counted(summary['spoofed_floods'], 'spoofed flood')}; "
            f"per packet: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            + " (model alone: " + ", ".join(f"{k} {v}" for k, v in model_counts.items() if v) + ")"
            + f"; model {summary['model']} on {summary['runtime']}"
        )
        if result.verdicts:
            print(reported_line(result.verdicts))
    # A script or CI job can gate on the verdict: 1 when anything was judged hostile (2 stays "error").
    return 1 if args.fail_on_detect and result.verdicts else 0


def cmd_classify_features(args: argparse.Namespace) -> int:
    from agent.capture.packets import LABELS
    from agent.features.csv_file import read_feature_csv

    rows = read_feature_csv(args.features_csv)
    classifier = _classifier(args)
    labels, confidence = classifier.predict(rows)
    with output_file(args.output) as out:
        out.write("row,label,confidence\n")
        for i, (k, c) in enumerate(zip(labels.tolist(), confidence.tolist())):
            out.write(f"{i},{LABELS[k]},{c:.4f}\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pathlib import Path

    from agent.capture.interface import interface_index
    from agent.config import load_config
    from agent.live import LiveAgent
    from agent.profile import load_profile
    from agent.util import removed_on_failure

    profile = load_profile(args.profile)
    config = load_config(args.config)
    apply_run_options(config, args)
    LiveAgent.check_privileges(args.enforcement or profile.enforcement)
    interface_index(args.interface or profile.interface)  # a typo stops us before anything is created
    stop, reload_request = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_request.set())
    # The fleet link makes its folders under the state folder as it is built: a failed start takes them back.
    with removed_on_failure(Path(config.state_dir)):
        agent = LiveAgent(profile, config, interface=args.interface, enforcement=args.enforcement)
        agent.start()  # stops what it started when a stage fails
    try:
        agent.run(stop, reload_request, reload_config=lambda: load_config(args.config))
    finally:
        agent.stop()
    return 0


def apply_run_options(config: AgentConfig, args: argparse.Namespace) -> None:
    """--metrics and --events win over the configuration file (the file's rotation settings stay)."""
    if args.metrics is not None:
        config.metrics = args.metrics
    if args.events is not None:
        keep = {"max_bytes": config.events.max_bytes, "backups": config.events.backups} if config.events else {}
        config.events = EventsConfig(args.events, **keep)


def listen_option(text: str) -> Listen:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.doctor import run_doctor
    from agent.profile import load_profile

    return run_doctor(load_profile(args.profile), load_config(args.config), args.interface)


def add_model_options(p: argparse.ArgumentParser) -> None:
    from agent.detect.model import DEFAULT_BUNDLE, INFER_BATCH, RUNTIMES

    p.add_argument("--model", default=str(DEFAULT_BUNDLE), help="model bundle JSON (default: the bundled model)")
    p.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES, help="TFLite runtime (default: first installed)")
    p.add_argument("--infer-batch", type=int, default=INFER_BATCH, help="inference batch size (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("python -m agent"), description="IoTGuard agent: on-board Mirai detection.")
    add_logging_flags(parser)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="write the 115 N-BaIoT features of every decoded packet of a capture as CSV")
    p.add_argument("capture", help="pcap or pcapng file")
    p.add_argument("-o", "--output", default="-", help="output CSV (default: standard output)")
    p.add_argument("--batch-size", type=int, default=65536, help="packets per batch (default: %(default)s)")
    p.set_defaults(func=cmd_features)

    from agent.detect.decide import DecisionConfig
    from agent.per_packet import HEADER as PER_PACKET_HEADER

    p = sub.add_parser("detect", help="detect Mirai in a capture: one line per hostile source and a summary")
    p.add_argument("capture", help="pcap or pcapng file")
    p.add_argument("--jsonl", action="store_true", help="print verdicts and the summary as JSON lines")
    p.add_argument("--per-packet", metavar="OUT.csv",
                   help="write a CSV row per decoded packet, columns " + ", ".join(PER_PACKET_HEADER) + " (label: the "
                        "pipeline's class in hindsight, an attack only where someone the packet belongs to is "
                        "convicted (agent/detect/hindsight.py), model_label: the model's; time: ISO 8601 UTC, ts: "
                        "unix seconds; src, dst: IP, or MAC for non-IP frames; ports empty when the packet has none; "
                        "proto: IP protocol number, proto_name: tcp, udp, icmp, ..., arp or ethernet)")
    p.add_argument("--int8-out", metavar="OUT.npy", help="save the model's raw int8 outputs (packets x classes) as .npy")
    p.add_argument("--threshold", type=float, default=DecisionConfig.threshold,
                   help="average attack score of a source's recent packets that makes it hostile (default %(default)s)")
    p.add_argument("--min-packets", type=int, default=DecisionConfig.min_packets,
                   help="recent packets (a count decaying with a 2 s half-life) behind a model verdict (default %(default)s)")
    p.add_argument("--anomaly", choices=("on", "off"), default="on",
                   help="run the anomaly detector beside the model; its verdicts are labelled anomaly (default: on)")
    p.add_argument("--anomaly-model", default="", help="anomaly model file (default: the bundled one)")
    p.add_argument("--fail-on-detect", action="store_true",
                   help="exit with status 1 when any verdict is reported (anomaly verdicts too; --anomaly off "
                        "leaves them out), 0 when none; errors stay status 2")
    add_model_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("classify-features", help="classify rows of a CSV with the 115 N-BaIoT columns")
    p.add_argument("features_csv", help="CSV with the N-BaIoT column names (other columns are ignored)")
    p.add_argument("-o", "--output", default="-", help="output CSV row,label,confidence (default: standard output)")
    add_model_options(p)
    p.set_defaults(func=cmd_classify_features)

    p = sub.add_parser("run", help="run the live agent on an interface until SIGTERM/SIGINT (SIGHUP reloads)")
    p.add_argument("--profile", required=True, help=f"firmware profile: {', '.join(shipped_profiles())} or a TOML path")
    p.add_argument("--interface", help="capture interface (default: the profile's)")
    p.add_argument("--config", help="agent configuration TOML (state_dir, allowlist, mqtt, ...)")
    p.add_argument("--enforcement", choices=("nftables", "none"), help="override the profile's enforcement backend")
    p.add_argument("--metrics", metavar="HOST:PORT", type=listen_option,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (a port alone: on 127.0.0.1)")
    p.add_argument("--events", metavar="FILE", help="write verdicts, rule changes and fleet updates to FILE as JSON lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("doctor", help="check this board: runtime, model, interface, capabilities, nftables, broker, certificates")
    p.add_argument("--profile", required=True, help=f"firmware profile: {', '.join(shipped_profiles())} or a TOML path")
    p.add_argument("--interface", help="capture interface (default: the profile's)")
    p.add_argument("--config", help="agent configuration TOML")
    p.set_defaults(func=cmd_doctor)

    return parser


# Errors in what the user gave (files, configuration, privileges): one line on standard error, exit 2.
USER_ERRORS = (CaptureFormatError, FileNotFoundError, IsADirectoryError, PermissionError, FeatureCSVError, BundleError,
               ConfigError, ProfileError, EnforcementError, CaptureError, AnomalyModelError, MetricsError)  # fmt: skip


def run_command(func, args: argparse.Namespace) -> int:
    """Run one subcommand with the logging the user asked for; a user error is a message, not a traceback."""
    configure_logging(args)
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (... | head): not a failure of ours worth a traceback
        return broken_pipe()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)
