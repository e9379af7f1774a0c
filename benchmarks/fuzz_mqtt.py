"""Fuzz everything that reaches the agent over MQTT, and its configuration files (issue #7): the long run.

About 150,000 hostile messages (lab/mqtt_fuzz.py) go to the agent's real message handler
(lab/mqtt_fuzz_harness.py judges each), then configuration files and profiles (lab/config_fuzz.py).
Prints the outcomes and every problem found, and writes a results file; tests/agent/fleet/test_mqtt_fuzz.py
replays the regression corpus and runs a property test through the same generators.

    python benchmarks/fuzz_mqtt.py                    # ~150,000 cases, a few minutes
    python benchmarks/fuzz_mqtt.py --scale 0.1        # a quick look
    python benchmarks/fuzz_mqtt.py --failures /tmp/f  # write the first failing case of each kind as JSON
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import save  # noqa: E402
from lab.config_fuzz import config_case, load_file_case, profile_base, profile_case  # noqa: E402
from lab.mqtt_fuzz import World, cases  # noqa: E402
from lab.mqtt_fuzz_harness import bundle_problem, primed  # noqa: E402

log = logging.getLogger("fuzz_mqtt")


# --- the run --------------------------------------------------------------------


def normalise(reason: str) -> str:
    """A reason without its particulars (numbers, quoted values, digests), to count reasons by kind."""
    reason = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "…", reason)
    reason = re.sub(r"\b[0-9a-f]{16,}\b|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "#", reason)
    return reason[:110]


@dataclass
class Tally:
    messages: Counter = field(default_factory=Counter)  # kind -> count
    categories: Counter = field(default_factory=Counter)  # "kind / category" -> count
    outcomes: Counter = field(default_factory=Counter)  # "rejected" / "ignored" / "accepted"
    reasons: Counter = field(default_factory=Counter)  # normalised reason -> count
    problems: Counter = field(default_factory=Counter)  # "kind / category: problem" -> count
    examples: dict = field(default_factory=dict)  # problem key -> first case (JSON)
    seconds: Counter = field(default_factory=Counter)

    def problem(self, key: str, example: dict) -> None:
        self.problems[key] += 1
        self.examples.setdefault(key, example)


def fuzz_messages(tally: Tally, world: World, folder: Path, counts: dict[str, int], seed: int) -> None:
    agents = 1
    harness = primed(folder / "agent-1", world)
    try:
        before = harness.snapshot()
        for kind, count in counts.items():
            rng = random.Random(f"{seed}-{kind}")
            start = time.perf_counter()
            for i, case in enumerate(cases(kind, count, rng, world)):
                out, problems = harness.run(case, before)
                if kind == "model":
                    problems += filter(None, [bundle_problem(case, world)])
                tally.messages[kind] += 1
                tally.categories[f"{kind} / {case.category}"] += 1
                tally.outcomes["accepted" if out.applied else "rejected" if out.reason else "ignored"] += 1
                if out.reason:
                    tally.reasons[normalise(out.reason)] += 1
                for p in problems:
                    tally.problem(f"{kind} / {case.category}: {normalise(p)}", case.to_json())
                if out.changed:  # a hostile message got in: carry on with a fresh agent in the known state
                    harness.close()
                    agents += 1
                    harness = primed(folder / f"agent-{agents}", world)
                    before = harness.snapshot()
                if (i + 1) % 10_000 == 0:
                    log.info("%s: %d messages, %d problems so far", kind, i + 1, sum(tally.problems.values()))
            tally.seconds[kind] = round(time.perf_counter() - start, 1)
    finally:
        harness.close()


def fuzz_files(tally: Tally, folder: Path, count: int, seed: int) -> None:
    base = profile_base()
    for kind in ("config", "profile"):
        rng = random.Random(f"{seed}-{kind}")
        start = time.perf_counter()
        for _ in range(count):
            case = config_case(rng) if kind == "config" else profile_case(rng, base)
            tally.messages[kind] += 1
            tally.categories[f"{kind} / {case.category}"] += 1
            for p in load_file_case(case, folder):
                tally.problem(f"{kind} / {case.category}: {normalise(p)}", case.to_json())
        tally.seconds[kind] = round(time.perf_counter() - start, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=40_000, help="messages per rules topic (device and all)")
    parser.add_argument("--model", type=int, default=30_000, help="messages on the model topic")
    parser.add_argument("--topics", type=int, default=10_000, help="messages on topics the agent does not expect")
    parser.add_argument("--files", type=int, default=15_000, help="configuration files and profiles, each")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (0.1 for a quick look)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--failures", type=Path, help="write the first failing case of each problem here as JSON")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/fuzz_mqtt.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def n(count: int) -> int:
        return max(1, round(count * args.scale))

    counts = {"rules-device": n(args.rules), "rules-all": n(args.rules), "model": n(args.model), "topic": n(args.topics)}
    tally = Tally()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-mqtt-") as tmp:
        world = World.create(Path(tmp))
        fuzz_messages(tally, world, Path(tmp), counts, args.seed)
        (Path(tmp) / "files").mkdir()
        fuzz_files(tally, Path(tmp) / "files", n(args.files), args.seed)
    elapsed = time.perf_counter() - start

    total = sum(tally.messages.values())
    print(f"\n{total} cases in {elapsed:.0f} s ({total / elapsed:.0f}/s)")
    for kind, count in tally.messages.items():
        print(f"  {kind:13s} {count:7d}  ({tally.seconds[kind]} s)")
    print(f"outcomes: {dict(tally.outcomes)}")
    print(f"problems: {sum(tally.problems.values())}")
    for key, count in tally.problems.most_common():
        print(f"  {count:6d}  {key}")
    if args.failures and tally.examples:
        args.failures.mkdir(parents=True, exist_ok=True)
        for i, (key, example) in enumerate(tally.examples.items()):
            (args.failures / f"failure-{i:02d}.json").write_text(json.dumps({"problem": key, **example}, indent=1) + "\n")
        print(f"first failing case of each problem written to {args.failures}")
    path = save({
        "seed": args.seed,
        "cases_total": total,
        "seconds": round(elapsed, 1),
        "cases_per_kind": dict(tally.messages),
        "seconds_per_kind": dict(tally.seconds),
        "cases_per_category": dict(sorted(tally.categories.items())),
        "outcomes": dict(tally.outcomes),
        "accepted_hostile": tally.outcomes["accepted"],
        "rejections_per_reason": dict(tally.reasons.most_common()),
        "problems": dict(tally.problems.most_common()),
        "exceptions_found": sum(c for k, c in tally.problems.items() if "exception" in k or "instead of" in k),
    }, args.out, "fuzz_mqtt")  # fmt: skip
    print(f"results: {path}")
    return 1 if tally.problems else 0


if __name__ == "__main__":
    sys.exit(main())
