"""Benchmark: the agent's start-up, from a fresh interpreter to its first classified batch (issue #12).

    python benchmarks/startup.py [--runs 7] [--profile rpi-zero-2w] [--out FILE]

A board restarts the agent on every update, so start-up is what an update costs in blindness.  Each run is a
fresh ``python`` process that does what ``python -m agent run`` does before its capture loop - import the
agent, load the firmware profile, the model bundle, the interpreter and the anomaly detector, build the live
agent (with and without the fleet link configured: paho and the signature library load then) - and then
pushes one profile-sized batch of the bundled demo capture through every stage.  No interface, broker or
root is needed: the capture and the broker connection are the only parts left out (the link is built, not
started).  Printed and written: medians over ``--runs`` of each step and of the whole, measured by the parent
from spawning the process (interpreter start included) to the first batch's verdicts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save  # noqa: E402

CHILD = r"""
import sys, time, json
marks = {"start": time.perf_counter()}
from pathlib import Path
import agent.cli  # what `python -m agent` imports first
from agent.config import AgentConfig, MqttConfig
from agent.live import LiveAgent
from agent.profile import load_profile
marks["import"] = time.perf_counter()
profile = load_profile(sys.argv[1])
work = Path(sys.argv[2])
mqtt = None
if sys.argv[3] == "link":
    from agent.wire.signing import generate_key, save_keypair
    save_keypair(generate_key(), work / "controller.key", work / "controller.pub")
    mqtt = MqttConfig(host="127.0.0.1", fleet="bench", device="dev", state_dir=work / "fleet",
                      controller_public_key=work / "controller.pub")
marks["profile"] = time.perf_counter()
agent = LiveAgent(profile, AgentConfig(state_dir=work / "state", mqtt=mqtt), interface="lo", enforcement="none")
marks["agent"] = time.perf_counter()  # model bundle, interpreter, anomaly detector, tables, fleet link built
from agent.capture.pcap import read_capture
from agent.pipeline import SAMPLE_CAPTURE
frames = next(iter(read_capture(SAMPLE_CAPTURE, batch_size=profile.batch_size)))
agent.process(frames)
marks["first_batch"] = time.perf_counter()
rss = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"marks": marks, "frames": len(frames), "peak_rss_mb": rss}))
"""

STEPS = ("import", "profile", "agent", "first_batch")


def one_run(profile: str, link: bool) -> dict:
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, profile, work, "link" if link else "alone"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        total = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"start-up run failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    marks = got["marks"]
    steps, before = {}, marks["start"]
    for name in STEPS:
        steps[name] = marks[name] - before
        before = marks[name]
    # The parent's clock covers the interpreter's own start and the child's exit (a few ms): an upper bound.
    return {"total_s": total, "to_first_batch_s": marks["first_batch"] - marks["start"], "steps_s": steps,
            "frames": got["frames"], "peak_rss_mb": got["peak_rss_mb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--profile", default="rpi-zero-2w")
    ap.add_argument("--out", help="results JSON (default benchmarks/results/startup.json)")
    args = ap.parse_args()
    results = {}
    for link in (False, True):
        runs = [one_run(args.profile, link) for _ in range(args.runs)]  # fresh processes, one after another
        name = "with fleet link" if link else "alone"
        med = {
            "spawn_to_first_batch_s": statistics.median(r["total_s"] for r in runs),
            "in_process_to_first_batch_s": statistics.median(r["to_first_batch_s"] for r in runs),
            "steps_s": {s: statistics.median(r["steps_s"][s] for r in runs) for s in STEPS},
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "first_batch_frames": runs[0]["frames"],
        }
        results[name] = med
        steps = ", ".join(f"{s} {v * 1000:.0f} ms" for s, v in med["steps_s"].items())
        print(f"{args.profile} {name:16s}: {med['spawn_to_first_batch_s'] * 1000:.0f} ms from spawn to the first "
              f"classified batch ({steps}); peak RSS {med['peak_rss_mb']:.1f} MB")  # fmt: skip
    print("wrote", save({"profile": args.profile, "runs": args.runs, "results": results}, args.out, "startup"))


if __name__ == "__main__":
    main()
