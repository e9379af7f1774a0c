"""Benchmark (not a test): the live agent process under load, in network namespaces.

Three parts, each against a real ``python -m agent run`` in the device
namespace of the lab of lab/live_lab.py (attacker and peer joined to
the device's bridge br0, the agent capturing on br0):

1. load     Mirai SYN floods (74-byte frames, random source ports, from the
            attacker's address or from random spoofed sources) at increasing
            rates, enforcement none.  Offered vs processed frames/s, the
            kernel's drop share, the agent's CPU time per frame.
2. latency  From the first attack frame sent to the attacker's address in the
            kernel's nftables set (``nft monitor``), and to the agent's
            "hostile:" log line; a fresh agent (and state) for every run.
3. memory   Peak RSS (VmHWM) of the agent while 1,000,000 distinct spoofed
            sources flood it, per firmware profile.

    python benchmarks/agent_load.py [--parts load,latency,memory] [--out FILE]

Needs root.  The machine's cores are shared by sender, kernel and agent (and
whatever else runs), so the numbers are a lower bound for a board whose NIC
does the sending.  The flood sender is this script itself (``--sender``),
started inside the attacker namespace; it hands frames to the kernel in
batches with sendmmsg(2), one system call per batch.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import ctypes
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import save  # noqa: E402
from lab import live_lab, netns  # noqa: E402

PYTHON = sys.executable
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
FRAME_BYTES = 74
BENCH_TABLE = "iotguard_bench"  # the quiet victim's nft table (never the agent's own)
NEVER = 10**12  # min_packets that no source reaches: the undefended, whole-pipeline worst case

# Frame layout of a Mirai attack_tcp_syn packet, declared once: (field, byte offset, byte length).
SYN_FIELDS = (
    ("eth_dst", 0, 6),
    ("eth_src", 6, 6),
    ("ip_id", 18, 2),
    ("ip_checksum", 24, 2),
    ("ip_src", 26, 4),
    ("ip_dst", 30, 4),
    ("tcp_sport", 34, 2),
    ("tcp_dport", 36, 2),
    ("tcp_seq", 38, 4),
    ("tcp_checksum", 50, 2),
)
AT = {name: slice(off, off + size) for name, off, size in SYN_FIELDS}
IP_HEADER = slice(14, 34)
TCP_SEGMENT = slice(34, 74)

# struct mmsghdr on LP64 Linux as 8-byte words: msghdr {name, namelen, iov, iovlen, control, controllen, flags}
# then msg_len (each 4-byte field padded to 8).  Declared once as (field, word index).
MMSGHDR_WORDS = (("msg_name", 0), ("msg_namelen", 1), ("msg_iov", 2), ("msg_iovlen", 3),
                 ("msg_control", 4), ("msg_controllen", 5), ("msg_flags", 6), ("msg_len", 7))  # fmt: skip
MMSG = dict(MMSGHDR_WORDS)
IOVEC_WORDS = (("iov_base", 0), ("iov_len", 1))


# --- frames ---------------------------------------------------------------------------------------


def _be_words_sum(block: np.ndarray) -> np.ndarray:
    """Sum of the big-endian 16-bit words of each row (rows of even length)."""
    w = block.astype(np.uint32)
    return (w[:, 0::2] << 8).sum(axis=1) + w[:, 1::2].sum(axis=1)


def _fold(total: np.ndarray) -> np.ndarray:
    for _ in range(3):
        total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


def syn_flood_frames(count: int, src_mac: str, dst_mac: str, src_ip: str | None, dst_ip: str, seed: int) -> np.ndarray:
    """``count`` distinct 74-byte Mirai SYNs as rows of a (count, 74) uint8 array.

    Random source and destination ports, sequence numbers and IP ids; from
    ``src_ip`` or, when it is None, each from its own random (distinct)
    public address.  Checksums are valid: the device's IP stack sees real SYNs.
    """
    rng = np.random.default_rng(seed)
    mss = 1400 + int(rng.integers(16))
    options = bytes([2, 4, mss >> 8, mss & 0xFF, 4, 2, 8, 10]) + int(rng.integers(2**32)).to_bytes(4, "big")
    options += bytes([0, 0, 0, 0, 1, 3, 3, 6])
    template = (
        bytes(14)[:12] + b"\x08\x00"
        + bytes([0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0]) + bytes(8)  # DF, TTL 64, TCP
        + bytes(12) + bytes([10 << 4, 0x02]) + bytes(6)  # data offset 10 words, SYN, window 0
        + options
    )  # fmt: skip
    assert len(template) == FRAME_BYTES
    frames = np.tile(np.frombuffer(template, dtype=np.uint8), (count, 1))
    frames[:, AT["eth_dst"]] = np.frombuffer(bytes.fromhex(dst_mac.replace(":", "")), dtype=np.uint8)
    frames[:, AT["eth_src"]] = np.frombuffer(bytes.fromhex(src_mac.replace(":", "")), dtype=np.uint8)
    frames[:, AT["ip_dst"]] = np.frombuffer(socket.inet_aton(dst_ip), dtype=np.uint8)
    if src_ip is None:
        frames[:, AT["ip_src"]] = _be_bytes(_distinct_public_addresses(count, rng), 4)
    else:
        frames[:, AT["ip_src"]] = np.frombuffer(socket.inet_aton(src_ip), dtype=np.uint8)
    for name in ("ip_id", "tcp_sport", "tcp_dport"):
        frames[:, AT[name]] = _be_bytes(rng.integers(1, 2**16, count, dtype=np.uint32), 2)
    frames[:, AT["tcp_seq"]] = _be_bytes(rng.integers(0, 2**32, count, dtype=np.uint64), 4)
    frames[:, AT["ip_checksum"]] = _be_bytes(_fold(_be_words_sum(frames[:, IP_HEADER])), 2)
    # TCP checksum over the pseudo header (addresses, protocol 6, length 40) and the segment.
    pseudo = _be_words_sum(frames[:, 26:34]) + 6 + (TCP_SEGMENT.stop - TCP_SEGMENT.start)
    frames[:, AT["tcp_checksum"]] = _be_bytes(_fold(pseudo + _be_words_sum(frames[:, TCP_SEGMENT])), 2)
    return frames


def _be_bytes(values: np.ndarray, width: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.uint64)
    return np.stack([(values >> (8 * (width - 1 - k))) & 0xFF for k in range(width)], axis=1).astype(np.uint8)


def _distinct_public_addresses(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct random IPv4 addresses in 1.0.0.0-223.255.255.255 outside 10.0.0.0/8."""
    out = np.empty(0, dtype=np.uint64)
    while len(out) < count:
        more = rng.integers(0x01000000, 0xE0000000, int((count - len(out)) * 1.2) + 16, dtype=np.uint64)
        more = more[(more >> 24) != 10]
        out = np.unique(np.concatenate([out, more]))
    return rng.permutation(out)[:count]


