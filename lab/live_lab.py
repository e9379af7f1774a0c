"""The live agent's lab: three network namespaces and the traffic that crosses them.

A device namespace with bridge br0 (the device's address, where the agent captures, as a board on a
mirror port or a gateway would), an attacker and a benign peer, each joined to the bridge by a veth.
Shared by tests/agent/test_live_agent.py and the benchmarks that run the real agent process
(agent_load, soak, spoofed_flood).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.capture.packets import LABELS
from lab import REPO, netns

if TYPE_CHECKING:
    from agent.live import LiveAgent

DEMO_CAPTURE = REPO / "agent" / "samples" / "mirai_demo.pcap"  # benign traffic with every Mirai variant over it

DEVICE_IP, ATTACKER_IP, PEER_IP = "10.77.0.1", "10.77.0.66", "10.77.0.20"
DEVICE_MAC, ATTACKER_MAC, PEER_MAC = "02:77:00:00:00:01", "02:77:00:00:00:66", "02:77:00:00:00:20"
PROBE_PORT = 4999  # a UDP socket on the device: what reaches it, reached an application


@contextmanager
def namespaces() -> Iterator[tuple[netns.NetNamespace, netns.NetNamespace, netns.NetNamespace]]:
    """device (bridge br0 with the device address), attacker and peer namespaces, veths into the bridge."""
    with netns.namespace("dev") as dev, netns.namespace("atk") as atk, netns.namespace("peer") as peer:
        # With br_netfilter loaded (Docker hosts), IP hooks would run on frames inside the bridge, before
        # br0's packet taps; a board capturing on its own NIC sees frames before netfilter, so keep that order.
        for proto in ("iptables", "ip6tables"):
            dev.run("sysctl", "-qw", f"net.bridge.bridge-nf-call-{proto}=0", check=False)
        dev.run("ip", "link", "add", "br0", "address", DEVICE_MAC, "type", "bridge")
        dev.run("ip", "addr", "add", f"{DEVICE_IP}/24", "dev", "br0")
        dev.run("ip", "link", "set", "br0", "up")
        for ns, ip, mac in ((atk, ATTACKER_IP, ATTACKER_MAC), (peer, PEER_IP, PEER_MAC)):
            tok = netns.unique_token()
            outer, inner = f"v{tok}o", f"v{tok}i"
            subprocess.run(["ip", "link", "add", inner, "netns", ns.name, "address", mac, "type", "veth",
                            "peer", "name", outer, "netns", dev.name], check=True, capture_output=True)  # fmt: skip
            dev.run("ip", "link", "set", outer, "master", "br0")
            dev.run("ip", "link", "set", outer, "up")
            ns.run("ip", "addr", "add", f"{ip}/24", "dev", inner)
            ns.run("ip", "link", "set", inner, "up")
            ns.run("ip", "neigh", "replace", DEVICE_IP, "lladdr", DEVICE_MAC, "dev", inner)
            dev.run("ip", "neigh", "replace", ip, "lladdr", mac, "dev", "br0")
            ns.iface = inner
        yield dev, atk, peer


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ip_checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def attack_frames(kind: str, count: int, seed: int = 5, src_ip: str = ATTACKER_IP) -> list[bytes]:
    """Synthesised frames of one Mirai class, re-addressed from the attacker (``src_ip``) to the device."""
    from agent.capture.parse import parse_frames
    from convert.synth import OptionSpace, synthesise

    # Mirai's default options at a steady 3,000 packets/s for the whole capture: enough frames of every class.
    defaults = OptionSpace(defaults=True, force={"rate_pps": 3000.0, "duration_s": None})
    synth = synthesise(f"{kind}_victim", 20.0, seed, options=defaults)
    labels = np.asarray(synth.labels)
    packets = parse_frames(synth.frames)
    want = np.flatnonzero((labels[packets.index] == LABELS.index(kind)) & (packets.l3 == 1))[:count]
    out = []
    for i in packets.index[want].tolist():
        f = bytearray(synth.frames.frame(i))
        f[0:6], f[6:12] = _mac(DEVICE_MAC), _mac(ATTACKER_MAC)
        ihl = (f[14] & 0x0F) * 4
        f[26:30] = socket.inet_aton(src_ip)
        if kind != "mirai_scan":  # the scanner's targets are random addresses; floods hit the device
            f[30:34] = socket.inet_aton(DEVICE_IP)
        f[24:26] = b"\0\0"
        f[24:26] = struct.pack("!H", _ip_checksum(bytes(f[14 : 14 + ihl])))
        # Correct L4 checksums too: the device must answer as a real victim does (RST, ICMP).
        l4 = 14 + ihl
        total = struct.unpack("!H", f[16:18])[0]
        segment_end = 14 + total
        csum_at = {6: l4 + 16, 17: l4 + 6}.get(f[23])
        if csum_at is not None:
            f[csum_at : csum_at + 2] = b"\0\0"
            pseudo = bytes(f[26:34]) + struct.pack("!BBH", 0, f[23], segment_end - l4)
            data = pseudo + bytes(f[l4:segment_end])
            f[csum_at : csum_at + 2] = struct.pack("!H", _ip_checksum(data + b"\0" * (len(data) % 2)) or 0xFFFF)
        out.append(bytes(f))
    assert len(out) == count, f"the synthesiser gave only {len(out)} {kind} frames"
    return out


def send_raw(ns: netns.NetNamespace, frames: list[bytes], rate: float) -> None:
    """Send ready-made frames out of ``ns``'s veth at ``rate`` frames per second."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ns.iface, 0))
        gap = 1.0 / rate
        start = time.perf_counter()
        for k, frame in enumerate(frames):
            s.send(frame)
            ahead = start + k * gap - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    finally:
        s.close()


