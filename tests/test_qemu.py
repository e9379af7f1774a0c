"""The agent's ARM userlands under QEMU user-mode emulation (DESIGN 3 and 8).

Each target (tests/qemu_sysroot.py: aarch64 + tflite-runtime, aarch64 +
ai-edge-litert, armv7 + tflite-runtime) must import numpy and its TFLite
runtime, run an int8 model to the same output bytes as x86_64, and compute the
same features as x86_64.  The first run builds the sysroots (about half a
minute, cached afterwards).  Without QEMU or network and cache, these tests
skip and say why.

To compare something else (the trained model, say), run the same command on
both sides:

    host = run_native(["-m", "agent", ...]); arm = run_python(target, ["-m", "agent", ...])
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.profile import load_profile, shipped_profiles
from qemu_sysroot import REPO, TARGETS, EmulationUnavailable, ensure_sysroot, run_native, run_python, target_for

pytestmark = pytest.mark.qemu

TINY_MODEL = REPO / "tests" / "data" / "tiny_int8.tflite"

# Runs on both sides: int8 inference of the tiny model at batch 1 and batch 16, output as hex.
RUN_TINY_MODEL = r"""
import json, platform, sys
import numpy as np
runtime, model = sys.argv[1], sys.argv[2]
if runtime == "tflite-runtime":
    from tflite_runtime.interpreter import Interpreter
else:
    from ai_edge_litert.interpreter import Interpreter
out = {"machine": platform.machine()}
for batch in (1, 16):
    it = Interpreter(model_path=model, num_threads=1)
    inp, res = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [batch, inp["shape"][1]])
    it.allocate_tensors()
    n = batch * inp["shape"][1]
    x = ((np.arange(n, dtype=np.int64) * 37 + 11) % 256 - 128).astype(np.int8).reshape(batch, -1)
    it.set_tensor(inp["index"], x)
    it.invoke()
    out[f"batch{batch}"] = it.get_tensor(res["index"]).tobytes().hex()
print(json.dumps(out))
"""

REPORT_RUNTIME = r"""
import json, platform, sys, numpy
mod = __import__(sys.argv[1], fromlist=["Interpreter"])
print(json.dumps({"machine": platform.machine(), "numpy": numpy.__version__,
                  "numpy_file": numpy.__file__, "interpreter": mod.Interpreter.__name__}))
"""

RUNTIME_MODULES = {"tflite-runtime": "tflite_runtime.interpreter", "ai-edge-litert": "ai_edge_litert.interpreter"}

# A small real capture (MQTT, ARP, DNS, TCP/UDP and IPv6 traffic between IoT devices) for the feature comparison.
FEATURE_CAPTURE = "ndpi_coap_mqtt.pcap"


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(request) -> str:
    name = request.param
    try:
        ensure_sysroot(name)
    except EmulationUnavailable as exc:
        pytest.skip(f"QEMU target {name} unavailable: {exc}")
    return name


def _json_line(proc, what: str) -> dict:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_python_numpy_and_runtime_import(target: str) -> None:
    spec = TARGETS[target]
    got = _json_line(run_python(target, ["-c", REPORT_RUNTIME, RUNTIME_MODULES[spec.runtime]]), target)
    assert got["machine"] == spec.machine
    assert got["interpreter"] == "Interpreter"
    major = int(got["numpy"].split(".")[0])
    if spec.runtime == "tflite-runtime":
        assert major < 2, f"tflite-runtime 2.14 needs numpy < 2, the sysroot has {got['numpy']}"
    if spec.machine == "armv7l":
        assert "/usr/lib/python3/dist-packages/" in got["numpy_file"], "armv7 should use Debian's numpy"


def test_tiny_int8_model_gives_the_same_bytes_as_x86_64(target: str) -> None:
    runtime = TARGETS[target].runtime
    host = run_native(["-c", RUN_TINY_MODEL, runtime, str(TINY_MODEL)])
    if host.returncode != 0 and "ModuleNotFoundError" in host.stderr:
        pytest.skip(f"the host has no {runtime} to compare with ({sys.executable})")
    want = _json_line(host, f"x86_64 {runtime}")
    got = _json_line(run_python(target, ["-c", RUN_TINY_MODEL, runtime, str(TINY_MODEL)]), target)
    assert want["machine"] == "x86_64" and got["machine"] == TARGETS[target].machine
    rows = bytes.fromhex(want["batch16"])
    assert len({rows[i : i + 6] for i in range(0, len(rows), 6)}) > 4, "the test input should give varied scores"
    assert got["batch1"] == want["batch1"]
    assert got["batch16"] == want["batch16"]


def _features(proc, what: str) -> tuple[list[str], np.ndarray, str]:
    assert proc.returncode == 0, f"{what}: `python -m agent features` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    header = lines[0].split(",")
    values = np.loadtxt(lines[1:], delimiter=",", ndmin=2)
    return header, values, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def test_features_match_x86_64(target: str, shared_data: Path) -> None:
    if not (REPO / "agent" / "__main__.py").exists():
        pytest.fail("agent/__main__.py is missing: this test needs the feature engine's `python -m agent features`")
    capture = str(shared_data / "real" / FEATURE_CAPTURE)
    host = run_native(["-m", "agent", "features", capture])
    if host.returncode != 0:
        pytest.fail(f"`python -m agent features` fails on the host (x86_64) already:\n{host.stderr[-3000:]}")
    header, want, want_summary = _features(host, "x86_64")
    got_header, got, got_summary = _features(run_python(target, ["-m", "agent", "features", capture]), target)

    from feature_tolerance import mismatches

    assert got_header == header
    assert got_summary == want_summary  # the same packets decoded and skipped
    assert got.shape == want.shape and len(want) > 100
    assert np.array_equal(got[:, 0], want[:, 0]), "the same packets (index column)"
    problems = mismatches(got[:, 1:], want[:, 1:])
    assert not problems, "\n".join(problems[:20])


EMULATED_PROFILES = [name for name in shipped_profiles() if load_profile(name).qemu]


@pytest.mark.parametrize("name", EMULATED_PROFILES)
def test_each_board_runs_the_tiny_model_on_its_own_cpu(name: str) -> None:
    """The board's runtime on the board's CPU model (e.g. the BeagleBone's Cortex-A8: no VFPv4)."""
    profile = load_profile(name)
    runtime = profile.runtime_preference()[0]
    target = target_for(profile.arch, runtime)
    assert target is not None, f"no QEMU target emulates {profile.arch} with {runtime} (tests/qemu_sysroot.py TARGETS)"
    assert TARGETS[target].qemu == profile.qemu
    try:
        ensure_sysroot(target)
    except EmulationUnavailable as exc:
        pytest.skip(f"QEMU target {target} unavailable: {exc}")
    host = run_native(["-c", RUN_TINY_MODEL, runtime, str(TINY_MODEL)])
    if host.returncode != 0 and "ModuleNotFoundError" in host.stderr:
        pytest.skip(f"the host has no {runtime} to compare with ({sys.executable})")
    want = _json_line(host, f"x86_64 {runtime}")
    proc = run_python(target, ["-c", RUN_TINY_MODEL, runtime, str(TINY_MODEL)], cpu=profile.qemu_cpu)
    got = _json_line(proc, f"{name} ({target} on {profile.qemu_cpu})")
    assert got["machine"] == profile.arch
    assert (got["batch1"], got["batch16"]) == (want["batch1"], want["batch16"])
