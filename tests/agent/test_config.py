"""The configuration keys of the operator's outputs: metrics, events, Home Assistant.

Each refused value is one line naming the file, the key and the problem, from the loader and from
``agent run`` (status 2, no traceback).  (Random mutations of every key: tests/agent/fleet/test_mqtt_fuzz.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, EventsConfig, load_config
from agent.events import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from agent.metrics import Listen
from lab import REPO

MQTT = '[mqtt]\nhost = "b"\nfleet = "f"\ndevice = "d"\ncontroller_public_key = "k.pub"\n'


def load(tmp_path: Path, text: str):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(path)


def test_defaults_leave_everything_off(tmp_path):
    config = load(tmp_path, MQTT)
    assert config.metrics is None and config.events is None
    assert config.mqtt.home_assistant is False and config.mqtt.discovery_prefix == "homeassistant"


def test_values_that_are_taken(tmp_path):
    assert load(tmp_path, "metrics = 9464\n").metrics == Listen("127.0.0.1", 9464)
    assert load(tmp_path, 'metrics = "0.0.0.0:9100"\n').metrics == Listen("0.0.0.0", 9100)
    assert load(tmp_path, 'metrics = ""\n').metrics is None
    config = load(tmp_path, '[events]\npath = "/var/log/iotguard/events.jsonl"\n')
    assert config.events == EventsConfig(Path("/var/log/iotguard/events.jsonl"), DEFAULT_MAX_BYTES, DEFAULT_BACKUPS)
    config = load(tmp_path, '[events]\npath = "e.jsonl"\nmax_bytes = 1024\nbackups = 0\n')
    assert (config.events.max_bytes, config.events.backups) == (1024, 0)
    assert load(tmp_path, "").block is True and load(tmp_path, "block = false\n").block is False
    config = load(tmp_path, MQTT + 'home_assistant = true\ndiscovery_prefix = "ha/discovery"\n')
    assert config.mqtt.home_assistant is True and config.mqtt.discovery_prefix == "ha/discovery"


@pytest.mark.parametrize(("text", "message"), [
    ("metrics = 70000\n", "key 'metrics' must be HOST:PORT or PORT with PORT in 1..65535, got '70000'"),
    ('metrics = "board:http"\n', "key 'metrics' must be HOST:PORT or PORT with PORT in 1..65535, got 'board:http'"),
    ('metrics = "::1:9464"\n', "key 'metrics' needs brackets around an IPv6 address ([::1]:9464), got '::1:9464'"),
    ("metrics = true\n", "key 'metrics' must be str or int, got bool True"),
    ("metrics = 1.5\n", "key 'metrics' must be str or int, got float 1.5"),
    ('[events]\npath = "e"\nmax_bytes = -5\n', "key 'events.max_bytes' must be at least 1024, got -5"),
    ('[events]\npath = "e"\nmax_bytes = 10\n', "key 'events.max_bytes' must be at least 1024, got 10"),
    ('[events]\npath = "e"\nbackups = -1\n', "key 'events.backups' must be in 0..1000, got -1"),
    ('[events]\npath = ""\n', "key 'events.path' must not be empty"),
    ("[events]\nmax_bytes = 2048\n", "missing key events.'path'"),
    ('[events]\npath = "e"\nrotate = true\n', "unknown key events.'rotate' (known: backups, max_bytes, path)"),
    ('events = "e.jsonl"\n', "key 'events' must be dict, got str 'e.jsonl'"),
    ('block = "no"\n', "key 'block' must be true or false, got str 'no'"),
    (MQTT + 'home_assistant = "yes"\n', "key mqtt.'home_assistant' must be true or false, got str 'yes'"),
    (MQTT + "home_assistant = 1\n", "key mqtt.'home_assistant' must be true or false, got int 1"),
    (MQTT + 'discovery_prefix = "home/#"\n', "key 'mqtt.discovery_prefix' must be a topic prefix without wildcards"),
    (MQTT + 'discovery_prefix = "homeassistant/"\n', "key 'mqtt.discovery_prefix' must be a topic prefix"),
])  # fmt: skip
def test_a_bad_value_is_one_line_naming_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'agent.toml'}: ") and message in text and "\n" not in text, text


def test_agent_run_reports_it_in_one_line_with_status_2(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[events]\npath = "e"\nbackups = -3\n')
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--profile", "x86_64-gateway", "--config", str(config)],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {config}: key 'events.backups' must be in 0..1000, got -3\n"
    assert not (tmp_path / "state").exists()

    result = subprocess.run([sys.executable, "-m", "agent", "run", "--profile", "x86_64-gateway", "--metrics", "0"],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("argument --metrics: must be HOST:PORT or PORT with PORT in 1..65535, "
                                                   "got '0'")  # fmt: skip