# --- the sender (runs inside the attacker namespace) ------------------------------------------------


class BatchSender:
    """sendmmsg(2) over a bound AF_PACKET socket: ``send(lo, hi)`` hands frames lo..hi-1 to the kernel."""

    def __init__(self, interface: str, frames: np.ndarray) -> None:
        self.frames = np.ascontiguousarray(frames)
        n = len(self.frames)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)  # straight to the driver, as Mirai's raw socket
        self.sock.bind((interface, 0))
        self.iov = np.zeros((n, len(IOVEC_WORDS)), dtype=np.uint64)
        self.iov[:, 0] = self.frames.ctypes.data + np.arange(n, dtype=np.uint64) * FRAME_BYTES
        self.iov[:, 1] = FRAME_BYTES
        self.msgs = np.zeros((n, len(MMSGHDR_WORDS)), dtype=np.uint64)  # msg_name NULL: the bound interface
        self.msgs[:, MMSG["msg_iov"]] = self.iov.ctypes.data + np.arange(n, dtype=np.uint64) * self.iov.strides[0]
        self.msgs[:, MMSG["msg_iovlen"]] = 1
        libc = ctypes.CDLL(None, use_errno=True)
        self._sendmmsg = libc.sendmmsg
        self._sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self._base = self.msgs.ctypes.data
        self._stride = self.msgs.strides[0]
        self.errors = 0

    def send(self, lo: int, hi: int) -> int:
        """Frames actually taken by the kernel (a full device queue refuses the rest: counted, not retried)."""
        done = self._sendmmsg(self.sock.fileno(), self._base + lo * self._stride, hi - lo, 0)
        if done < 0:
            self.errors += hi - lo
            return 0
        if done < hi - lo:
            self.errors += hi - lo - done
        return done


