"""A normal (non-editable) install works from any folder: a wheel built from this tree, installed with
``pip --target`` beside the test environment's dependencies, runs its console scripts from an empty folder with
none of the repository in reach.  Offline: no build isolation, no index, no dependencies fetched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import agent
from agent.profile import shipped_profiles
from lab import REPO

PACKAGES = ("agent", "controller", "convert", "iotguard", "firmware_profiles")
PROJECT_FILES = ("setup.cfg", "setup.py", "pyproject.toml", "README.md")


def pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """site-packages-like folder with the wheel installed (and its console scripts in bin/)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy, so that the build's build/ and egg-info never land in the checkout
    src.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(REPO / name, src / name)
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    pip("wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), "./src", cwd=tmp)
    (wheel,) = (tmp / "dist").glob("iotguard-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {Path(n).stem for n in zf.namelist() if n.startswith("firmware_profiles/") and n.endswith(".toml")}
        static = {n for n in zf.namelist() if n.startswith("controller/static/")}
        kernel = [n for n in zf.namelist() if n.startswith("agent/native/_kernels") and n.endswith(".so")]
    assert shipped == set(shipped_profiles()), "every firmware profile is package data"
    assert static == {"controller/static/dashboard.css", "controller/static/dashboard.js"}, "the dashboard's files"
    assert len(kernel) == 1, "the wheel carries the compiled kernels (a C compiler is installed here)"
    pip("install", "-q", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheel), cwd=tmp)
    return tmp / "site"


def run(installed: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    """Run from ``cwd`` with the installed copy first on the path and no repository-pointing variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("IOTGUARD_PROFILE_DIR", "IOTGUARD_SHARED_DATA")}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_console_scripts_and_doctor_run_from_any_folder(installed, tmp_path):
    where = run(installed, tmp_path, sys.executable, "-c", "import agent, controller, convert; print(agent.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(installed), "the installed copy, not the checkout"
    backend = run(installed, tmp_path, sys.executable, "-c", "from agent import native; print(native.backend())")
    assert backend.stdout.strip() == "c", backend.stderr
    for tool in ("iotguard-agent", "iotguard-controller", "iotguard-convert"):
        done = run(installed, tmp_path, str(installed / "bin" / tool), "--version")
        assert done.returncode == 0 and done.stdout.strip() == f"{tool} {agent.__version__}", done.stderr
    for doctor in ([str(installed / "bin" / "iotguard-agent")], [sys.executable, "-m", "agent"]):
        done = run(installed, tmp_path, *doctor, "doctor", "--profile", "rpi-4b")
        assert "this machine is" in done.stdout and "aarch64" in done.stdout, done.stdout + done.stderr  # profile read
        assert "[ok  ] model bundle" in done.stdout and "[ok  ] model self-test" in done.stdout, done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_installed_converter_writes_beside_the_user_not_into_the_package(installed, tmp_path):
    helptext = " ".join(run(installed, tmp_path, str(installed / "bin" / "iotguard-convert"), "train", "--help").stdout.split())
    assert "(default: model;" in helptext, helptext
    code = "from convert.paths import default_output, source_checkout; print(source_checkout(), default_output('agent/model', 'model'))"
    assert run(installed, tmp_path, sys.executable, "-c", code).stdout.split() == ["None", "model"]
    done = run(installed, tmp_path, str(installed / "bin" / "iotguard-convert"), "real-check")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "error: real-check: no data folder at data (give --data DIR holding real/ and nbaiot/, or set IOTGUARD_SHARED_DATA)"
    ]
