"""End to end in network namespaces: the live agent detects each Mirai class and the kernel drops the attacker.

Three namespaces (lab/live_lab.py): an attacker, a benign peer and the device, joined through a
bridge in the device namespace (the device captures on the bridge, as a board
on a mirror port or a gateway would).  The attacker replays synthesised Mirai
traffic with its own address; the agent runs as a real process
(``python -m agent run``) with nftables enforcement.  Everything is removed
afterwards, also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab import REPO, netns
from lab.live_lab import (
    ATTACKER_IP,
    DEVICE_IP,
    PEER_IP,
    PROBE_PORT,
    attack_frames,
    namespaces,
    nft_counters,
    received_from,
    send_raw,
    udp_probe,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _skip_reason() -> str | None:
    reason = netns.skip_reason()
    if reason:
        return reason
    if shutil.which("nft") is None:
        return "needs nft (apt-get install nftables)"
    if not (REPO / "agent" / "model" / "default.json").exists():
        return "no bundled model"
    return None


@contextmanager
def running_agent(dev, tmp_path: Path):
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nallowlist = ["10.77.0.254"]\nmin_packets = 10\n')
    log = open(tmp_path / "agent.log", "w+")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", dev.name, sys.executable, "-m", "agent", "run", "--profile", "x86_64-gateway",
         "--interface", "br0", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while "saved rules re-applied" not in (tmp_path / "agent.log").read_text():
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            assert time.time() < deadline, "agent did not start"
            time.sleep(0.1)
        yield proc, tmp_path / "agent.log"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.parametrize("kind", ["mirai_ack", "mirai_scan", "mirai_syn", "mirai_udp", "mirai_udpplain"])
def test_agent_blocks_each_mirai_class(kind, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    frames = attack_frames(kind, 1500)
    with namespaces() as (dev, atk, peer):
        sock = dev.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((DEVICE_IP, PROBE_PORT))
        with running_agent(dev, tmp_path) as (proc, log_path):
            udp_probe(peer, PEER_IP, 20)
            time.sleep(0.3)
            before = received_from(sock)
            assert before.get(PEER_IP) == 20, before

            send_raw(atk, frames, rate=5000)
            deadline = time.time() + 20
            while ATTACKER_IP not in dev.run("nft", "list", "table", "inet", "iotguard", check=False).stdout:
                assert time.time() < deadline, "no kernel rule for the attacker:\n" + log_path.read_text()
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.1)
            log_text = log_path.read_text()
            assert f"{kind:15s} {ATTACKER_IP}" in log_text, log_text

            counted = nft_counters(dev)
            udp_probe(atk, ATTACKER_IP, 30)
            udp_probe(peer, PEER_IP, 30)
            time.sleep(0.3)
            after = received_from(sock)
            assert ATTACKER_IP not in after, f"attacker reached the device socket: {after}"
            assert after.get(PEER_IP) == 30, f"benign peer lost packets: {after}"
            assert nft_counters(dev) >= counted + 30
        # Clean shutdown removed the kernel table: the attacker's datagrams reach the device again,
        # which also shows that it was the agent's rule that dropped them.
        assert dev.run("nft", "list", "table", "inet", "iotguard", check=False).returncode != 0
        udp_probe(atk, ATTACKER_IP, 5)
        time.sleep(0.3)
        assert received_from(sock).get(ATTACKER_IP) == 5
        sock.close()
