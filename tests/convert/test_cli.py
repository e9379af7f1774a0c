"""``python -m convert`` when the request cannot be done: one line on standard error, status 2, no traceback and no
files or folders made; and where its outputs go by default in a source checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent
from convert.paths import default_output, default_shared_data, source_checkout
from lab import REPO

ENV = {k: v for k, v in os.environ.items() if k != "IOTGUARD_SHARED_DATA"} | {"PYTHONPATH": str(REPO)}


def convert(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_version():
    done = convert("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"python -m convert {agent.__version__}"


@pytest.mark.parametrize("seconds", ["0", "-5", "nan", "inf"])
def test_synth_refuses_durations_that_are_not_positive(tmp_path, seconds):
    done = convert("synth", "--scenario", "camera", "--seconds", seconds, "-o", str(tmp_path / "cam.pcap"))
    assert "--seconds must be a positive number" in one_line(done)
    assert list(tmp_path.iterdir()) == []


def test_synth_into_a_missing_folder_fails_and_makes_no_folder(tmp_path):
    done = convert("synth", "--scenario", "camera", "--seconds", "1", "-o", str(tmp_path / "nonexistent" / "x.pcap"))
    assert "no such directory" in one_line(done)
    assert list(tmp_path.iterdir()) == []


def test_real_check_without_the_data_says_so_in_one_line(tmp_path):
    assert "no data folder at" in one_line(convert("real-check", "--data", str(tmp_path / "missing")))
    (tmp_path / "real").mkdir()
    line = one_line(convert("real-check", "--data", str(tmp_path)))
    assert "not found" in line and "--data" in line


def test_a_source_checkout_rebuilds_the_repositorys_own_files():
    """Here (a checkout) the defaults are the repository's files; a normal install's are in the current folder
    (tests/iotguard/test_install.py runs the installed converter)."""
    assert source_checkout() == REPO
    assert default_output("agent/model", "model") == REPO / "agent" / "model"
    assert default_shared_data() == Path(os.environ.get("IOTGUARD_SHARED_DATA") or REPO.parent / "shared" / "data")
    assert f"default: {REPO / 'agent' / 'model'}" in " ".join(convert("train", "--help").stdout.split())


@pytest.mark.parametrize(
    "options, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--name", "sub/model"], "must be a plain file name"),
        (["--no-synthetic"], "--no-synthetic needs --nbaiot"),
        (["--nbaiot", "{tmp}/missing"], "no such directory"),
        (["--nbaiot", "{tmp}"], "no N-BaIoT files"),
        (["--benign-pcap", "{tmp}/missing.pcap"], "missing.pcap: cannot read"),
        (["--benign-pcap", "{tmp}/notes.txt"], "not a pcap or pcapng file"),
        (["--out", "{tmp}/notes.txt/model"], "notes.txt is not a folder"),
    ],
)
def test_train_checks_its_arguments_before_synthesising(tmp_path, options, message):
    """Each mistake stops train at once (timeout 120 s: a run that synthesised first would not finish)."""
    (tmp_path / "notes.txt").write_text("not a capture, only some words in a text file\n")
    out = tmp_path / "out"
    args = [o.replace("{tmp}", str(tmp_path)) for o in options]
    line = one_line(convert("train", "--out", str(out), *args) if "--out" not in options else convert("train", *args))
    assert message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "nothing made"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_train_refuses_an_output_folder_it_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "cannot write in" in one_line(convert("train", "--out", str(locked / "model")))


def test_synth_shows_its_stage_on_a_terminal_only(tmp_path):
    from lab.tty import run_with_tty_stderr

    argv = [sys.executable, "-m", "convert", "synth", "--scenario", "camera", "--seconds", "5", "-o"]
    status, _, shown = run_with_tty_stderr(argv + [str(tmp_path / "a.pcap")], cwd=REPO, env=ENV, timeout=120)
    assert status == 0, shown
    assert "\rsynth: synthesising 5 s of camera" in shown and "packets written" in shown, shown
    piped = convert(*argv[3:], str(tmp_path / "b.pcap"))
    assert piped.returncode == 0 and "\r" not in piped.stderr and "synthesising" not in piped.stderr, piped.stderr
