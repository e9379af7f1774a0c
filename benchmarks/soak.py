"""Soak run (not a test, not in CI): the live agent and the controller for half an hour under mixed traffic.

In the network namespaces of lab/live_lab.py (device with bridge br0,
attacker, benign peer), with everything real:

* a mosquitto broker (persistent) on the device namespace's loopback, stopped
  and restarted every ``--broker-restart-s`` seconds (down ``--broker-down-s``);
* the controller (``python -m controller run``, policy: one device's report
  blocks a source fleet-wide) on that broker;
* the agent (``python -m agent run``, nftables enforcement, fleet link) on br0;
* a benign peer sending UDP datagrams to an application socket on the device,
  all the time;
* one Mirai attack episode every ``--episode-s`` seconds: the five classes in
  turn, each from a new attacker address; every fifth episode also a flood of
  spoofed SYNs (each from its own random source).  Local rules last
  ``--block-s`` seconds, so rules come and go.

Every 10 s it samples the agent's RSS; the agent logs a status line (frames,
drops, alert accounting) every minute.  At the end it reports RSS over time,
packets processed, kernel drops, alerts the agent queued / sent / dropped /
confirmed / resent and alerts the controller stored, episodes detected, benign
datagrams delivered, and checks that no alert was lost beyond what the queue
reports as dropped: every seq the agent handed out is stored by the
controller, still in the agent's queue, or counted as dropped.

    python benchmarks/soak.py [--minutes 30] [--out FILE]

Needs root, nft, ip and mosquitto.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.agent_load import (  # noqa: E402
    AgentRun,
    BenignPeer,
    _lab_addresses,
    agent,
    finish_sender,
    flood_sender,
    sampler,
    stop_process,
)
from benchmarks.common import save  # noqa: E402
from lab import live_lab, netns  # noqa: E402

PYTHON = sys.executable
BROKER_PORT = 1883
KINDS = ("mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain")


class Broker:
    """mosquitto with persistence in the device namespace, which the soak stops and starts again."""

    def __init__(self, dev, workdir: Path) -> None:
        self.dev, self.workdir = dev, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {BROKER_PORT} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nautosave_interval 5\n"
        )
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.dev.name, "mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def controller(dev, workdir: Path, key: Path) -> Iterator[subprocess.Popen]:
    log = open(workdir / "controller.log", "w")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", dev.name, PYTHON, "-m", "controller", "run", "--db", str(workdir / "controller.sqlite"),
         "--key", str(key), "--broker", f"127.0.0.1:{BROKER_PORT}", "--k", "1", "--ttl", "600"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc, 20)
        log.close()


def statuses(run: AgentRun) -> list[tuple[float, dict]]:
    """The agent's periodic "status:" log lines, parsed."""
    out = []
    for at, line in list(run.lines):
        if "status: " in line:
            out.append((at, ast.literal_eval(line.split("status: ", 1)[1].strip())))
    return out


def alerts_stored(db: Path) -> set[int]:
    """The seqs of the alerts the controller stored (the soak has one device)."""
    if not db.exists():
        return set()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return {row[0] for row in con.execute("SELECT seq FROM alerts")}


def alerts_pending(queue: Path) -> set[int]:
    """The seqs still in the agent's on-disk queue (files named by seq), e.g. stored but not yet confirmed."""
    return {int(p.stem) for p in (queue / "pending").glob("*.json") if p.stem.isdigit()}


def soak(args: argparse.Namespace, work: Path) -> dict:
    from agent.wire.signing import generate_key, save_keypair

    save_keypair(generate_key(), work / "controller.key", work / "controller.pub")
    mqtt = (f'block_seconds = {args.block_s}\n[mqtt]\nhost = "127.0.0.1"\nport = {BROKER_PORT}\nfleet = "soak"\n'
            f'device = "board-1"\ncontroller_public_key = "{work / "controller.pub"}"\nstatus_interval_s = 10\n')  # fmt: skip
    episodes: list[dict] = []
    ips = _lab_addresses()
    with live_lab.namespaces() as (dev, atk, peer):
        broker = Broker(dev, work / "broker")
        broker.start()
        try:
            with (
                controller(dev, work, work / "controller.key"),
                agent(dev, work / "agent", args.profile, "br0", "nftables", True, mqtt) as run,
                sampler(run, every=10.0) as rss,
                BenignPeer(dev, peer) as benign,
            ):
                start = time.monotonic()
                end = start + args.minutes * 60
                next_episode, next_restart, k = start + 5, start + args.broker_restart_s, 0
                while time.monotonic() < end:
                    now = time.monotonic()
                    if now >= next_restart:
                        broker.stop()
                        time.sleep(args.broker_down_s)
                        broker.start()
                        broker.restarts += 1
                        next_restart += args.broker_restart_s
                        print(f"  {now - start:6.0f} s: broker restarted ({broker.restarts})", flush=True)
                    if now >= next_episode:
                        episodes.append(episode(k, atk, ips, run, now - start))
                        k += 1
                        next_episode += args.episode_s
                    time.sleep(0.2)
                time.sleep(20)  # let the queue drain and the last rule sets travel
                stored = alerts_stored(work / "controller.sqlite")
        finally:
            broker.stop()
    pending = alerts_pending(work / "agent" / "state" / "mqtt" / "alerts")
    return summarise(args, run, rss, benign, broker, episodes, stored, pending)


