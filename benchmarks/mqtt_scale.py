"""Benchmark: many simulated devices on one mosquitto, controller replicas on PostgreSQL or SQLite.

What is real: mosquitto, PostgreSQL (lab/postgres.py: a local server with fsync off, as in the tests), the
controller replicas (``python -m controller run`` processes, as deployed) and one MQTT connection per device
(its own client id, session, subscriptions and status).  What is simulated: the devices themselves.  Each is a
paho client driven with many others from one selector loop in a few worker processes (``--processes``); it
publishes alerts like the agent's (QoS 1, per-device seq), keeps each until a controller confirms it on
``alerts/ack`` and sends it again after ``RESEND_S`` (doubling) without one, reconnects after a broker restart,
and verifies and acks signed rule sets with the agent's own code (``agent.wire.signing``, ``agent.wire.rules``).
No packet capture or detection runs on them.

Measures, per setup (default: PostgreSQL with 3 replicas, then SQLite with 1):
  * live: alerts stored per second while the devices send at ``--rate`` for ``--seconds``;
  * backlog: the replicas leave (their sessions stay at the broker), every device sends ``--backlog`` alerts,
    the replicas come back: alerts stored per second from their first stored batch;
  * push: a new signed fleet rule set, from publishing it to each device's ack stored, p50/p99/max; and split
    in two: until the device published its ack (broker fan-out, the device's signature check), and from then
    until the ack was stored (the controller);
  * CPU (cores busy, from process CPU times) and peak memory (PSS) of the replicas, the database server, mosquitto and
    the device workers, per phase.

``--broker-restarts``: instead, one long run (default 600 s at 1,000 alerts/s, the broker restarted every 60 s,
SIGTERM and SIGKILL in turn) that checks every (device, seq) sent is stored exactly once.

    python benchmarks/mqtt_scale.py                                   # 10,000 devices (slow on a small machine)
    python benchmarks/mqtt_scale.py --devices 1000 --seconds 30       # scaled down
    python benchmarks/mqtt_scale.py --broker-restarts --devices 1000 --rate 1000 --seconds 600

This is a benchmark, not a test: numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import selectors
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from agent.wire import ACK_SCHEMA, ALERT_SCHEMA, STATUS_SCHEMA, make_client, topic  # noqa: E402
from agent.wire.jsonio import canonical_json, load_json  # noqa: E402
from agent.wire.rules import RuleSetError, parse_ruleset  # noqa: E402
from agent.wire.signing import (  # noqa: E402
    SignatureError,
    generate_key,
    load_private_key,
    load_public_key,
    open_envelope,
    save_keypair,
    trusted_keys,
)
from benchmarks.common import save  # noqa: E402
from controller.broker import MosquittoBroker, mosquitto_binary  # noqa: E402
from controller.db import connect  # noqa: E402
from controller.service import BrokerSettings, FleetRules, publish_once  # noqa: E402
from controller.store import Store  # noqa: E402
from lab.controller_procs import Replica, start_replicas  # noqa: E402

log = logging.getLogger("mqtt_scale")

PREFIX = "iotguard/v1"
FLEET = "bench"
WAIT_S = 600.0
RESEND_S = 60.0  # an unconfirmed alert is sent again after this (doubling), as the agent (confirm_timeout_s)


# --- simulated devices (run in worker processes) -----------------------------


class SimDevice:
    """One device's MQTT side; driven by the worker's selector loop through paho's socket callbacks."""

    def __init__(self, name: str, keys: dict, selector: selectors.BaseSelector) -> None:
        self.name = name
        self.keys = keys
        self.selector = selector
        self.seq = 0
        self.unconfirmed: dict[int, tuple[bytes, float, float]] = {}  # seq -> (payload, resend at, wait)
        self.applied: dict[str, int] = {}
        self.acked_at: dict[int, float] = {}  # rule set version -> when this device published its ack
        self.connected = False
        self.down_since: float | None = None
        self.resent = 0
        c = self.client = make_client(f"iotguard-{FLEET}-{name}", "5", None, None, None)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_socket_open = lambda cl, u, sock: selector.register(sock, selectors.EVENT_READ, self)
        c.on_socket_close = lambda cl, u, sock: self._forget(sock)
        both = selectors.EVENT_READ | selectors.EVENT_WRITE
        c.on_socket_register_write = lambda cl, u, sock: selector.modify(sock, both, self)
        c.on_socket_unregister_write = lambda cl, u, sock: self._read_only(sock)
        self.topic_alerts = topic(PREFIX, FLEET, name, "alerts")

    def _forget(self, sock) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _read_only(self, sock) -> None:
        try:
            self.selector.modify(sock, selectors.EVENT_READ, self)
        except (KeyError, ValueError):
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(topic(PREFIX, FLEET, self.name, "rules"), 1), (topic(PREFIX, FLEET, "all", "rules"), 1),
                          (topic(PREFIX, FLEET, self.name, "alerts/ack"), 1)])  # fmt: skip
        status = {"schema": STATUS_SCHEMA, "state": "online", "device": self.name, "fleet": FLEET}
        client.publish(topic(PREFIX, FLEET, self.name, "status"), canonical_json(status), qos=1, retain=True)
        self.connected, self.down_since = True, None

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected, self.down_since = False, time.monotonic()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/alerts/ack"):
            through = int(load_json(message.payload)["stored_through"])
            for seq in [s for s in self.unconfirmed if s <= through]:
                del self.unconfirmed[seq]
            return
        target = message.topic.split("/")[-2]
        try:
            ruleset = parse_ruleset(open_envelope(message.payload, self.keys))
        except (SignatureError, RuleSetError):
            return
        if ruleset.version <= self.applied.get(target, 0):
            return
        self.applied[target] = ruleset.version
        ack = {"schema": ACK_SCHEMA, "target": target, "version": ruleset.version, "status": "applied",
               "reason": None, "device": self.name, "fleet": FLEET}  # fmt: skip
        client.publish(topic(PREFIX, FLEET, self.name, "rules/ack"), canonical_json(ack), qos=1)
        # Out now, as a device alone would: otherwise it waits for the worker's next select(), after every other
        # device of the worker that got the rule set in this one has checked its signature.
        client.loop_write()
        self.acked_at[ruleset.version] = time.time()

    def send_alert(self) -> None:
        now = time.time()
        self.seq += 1
        doc = {"schema": ALERT_SCHEMA, "seq": self.seq, "class": "mirai_syn", "confidence": 0.9,
               "source": {"ip": f"198.51.100.{self.seq % 250}", "mac": None, "port": 4444},
               "victim": {"ip": "192.168.0.2", "port": 23}, "packets": 10, "first_seen": now, "last_seen": now,
               "action": "drop", "rule_id": None, "device": self.name, "fleet": FLEET, "sent_at": now}  # fmt: skip
        payload = canonical_json(doc)
        self.unconfirmed[self.seq] = (payload, time.monotonic() + RESEND_S, RESEND_S)
        self.client.publish(self.topic_alerts, payload, qos=1)

    def resend_due(self, now: float) -> None:
        if not self.connected:
            return
        for seq, (payload, due, wait) in list(self.unconfirmed.items()):
            if due <= now:
                self.unconfirmed[seq] = (payload, now + 2 * wait, 2 * wait)
                self.client.publish(self.topic_alerts, payload, qos=1)
                self.resent += 1