def run_sender(args: argparse.Namespace) -> None:
    """Sender mode: print {"ready": ...} once frames are built, send, print the counts as JSON."""
    frames = syn_flood_frames(args.pool, args.src_mac, args.dst_mac, None if args.spoofed else args.src,
                              args.dst, args.seed)  # fmt: skip
    sender = BatchSender(args.interface, frames)
    print(json.dumps({"ready": len(frames)}), flush=True)
    sys.stdin.readline()  # the benchmark says go (after reading counters)
    n, batch, rate = len(frames), args.batch, args.rate
    total = args.total if args.total else None
    sent = attempted = 0
    start = time.perf_counter()
    end = start + args.seconds
    while True:
        now = time.perf_counter()
        if (total is None and now >= end) or (total is not None and attempted >= total):
            break
        due = int(rate * (now - start)) if rate > 0 else attempted + batch
        if total is not None:
            due = min(due, total)
        worth = min(batch, 8, (total - attempted) if total is not None else batch)  # not one frame per call
        if due - attempted < worth and rate > 0:
            time.sleep(0.0002)
            continue
        k = min(batch, due - attempted, n - attempted % n)  # never wrap inside one call
        lo = attempted % n
        sent += sender.send(lo, lo + k)
        attempted += k
    elapsed = time.perf_counter() - start
    print(json.dumps({"sent": sent, "send_errors": sender.errors, "seconds": elapsed}), flush=True)


# --- the lab and the agent process ----------------------------------------------------------------


