"""Shared test fixtures: where ../shared/data is, and the repository root on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's agent, controller and lab

from lab import SHARED_DATA  # noqa: E402

# The broker and keys fixtures (a real mosquitto per test); a PostgreSQL server per session and the
# database fixture (each test parametrized over SQLite and PostgreSQL); the compiled kernels built from
# this checkout (native_library, compiled).
pytest_plugins = ("lab.mqtt_helpers", "lab.postgres", "lab.native_build")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set IOTGUARD_SHARED_DATA)")
    return SHARED_DATA