def device_worker(names: list[str], port: int, public_key_path: str, conn) -> None:
    """Runs ``names`` until told to stop; commands: ("rate", alerts/s, seconds), ("burst", per device), ("counts",)."""
    keys = trusted_keys([load_public_key(Path(public_key_path))])
    selector = selectors.DefaultSelector()
    devices = [SimDevice(n, keys, selector) for n in names]
    for d in devices:
        d.client.connect("127.0.0.1", port, keepalive=120)
    plan: tuple[float, float, float] | None = None  # (rate, start, end)
    sent_in_plan, turn = 0, 0
    reported_ready, last_misc = False, time.monotonic()
    while True:
        if conn.poll():
            command = conn.recv()
            if command[0] == "rate":
                plan, sent_in_plan = (command[1], time.monotonic(), time.monotonic() + command[2]), 0
            elif command[0] == "burst":
                for d in devices:
                    for _ in range(command[1]):
                        d.send_alert()
            elif command[0] == "counts":
                conn.send(("counts", {d.name: d.seq for d in devices}, sum(len(d.unconfirmed) for d in devices),
                           sum(d.resent for d in devices), sum(d.connected for d in devices)))  # fmt: skip
            elif command[0] == "acked":
                conn.send(("acked", {d.name: d.acked_at[command[1]] for d in devices if command[1] in d.acked_at}))
            elif command[0] == "stop":
                for d in devices:
                    d.client.disconnect()
                conn.send(("stopped",))
                return
        now = time.monotonic()
        if plan is not None:
            rate, start, end = plan
            due = int((min(now, end) - start) * rate) - sent_in_plan
            for _ in range(max(0, due)):
                devices[turn % len(devices)].send_alert()
                turn += 1
                sent_in_plan += 1
            if now >= end:
                plan = None
                conn.send(("rate_done", sent_in_plan))
        for key, events in selector.select(timeout=0.002):
            client = key.data.client
            if events & selectors.EVENT_READ:
                client.loop_read()
            if events & selectors.EVENT_WRITE:
                client.loop_write()
        if now - last_misc > 0.5:
            last_misc = now
            for d in devices:
                d.client.loop_misc()
                d.resend_due(now)
                if not d.connected and d.down_since is not None and now - d.down_since > 1.0:
                    d.down_since = now
                    try:
                        d.client.reconnect()
                    except OSError:
                        pass  # the broker is still down: next round
        if not reported_ready and all(d.connected for d in devices):
            reported_ready = True
            conn.send(("ready", len(devices)))


