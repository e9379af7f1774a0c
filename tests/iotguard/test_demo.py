"""``python -m iotguard demo`` as a user runs it: every Mirai attacker of the bundled capture is named, the
per-packet classes agree with the capture's labels, and the fleet loop (controller, broker, agent link)
completes its round trip; ``--no-fleet`` stops after detection."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from lab import REPO

SAMPLE_META = REPO / "agent" / "samples" / "mirai_demo.meta.json"
TIMEOUT_S = 180


def run_demo(*options: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "iotguard", "demo", *options], cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def verdict_lines(out: str) -> list[str]:
    """The lines under "N verdicts:" ("1 verdict:"), up to the blank line after them."""
    match = re.search(r"^(\d+) verdicts?:\n((?:  .*\n)*)", out, re.MULTILINE)
    assert match, out
    lines = [line.strip() for line in match.group(2).splitlines()]
    assert len(lines) == int(match.group(1))
    return lines


def attackers() -> list[tuple[str, str]]:
    """(Mirai class, source address or "spoofed") of every attack in the bundled capture."""
    return [(a["class"], a["source"]) for a in json.loads(SAMPLE_META.read_text())["attackers"]]


def check_detection(out: str) -> None:
    verdicts = verdict_lines(out)
    for kind, source in attackers():
        who = "spoofed flood" if source == "spoofed" else f"{source} ("
        assert any(v.startswith(f"{kind:15s} {who}") for v in verdicts), f"{kind} from {source} not named:\n{out}"
    named = {v.split()[1] for v in verdicts if v.split()[1] != "spoofed"}
    assert named == {source for _, source in attackers() if source != "spoofed"}, "a benign host was convicted"
    table = dict(re.findall(r"^  (benign|mirai_\w+) +\d+ +[\d.]+% +([\d.]+)%$", out, re.MULTILINE))
    assert set(table) == {"benign", "mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain"}, out
    assert float(table.pop("benign")) < 2.0  # share of benign packets called an attack
    assert all(float(share) > 90.0 for share in table.values()), table


def test_demo_names_every_attacker_and_completes_the_fleet_round_trip():
    out = run_demo()
    check_detection(out)
    assert "round trip complete" in out, out
    # Only source verdicts become alerts (as on the board); the output says why spoofed floods do not.
    verdicts = verdict_lines(out)
    floods = sum(v.split()[1] == "spoofed" for v in verdicts)
    sources = len(verdicts) - floods
    assert floods and sources, out
    assert f"\nfleet loop, to the controller: {sources} alerts (one per source verdict, " in out, out
    assert f"; {floods} spoofed-flood verdicts not sent: their sources are forged" in out, out
    assert f"controller stored {sources} alerts" in out, out
    applied = re.search(r"agent applied the fleet rules: (.*)$", out, re.MULTILINE)
    assert applied, out
    blocked = {rule.split("/")[0] for rule in applied.group(1).split(", ")}
    assert blocked == {source for _, source in attackers() if source != "spoofed"}


def test_demo_without_the_fleet_stops_after_detection():
    out = run_demo("--no-fleet")
    check_detection(out)
    assert "fleet loop" not in out and "round trip" not in out