@dataclass
class AgentRun:
    """One ``python -m agent run`` in the device namespace, its log read line by line as it comes."""

    proc: subprocess.Popen
    log_path: Path
    lines: list = field(default_factory=list)  # (monotonic time, line)
    hostile_at: float | None = None
    summary: dict | None = None
    peak_rss_kb: int | None = None
    rss_kb: int | None = None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kb(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
        return out

    def wait_idle(self, limit: float = 10.0, quiet: float = 0.3) -> None:
        """Until the agent has used under 5% CPU for ``quiet`` seconds (the ring is drained)."""
        deadline = time.monotonic() + limit
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu_seconds()
            if now - last < 0.05 * quiet:
                return
            last = now


@contextlib.contextmanager
def agent(
    dev, workdir: Path, profile: str, interface: str, enforcement: str, defended: bool = True, extra_config: str = ""
) -> Iterator[AgentRun]:
    """Start the agent with a fresh state directory, wait until it captures, stop it with SIGTERM afterwards.

    ``defended=False`` sets min_packets so high that no source verdict is raised and turns blocking off
    (``block = false``: the header verdicts on floods at the board are still logged, but make no rule): nothing
    drops the flood early in the agent's own filter, and every frame goes through features and model.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "agent.toml"
    min_packets = 10 if defended else NEVER
    block = "true" if defended else "false"
    config.write_text(f'state_dir = "{workdir / "state"}"\nmin_packets = {min_packets}\nblock = {block}\n{extra_config}')
    log_path = workdir / "agent.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", dev.name, PYTHON, "-m", "agent", "run", "--profile", profile,
         "--interface", interface, "--enforcement", enforcement, "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    run = AgentRun(proc, log_path)
    started = threading.Event()

    def read_log() -> None:
        with open(log_path, "w") as fh:
            for line in proc.stdout:
                now = time.monotonic()
                fh.write(line)
                run.lines.append((now, line))
                if "hostile:" in line and run.hostile_at is None:
                    run.hostile_at = now
                if "capturing on" in line:
                    started.set()
                if "agent stopped:" in line:
                    run.summary = ast.literal_eval(line.split("agent stopped:", 1)[1].strip())

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not started.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("agent did not start:\n" + "".join(line for _, line in run.lines))
        yield run
        mem = run.memory_kb()
        run.peak_rss_kb, run.rss_kb = mem.get("VmHWM"), mem.get("VmRSS")
    finally:
        stop_process(proc, 30)
        reader.join(5)


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a clean shutdown, which logs a summary), SIGKILL if it takes longer than ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def quiet_victim(dev) -> Iterator[None]:
    """Drop TCP on the device's input hook (after the capture tap) so it sends no RST per SYN.

    Without it the agent would also capture one outgoing RST per flood frame
    and see twice the offered load.
    """
    # Only what arrives over the bridge: loopback TCP (the agent's MQTT link, paho's wake-up socket) must pass.
    chain = 'type filter hook input priority -10\n iifname "br0" meta l4proto tcp drop'
    script = f"table inet {BENCH_TABLE} {{\n chain input {{\n {chain}\n }}\n}}\n"
    dev.run("nft", "-f", "-", input=script)
    try:
        yield
    finally:
        dev.run("nft", "delete", "table", "inet", BENCH_TABLE, check=False)


def link_counter(ns, interface: str, name: str) -> int:
    return int(ns.run("cat", f"/sys/class/net/{interface}/statistics/{name}").stdout)


@contextlib.contextmanager
def flood_sender(atk, lab_ips: dict, rate: float, seconds: float, spoofed: bool, pool: int, total: int = 0,
                 seed: int = 1) -> Iterator[subprocess.Popen]:  # fmt: skip
    """A sender process in the attacker namespace, frames built; write a line to its stdin to start it."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", atk.name, PYTHON, __file__, "--sender", "--interface", atk.iface,
         "--rate", str(rate), "--seconds", str(seconds), "--pool", str(pool), "--total", str(total),
         "--seed", str(seed), "--src-mac", lab_ips["attacker_mac"], "--dst-mac", lab_ips["device_mac"],
         "--src", lab_ips["attacker_ip"], "--dst", lab_ips["device_ip"]] + (["--spoofed"] if spoofed else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = proc.stdout.readline()
        if not ready:
            raise RuntimeError("the sender died before it was ready")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def finish_sender(proc: subprocess.Popen) -> dict:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    report = json.loads(proc.stdout.readline())
    proc.wait()
    return report


# --- the three parts ----------------------------------------------------------------------------


def _lab_addresses() -> dict:
    return {"device_ip": live_lab.DEVICE_IP, "attacker_ip": live_lab.ATTACKER_IP,
            "device_mac": live_lab.DEVICE_MAC, "attacker_mac": live_lab.ATTACKER_MAC}  # fmt: skip


def part_load(dev, atk, work: Path, rates: list[float], seconds: float, spoofed: bool, defended: bool,
              answer: bool, profile: str) -> list[dict]:  # fmt: skip
    ips = _lab_addresses()
    rows = []
    quiet = contextlib.nullcontext() if answer else quiet_victim(dev)
    with quiet:
        for rate in rates:
            pool = 1_000_000 if spoofed else 65536
            with (
                flood_sender(atk, ips, rate, seconds, spoofed, pool) as sender,
                agent(dev, work / f"load-{int(rate)}", profile, "br0", "none", defended) as run,
            ):
                    arrived0 = link_counter(dev, "br0", "rx_packets")
                    cpu0 = run.cpu_seconds()
                    report = finish_sender(sender)
                    run.wait_idle()
                    cpu = run.cpu_seconds() - cpu0
                    arrived = link_counter(dev, "br0", "rx_packets") - arrived0
            s = run.summary or {}
            frames, drops = s.get("frames", 0), s.get("kernel_drops") or 0
            secs = report["seconds"]
            row = {
                "target_pps": rate,
                "offered_pps": round(report["sent"] / secs),
                "arrived_pps": round(arrived / secs),  # frames br0 passed up to the device
                "processed_pps": round(frames / secs),
                "drop_share": round(drops / (frames + drops), 4) if frames + drops else None,
                "sent": report["sent"],
                "send_errors": report["send_errors"],
                "arrived": arrived,
                "agent_frames": frames,
                "kernel_drops": drops,
                "classified": s.get("classified"),
                "filtered": s.get("filtered"),  # dropped early by the agent's own rule table
                "verdicts": s.get("verdicts"),
                "agent_cpu_s": round(cpu, 2),
                "agent_cpu_us_per_frame": round(cpu / frames * 1e6, 2) if frames else None,
                "peak_rss_mb": round((run.peak_rss_kb or 0) / 1024, 1),
            }
            rows.append(row)
            print(f"  {'spoofed' if spoofed else 'single '} target {rate:>8.0f}/s  offered {row['offered_pps']:>7}/s  "
                  f"processed {row['processed_pps']:>7}/s  dropped {row['drop_share'] or 0:6.2%}  "
                  f"classified {row['classified']}  filtered {row['filtered']}  "
                  f"CPU {row['agent_cpu_us_per_frame']} us/frame", flush=True)  # fmt: skip
    return rows


def _watch_for(monitor: subprocess.Popen, address: str, seen_at: list[float]) -> None:
    """Note when ``nft monitor`` first reports a set element with ``address``."""
    for line in monitor.stdout:
        if address in line and not seen_at:
            seen_at.append(time.monotonic())


def part_latency(dev, atk, work: Path, runs: int, kind: str, rate: float, profile: str) -> dict:
    frames = live_lab.attack_frames(kind, 1500)
    rows = []
    for k in range(runs):
        with agent(dev, work / f"latency-{k}", profile, "br0", "nftables") as run:
            monitor = subprocess.Popen(["ip", "netns", "exec", dev.name, "nft", "monitor", "elements"],
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
            blocked_at: list[float] = []
            threading.Thread(target=_watch_for, args=(monitor, live_lab.ATTACKER_IP, blocked_at), daemon=True).start()
            time.sleep(0.3)  # nft monitor subscribed
            with netns.entered(atk):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            sock.bind((atk.iface, 0))
            gap = 1.0 / rate
            first = time.monotonic()
            start = time.perf_counter()
            i = 0
            while not blocked_at and time.monotonic() - first < 5.0:
                sock.send(frames[i % len(frames)])
                i += 1
                ahead = start + i * gap - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            deadline = time.monotonic() + 5
            while (not blocked_at or run.hostile_at is None) and time.monotonic() < deadline:
                time.sleep(0.01)
            sock.close()
            monitor.terminate()
            monitor.wait()
        row = {
            "frames_sent": i,
            "to_log_ms": round((run.hostile_at - first) * 1000, 1) if run.hostile_at else None,
            "to_kernel_ms": round((blocked_at[0] - first) * 1000, 1) if blocked_at else None,
        }
        rows.append(row)
        print(f"  run {k + 1:2d}: hostile log line {row['to_log_ms']} ms, kernel set {row['to_kernel_ms']} ms, "
              f"{i} frames sent", flush=True)  # fmt: skip
    kernel = [r["to_kernel_ms"] for r in rows if r["to_kernel_ms"] is not None]
    logged = [r["to_log_ms"] for r in rows if r["to_log_ms"] is not None]
    return {
        "kind": kind,
        "rate_pps": rate,
        "runs": rows,
        "detected": len(kernel),
        "kernel_median_ms": statistics.median(kernel) if kernel else None,
        "kernel_worst_ms": max(kernel) if kernel else None,
        "log_median_ms": statistics.median(logged) if logged else None,
        "log_worst_ms": max(logged) if logged else None,
    }


class BenignPeer:
    """UDP datagrams from the peer to an application socket on the device; counts what arrives."""

    def __init__(self, dev, peer, rate: float = 50.0) -> None:
        self.device_ip, self.peer_ip, self.port = live_lab.DEVICE_IP, live_lab.PEER_IP, live_lab.PROBE_PORT
        self.peer, self.rate = peer, rate
        with netns.entered(dev):
            self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind((self.device_ip, self.port))
        self.sink.settimeout(0.2)
        self.sent = self.received = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._receive)]

    def _send(self) -> None:
        with netns.entered(self.peer):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.peer_ip, 0))
        while not self.stop.wait(1.0 / self.rate):
            s.sendto(f"reading {self.sent}".encode(), (self.device_ip, self.port))
            self.sent += 1
        s.close()

    def _receive(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                _, (addr, _) = self.sink.recvfrom(2048)
                self.received += addr == self.peer_ip

    def __enter__(self) -> "BenignPeer":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.sink.close()


@contextlib.contextmanager
def sampler(run: AgentRun, every: float = 0.1) -> Iterator[list]:
    """RSS of the agent every ``every`` seconds while the block runs: [(s, RSS MB, anonymous MB), ...]."""
    samples: list = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.wait(every):
            with contextlib.suppress(OSError):
                m = run.memory_kb()
                samples.append((round(time.monotonic() - t0, 1), round(m["VmRSS"] / 1024, 1),
                                round(m.get("RssAnon", 0) / 1024, 1)))  # fmt: skip

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def fleet_broker(dev, workdir: Path) -> Iterator[str]:
    """A mosquitto on the device namespace's loopback and a controller key: the agent's [mqtt] section."""
    from agent.wire.signing import generate_key, save_keypair

    workdir.mkdir(parents=True, exist_ok=True)
    save_keypair(generate_key(), workdir / "controller.key", workdir / "controller.pub")
    broker = subprocess.Popen(["ip", "netns", "exec", dev.name, "mosquitto", "-p", "1883"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)
        yield (f'[mqtt]\nhost = "127.0.0.1"\nport = 1883\nfleet = "bench"\ndevice = "dev"\n'
               f'controller_public_key = "{workdir / "controller.pub"}"\nstatus_interval_s = 5\n')  # fmt: skip
    finally:
        broker.terminate()
        broker.wait()


def part_memory(dev, atk, work: Path, profiles: list[str], sources: int, rate: float) -> list[dict]:
    """Per profile: defended alone, defended with the fleet link (MQTT), and undefended (no verdicts)."""
    from agent.features.engine import FeatureExtractor
    from agent.profile import load_profile

    ips = _lab_addresses()
    rows = []
    variants = ((True, False), (True, True), (False, False))  # (defended, fleet link)
    with quiet_victim(dev):
        for k, (profile, (defended, fleet)) in enumerate((p, v) for p in profiles for v in variants):
            b = load_profile(profile).budgets
            tables = FeatureExtractor(b).tables
            name = f"memory-{k}-{Path(profile).stem}"  # a fresh state directory: no saved rules
            with (
                fleet_broker(dev, work / name) if fleet else contextlib.nullcontext("") as mqtt,
                flood_sender(atk, ips, rate, 0, True, sources, total=sources, seed=3) as sender,
                agent(dev, work / name, profile, "br0", "none", defended, mqtt) as run,
                sampler(run) as timeline,
            ):
                    start_mem = run.memory_kb()
                    report = finish_sender(sender)
                    run.wait_idle()
                    end_mem = run.memory_kb()
            if run.summary is None:
                print("  the agent gave no summary; its log ends:\n" + "".join(line for _, line in run.lines[-15:]))
            s = run.summary or {}
            row = {
                "profile": profile,
                "defended": defended,  # False: no verdicts, every frame through features and model
                "fleet_link": fleet,  # True: connected to an MQTT broker, signed updates enabled
                "sources": sources,
                "rate_pps": rate,
                "offered_pps": round(report["sent"] / report["seconds"]),
                "agent_frames": s.get("frames"),
                "kernel_drops": s.get("kernel_drops"),
                "classified": s.get("classified"),
                "filtered": s.get("filtered"),
                "verdicts": s.get("verdicts"),
                "rules": s.get("rules"),
                "start_rss_mb": round(start_mem["VmRSS"] / 1024, 1),
                "start_anon_mb": round(start_mem.get("RssAnon", 0) / 1024, 1),  # private memory
                "start_file_mb": round(start_mem.get("RssFile", 0) / 1024, 1),  # mapped libraries (numpy, TFLite)
                "peak_rss_mb": round(end_mem["VmHWM"] / 1024, 1),
                "end_rss_mb": round(end_mem["VmRSS"] / 1024, 1),
                "end_anon_mb": round(end_mem.get("RssAnon", 0) / 1024, 1),
                # (seconds since start, RSS MB, anonymous MB) every half second while the flood ran
                "rss_timeline": timeline[::5],
                "stream_tables_full_mb": round(sum(t.nbytes for t in tables.values()) / 2**20, 1),
                "stream_tables_full_mb_each": {k: round(t.nbytes / 2**20, 1) for k, t in tables.items()},
            }
            rows.append(row)
            mode = ("defended" if defended else "no verdicts") + (" + MQTT" if fleet else "")
            print(f"  {profile:15s} {mode:18s}: start {row['start_rss_mb']} MB, peak {row['peak_rss_mb']} MB "
                  f"(stream tables when full {row['stream_tables_full_mb']} MB), {row['agent_frames']} frames seen, "
                  f"{row['classified']} classified, {row['kernel_drops']} dropped", flush=True)  # fmt: skip
    return rows


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="results JSON (default benchmarks/results/agent_load.json)")
    ap.add_argument("--parts", default="load,latency,memory")
    ap.add_argument("--profile", default="x86_64-gateway", help="profile for the load and latency parts")
    ap.add_argument("--rates", default="20000,50000,100000,150000", help="flood rates for the load part, frames/s")
    ap.add_argument("--seconds", type=float, default=5.0, help="send time per rate")
    ap.add_argument("--spoofed", action="store_true", help="load part: random spoofed sources, not one attacker")
    ap.add_argument("--defended", action="store_true",
                    help="load part: the agent as deployed, its own rule table drops the flood once detected "
                         "(default: no verdicts, so every frame goes through the whole pipeline)")
    ap.add_argument("--answer", action="store_true", help="let the device answer each SYN with a RST (captured too)")
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--latency-kind", default="mirai_syn", choices=("mirai_syn", "mirai_ack"))
    ap.add_argument("--latency-rate", type=float, default=5000)
    ap.add_argument("--memory-profiles", default="x86_64-gateway,rpi-zero-2w")
    ap.add_argument("--memory-sources", type=int, default=1_000_000)
    ap.add_argument("--memory-rate", type=float, default=50000)
    # Sender mode (run by the benchmark itself inside the attacker namespace).
    ap.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    for name, kind in (("--interface", str), ("--rate", float), ("--pool", int), ("--total", int),
                       ("--seed", int), ("--batch", int), ("--src-mac", str), ("--dst-mac", str),
                       ("--src", str), ("--dst", str)):  # fmt: skip
        ap.add_argument(name, type=kind, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sender:
        args.batch = args.batch or 64
        run_sender(args)
        return

    reason = netns.skip_reason() or (None if shutil.which("nft") else "needs nft (apt-get install nftables)")
    if reason:
        sys.exit(f"cannot run: {reason}")
    parts = set(args.parts.split(","))
    report: dict = {"frame_bytes": FRAME_BYTES, "profile": args.profile, "kernel": platform.release()}
    with tempfile.TemporaryDirectory(prefix="agent_load-") as tmp, live_lab.namespaces() as (dev, atk, _peer):
        work = Path(tmp)
        if "load" in parts:
            print(f"load: {args.seconds:g} s per rate, {'spoofed sources' if args.spoofed else 'one attacker'}, "
                  f"enforcement none, profile {args.profile}", flush=True)  # fmt: skip
            rates = [float(r) for r in args.rates.split(",")]
            rows = part_load(dev, atk, work, rates, args.seconds, args.spoofed, args.defended, args.answer,
                             args.profile)  # fmt: skip
            report["load"] = {"spoofed": args.spoofed, "defended": args.defended, "device_answers": args.answer,
                              "seconds_per_rate": args.seconds, "rows": rows}  # fmt: skip
        if "latency" in parts:
            print(f"latency: {args.latency_runs} runs, {args.latency_kind} at {args.latency_rate:g} frames/s, "
                  f"nftables enforcement", flush=True)  # fmt: skip
            report["latency"] = part_latency(dev, atk, work, args.latency_runs, args.latency_kind,
                                             args.latency_rate, args.profile)  # fmt: skip
            lat = report["latency"]
            print(f"  kernel rule: median {lat['kernel_median_ms']} ms, worst {lat['kernel_worst_ms']} ms "
                  f"({lat['detected']}/{args.latency_runs} detected); log line: median {lat['log_median_ms']} ms")
        if "memory" in parts:
            print(f"memory: {args.memory_sources} spoofed sources at {args.memory_rate:g} frames/s", flush=True)
            report["memory"] = part_memory(dev, atk, work, args.memory_profiles.split(","), args.memory_sources,
                                           args.memory_rate)  # fmt: skip
    report["loadavg_1min_at_end"] = os.getloadavg()[0]
    print(f"wrote {save(report, args.out, 'agent_load')}")


if __name__ == "__main__":
    main()
