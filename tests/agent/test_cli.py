"""``python -m agent`` as a user runs it: errors are one line on standard error with a non-zero status and leave
nothing half-written; ``detect`` prints times in ISO 8601, names its latency and can fail on a detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import agent
from lab import REPO, netns

SAMPLE = REPO / "agent" / "samples" / "mirai_demo.pcap"
ENV = dict(os.environ, PYTHONPATH=str(REPO), TZ="UTC")


def run_agent(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def one_error_line(stderr: str, *, after_logs: bool = False) -> str:
    """The single line a failed command writes (after INFO log lines when the model was loaded first)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not (after_logs and line.startswith("INFO"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_version_is_the_packages():
    done = run_agent("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"python -m agent {agent.__version__}"


def test_features_into_a_closed_pipe_ends_with_one_line(tmp_path):
    # What `python -m agent features X.pcap | head -1` does: the reader leaves after the first line.
    proc = subprocess.Popen([sys.executable, "-m", "agent", "features", str(SAMPLE)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().startswith("index,MI_dir_L5_weight,")
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, stderr  # 128 + SIGPIPE, what a shell shows for `... | head`
    assert one_error_line(stderr) == "error: output closed before the end (broken pipe)"


def test_a_capture_given_as_features_csv_is_refused_in_one_line(tmp_path):
    out = tmp_path / "labels.csv"
    done = run_agent("classify-features", str(SAMPLE), "-o", str(out))
    assert done.returncode == 2
    assert "not a text CSV file" in one_error_line(done.stderr)
    assert not out.exists()


def test_features_of_a_file_that_is_no_capture_leave_no_output_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not a capture at all, just some words in a text file\n")
    out = tmp_path / "features.csv"
    done = run_agent("features", str(tmp_path / "notes.txt"), "-o", str(out))
    assert done.returncode == 2
    one_error_line(done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "no half-written CSV, no temporary file"


def test_features_to_a_file_are_complete(tmp_path):
    """The output written beside and renamed at the end is the whole CSV."""
    out = tmp_path / "features.csv"
    done = run_agent("features", str(SAMPLE), "-o", str(out), "--batch-size", "20000")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv"]
    with open(out) as fh:
        rows = sum(1 for _ in fh) - 1
    assert f"{rows} packets decoded" in done.stderr


def synth(tmp_path: Path, scenario: str, seconds: str) -> Path:
    out = tmp_path / f"{scenario}.pcap"
    subprocess.run([sys.executable, "-m", "convert", "synth", "--scenario", scenario, "--seconds", seconds,
                    "--seed", "1", "-o", str(out)], cwd=REPO, env=ENV, check=True, capture_output=True)  # fmt: skip
    return out


def test_fail_on_detect_gates_on_verdicts(tmp_path):
    hostile = run_agent("detect", str(SAMPLE), "--fail-on-detect")
    assert hostile.returncode == 1, hostile.stderr
    assert "Traceback" not in hostile.stderr
    quiet = run_agent("detect", str(synth(tmp_path, "lan_services", "20")), "--fail-on-detect")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "0 hostile sources, 0 spoofed floods" in quiet.stdout
    assert run_agent("detect", str(SAMPLE)).returncode == 0, "without the option a detection is no failure"


def test_detect_prints_iso_times_and_names_the_latency():
    verdicts = [json.loads(line) for line in run_agent("detect", str(SAMPLE), "--jsonl").stdout.splitlines()]
    verdicts = [v for v in verdicts if v["type"] == "verdict"]
    lines = run_agent("detect", str(SAMPLE)).stdout.splitlines()[: len(verdicts)]
    assert verdicts and len(lines) == len(verdicts)
    for v, line in zip(verdicts, lines):
        first = datetime.fromtimestamp(v["first_seen"]).astimezone().isoformat(timespec="milliseconds")
        last = datetime.fromtimestamp(v["last_seen"]).astimezone().isoformat(timespec="milliseconds")
        assert f" first {first} last {last} " in line, line
        assert first.endswith("+00:00")  # TZ=UTC: local time, offset included
        whose = "flood's" if v["kind"] == "spoofed" else "source's"
        assert line.endswith(f" latency {v['latency_s'] * 1000:.1f} ms since the {whose} first packet"), line
        assert str(v["first_seen"]) not in line, "unix seconds are for the JSON output"


@pytest.mark.slow
@pytest.mark.netns
@pytest.mark.skipif(netns.skip_reason() is not None, reason=str(netns.skip_reason()))
def test_run_on_a_missing_interface_creates_nothing(tmp_path):
    """No state folder and no kernel table are left behind (checked in a namespace of its own)."""
    state = tmp_path / "var" / "lib" / "iotguard"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n')
    with netns.namespace("run") as ns:
        done = ns.run(sys.executable, "-m", "agent", "run", "--profile", "x86_64-gateway", "--interface", "nosuch0",
                      "--config", str(config), "--enforcement", "nftables", check=False, env=ENV, cwd=REPO)  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        assert one_error_line(done.stderr, after_logs=True) == (
            "error: network interface 'nosuch0' does not exist (in this network namespace)"
        )
        assert "iotguard" not in ns.run("nft", "list", "tables").stdout
    assert not (tmp_path / "var").exists()


def test_per_packet_rows_name_time_addresses_ports_and_protocol(tmp_path):
    import csv
    from datetime import timezone

    from agent.capture.packets import L3_ARP, L3_OTHER, DecodeStats, format_ip, format_mac
    from agent.pipeline import packets_from_capture

    out = tmp_path / "pp.csv"
    done = run_agent("detect", str(SAMPLE), "--jsonl", "--anomaly", "off", "--per-packet", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    with open(out, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == ["index", "label", "confidence", "model_label", "time", "ts", "src", "dst", "sport", "dport",
                      "proto", "proto_name"]  # fmt: skip
    assert len(rows) == summary["packets"]
    # Each field again, one packet at a time the slow way, against the vectorised columns.
    packets = list(packets_from_capture(SAMPLE, DecodeStats()))
    names = {1: "icmp", 6: "tcp", 17: "udp"}
    seen = set()
    pos = 0
    for batch in packets:
        for k in range(len(batch)):
            row = dict(zip(header, rows[pos]))
            pos += 1
            assert int(row["index"]) == batch.index[k]
            ts = float(batch.ts[k])
            assert row["time"] == datetime.fromtimestamp(round(ts, 6), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            assert abs(float(row["ts"]) - ts) < 1e-6
            if batch.l3[k] == L3_OTHER:
                addr = format_mac(batch.src_ip_lo[k]), format_mac(batch.dst_ip_lo[k])
            else:
                addr = (format_ip(batch.src_ip_hi[k], batch.src_ip_lo[k]),
                        format_ip(batch.dst_ip_hi[k], batch.dst_ip_lo[k]))
            assert (row["src"], row["dst"]) == addr
            ports = [str(p) if p >= 0 else "" for p in (batch.sport[k], batch.dport[k])]
            assert [row["sport"], row["dport"]] == ports
            if batch.l3[k] == L3_ARP:
                assert (row["proto"], row["proto_name"]) == ("", "arp")
            elif batch.l3[k] != L3_OTHER:
                assert row["proto"] == str(batch.proto[k])
                assert row["proto_name"] == names.get(int(batch.proto[k]), row["proto_name"])
            seen.add(row["proto_name"])
    assert pos == len(rows)
    assert {"tcp", "udp", "icmp", "arp"} <= seen
    assert "".join(rows[0][4:6]) != "", "time columns filled"


def test_detect_help_names_the_per_packet_columns():
    text = " ".join(run_agent("detect", "--help").stdout.split())
    columns = "index, label, confidence, model_label, time, ts, src, dst, sport, dport, proto, proto_name"
    assert f"row per decoded packet, columns {columns} (label:" in text


def test_detect_says_which_verdicts_reach_the_controller():
    done = run_agent("detect", str(SAMPLE), "--jsonl", "--anomaly", "off")
    verdicts = [json.loads(line) for line in done.stdout.splitlines()]
    summary = verdicts.pop()
    sources = [v for v in verdicts if v["kind"] == "source"]
    floods = [v for v in verdicts if v["kind"] == "spoofed"]
    assert sources and floods, "the demo capture has both kinds"
    assert summary["alerts_to_controller"] == len(sources)
    line = run_agent("detect", str(SAMPLE), "--anomaly", "off").stdout.splitlines()[-1]
    addresses = len({v["src_ip"] for v in sources})
    assert line.startswith(f"to the controller: {len(sources)} alerts (one per source verdict, from {addresses} "
                           f"addresses); {len(floods)} spoofed-flood verdicts not sent: "), line  # fmt: skip
    assert "flood rules" in line


def test_progress_is_shown_on_a_terminal_only():
    from lab.tty import run_with_tty_stderr

    argv = [sys.executable, "-m", "agent", "detect", str(SAMPLE), "--anomaly", "off"]
    status, stdout, shown = run_with_tty_stderr(argv, cwd=REPO, env=ENV)
    assert status == 0, shown
    size = SAMPLE.stat().st_size / 1e6
    assert "\rdetecting: 0 B of " in shown and f"\rdetecting: {size:.1f} MB of {size:.1f} MB (100%)" in shown, shown
    assert "\r" not in stdout
    piped = run_agent("detect", str(SAMPLE), "--anomaly", "off")
    assert piped.returncode == 0
    assert "detecting" not in piped.stderr and "\r" not in piped.stderr, piped.stderr
    status, _, shown = run_with_tty_stderr([sys.executable, "-m", "agent", "features", str(SAMPLE), "-o", os.devnull],
                                           cwd=REPO, env=ENV)  # fmt: skip
    assert status == 0 and "\rreading: " in shown and "(100%)" in shown, shown


def test_output_to_a_fifo_or_device_is_written_to_not_renamed_over(tmp_path):
    """``-o /dev/null`` as root once replaced /dev/null with a regular file (the output was renamed into place).
    A FIFO stands in for the device here: it must still be a FIFO afterwards, and its reader gets the output."""
    import stat
    import threading

    from agent.console import output_file

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    with output_file(str(fifo)) as fh:
        fh.write("a,b\n")
    reader.join(timeout=10)
    assert stat.S_ISFIFO(fifo.stat().st_mode), "the FIFO was replaced by a regular file"
    assert got == ["a,b\n"]