class DeviceFleet:
    def __init__(self, count: int, processes: int, port: int, public_key: Path) -> None:
        names = [f"dev{i:05d}" for i in range(count)]
        self.pipes, self.procs = [], []
        ctx = mp.get_context("spawn")
        for p in range(processes):
            parent, child = ctx.Pipe()
            share = names[p::processes]
            proc = ctx.Process(target=device_worker, args=(share, port, str(public_key), child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            self._expect(pipe, "ready")

    @staticmethod
    def _expect(pipe, what: str, timeout: float = WAIT_S) -> tuple:
        if not pipe.poll(timeout):
            raise RuntimeError(f"device worker did not report {what!r}")
        message = pipe.recv()
        if message[0] != what:
            raise RuntimeError(f"device worker said {message[0]!r}, expected {what!r}")
        return message

    def run_rate(self, rate: float, seconds: float) -> int:
        """All devices together send ``rate`` alerts/s for ``seconds``; returns how many were sent."""
        for pipe in self.pipes:
            pipe.send(("rate", rate / len(self.pipes), seconds))
        return sum(self._expect(pipe, "rate_done", seconds + WAIT_S)[1] for pipe in self.pipes)

    def start_rate(self, rate: float, seconds: float) -> None:
        for pipe in self.pipes:
            pipe.send(("rate", rate / len(self.pipes), seconds))

    def wait_rate(self, seconds: float) -> int:
        return sum(self._expect(pipe, "rate_done", seconds + WAIT_S)[1] for pipe in self.pipes)

    def burst(self, per_device: int) -> None:
        for pipe in self.pipes:
            pipe.send(("burst", per_device))

    def counts(self) -> tuple[dict[str, int], int, int, int]:
        """(seqs sent per device, alerts unconfirmed, alerts resent, devices connected)."""
        seqs: dict[str, int] = {}
        unconfirmed = resent = connected = 0
        for pipe in self.pipes:
            pipe.send(("counts",))
            _, s, u, r, c = self._expect(pipe, "counts")
            seqs.update(s)
            unconfirmed, resent, connected = unconfirmed + u, resent + r, connected + c
        return seqs, unconfirmed, resent, connected

    def acked(self, version: int) -> dict[str, float]:
        """device -> when it published its ack of rule set ``version`` (its own clock: the same machine)."""
        out: dict[str, float] = {}
        for pipe in self.pipes:
            pipe.send(("acked", version))
            out.update(self._expect(pipe, "acked")[1])
        return out

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send(("stop",))
        for pipe, proc in zip(self.pipes, self.procs):
            try:
                self._expect(pipe, "stopped", 30)
            except (RuntimeError, EOFError):
                pass
            proc.join(10)


# --- resources ---------------------------------------------------------------


class Usage:
    """CPU (cores busy) and peak memory (PSS: shared pages split between their users) of process groups between
    ``start()`` and ``stop()``, sampled every 0.5 s.

    Groups are callables returning pids, read at every sample: replicas and database backends come and go."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._stop = threading.Event()

    def start(self) -> Usage:
        self.first: dict[int, float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.peak_rss = {g: 0 for g in self.groups}
        self.t0 = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        for group, pids in self.groups.items():
            rss = 0
            for pid in pids():
                try:
                    p = psutil.Process(pid)
                    cpu = sum(p.cpu_times()[:2])
                    rss += p.memory_full_info().pss  # shared pages (PostgreSQL's buffers) counted once
                except psutil.Error:
                    continue
                self.first.setdefault(pid, cpu)
                self.last[(group, pid)] = cpu
            self.peak_rss[group] = max(self.peak_rss[group], rss)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        wall = time.monotonic() - self.t0
        out = {}
        for group in self.groups:
            cpu = sum(v - self.first[pid] for (g, pid), v in self.last.items() if g == group)
            out[group] = {"cpu_cores": round(cpu / wall, 2), "cpu_s": round(cpu, 2),
                          "peak_pss_mb": round(self.peak_rss[group] / 2**20, 1)}
        return out


def children_of(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.Error:
        return []


# --- the database ------------------------------------------------------------


class Database:
    """Where the replicas store: an SQLite file, or a fresh database on a local PostgreSQL server."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.server = None
        if kind == "sqlite":
            self.target: str | Path = workdir / "controller.sqlite"
        else:
            from lab.postgres import PostgresServer, postgres_bin

            if postgres_bin() is None:
                raise SystemExit("PostgreSQL server binaries not installed (apt-get install postgresql)")
            folder = Path(tempfile.mkdtemp(prefix="iotguard-pg-bench-"))
            self.server = PostgresServer(postgres_bin(), folder).start()
            self.target = self.server.create_database()
        Store(self.target)  # the schema, before the replicas race to create it
        self.con = connect(self.target)

    def scalar(self, sql: str, args: tuple = ()) -> float:
        return self.con.execute(sql, args).fetchone()[0]

    def alerts(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM alerts"))

    def server_pids(self) -> list[int]:
        if self.server is None:
            return []
        pidfile = self.server.folder / "data" / "postmaster.pid"
        try:
            return children_of(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return []

    def close(self) -> None:
        self.con.close()
        if self.server is not None:
            self.server.stop()


def wait_for(condition, what: str, timeout: float = WAIT_S, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll)


def stop_all(replicas: list[Replica]) -> dict[str, str]:
    return {r.name: r.stop() for r in replicas}


# --- measurements ------------------------------------------------------------


def measure_live(fleet: DeviceFleet, db: Database, rate: float, seconds: float) -> dict:
    base = db.alerts()
    t0 = time.time()
    sent = fleet.run_rate(rate, seconds)
    t_sent = time.time()
    stored_when_sent = db.alerts() - base
    wait_for(lambda: db.alerts() - base >= sent, f"{sent} live alerts stored")
    t1 = time.time()
    return {"alerts": sent, "sent_per_s": round(sent / (t_sent - t0)), "stored_per_s": round(sent / (t1 - t0)),
            "stored_while_sending_per_s": round(stored_when_sent / (t_sent - t0)),
            "drain_after_sending_s": round(t1 - t_sent, 2)}  # fmt: skip


def measure_backlog(fleet: DeviceFleet, db: Database, replicas: list[Replica], per_device: int, devices: int) -> dict:
    """The replicas leave, the devices send, the replicas come back and work through what waited."""
    stop_all(replicas)
    base = db.alerts()
    total = per_device * devices
    fleet.burst(per_device)
    time.sleep(max(2.0, total / 20000))  # the broker takes them in (devices hold them until confirmed anyway)
    away = time.time()
    for r in replicas:
        r.start()
    wait_for(lambda: db.alerts() - base >= total, f"{total} backlog alerts stored")
    done = time.time()
    first = db.scalar("SELECT MIN(received_at) FROM alerts WHERE received_at > ?", (away,))
    return {"alerts": total, "stored_per_s": round(total / (done - first)),
            "first_batch_after_start_s": round(first - away, 2)}


def measure_push(fleet: DeviceFleet, devices: int, pushes: int, db: Database, key: Path, port: int) -> dict:
    """From publishing a fleet rule set to each device's ack stored; split into the devices' part (the broker's
    fan-out, their signature check, their ack published: ``acks_sent_*``) and the controller's (from the ack
    published to it stored: ``stored_after_sent_*``)."""
    outbox: list[tuple[str, bytes, bool]] = []
    rules = FleetRules(Store(db.target), load_private_key(key), PREFIX, lambda t, p, r: outbox.append((t, p, r)))
    latencies: list[float] = []
    sent: list[float] = []
    storing: list[float] = []
    all_acked: list[float] = []

    def ack_times(version: int) -> dict[str, float]:
        rows = db.con.execute("SELECT device, MIN(received_at) FROM acks WHERE fleet=? AND target='all' AND version=? "
                              "AND status='applied' GROUP BY device", (FLEET, version)).fetchall()  # fmt: skip
        return {r[0]: r[1] for r in rows}

    for i in range(pushes):
        outbox.clear()
        version = rules.block(FLEET, f"203.0.113.{i}", "benchmark", None).version
        t0 = time.time()
        publish_once(BrokerSettings("127.0.0.1", port), f"bench-push-{i}", outbox)
        wait_for(lambda v=version: len(ack_times(v)) >= devices, f"{devices} acks of v{version}")
        stored, published = ack_times(version), fleet.acked(version)
        times = [t - t0 for t in stored.values()]
        latencies += times
        sent += [t - t0 for t in published.values()]
        storing += [stored[d] - t for d, t in published.items() if d in stored]
        all_acked.append(round(max(times), 3))

    def pct(values: list[float], p: float) -> float:
        values = sorted(values)
        return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))], 3) if values else math.nan

    return {"pushes": pushes, "acks": len(latencies), "p50_s": pct(latencies, 50), "p99_s": pct(latencies, 99),
            "max_s": pct(latencies, 100), "all_acked_s_per_push": all_acked,
            "acks_sent_p50_s": pct(sent, 50), "acks_sent_p99_s": pct(sent, 99),
            "stored_after_sent_p50_s": pct(storing, 50), "stored_after_sent_p99_s": pct(storing, 99)}  # fmt: skip


