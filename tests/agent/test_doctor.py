"""``python -m agent doctor``: real checks on this machine, and a failing one that says what to do."""

from __future__ import annotations

import socket
import subprocess
import sys

from lab import REPO


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "doctor", "--profile", "x86_64-gateway", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_doctor_checks_model_and_runtime():
    res = doctor("--interface", "lo")
    assert "[ok  ] model bundle" in res.stdout
    assert "[ok  ] model self-test" in res.stdout or "self-test rows" in res.stdout
    assert "[ok  ] TFLite runtime" in res.stdout
    assert "[ok  ] interface" in res.stdout


def test_doctor_names_the_fix_for_a_missing_interface(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('[mqtt]\nhost = "127.0.0.1"\nport = 1\nfleet = "f"\ndevice = "d"\ncontroller_public_key = "/nonexistent.pub"\n')
    res = doctor("--interface", "nosuch0", "--config", str(config))
    assert res.returncode == 1
    assert "[FAIL] interface" in res.stdout and "-> pass --interface" in res.stdout
    assert "[FAIL] broker" in res.stdout and "[FAIL] controller key" in res.stdout


def test_doctor_checks_the_metrics_address_and_the_event_log(tmp_path):
    (tmp_path / "a-file").write_text("")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "agent.toml"
        config.write_text(f'metrics = {port}\n[events]\npath = "{tmp_path / "a-file" / "events.jsonl"}"\n')
        res = doctor("--interface", "lo", "--config", str(config))
    assert res.returncode == 1
    assert f"[FAIL] metrics              127.0.0.1:{port}: Address already in use" in res.stdout
    assert "-> choose another address" in res.stdout
    assert "[warn] event log" in res.stdout and "is not a writable folder" in res.stdout
    config.write_text(f'metrics = {port}\n[events]\npath = "{tmp_path / "logs" / "events.jsonl"}"\n')  # now free
    res = doctor("--interface", "lo", "--config", str(config))
    assert f"[ok  ] metrics              http://127.0.0.1:{port}/metrics can be served" in res.stdout
    assert "[ok  ] event log" in res.stdout
