"""Benchmark: 1,000 simulated devices on one mosquitto, with 1 and 2 controller replicas.

Measures
  * alerts/s ingested (stored in SQLite) by the controller replicas, while the
    devices publish as fast as the broker takes them (``live``), and from a
    backlog the broker held while the replicas were away (``backlog``: the
    controllers' own speed, without the devices competing for the CPU);
  * fleet rule push latency: from publishing a new signed ``all`` rule set to
    each device's ack being stored by a controller; p50, p99 and the time until
    all devices acked.

Devices are light: a few processes, each driving a few hundred paho clients
from one selector loop.  Each device verifies the signature and validates the
rule set with the agent's own code (``agent.wire.signing``, ``agent.wire.rules``)
before it acks.  Controllers are real ``python -m controller run`` processes
sharing one SQLite file.

    python benchmarks/mqtt_scale.py --out results/mqtt_scale.json

This is a benchmark, not a test: numbers depend on the machine (and on what
else runs on it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.wire import (
    ACK_SCHEMA,
    ALERT_SCHEMA,
    STATUS_SCHEMA,
    make_client,
    topic,
)
from agent.wire.jsonio import canonical_json
from agent.wire.rules import RuleSetError, parse_ruleset
from agent.wire.signing import (
    SignatureError,
    generate_key,
    load_private_key,
    load_public_key,
    open_envelope,
    save_keypair,
    trusted_keys,
)
from controller.broker import MosquittoBroker, mosquitto_binary
from controller.service import BrokerSettings, FleetRules, publish_once
from controller.store import Store

PREFIX = "iotguard/v1"
FLEET = "bench"
WAIT_S = 300.0


# --- simulated devices (run in worker processes) -----------------------------


class SimDevice:
    """One device: publishes alerts, verifies and acks rule sets.  Driven by the worker's selector loop."""

    def __init__(self, name: str, port: int, keys: dict, want_write: set) -> None:
        self.name = name
        self.keys = keys
        self.seq = 0
        self.pending_alerts: set[int] = set()
        self.applied: dict[str, int] = {}
        self.connected = False
        self.client = make_client(f"iotguard-{FLEET}-{name}", "5", None, None, None)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = lambda c, u, mid, rc, p: self.pending_alerts.discard(mid)
        self.client.on_socket_register_write = lambda c, u, s: want_write.add(self)
        self.client.on_socket_unregister_write = lambda c, u, s: want_write.discard(self)
        self.port = port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(topic(PREFIX, FLEET, self.name, "rules"), 1), (topic(PREFIX, FLEET, "all", "rules"), 1)])
        status = {"schema": STATUS_SCHEMA, "state": "online", "device": self.name, "fleet": FLEET}
        client.publish(topic(PREFIX, FLEET, self.name, "status"), canonical_json(status), qos=1, retain=True)
        self.connected = True

    def _on_message(self, client, userdata, message) -> None:
        target = message.topic.split("/")[-2]
        try:
            ruleset = parse_ruleset(open_envelope(message.payload, self.keys))
        except (SignatureError, RuleSetError):
            return
        if ruleset.version <= self.applied.get(target, 0):
            return
        self.applied[target] = ruleset.version
        ack = {"schema": ACK_SCHEMA, "target": target, "version": ruleset.version, "status": "applied",
               "reason": None, "device": self.name, "fleet": FLEET}
        client.publish(topic(PREFIX, FLEET, self.name, "rules/ack"), canonical_json(ack), qos=1)

    def send_alerts(self, count: int) -> None:
        now = time.time()
        for _ in range(count):
            self.seq += 1
            doc = {"schema": ALERT_SCHEMA, "seq": self.seq, "class": "mirai_syn", "confidence": 0.9,
                   "source": {"ip": f"198.51.100.{self.seq % 250}", "mac": None, "port": 4444},
                   "victim": {"ip": "192.168.0.2", "port": 23}, "packets": 10, "first_seen": now, "last_seen": now,
                   "action": "drop", "rule_id": None, "device": self.name, "fleet": FLEET, "sent_at": now}
            info = self.client.publish(topic(PREFIX, FLEET, self.name, "alerts"), canonical_json(doc), qos=1)
            self.pending_alerts.add(info.mid)