def exactly_once(fleet: DeviceFleet, db: Database) -> dict:
    """Every (device, seq) sent stored exactly once: per device, as many rows as seqs, distinct, up to its last."""
    sent, unconfirmed, resent, _ = fleet.counts()
    rows = db.con.execute("SELECT device, COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM alerts "
                          "GROUP BY device").fetchall()
    stored = {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
    missing = sum(n - stored.get(d, (0, 0, 0))[1] for d, n in sent.items())
    twice = sum(count - distinct for count, distinct, _ in stored.values())
    return {"alerts_sent": sum(sent.values()), "alerts_stored": sum(v[0] for v in stored.values()),
            "missing": missing, "stored_twice": twice, "unconfirmed_at_end": unconfirmed, "resent": resent,
            "exactly_once": missing == 0 and twice == 0}  # fmt: skip


class Setup:
    """Broker, database, replicas and devices of one run."""

    def __init__(self, args, kind: str, replicas: int, work: Path) -> None:
        self.work = work / f"{kind}-{replicas}"
        self.work.mkdir()
        self.db = Database(kind, self.work)
        self.broker = MosquittoBroker(self.work / "broker", config=None).start()
        self.replicas = start_replicas(replicas, self.broker.port, self.db.target, work / "signing.key", self.work,
                                       WAIT_S)
        log.info("%s, %d replicas: starting %d devices in %d processes", kind, replicas, args.devices, args.processes)
        t0 = time.monotonic()
        self.fleet = DeviceFleet(args.devices, args.processes, self.broker.port, work / "signing.pub")
        self.connect_s = round(time.monotonic() - t0, 1)
        self.usage = Usage({
            "replicas": lambda: [r.pid for r in self.replicas if r.alive()],
            "database": self.db.server_pids,
            "mosquitto": lambda: children_of(self.broker.process.pid if self.broker.process else None),
            "devices": self.fleet.pids,
        })

    def close(self) -> None:
        self.fleet.stop()
        stop_all(self.replicas)
        self.broker.stop()
        self.db.close()


def per_message(phase: dict, messages: int) -> None:
    """CPU milliseconds of the replicas and of the database server per message (alert or ack) of a phase."""
    for group in ("replicas", "database"):
        phase[f"{group}_cpu_ms_per_message"] = round(1000 * phase["usage"][group]["cpu_s"] / max(1, messages), 3)


def run_setup(args, kind: str, replicas: int, work: Path) -> dict:
    s = Setup(args, kind, replicas, work)
    try:
        run: dict = {"db": kind, "replicas": replicas, "connect_s": s.connect_s}
        s.usage.start()
        run["live"] = measure_live(s.fleet, s.db, args.rate, args.seconds)
        run["live"]["usage"] = s.usage.stop()
        per_message(run["live"], run["live"]["alerts"])
        log.info("%s x%d live: %s", kind, replicas, run["live"])
        s.usage.start()
        run["backlog"] = measure_backlog(s.fleet, s.db, s.replicas, args.backlog, args.devices)
        run["backlog"]["usage"] = s.usage.stop()
        per_message(run["backlog"], run["backlog"]["alerts"])
        log.info("%s x%d backlog: %s", kind, replicas, run["backlog"])
        s.usage.start()
        run["push"] = measure_push(s.fleet, args.devices, args.pushes, s.db, work / "signing.key", s.broker.port)
        run["push"]["usage"] = s.usage.stop()
        per_message(run["push"], run["push"]["acks"])
        log.info("%s x%d push: %s", kind, replicas, run["push"])
        wait_for(lambda: s.fleet.counts()[1] == 0, "every alert confirmed")
        run["check"] = exactly_once(s.fleet, s.db)
        run["replica_stats"] = stop_all(s.replicas)
        return run
    finally:
        s.close()


def run_broker_restarts(args, work: Path) -> dict:
    kind, replicas = args.setups.split(",")[0].split(":")
    s = Setup(args, kind, int(replicas), work)
    try:
        restarts = []
        s.usage.start()
        s.fleet.start_rate(args.rate, args.seconds)
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 + args.restart_every < args.seconds:
            time.sleep(max(0.0, t0 + (i + 1) * args.restart_every - time.monotonic()))
            kill = i % 2 == 1
            s.broker.restart(kill=kill)
            restarts.append({"at_s": round(time.monotonic() - t0, 1), "signal": "SIGKILL" if kill else "SIGTERM"})
            log.info("broker restarted (%s) at %.0f s", restarts[-1]["signal"], restarts[-1]["at_s"])
            i += 1
        sent = s.fleet.wait_rate(args.seconds)
        t_sent = time.monotonic()
        wait_for(lambda: s.fleet.counts()[1] == 0, "every alert confirmed", timeout=1800, poll=1.0)
        usage = s.usage.stop()
        check = exactly_once(s.fleet, s.db)
        return {"db": kind, "replicas": int(replicas), "rate": args.rate, "seconds": args.seconds, "alerts": sent,
                "restarts": restarts, "all_confirmed_after_sending_s": round(time.monotonic() - t_sent, 1),
                "check": check, "usage": usage, "replica_stats": stop_all(s.replicas)}  # fmt: skip
    finally:
        s.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=0, help="device worker processes (default: one per 1,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="alerts/s from all devices together")
    parser.add_argument("--seconds", type=float, default=None, help="live phase s (default 30; 600 with --broker-restarts)")
    parser.add_argument("--backlog", type=int, default=2, help="alerts per device sent while the replicas are away")
    parser.add_argument("--pushes", type=int, default=3, help="fleet rule set pushes per setup")
    parser.add_argument("--setups", default="postgresql:3,sqlite:1", help="DB:REPLICAS,... (first only with restarts)")
    parser.add_argument("--broker-restarts", action="store_true", help="long exactly-once run, broker restarted")
    parser.add_argument("--restart-every", type=float, default=60.0)
    parser.add_argument("--out", help="JSON results file (default benchmarks/results/mqtt_scale.json, "
                        "mqtt_scale_restarts.json with --broker-restarts)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.processes = args.processes or max(1, math.ceil(args.devices / 1000))
    args.seconds = args.seconds or (600.0 if args.broker_restarts else 30.0)
    if mosquitto_binary() is None:
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="iotguard-bench-"))
    key = generate_key()
    save_keypair(key, work / "signing.key", work / "signing.pub")
    results: dict = {"command": " ".join(["python", "benchmarks/mqtt_scale.py", *sys.argv[1:]]),
                     "devices": args.devices, "device_processes": args.processes, "rate": args.rate,
                     "seconds": args.seconds, "simulated": "devices: one MQTT connection each, many per process; "
                     "no capture or detection"}  # fmt: skip
    if args.broker_restarts:
        results["broker_restarts"] = run_broker_restarts(args, work)
        print(results["broker_restarts"]["check"])
    else:
        results["runs"] = []
        for setup in args.setups.split(","):
            kind, replicas = setup.split(":")
            results["runs"].append(run_setup(args, kind, int(replicas), work))
        print(f"\n{args.devices} devices in {args.processes} processes, one mosquitto, {os.cpu_count()} CPUs")
        print(f"{'db':>10} {'replicas':>8} {'live stored/s':>13} {'backlog stored/s':>16} {'push p50 s':>10} "
              f"{'push p99 s':>10} {'exactly once':>12}")  # fmt: skip
        for run in results["runs"]:
            print(f"{run['db']:>10} {run['replicas']:>8} {run['live']['stored_per_s']:>13} "
                  f"{run['backlog']['stored_per_s']:>16} {run['push']['p50_s']:>10} {run['push']['p99_s']:>10} "
                  f"{str(run['check']['exactly_once']):>12}")  # fmt: skip
    path = save(results, args.out, "mqtt_scale_restarts" if args.broker_restarts else "mqtt_scale")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