def episode(k: int, atk, ips: dict, run: AgentRun, at: float) -> dict:
    """Attack number ``k``: one Mirai class from a fresh address; every fifth also a spoofed SYN flood."""
    kind = KINDS[k % len(KINDS)]
    src = f"10.77.0.{100 + k % 100}"
    lines_before = len(run.lines)
    live_lab.send_raw(atk, live_lab.attack_frames(kind, 1500, src_ip=src), rate=1000)
    spoofed = k % 5 == 4
    if spoofed:
        with flood_sender(atk, ips, 20000, 0, True, 200_000, total=200_000, seed=k) as sender:
            finish_sender(sender)
    time.sleep(1.0)
    hostile = [line for _, line in run.lines[lines_before:] if "hostile:" in line]
    row = {"at_s": round(at), "kind": kind, "source": src, "spoofed_flood": spoofed,
           "detected": any(src in line for line in hostile),
           "classes": sorted({line.split("hostile:")[1].split()[0] for line in hostile if src in line})}  # fmt: skip
    print(f"  {at:6.0f} s: {kind:15s} from {src:12s} detected {row['detected']} {row['classes']}"
          + ("  + spoofed flood" if spoofed else ""), flush=True)  # fmt: skip
    return row


def summarise(args, run: AgentRun, rss: list, benign: BenignPeer, broker: Broker, episodes: list, stored: set[int],
              pending: set[int]) -> dict:  # fmt: skip
    s = run.summary or {}
    fleet = s.get("fleet", {})
    status = statuses(run)
    queued = fleet.get("alerts_queued", 0)
    # By seq: an alert still queued may be stored already (its confirmation not yet in), so counts would overlap.
    accounted = {seq for seq in stored | pending if seq <= queued}
    lost = queued - len(accounted) - fleet.get("alerts_dropped", 0)
    rss_mb = [r[1] for r in rss]
    report = {
        "minutes": args.minutes,
        "profile": args.profile,
        "broker_restarts": broker.restarts,
        "episodes": len(episodes),
        "episodes_detected": sum(e["detected"] for e in episodes),
        "episode_rows": episodes,
        "frames": s.get("frames"),
        "classified": s.get("classified"),
        "filtered": s.get("filtered"),
        "per_class": s.get("per_class"),
        "kernel_drops": s.get("kernel_drops"),
        "rules_at_end": s.get("rules"),
        "alerts_queued": queued,
        "alerts_sent": fleet.get("alerts_sent"),
        "alerts_dropped": fleet.get("alerts_dropped"),
        "alerts_pending_at_end": fleet.get("alerts_pending"),
        "alerts_confirmed": fleet.get("alerts_confirmed"),  # of the sent, confirmed stored by the controller
        "alerts_resent": fleet.get("alerts_resent"),  # sent again: acknowledged by the broker, not confirmed in time
        "alerts_stored_by_controller": len(stored),
        "alerts_lost": lost,  # queued but neither stored, dropped by the bounded queue, nor pending: must be 0
        "mqtt_connects": fleet.get("connects"),
        "fleet_rule_sets_applied": fleet.get("rules_applied"),
        "benign_datagrams_sent": benign.sent,
        "benign_datagrams_received": benign.received,
        "rss_mb": {"start": rss_mb[0] if rss_mb else None, "end": rss_mb[-1] if rss_mb else None,
                   "median": statistics.median(rss_mb) if rss_mb else None, "max": max(rss_mb, default=None),
                   "peak_vmhwm": round((run.peak_rss_kb or 0) / 1024, 1)},  # fmt: skip
        "rss_timeline": rss,  # (s, RSS MB, anonymous MB) every 10 s
        "status_timeline": [(round(at - status[0][0]), {k: v.get(k) for k in ("frames", "classified", "kernel_drops", "rules")}
                             | {"alerts_sent": v.get("fleet", {}).get("alerts_sent")}) for at, v in status],  # fmt: skip
    }
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--profile", default="rpi-zero-2w")
    ap.add_argument("--episode-s", type=float, default=60.0, help="seconds between attack episodes")
    ap.add_argument("--broker-restart-s", type=float, default=300.0, help="seconds between broker restarts")
    ap.add_argument("--broker-down-s", type=float, default=10.0)
    # Shorter than the gap between episodes: a spoofed TCP flood's rule (any source) lapses before the next
    # TCP attack, which then meets the detector instead of that rule.
    ap.add_argument("--block-s", type=float, default=45.0, help="agent's local rule lifetime")
    ap.add_argument("--out", help="results JSON (default benchmarks/results/soak.json)")
    ap.add_argument("--workdir", type=Path, help="keep logs, databases and state here (default: a temporary folder)")
    args = ap.parse_args()
    reason = netns.skip_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        work.mkdir(parents=True, exist_ok=True)
        report = soak(args, work)
    keys = ("minutes", "broker_restarts", "episodes", "episodes_detected", "frames", "kernel_drops", "alerts_queued",
            "alerts_sent", "alerts_dropped", "alerts_confirmed", "alerts_resent", "alerts_stored_by_controller",
            "alerts_lost", "benign_datagrams_sent",
            "benign_datagrams_received", "rss_mb")  # fmt: skip
    for key in keys:
        print(f"{key:28s} {report[key]}")
    print("wrote", save(report, args.out, "soak"))


if __name__ == "__main__":
    main()
