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