def device_worker(names: list[str], port: int, public_key_path: str, conn) -> None:
    keys = trusted_keys([load_public_key(Path(public_key_path))])
    want_write: set[SimDevice] = set()
    devices = [SimDevice(n, port, keys, want_write) for n in names]
    selector = selectors.DefaultSelector()
    for d in devices:
        d.client.connect("127.0.0.1", port, keepalive=120)
        selector.register(d.client.socket(), selectors.EVENT_READ, d)
    waiting_alerts = False
    reported_ready = False
    last_misc = time.monotonic()
    while True:
        if conn.poll():
            command, arg = conn.recv()
            if command == "alerts":
                for d in devices:
                    d.send_alerts(arg)
                waiting_alerts = True
            elif command == "stop":
                for d in devices:
                    d.client.disconnect()
                conn.send(("stopped", None))
                return
        for key, _ in selector.select(timeout=0.005):
            key.data.client.loop_read()
        for d in list(want_write):
            d.client.loop_write()
        if time.monotonic() - last_misc > 1.0:
            last_misc = time.monotonic()
            for d in devices:
                d.client.loop_misc()
        if not reported_ready and all(d.connected for d in devices):
            reported_ready = True
            conn.send(("ready", len(devices)))
        if waiting_alerts and not any(d.pending_alerts for d in devices):
            waiting_alerts = False
            conn.send(("alerts_done", time.time()))


class DeviceFleet:
    def __init__(self, count: int, processes: int, port: int, public_key: Path) -> None:
        names = [f"dev{i:04d}" for i in range(count)]
        self.pipes = []
        self.procs = []
        ctx = mp.get_context("spawn")
        for p in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=device_worker, args=(names[p::processes], port, str(public_key), child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            self._expect(pipe, "ready")

    @staticmethod
    def _expect(pipe, what: str):
        if not pipe.poll(WAIT_S):
            raise RuntimeError(f"device worker did not report {what!r}")
        message, value = pipe.recv()
        if message != what:
            raise RuntimeError(f"device worker said {message!r}, expected {what!r}")
        return value

    def send_alerts(self, per_device: int) -> float:
        """Every device publishes ``per_device`` alerts; returns when the broker acked them all (unix time)."""
        for pipe in self.pipes:
            pipe.send(("alerts", per_device))
        return max(self._expect(pipe, "alerts_done") for pipe in self.pipes)

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send(("stop", None))
        for pipe, proc in zip(self.pipes, self.procs):
            try:
                self._expect(pipe, "stopped")
            except (RuntimeError, EOFError):
                pass
            proc.join(10)


# --- controllers -------------------------------------------------------------


class Controllers:
    """``n`` replica processes of ``python -m controller run`` on one database."""

    def __init__(self, n: int, port: int, db: Path, key: Path, workdir: Path) -> None:
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for i in range(n):
            name = f"c{i + 1}"
            log = workdir / f"{name}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "controller", "--log-level", "INFO", "run", "--broker", f"127.0.0.1:{port}",
                     "--db", str(db), "--key", str(key), "--name", name, "--k", "1000000"],
                    stdout=out, stderr=subprocess.STDOUT, env=env,
                )
            self.procs.append((name, proc, log))
        for name, _, log in self.procs:
            wait_for(lambda log=log: ": subscribed" in log.read_text(), f"controller {name} subscribed")

    def stop(self) -> dict[str, str]:
        """SIGTERM each replica; returns its final stats line."""
        stats = {}
        for name, proc, log in self.procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            lines = [line for line in log.read_text().splitlines() if line.startswith("stopped:")]
            stats[name] = lines[-1] if lines else "(no stats)"
        return stats


def wait_for(condition, what: str, timeout: float = WAIT_S, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll)


def count_alerts(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as con:
        return con.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]


def replica_split(stats: dict[str, str]) -> dict[str, int]:
    out = {}
    for name, line in stats.items():
        marker = "alerts_new="
        out[name] = int(line.split(marker)[1].split(",")[0]) if marker in line else -1
    return out


# --- measurements ------------------------------------------------------------