def udp_probe(ns: netns.NetNamespace, src_ip: str, n: int) -> None:
    """``n`` datagrams from ``src_ip`` in ``ns`` to the device's probe socket."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((src_ip, 0))
        for k in range(n):
            s.sendto(f"probe {k}".encode(), (DEVICE_IP, PROBE_PORT))
            time.sleep(0.002)
    finally:
        s.close()


def received_from(sock: socket.socket) -> dict[str, int]:
    """Datagrams waiting on ``sock``, counted per sender address."""
    got: dict[str, int] = {}
    sock.setblocking(False)
    while True:
        try:
            _, (addr, _) = sock.recvfrom(2048)
        except BlockingIOError:
            return got
        got[addr] = got.get(addr, 0) + 1


def nft_counters(dev: netns.NetNamespace) -> int:
    """Packets counted by the agent's nftables rules in ``dev``, or -1 when its table is absent."""
    out = dev.run("nft", "-j", "list", "table", "inet", "iotguard", check=False)
    if out.returncode:
        return -1
    total = 0
    for item in json.loads(out.stdout)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    total += expr["counter"]["packets"]
    return total


# --- the live agent without capture: the bundled capture handed to process() ---------------------


def offline_agent(state_dir: str | Path, **config: Any) -> LiveAgent:
    """A LiveAgent on the x86_64 profile with no capture and no kernel enforcement (no root needed);
    ``config``: AgentConfig fields (mqtt, metrics, events, ...)."""
    from agent.config import AgentConfig
    from agent.live import LiveAgent
    from agent.profile import load_profile

    Path(state_dir).mkdir(parents=True, exist_ok=True)
    return LiveAgent(load_profile("x86_64-gateway"), AgentConfig(state_dir=Path(state_dir), **config), enforcement="none")


def feed_capture(agent: LiveAgent, capture: Path = DEMO_CAPTURE, skip: int = 0, batches: int | None = None) -> list[dict]:
    """Run batches ``skip`` .. ``skip + batches`` of the profile's size from ``capture`` through the agent's
    pipeline (all of them by default); the alerts it raised."""
    from itertools import islice

    from agent.capture.pcap import read_capture

    alerts = []
    stop = None if batches is None else skip + batches
    for frames in islice(read_capture(capture, batch_size=agent.profile.batch_size), skip, stop):
        alerts += agent.process(frames)
    return alerts
