"""Benchmark (not a test): a spoofed SYN flood of 10,000,000 distinct sources through the live agent.

What the hardening issue asks of it: the agent's memory stays within the
profile's budget, its rule table stays bounded (one rule on what the flood has
in common, not one per source), and benign traffic keeps being classified and
delivered.  In the namespaces of lab/live_lab.py: the attacker sends
the flood (every frame from its own random public address) while the benign
peer sends UDP datagrams to an application socket on the device all along;
the agent (``python -m agent run``, nftables enforcement) captures on br0.

    python benchmarks/spoofed_flood.py [--sources 10000000] [--rate 100000] [--profile rpi-zero-2w]

Needs root, nft and ip; the sender holds the whole flood in memory (74 bytes a frame).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.profile import load_profile  # noqa: E402
from benchmarks.agent_load import BenignPeer, _lab_addresses, agent, finish_sender, flood_sender, sampler  # noqa: E402
from benchmarks.common import save  # noqa: E402
from lab import live_lab, netns  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=int, default=10_000_000)
    ap.add_argument("--rate", type=float, default=100_000, help="flood frames per second")
    ap.add_argument("--profile", default="rpi-zero-2w")
    ap.add_argument("--enforcement", default="nftables", choices=("nftables", "none"))
    ap.add_argument("--out", help="results JSON (default benchmarks/results/spoofed_flood.json)")
    args = ap.parse_args()
    reason = netns.skip_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    profile = load_profile(args.profile)
    print(f"building {args.sources:,} spoofed SYNs ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="spoofed_flood-") as tmp, live_lab.namespaces() as (dev, atk, peer):
        work = Path(tmp)
        with (
            flood_sender(atk, _lab_addresses(), args.rate, 0, True, args.sources, total=args.sources, seed=11) as sender,
            agent(dev, work / "agent", args.profile, "br0", args.enforcement) as run,
            sampler(run, every=1.0) as rss,
            BenignPeer(dev, peer) as benign,
        ):
            time.sleep(3)  # benign traffic alone first
            benign_before = benign.received
            print(f"flooding at {args.rate:,.0f} frames/s ...", flush=True)
            report = finish_sender(sender)
            benign_during = benign.received - benign_before
            time.sleep(3)  # and after
            run.wait_idle()
    s = run.summary or {}
    hostile = [line for _, line in run.lines if "hostile:" in line]
    peak = round((run.peak_rss_kb or 0) / 1024, 1)
    results = {
        "profile": args.profile,
        "enforcement": args.enforcement,
        "sources": args.sources,
        "offered_pps": round(report["sent"] / report["seconds"]),
        "flood_seconds": round(report["seconds"], 1),
        "agent_frames": s.get("frames"),
        "kernel_drops": s.get("kernel_drops"),
        "filtered": s.get("filtered"),
        "classified": s.get("classified"),
        "per_class": s.get("per_class"),
        "verdicts": len(hostile),
        "verdict_lines": [line.strip() for line in hostile][:10],
        "rules_at_end": s.get("rules"),
        "peak_rss_mb": peak,
        "memory_budget_mb": profile.memory_budget_mb,
        "within_budget": peak <= profile.memory_budget_mb,
        "benign_datagrams_sent": benign.sent,
        "benign_datagrams_received": benign.received,
        "benign_received_during_flood": benign_during,
        "peer_blocked": any(live_lab.PEER_IP in line for line in hostile),
        "rss_timeline": rss[::5],  # (s, RSS MB, anonymous MB) every 5 s
    }
    for key in ("sources", "offered_pps", "agent_frames", "kernel_drops", "filtered", "classified", "verdicts",
                "rules_at_end", "peak_rss_mb", "memory_budget_mb", "benign_datagrams_sent",
                "benign_datagrams_received", "benign_received_during_flood", "peer_blocked"):  # fmt: skip
        print(f"{key:30s} {results[key]}")
    print(f"wrote {save(results, args.out, 'spoofed_flood')}")


if __name__ == "__main__":
    main()