def measure_ingest(devices: DeviceFleet, n_devices: int, replicas: int, per_device: int, port: int, db: Path,
                   key: Path, workdir: Path) -> tuple[dict, Controllers]:
    total = n_devices * per_device
    controllers = Controllers(replicas, port, db, key, workdir)
    base = count_alerts(db)
    t0 = time.time()
    published = devices.send_alerts(per_device)
    wait_for(lambda: count_alerts(db) >= base + total, f"{total} live alerts stored", poll=0.05)
    t1 = time.time()
    live = {"alerts": total, "publish_per_s": total / (published - t0), "ingest_per_s": total / (t1 - t0)}

    # Backlog: the replicas leave (their sessions stay at the broker), the devices send, the replicas return.
    split_live = replica_split(controllers.stop())
    devices.send_alerts(per_device)
    base = count_alerts(db)
    away = time.time()
    controllers = Controllers(replicas, port, db, key, workdir)
    try:
        wait_for(lambda: count_alerts(db) >= base + total, f"{total} backlog alerts stored", timeout=120, poll=0.05)
        done = time.time()
        # From the controllers' first stored batch (their own clock), not from process start-up.
        with sqlite3.connect(db, timeout=30) as con:
            (first,) = con.execute("SELECT MIN(received_at) FROM alerts WHERE received_at > ?", (away,)).fetchone()
        backlog = {"alerts": total, "ingest_per_s": total / (done - first)}
    except RuntimeError:
        backlog = {"alerts": total, "ingest_per_s": None, "stored": count_alerts(db) - base,
                   "note": "broker did not hold the backlog for the shared subscription"}
    return {"replicas": replicas, "live": live, "live_split": split_live, "backlog": backlog}, controllers


def measure_push(devices_count: int, pushes: int, db: Path, key: Path, port: int) -> dict:
    outbox: list[tuple[str, bytes, bool]] = []
    rules = FleetRules(Store(db), load_private_key(key), PREFIX, lambda t, p, r: outbox.append((t, p, r)))
    latencies: list[float] = []
    all_acked: list[float] = []

    def ack_times(version: int) -> list[float]:
        """When a controller stored each device's first "applied" ack of ``version``."""
        with sqlite3.connect(db, timeout=30) as con:
            return [r[0] for r in con.execute(
                "SELECT MIN(received_at) FROM acks WHERE fleet=? AND target='all' AND version=? AND status='applied' "
                "GROUP BY device", (FLEET, version))]

    for i in range(pushes):
        outbox.clear()
        version = rules.block(FLEET, f"203.0.113.{i}", "benchmark", None).version
        t0 = time.time()
        publish_once(BrokerSettings("127.0.0.1", port), f"bench-push-{i}", outbox)
        wait_for(lambda v=version: len(ack_times(v)) >= devices_count, f"{devices_count} acks of v{version}", poll=0.05)
        times = [t - t0 for t in ack_times(version)]
        latencies += times
        all_acked.append(max(times))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    return {"pushes": pushes, "acks": len(latencies), "p50_s": pct(50), "p99_s": pct(99), "max_s": latencies[-1],
            "all_acked_s_per_push": all_acked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4, help="device worker processes")
    parser.add_argument("--alerts-per-device", type=int, default=20)
    parser.add_argument("--pushes", type=int, default=5, help="rule pushes per replica count")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = parser.parse_args()
    if mosquitto_binary() is None:
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="iotguard-bench-"))
    key = generate_key()
    save_keypair(key, work / "signing.key", work / "signing.pub")
    broker = MosquittoBroker(work / "broker", config=None).start()
    results = {"devices": args.devices, "device_processes": args.processes, "alerts_per_device": args.alerts_per_device,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
               "runs": []}
    fleet = DeviceFleet(args.devices, args.processes, broker.port, work / "signing.pub")
    try:
        for replicas in (int(r) for r in args.replicas.split(",")):
            db = work / f"controller-{replicas}.sqlite"
            run, controllers = measure_ingest(fleet, args.devices, replicas, args.alerts_per_device, broker.port, db,
                                              work / "signing.key", work)
            run["push"] = measure_push(args.devices, args.pushes, db, work / "signing.key", broker.port)
            run["backlog_split"] = replica_split(controllers.stop())
            results["runs"].append(run)
            print(f"replicas={replicas}: done", flush=True)
    finally:
        fleet.stop()
        broker.stop()

    print()
    print(f"{args.devices} devices in {args.processes} processes, one mosquitto, {os.cpu_count()} CPUs")
    print(f"{'replicas':>8} {'live alerts/s':>14} {'backlog alerts/s':>17} {'push p50 ms':>12} {'push p99 ms':>12} "
          f"{'all acked ms':>13}  split (live / backlog)")
    for run in results["runs"]:
        backlog = run["backlog"]["ingest_per_s"]
        push = run["push"]
        print(f"{run['replicas']:>8} {run['live']['ingest_per_s']:>14.0f} {backlog if backlog is None else round(backlog):>17} "
              f"{push['p50_s'] * 1000:>12.0f} {push['p99_s'] * 1000:>12.0f} {max(push['all_acked_s_per_push']) * 1000:>13.0f}"
              f"  {run['live_split']} / {run['backlog_split']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
