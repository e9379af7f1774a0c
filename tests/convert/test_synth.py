"""The traffic synthesiser: Mirai's packet shapes field by field (DESIGN 5), checksums, sidecars, reproducibility.

Captures are written to real pcap files and read back with dpkt, an independent decoder.
"""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

dpkt = pytest.importorskip("dpkt")

import itertools
from dataclasses import replace

from agent.capture.packets import LABELS, DecodeStats
from agent.capture.parse import parse_frames
from agent.capture.pcap import read_capture, write_pcap
from convert.synth import SCENARIOS, OptionSpace, sidecar_paths, synthesise, write
from convert.synth.attack import AttackPlan, Bot, Target
from convert.synth.mirai import plan_attack, run_attack
from convert.synth.network import make_lan
from convert.synth.options import (
    ACK,
    APPLIES,
    DOMAINS,
    FIN,
    PSH,
    RST,
    SCANNER_VARIANTS,
    SYN,
    URG,
    AttackOptions,
    default_options,
    sample_options,
)
from convert.synth.payloads import MIRAI_CREDENTIALS
from convert.synth.scene import Scene
from convert.synth.timeline import Timeline
from lab import REPO

BASE_US = 1_700_000_000_000_000
TCP_OPT_ORDER = [2, 4, 8, 1, 3]  # MSS, SACK-permitted, timestamps, NOP, window scale


# ---------------------------------------------------------------- reading captures back


def read_pcap(path: Path) -> list[tuple[float, bytes, int]]:
    """(timestamp, captured bytes, wire length) per record, via dpkt."""
    out = []
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for hdr_ts, buf in reader:
            out.append((hdr_ts, bytes(buf), None))
    # dpkt's Reader drops orig_len: read it from the record headers ourselves.
    raw = path.read_bytes()
    pos, lengths = 24, []
    while pos < len(raw):
        incl, orig = struct.unpack_from("<II", raw, pos + 8)
        lengths.append(orig)
        pos += 16 + incl
    return [(ts, buf, wire) for (ts, buf, _), wire in zip(out, lengths)]


def fields(buf: bytes) -> dict:
    """The header fields the checks need, decoded by dpkt."""
    eth = dpkt.ethernet.Ethernet(buf)
    ip = eth.data
    f = {"frame": len(buf), "eth_src": eth.src, "eth_dst": eth.dst, "ip": ip}
    if not isinstance(ip, dpkt.ip.IP):
        return f
    f.update(src=ip.src, dst=ip.dst, ttl=ip.ttl, id=ip.id, df=bool(ip.df), ip_len=ip.len, p=ip.p, tos=ip.tos)
    l4 = ip.data
    if isinstance(l4, dpkt.tcp.TCP):
        f.update(
            sport=l4.sport,
            dport=l4.dport,
            seq=l4.seq,
            ack=l4.ack,
            flags=l4.flags,
            win=l4.win,
            opts=dpkt.tcp.parse_opts(l4.opts),
            off=l4.off,
            urp=l4.urp,
            payload=bytes(l4.data),
        )
    elif isinstance(l4, dpkt.udp.UDP):
        f.update(sport=l4.sport, dport=l4.dport, payload=bytes(l4.data)[: l4.ulen - 8])
    return f


def checksum_ok(buf: bytes) -> bool:
    """Independent one's-complement check of the IPv4 header and the TCP/UDP/ICMP checksum."""

    def fold(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        s = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return s

    if struct.unpack_from("!H", buf, 12)[0] != 0x0800:
        return True
    ihl = (buf[14] & 0x0F) * 4
    total = struct.unpack_from("!H", buf, 16)[0]
    if fold(buf[14 : 14 + ihl]) != 0xFFFF:
        return False
    proto, segment = buf[23], buf[14 + ihl : 14 + total]
    if proto in (6, 17):
        pseudo = buf[26:34] + struct.pack("!BBH", 0, proto, len(segment))
        return fold(pseudo + segment) == 0xFFFF
    if proto == 1:
        return fold(segment) == 0xFFFF
    return True


def read_labels(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- controlled attack captures


def attack_capture(
    tmp_path: Path,
    kind: str,
    view: str,
    *,
    spoof=False,
    targets=None,
    seconds=2.0,
    seed=5,
    options: dict | None = None,
    **plan_args,
):
    """A capture of one attack with chosen bots and targets, written to pcap and read back.

    ``options``: attack options changed from Mirai's defaults (AttackOptions fields)."""
    opts = replace(default_options(kind), **(options or {}))
    spoof = spoof or opts.source != "real"
    rng = np.random.default_rng(seed)
    lan = make_lan(rng, "board", public=True)
    lan.add_device(rng, "camera1")
    scene = Scene(rng, lan, Timeline(seconds), seconds, BASE_US / 1e6)
    if view == "bot":
        bots = [Bot("bot1", lan.board, 3000.0, spoof=spoof)]
        targets = targets or [Target(0x5DB8D822), Target(0x2D21F000, 24)]
    else:
        neighbour = lan.add_device(rng, "infected1")
        bots = [
            Bot("bot1", scene.remote_host("bot1", 0x4F6A0B0C), 2500.0, spoof=spoof),
            Bot("bot2", neighbour, 1200.0, spoof=spoof),
        ]
        targets = targets or [Target(lan.board.ip)]
    if kind == "mirai_scan":
        bots = bots[-1:] if view == "victim" else bots
        bots[0].rate, bots[0].variant, targets = 160.0, opts.scan_variant, []
    plan = AttackPlan(kind, view, 0.05, seconds - 0.05, bots, targets, options=opts, **plan_args)
    run_attack(scene, plan)
    merged = scene.timeline.merge(BASE_US)
    path = tmp_path / f"{kind}_{view}{'_spoof' if spoof else ''}.pcap"
    write_pcap(path, merged.frames)
    records = read_pcap(path)
    assert len(records) == len(merged.labels)
    roles = [merged.roles[i] for i in merged.role_index]
    return plan, scene, records, [LABELS[i] for i in merged.labels], roles


def sent_by_bots(records, labels, roles, kind):
    """Decoded fields of the packets the bots sent for ``kind`` (the attack itself, not the replies)."""
    return [
        dict(fields(buf), ts=ts, wire=wire, role=role)
        for (ts, buf, wire), label, role in zip(records, labels, roles)
        if label == kind and role.startswith(kind)
    ]


@pytest.mark.parametrize("view", ["bot", "victim"])
def test_syn_flood_shape(tmp_path, view):
    plan, _scene, records, labels, roles = attack_capture(tmp_path, "mirai_syn", view)
    pkts = sent_by_bots(records, labels, roles, "mirai_syn")
    assert len(pkts) > 1000
    per_target_mss, per_target_ts = defaultdict(set), defaultdict(set)
    for p in pkts:
        assert p["flags"] == dpkt.tcp.TH_SYN and p["ack"] == 0 and p["win"] == 0 and p["df"]
        assert p["ip_len"] == 60 and p["frame"] == 74 and p["wire"] == 74 and p["tos"] == 0
        assert [kind for kind, _ in p["opts"]] == TCP_OPT_ORDER
        opts = dict(p["opts"])
        mss = struct.unpack("!H", opts[2])[0]
        tsval, tsecr = struct.unpack("!II", opts[8])
        assert 1400 <= mss <= 1415 and tsecr == 0 and opts[3] == b"\x06" and opts[4] == b""
        target = target_of(plan, p["dst"])
        per_target_mss[p["role"], target.text].add(mss)  # each bot chooses its own, once per target
        per_target_ts[p["role"], target.text].add(tsval)
    assert all(len(v) == 1 for v in per_target_mss.values()) and all(len(v) == 1 for v in per_target_ts.values())
    assert len(per_target_mss) == len(plan.targets) * len(plan.bots)
    # Random per packet: ports, sequence numbers, IP IDs.
    for key in ("sport", "dport", "seq", "id"):
        assert (
            len({p[key] for p in pkts}) > 0.9 * len(pkts)
            if key == "seq"
            else len({p[key] for p in pkts}) > 0.5 * len(pkts)
        )
    _check_ttl(pkts, plan)


def target_of(plan, dst: bytes):
    """The attack target (address or prefix) a destination belongs to."""
    ip = int.from_bytes(dst, "big")
    return next(t for t in plan.targets if ip >> (32 - t.prefix) == t.ip >> (32 - t.prefix))


def _check_ttl(pkts, plan):
    """TTL 64 as sent; a remote bot's packets arrive with 64 minus its hop count (the same for all of them)."""
    by_role = defaultdict(set)
    for p in pkts:
        by_role[p["role"]].add(p["ttl"])
    for bot in plan.bots:
        seen = by_role.get(f"{plan.kind}:{bot.name}", set())
        if bot.host.local:
            assert seen <= {64}
        else:
            assert len(seen) <= 1 and all(ttl < 64 for ttl in seen)


def test_syn_flood_netmask_spreads_destinations(tmp_path):
    _plan, _, records, labels, roles = attack_capture(tmp_path, "mirai_syn", "bot", targets=[Target(0x2D21F000, 24)])
    dsts = {p["dst"] for p in sent_by_bots(records, labels, roles, "mirai_syn")}
    assert len(dsts) > 200 and {d[:3] for d in dsts} == {bytes([0x2D, 0x21, 0xF0])}


@pytest.mark.parametrize("view", ["bot", "victim"])
def test_scan_shape(tmp_path, view):
    _plan, _scene, records, labels, roles = attack_capture(
        tmp_path, "mirai_scan", view, seconds=6.0, open_fraction=0.02, refuse_fraction=0.05, vulnerable_fraction=1.0
    )
    syns = [
        p
        for p in sent_by_bots(records, labels, roles, "mirai_scan")
        if p.get("flags") == dpkt.tcp.TH_SYN and p["off"] == 5
    ]
    assert len(syns) >= 4 * 160
    ports = Counter(p["dport"] for p in syns)
    assert set(ports) == {23, 2323} and 0.08 < ports[2323] / len(syns) < 0.12
    for p in syns:
        assert p["seq"] == int.from_bytes(p["dst"], "big")  # sequence number = destination address
        assert p["ip_len"] == 40 and p["opts"] == [] and not p["df"] and p["ack"] == 0 and p["ttl"] == 64
        assert p["frame"] == (54 if view == "bot" else 60) and p["wire"] == p["frame"]
    assert len({p["sport"] for p in syns}) == 1 and len({p["win"] for p in syns}) == 1
    assert syns[0]["sport"] >= 1024 and len({p["dst"] for p in syns}) > 0.99 * len(syns)
    # Bursts of 160 once a second.
    gaps = np.diff([p["ts"] for p in syns])
    assert (gaps > 0.5).sum() >= 4 and np.all((gaps < 0.01) | (gaps > 0.5))
    # Targets answer; the bot's kernel resets the raw half-open connection, then Mirai logs in over telnet.
    replies = [fields(buf) for (_, buf, _), role in zip(records, roles) if role == "reply:mirai_scan"]
    synacks = [
        r for r in replies if r.get("flags") == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK and r["dport"] == syns[0]["sport"]
    ]
    scanned = {int.from_bytes(p["dst"], "big") for p in syns}
    assert synacks and all(r["ack"] - 1 in scanned for r in synacks)
    bot_tcp = [p for p in sent_by_bots(records, labels, roles, "mirai_scan")]
    assert any(p["flags"] == dpkt.tcp.TH_RST and p["sport"] == syns[0]["sport"] for p in bot_tcp)
    typed = b"".join(p["payload"] for p in bot_tcp if p.get("dport") in (23, 2323))
    assert any(f"{u}".encode() in typed and p.encode() in typed for u, p, _ in MIRAI_CREDENTIALS if p)


@pytest.mark.parametrize("view", ["bot", "victim"])
def test_ack_flood_shape(tmp_path, view):
    plan, _, records, labels, roles = attack_capture(tmp_path, "mirai_ack", view)
    pkts = sent_by_bots(records, labels, roles, "mirai_ack")
    assert len(pkts) > 1000
    windows = defaultdict(set)
    for p in pkts:
        assert p["flags"] == dpkt.tcp.TH_ACK and not p["df"] and p["off"] == 5 and p["opts"] == []
        assert p["ip_len"] == 552 and p["frame"] == 566 and len(p["payload"]) == 512
        windows[p["role"], target_of(plan, p["dst"]).text].add(p["win"])
    # The window is drawn once per bot and target.
    assert len(windows) == len(plan.bots) * len(plan.targets) and all(len(w) == 1 for w in windows.values())
    for key in ("sport", "dport", "seq", "ack"):
        assert len({p[key] for p in pkts}) > 0.9 * len(pkts)
    assert len({p["payload"][:16] for p in pkts}) == len(pkts)  # random payload per packet
    _check_ttl(pkts, plan)


@pytest.mark.parametrize("view", ["bot", "victim"])
def test_udp_flood_shape(tmp_path, view):
    plan, _, records, labels, roles = attack_capture(tmp_path, "mirai_udp", view)
    pkts = sent_by_bots(records, labels, roles, "mirai_udp")
    assert len(pkts) > 1000
    for p in pkts:
        assert p["p"] == 17 and not p["df"] and p["ip_len"] == 540 and p["frame"] == 554 and len(p["payload"]) == 512
    for key in ("sport", "dport", "id"):
        assert len({p[key] for p in pkts}) > 0.5 * len(pkts)
    _check_ttl(pkts, plan)


@pytest.mark.parametrize("view", ["bot", "victim"])
def test_udpplain_flood_shape(tmp_path, view):
    targets = [Target(0x5DB8D822), Target(0x2D21F000, 24)] if view == "bot" else None
    plan, _, records, labels, roles = attack_capture(tmp_path, "mirai_udpplain", view, targets=targets)
    pkts = sent_by_bots(records, labels, roles, "mirai_udpplain")
    assert len(pkts) > 1000
    flows = defaultdict(list)
    for p in pkts:
        assert p["p"] == 17 and p["df"] and p["ip_len"] == 540 and p["frame"] == 554 and p["ttl"] <= 64
        flows[(p["role"], p["dst"], p["dport"])].append(p)
    # One connected socket per bot and target: a fixed 5-tuple, the IP ID counting up by one.
    assert len(flows) == len(plan.bots) * len(plan.targets)
    for flow in flows.values():
        assert len({(p["src"], p["sport"]) for p in flow}) == 1
        assert all((b["id"] - a["id"]) % 65536 == 1 for a, b in itertools.pairwise(flow))
    _check_ttl(pkts, plan)


def test_spoofed_sources_differ_per_packet(tmp_path):
    for kind in ("mirai_syn", "mirai_ack", "mirai_udp"):
        _plan, scene, records, labels, roles = attack_capture(tmp_path, kind, "bot", spoof=True, seconds=1.0)
        pkts = sent_by_bots(records, labels, roles, kind)
        assert len({p["src"] for p in pkts}) > 0.99 * len(pkts)
        assert {p["eth_src"] for p in pkts} == {scene.lan.board.mac.to_bytes(6, "big")}


def test_victim_view_is_padded_and_victim_replies_are_benign(tmp_path):
    _plan, scene, records, labels, roles = attack_capture(tmp_path, "mirai_ack", "victim")
    board = scene.lan.board
    for (ts, buf, wire), label, role in zip(records, labels, roles):
        f = fields(buf)
        assert wire == len(buf) >= 54
        if f["eth_src"] != board.mac.to_bytes(6, "big"):
            assert len(buf) >= 60  # everything the board did not send itself arrives padded
        if role.startswith("reply:"):
            assert label == "benign" and f["src"] == board.ip.to_bytes(4, "big") and f["flags"] == dpkt.tcp.TH_RST


def test_udp_flood_icmp_replies_are_rate_limited(tmp_path):
    _plan, _scene, records, labels, roles = attack_capture(tmp_path, "mirai_udp", "victim", seconds=3.0)
    icmp = [fields(buf) for (_, buf, _), role in zip(records, roles) if role == "reply:mirai_udp"]
    floods = sent_by_bots(records, labels, roles, "mirai_udp")
    # Linux: per peer a burst of 6, then one a second (2 bots, 3 s), never one per packet.
    assert 2 * 6 <= len(icmp) <= 2 * (6 + 3 + 1)
    for r in icmp:
        assert r["p"] == 1 and r["ip"].data.type == 3 and r["ip"].data.code == 3 and r["frame"] == 14 + 20 + 8 + 540
    assert len(floods) > 50 * len(icmp)


def _history_and_replies(synth) -> tuple[int, int, int]:
    """For a UDP-flood victim capture: (benign packets a bot sent its victim before its first flood packet,
    582-byte ICMP port unreachables quoting that bot's flood, flood packets of that bot), best bot."""
    ip = synth.frames.buf
    labels, roles = synth.labels, synth.roles
    best = (0, 0, 0)
    for contact in synth.meta["attacks"][0].get("prior_contacts", []):
        bot = bytes(int(x) for x in contact["bot"].split("."))
        victim = bytes(int(x) for x in contact["victim"].split("."))
        src = [ip[o + 26 : o + 30].tobytes() for o in synth.frames.offset]
        dst = [ip[o + 30 : o + 34].tobytes() for o in synth.frames.offset]
        flood = [i for i in range(len(synth)) if src[i] == bot and LABELS[labels[i]] == "mirai_udp"]
        if not flood:
            continue
        before = [
            i
            for i in range(flood[0])
            if src[i] == bot and dst[i] == victim and LABELS[labels[i]] == "benign" and roles[i].startswith("benign:")
        ]
        icmp = [
            i
            for i in range(len(synth))
            if roles[i] == "reply:mirai_udp"
            and dst[i] == bot
            and synth.frames.wire_len[i] == 14 + 20 + 8 + 540
            and ip[synth.frames.offset[i] + 23] == 1  # ICMP
            and ip[synth.frames.offset[i] + 34] == 3  # destination unreachable
            and ip[synth.frames.offset[i] + 42 + 12 : synth.frames.offset[i] + 42 + 16].tobytes() == bot  # quoted src
        ]
        best = max(best, (len(before), len(icmp), len(flood)))
    return best


@pytest.mark.slow
def test_udp_flood_victims_see_bots_with_history_and_linux_replies():
    """Some bots talked to their victim before flooding it; the victim answers the flood as Linux does."""
    found = []
    # Mirai's default 512-byte payload (582-byte ICMP errors) and a flood far faster than the ICMP limit.
    space = OptionSpace(force={"payload_len": 512, "rate_pps": 2000.0, "duration_s": None})
    for seed in range(8):
        synth = synthesise("mirai_udp_victim", 30.0, seed, options=space)
        before, icmp, flood = _history_and_replies(synth)
        assert all(LABELS[x] == "benign" for x in synth.labels[synth.roles == "reply:mirai_udp"])
        attack = synth.meta["attacks"][0]
        if before and icmp and attack["replies"] == "linux" and attack["targets"][0].endswith("/32"):
            found.append(seed)
            # Linux's per-peer limit: a burst of 6, then one a second (the flood starts up to 1.5 s late).
            assert icmp <= 6 + (attack["stop_s"] - attack["start_s"]) + 2.5 < flood / 10
    assert found, "no bot with benign traffic to its victim before the flood and 582-byte ICMP replies"


# ---------------------------------------------------------------- scenarios, sidecars, reproducibility


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "mixed.pcap"
    synth = synthesise("mixed", 20.0, seed=3)
    write(synth, out)
    return synth, out


def test_mixed_has_every_class_and_valid_checksums(mixed):
    synth, out = mixed
    pcap, labels_path, meta_path = sidecar_paths(out)
    records = read_pcap(pcap)
    rows = read_labels(labels_path)
    meta = json.loads(meta_path.read_text())
    assert len(rows) == len(records) == meta["packets"] == len(synth)
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(LABELS) and counts == Counter(meta["packets_per_label"])
    assert all(r["role"] for r in rows) and len(meta["attacks"]) == 5
    rng = np.random.default_rng(0)
    sample = rng.choice(len(records), size=min(len(records), 15000), replace=False)
    bad = [int(i) for i in sample if not checksum_ok(records[i][1])]
    assert bad == []
    ts = np.array([r[0] for r in records])
    assert np.all(np.diff(ts) >= 0)
    assert 2016 <= int(meta["base_time"][:4]) < 2030


def test_agent_decodes_every_record(mixed):
    synth, out = mixed
    stats = DecodeStats()
    decoded = sum(len(parse_frames(batch, stats)) for batch in read_capture(out))
    assert decoded == len(synth) and stats.total_skipped == 0, stats.summary()


def test_mixed_benign_tcp_looks_real(mixed):
    _synth, out = mixed
    records = read_pcap(out)
    rows = read_labels(sidecar_paths(out)[1])
    conns, sizes = defaultdict(list), Counter()
    for (ts, buf, wire), row in zip(records, rows):
        if row["label"] != "benign":
            continue
        sizes[wire] += 1
        f = fields(buf)
        if "flags" in f:
            key = tuple(sorted([(f["src"], f["sport"]), (f["dst"], f["dport"])]))
            conns[key].append(f)
    assert len(sizes) > 50  # many size clusters, not one
    complete = [c for c in conns.values() if c[0]["flags"] == dpkt.tcp.TH_SYN and len(c) > 1]  # not cut off
    refused = [c for c in complete if len(c) == 2 and c[1]["flags"] == dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK]
    complete = [c for c in complete if c not in refused]  # connections to closed ports: SYN, RST-ACK
    assert len(complete) >= 5
    for c in complete:
        assert c[1]["flags"] == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK and c[1]["ack"] == c[0]["seq"] + 1
        assert all(p["win"] > 0 for p in c if not p["flags"] & dpkt.tcp.TH_RST)
        tsvals = [struct.unpack("!I", dict(p["opts"])[8][:4])[0] for p in c if 8 in dict(p["opts"])]
        if len(tsvals) > 10:
            assert len(set(tsvals)) > 2  # timestamps option changes over the connection


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    paths = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        paths.append(write(synthesise("mixed", 4.0, seed), tmp_path / f"{name}.pcap"))
    for x, y in zip(paths[0], paths[1]):
        assert x.read_bytes() == y.read_bytes()
    assert paths[0][0].read_bytes() != paths[2][0].read_bytes()


@pytest.mark.parametrize("seconds", [0.3, 1.0])
def test_mixed_works_for_short_durations(seconds):
    synth = synthesise("mixed", seconds, seed=1)
    assert len(synth) > 0 and np.all(np.diff(synth.ts_us) >= 0)
    assert synth.ts_us[-1] - synth.ts_us[0] < seconds * 1e6


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_writes_a_readable_capture(tmp_path, name):
    synth = synthesise(name, 1.5, seed=2)
    pcap, labels_path, meta_path = write(synth, tmp_path / f"{name}.pcap")
    records = read_pcap(pcap)
    rows = read_labels(labels_path)
    meta = json.loads(meta_path.read_text())
    assert len(records) == len(rows) == meta["packets"] > 0
    assert meta["scenario"] == name and meta["seed"] == 2 and {"mac", "ip"} <= set(meta["board"])
    assert {r["label"] for r in rows} <= set(LABELS)
    for ts, buf, wire in records[:: max(1, len(records) // 500)]:
        eth = dpkt.ethernet.Ethernet(buf)
        assert eth.type in (dpkt.ethernet.ETH_TYPE_IP, dpkt.ethernet.ETH_TYPE_ARP) and wire == len(buf)
    if name.startswith("mirai_"):
        kind = name.rsplit("_", 1)[0]
        assert meta["packets_per_label"][kind] > 0 and meta["attackers"] and meta["victims"]


@pytest.mark.slow
def test_cli_list_and_synth(tmp_path):
    env_py = sys.executable
    listed = subprocess.run(
        [env_py, "-m", "convert", "synth", "--list"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert {line.split()[0] for line in listed.stdout.splitlines()} == set(SCENARIOS)
    out = tmp_path / "cam.pcap"
    subprocess.run(
        [env_py, "-m", "convert", "synth", "--scenario", "camera", "--seconds", "3", "--seed", "4", "-o", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    assert out.exists() and out.with_name("cam.labels.csv").exists() and out.with_name("cam.meta.json").exists()
    bad = subprocess.run(
        [env_py, "-m", "convert", "synth", "--scenario", "nope", "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "unknown scenario" in bad.stderr


# ---------------------------------------------------------------- discovery beacons and first contacts


def beacon_streams(records, roles) -> dict[tuple, list[dict]]:
    """Beacons to broadcast/multicast addresses, grouped by (source, ports, destination)."""
    streams: dict[tuple, list[dict]] = defaultdict(list)
    for (ts, buf, wire), role in zip(records, roles):
        if role != "benign:beacon":
            continue
        f = dict(fields(buf), ts=ts, wire=wire, buf=buf)
        dst = f["dst"]
        if dst == b"\xff" * 4 or dst[3] == 255 or 224 <= dst[0] < 240:
            streams[(f["src"], f["sport"], f["dport"], dst)].append(f)
    return streams


def beacon_starts(stream: list[dict]) -> np.ndarray:
    """First packet of each beacon (burst families send a few NOTIFYs back to back)."""
    ts = np.array([p["ts"] for p in stream])
    return ts[np.concatenate([[True], np.diff(ts) > 0.5])]


def test_beacons_keep_each_devices_period_size_and_broadcast_address(tmp_path):
    from convert.synth.beacons import FAMILIES, discovery_beacons

    seconds = 600.0
    rng = np.random.default_rng(3)
    lan = make_lan(rng, "board")
    scene = Scene(rng, lan, Timeline(seconds), seconds, BASE_US / 1e6)
    plan = ["kasa", "kasa", "kasa", "tuya", "tuya", "hue"]
    devices = [(lan.add_device(rng, f"{name}{i}"), name) for i, name in enumerate(plan)]
    phone = lan.add_device(rng, "phone1", private_mac=True)
    beaconers = discovery_beacons(scene, devices, 0.0, seconds, [phone])
    merged = scene.timeline.merge(BASE_US)
    path = tmp_path / "beacons.pcap"
    write_pcap(path, merged.frames)
    records = read_pcap(path)
    roles = [merged.roles[i] for i in merged.role_index]
    assert {LABELS[i] for i in merged.labels} == {"benign"}
    streams = beacon_streams(records, roles)
    by_src = {s[0]: v for s, v in streams.items()}
    for b in beaconers:
        stream = by_src[b.host.ip.to_bytes(4, "big")]
        assert all(checksum_ok(p["buf"]) for p in stream)
        gaps = np.diff(beacon_starts(stream))
        assert abs(np.median(gaps) / b.period - 1) < 0.005  # a steady timer
        assert np.mean(np.abs(gaps / b.period - 1) < 0.02) > 0.9  # small jitter, rare late wake-ups
        assert 1.0 <= b.period <= 125.0
        assert len({p["wire"] for p in stream}) <= FAMILIES[b.family.name].variants
        if b.family.name == "kasa":  # the real plugs' habit: 71-byte frames to 255.255.255.255:9999
            assert {p["wire"] for p in stream} == {71}
            assert {(p["sport"], p["dport"], p["dst"], p["eth_dst"]) for p in stream} == {
                (9999, 9999, b"\xff" * 4, b"\xff" * 6)
            }
    # Each device on its own phase: no two kasa plugs beacon in the same second.
    firsts = [beacon_starts(by_src[b.host.ip.to_bytes(4, "big")])[0] for b in beaconers if b.family.name == "kasa"]
    assert len({round(t) for t in firsts}) == len(firsts)


@pytest.mark.slow
def test_smart_home_has_beacons_and_many_first_contacts(tmp_path):
    synth = synthesise("smart_home", 300.0, seed=1)
    pcap, _, _ = write(synth, tmp_path / "home.pcap")
    records = read_pcap(pcap)
    roles = list(synth.roles)
    is_beacon = np.array(roles) == "benign:beacon"
    assert is_beacon.sum() > 50 and set(synth.labels[is_beacon]) == {LABELS.index("benign")}
    regular = {k: s for k, s in beacon_streams(records, roles).items() if len(beacon_starts(s)) >= 4}
    assert len({k[0] for k in regular}) >= 3  # several devices
    for stream in regular.values():
        gaps = np.diff(beacon_starts(stream))
        assert 1.0 <= np.median(gaps) <= 125.0
        assert np.mean(np.abs(gaps / np.median(gaps) - 1) < 0.02) > 0.85
    # First contacts: local hosts open TCP or QUIC streams to many distinct Internet addresses.
    new_peers = set()
    for (ts, buf, wire), role in zip(records, roles):
        f = fields(buf)
        if f.get("p") == 6 and f["flags"] == dpkt.tcp.TH_SYN or role == "benign:quic" and f.get("dport") == 443:
            new_peers.add(f["dst"])
    assert len(new_peers) >= 20



# ---------------------------------------------------------------- attack options honoured on the wire

IP_OVERHEAD = {"mirai_ack": 40, "mirai_udp": 28, "mirai_udpplain": 28}


@pytest.mark.parametrize("kind", ["mirai_ack", "mirai_udp", "mirai_udpplain"])
@pytest.mark.parametrize("length", [0, 1, 64, 1460])
def test_payload_length_and_random_payload(tmp_path, kind, length):
    _plan, _, records, labels, roles = attack_capture(
        tmp_path, kind, "bot", seconds=0.4, options={"payload_len": length}
    )
    pkts = sent_by_bots(records, labels, roles, kind)
    assert len(pkts) > 100
    for p in pkts:
        assert len(p["payload"]) == length and p["ip_len"] == IP_OVERHEAD[kind] + length
        assert p["wire"] == p["frame"] == 14 + IP_OVERHEAD[kind] + length  # the bot's own capture: no padding
    if length >= 8:
        assert len({p["payload"] for p in pkts}) == len(pkts)  # fresh random bytes per packet
    assert all(checksum_ok(buf) for _, buf, _ in records)


@pytest.mark.parametrize("view", ["bot", "victim"])
@pytest.mark.parametrize("kind", ["mirai_ack", "mirai_udp", "mirai_udpplain"])
def test_rand_0_payload_is_never_refreshed(tmp_path, kind, view):
    """rand=0: udp and udpplain send their calloc'd buffer (zeros); ack repeats the bytes drawn once per target."""
    plan, _, records, labels, roles = attack_capture(
        tmp_path, kind, view, seconds=0.5, options={"payload_len": 200, "payload_random": False}
    )
    pkts = sent_by_bots(records, labels, roles, kind)
    assert len(pkts) > 100
    by_target = defaultdict(set)
    for p in pkts:
        assert len(p["payload"]) == 200
        key = (p["role"], p["dst"] if kind == "mirai_udpplain" else target_of(plan, p["dst"]).text)
        by_target[key].add(p["payload"])
    if kind == "mirai_ack":
        assert all(len(v) == 1 for v in by_target.values())
        payloads = set().union(*by_target.values())
        assert len(payloads) == len(by_target) and b"\0" * 200 not in payloads  # random, once per bot and target
    else:
        assert set().union(*by_target.values()) == {b"\0" * 200}


RAW_HEADERS = {"tos": 0x28, "ttl": 200, "ident": 1337, "sport": 4444, "dport": 53}


@pytest.mark.parametrize("view", ["bot", "victim"])
@pytest.mark.parametrize("kind", ["mirai_syn", "mirai_ack", "mirai_udp"])
def test_raw_socket_header_options(tmp_path, kind, view):
    """tos, ttl, ident, df, sport and dport fixed by the command are on every packet."""
    df = not default_options(kind).df
    plan, _, records, labels, roles = attack_capture(
        tmp_path, kind, view, seconds=0.5, options={**RAW_HEADERS, "df": df}
    )
    pkts = sent_by_bots(records, labels, roles, kind)
    assert len(pkts) > 100
    for p in pkts:
        assert (p["tos"], p["id"], p["df"], p["sport"], p["dport"]) == (0x28, 1337, df, 4444, 53)
    assert all(checksum_ok(buf) for _, buf, _ in records)  # the floods and the victims' answers
    seen_ttl = defaultdict(set)
    for p in pkts:
        seen_ttl[p["role"]].add(p["ttl"])
    for bot in plan.bots:
        ttls = seen_ttl[f"{kind}:{bot.name}"]
        # TTL 200 as sent; a remote bot's packets arrive with 200 less its hop count, the same for all.
        assert ttls == {200} if bot.host.local else (len(ttls) == 1 and min(ttls) == 200 - (64 - bot.host.ttl))


@pytest.mark.parametrize("kind", ["mirai_syn", "mirai_ack", "mirai_udp"])
def test_random_per_packet_options(tmp_path, kind):
    """The 0xffff defaults: ident and ports random per packet."""
    _plan, _, records, labels, roles = attack_capture(tmp_path, kind, "bot", seconds=0.5)
    pkts = sent_by_bots(records, labels, roles, kind)
    for key in ("id", "sport", "dport"):
        assert len({p[key] for p in pkts}) > 0.9 * len(pkts)


def test_syn_flood_flags_seqnum_acknum(tmp_path):
    flags = SYN | PSH | URG
    _plan, _, records, labels, roles = attack_capture(
        tmp_path, "mirai_syn", "bot", seconds=0.5, options={"tcp_flags": flags, "seqnum": 0x05390000, "acknum": None}
    )
    pkts = sent_by_bots(records, labels, roles, "mirai_syn")
    assert len(pkts) > 100
    assert {p["flags"] for p in pkts} == {flags} and {p["seq"] for p in pkts} == {0x05390000}
    assert all(p["ip_len"] == 60 and len(p["opts"]) == 5 for p in pkts)  # the options stay with any flags
    assert len({p["ack"] for p in pkts}) > 0.9 * len(pkts)  # acknum=0xffff: random per packet
    assert len({p["urp"] for p in pkts}) > 0.5 * len(pkts)  # URG: a random urgent pointer per packet


def test_ack_flood_flags_seqnum_acknum(tmp_path):
    flags = ACK | PSH | FIN
    _plan, _, records, labels, roles = attack_capture(
        tmp_path, "mirai_ack", "bot", seconds=0.5, options={"tcp_flags": flags, "seqnum": 7, "acknum": 0}
    )
    pkts = sent_by_bots(records, labels, roles, "mirai_ack")
    assert len(pkts) > 100
    assert {(p["flags"], p["seq"], p["ack"], p["urp"]) for p in pkts} == {(flags, 7, 0, 0)}


@pytest.mark.parametrize("kind", ["mirai_syn", "mirai_ack", "mirai_udp"])
def test_spoofed_fixed_source(tmp_path, kind):
    spoofed = 0xC6336407  # 198.51.100.7
    _plan, scene, records, labels, roles = attack_capture(
        tmp_path, kind, "victim", seconds=0.5, options={"source": "fixed", "source_ip": spoofed}
    )
    pkts = sent_by_bots(records, labels, roles, kind)
    assert len(pkts) > 100 and {p["src"] for p in pkts} == {spoofed.to_bytes(4, "big")}
    # The victim answers the spoofed address (through the gateway), never the bots.
    answers = [fields(buf) for (_, buf, _), role in zip(records, roles) if role == f"reply:{kind}"]
    assert answers and {a["dst"] for a in answers} == {spoofed.to_bytes(4, "big")}


def test_udpplain_fixed_ports_and_connected_sockets(tmp_path):
    """udpplain: sport binds the first socket (the second socket's bind fails: an ephemeral port), dport is
    every socket's port; the kernel's headers: DF, TTL 64, TOS 0, an IP ID counting up per socket."""
    targets = [Target(0x5DB8D822), Target(0x2D21F000, 24)]
    _plan, _, records, labels, roles = attack_capture(
        tmp_path, "mirai_udpplain", "bot", seconds=0.5, targets=targets, options={"sport": 5000, "dport": 53}
    )
    pkts = sent_by_bots(records, labels, roles, "mirai_udpplain")
    flows = defaultdict(list)
    for p in pkts:
        assert p["df"] and p["ttl"] == 64 and p["tos"] == 0 and p["dport"] == 53
        flows[(p["dst"], p["sport"])].append(p)
    assert len(flows) == 2
    (first, ports_a), (second, ports_b) = sorted(flows.items(), key=lambda kv: kv[1][0]["ts"])
    assert first[1] == 5000 and 32768 <= second[1] < 61000
    for flow in (ports_a, ports_b):
        assert all((b["id"] - a["id"]) % 65536 == 1 for a, b in itertools.pairwise(flow))


@pytest.mark.parametrize(
    "kind, flags, answer",
    [
        ("mirai_syn", SYN | ACK, dpkt.tcp.TH_RST),  # anything with ACK: RST, seq = its ack
        ("mirai_syn", SYN | RST, None),  # nobody answers a reset
        ("mirai_syn", SYN | FIN, dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK),  # closed port: RST-ACK
        ("mirai_ack", ACK | PSH, dpkt.tcp.TH_RST),
        ("mirai_ack", PSH, dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK),  # no ACK: RST-ACK acknowledging the payload
    ],
)
def test_victim_answers_follow_the_flags(tmp_path, kind, flags, answer):
    _plan, _, records, labels, roles = attack_capture(
        tmp_path, kind, "victim", seconds=0.5, options={"tcp_flags": flags, "dport": 9}  # a closed port
    )
    pkts = defaultdict(list)  # by (source, source port): random per packet, so nearly always one packet
    for p in sent_by_bots(records, labels, roles, kind):
        pkts[(p["src"], p["sport"])].append(p)
    answers = [fields(buf) for (_, buf, _), role in zip(records, roles) if role == f"reply:{kind}"]
    if answer is None:
        assert not answers
        return
    assert len(answers) > 100 and {a["flags"] for a in answers} == {answer}
    for a in answers:
        if len(pkts[(a["dst"], a["dport"])]) != 1:
            continue
        (sent,) = pkts[(a["dst"], a["dport"])]
        if answer == dpkt.tcp.TH_RST:
            assert a["seq"] == sent["ack"]
        else:
            occupied = len(sent["payload"]) + bool(flags & SYN) + bool(flags & FIN)
            assert a["ack"] == (sent["seq"] + occupied) % (1 << 32)


@pytest.mark.parametrize("variant", ["mirai", "satori", "ssh-noseq"])
def test_scanner_variants(tmp_path, variant):
    _plan, _, records, labels, roles = attack_capture(
        tmp_path, "mirai_scan", "bot", seconds=2.5, options={"scan_variant": variant}
    )
    v = SCANNER_VARIANTS[variant]
    syns = [p for p in sent_by_bots(records, labels, roles, "mirai_scan") if p.get("flags") == dpkt.tcp.TH_SYN]
    syns = [p for p in syns if p["off"] == 5]  # the raw scanner's, not the brute force's connect()
    assert len(syns) >= 2 * v.burst
    ports = Counter(p["dport"] for p in syns)
    assert set(ports) == set(v.ports)
    for port, weight in zip(v.ports, v.port_probabilities()):
        assert abs(ports[port] / len(syns) - weight) < 0.02
    fingerprint = np.mean([p["seq"] == int.from_bytes(p["dst"], "big") for p in syns])
    assert fingerprint == (1.0 if v.seq_is_dst else 0.0)


# ---------------------------------------------------------------- the sampler and OptionSpace


@pytest.fixture(scope="module")
def drawn():
    rng = np.random.default_rng(7)
    return {kind: [sample_options(rng, kind) for _ in range(2000)] for kind in APPLIES}


def test_sampler_covers_each_options_range(drawn):
    flood = drawn["mirai_udp"] + drawn["mirai_ack"]
    lengths = np.array([o.payload_len for o in flood])
    assert lengths.min() == 0 and lengths.max() == 1460
    assert np.all(np.histogram(lengths, bins=15, range=(0, 1461))[0] > 20)  # spread over 0..1460
    assert 0.25 < np.mean(lengths == 512) < 0.5  # Mirai's default stays common
    assert len(set(lengths.tolist())) > 300
    raw = drawn["mirai_syn"] + flood
    ttls = Counter(o.ttl for o in raw)
    assert ttls.most_common(1)[0][0] == 64 and 0.6 < ttls[64] / len(raw) < 0.8 and len(ttls) > 100
    assert {o.df for o in drawn["mirai_syn"]} == {o.df for o in drawn["mirai_udp"]} == {False, True}
    assert 0.75 < np.mean([o.tos == 0 for o in raw]) < 0.95 and len({o.tos for o in raw}) > 50
    for name in ("ident", "sport", "dport"):
        values = [getattr(o, name) for o in raw]
        fixed = [v for v in values if v is not None]
        assert 0.05 < len(fixed) / len(values) < 0.7 and len(set(fixed)) > 50
    dports = Counter(o.dport for o in raw)
    assert all(dports[p] > 0 for p in (53, 80, 443, 123, 1900, 23, 22, 8080, 3074, 27015))
    assert {o.source for o in raw} == {"real", "random", "fixed"}
    assert all(o.source_ip is not None for o in raw if o.source == "fixed")
    rates = np.array([o.rate_pps for o in raw])
    assert rates.min() < 30 and rates.max() > 20_000 and 0.1 < np.mean(rates < 300) < 0.5  # log-uniform
    durations = [o.duration_s for o in raw]
    assert None in durations and all(1 <= d <= 5 for d in durations if d is not None)
    assert {o.payload_random for o in flood} == {False, True}
    assert {o.seqnum is None for o in drawn["mirai_syn"] + drawn["mirai_ack"]} == {False, True}
    assert {o.acknum for o in drawn["mirai_ack"]} == {0, None} == {o.acknum for o in drawn["mirai_syn"]}


def test_sampler_flags_and_per_attack_options(drawn):
    syn_flags = Counter(o.tcp_flags for o in drawn["mirai_syn"])
    ack_flags = Counter(o.tcp_flags for o in drawn["mirai_ack"])
    assert all(f & SYN for f in syn_flags) and all(f & ACK for f in ack_flags)
    assert 0.65 < syn_flags[SYN] / 2000 < 0.85 and 0.65 < ack_flags[ACK] / 2000 < 0.85
    assert syn_flags[SYN | ACK] > 0 and ack_flags[ACK | PSH] > 0 and len(syn_flags) > 8 and len(ack_flags) > 8
    # Options an attack does not have keep Mirai's defaults (udpplain: the kernel's headers).
    plain = drawn["mirai_udpplain"]
    assert {(o.tos, o.ttl, o.ident, o.df, o.source) for o in plain} == {(0, 64, None, True, "real")}
    assert {o.payload_len for o in drawn["mirai_syn"]} == {0}
    variants = Counter(o.scan_variant for o in drawn["mirai_scan"])
    assert set(variants) == set(SCANNER_VARIANTS) and variants.most_common(1)[0][0] == "mirai"


def test_option_space_exclusions_are_never_drawn_and_forced_values_always_are():
    rng = np.random.default_rng(3)
    held_out = OptionSpace(
        exclude={
            "payload_len": [(900, 1100), (20, 40), 512],
            "dport": [53, 8080, None],
            "ttl": [(100, 160), 64],
            "rate_pps": [(1500.0, 4000.0)],
            "source": ["fixed"],
            "scan_variant": ["mirai"],
        }
    )
    for kind in APPLIES:
        for _ in range(500):
            o = sample_options(rng, kind, held_out)
            for name in APPLIES[kind]:
                assert held_out.allows(name, getattr(o, name)), (kind, name, getattr(o, name))
    forced = OptionSpace(force={"payload_len": 1400, "dport": 53, "df": True, "ident": None, "rate_pps": 3000.0})
    for kind in APPLIES:
        for _ in range(100):
            o = sample_options(rng, kind, forced)
            assert all(getattr(o, k) == v for k, v in forced.force.items() if k in APPLIES[kind])
    # An option a kind does not have is left alone: syn has no payload.
    assert sample_options(rng, "mirai_syn", forced).payload_len == 0


def test_option_space_can_keep_mirais_defaults():
    """defaults=True: the command's options stay Mirai's (forced ones aside); rate and duration are still drawn."""
    rng = np.random.default_rng(5)
    space = OptionSpace(defaults=True, force={"payload_len": 1400})
    for kind in APPLIES:
        drawn = [sample_options(rng, kind, space) for _ in range(50)]
        expected = replace(default_options(kind), payload_len=1400 if "payload_len" in APPLIES[kind] else 0)
        run = {"rate_pps": 0.0, "duration_s": None, "scanners_per_s": 0.0}
        assert {replace(o, **run) for o in drawn} == {replace(expected, **run)}
        if kind != "mirai_scan":
            assert len({o.rate_pps for o in drawn}) == 50
    with pytest.raises(ValueError, match="excludes mirai_udp's default payload_len"):
        sample_options(rng, "mirai_udp", OptionSpace(defaults=True, exclude={"payload_len": [512]}))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"exclude": {"payload_size": [1]}}, "unknown option"),
        ({"exclude": {"dport": 53}}, "must be a list"),
        ({"exclude": {"ttl": [(160, 100)]}}, "bad range"),
        ({"exclude": {"ttl": [0]}}, "not a value of ttl"),
        ({"force": {"payload_len": 2000}}, "outside"),
        ({"force": {"dport": 53}, "exclude": {"dport": [(50, 60)]}}, "also excluded"),
        ({"exclude": {"df": [True, False]}}, None),  # valid, but nothing left to draw
    ],
)
def test_option_space_rejects_bad_input_clearly(bad, message):
    if message is not None:
        with pytest.raises(ValueError, match=message):
            OptionSpace(**bad)
        return
    with pytest.raises(ValueError, match="excludes every value of df"):
        sample_options(np.random.default_rng(0), "mirai_udp", OptionSpace(**bad))


def test_synthesise_honours_a_forced_space_in_every_view():
    space = OptionSpace(force={"payload_len": 1400, "dport": 53, "rate_pps": 3000.0, "ttl": 128})
    for name in ("mirai_udp_bot", "mirai_udp_victim", "mirai_udpplain_victim"):
        synth = synthesise(name, 6.0, seed=4, options=space)
        kind = name.rsplit("_", 1)[0]
        attack = synth.meta["attacks"][0]
        assert attack["options"]["payload_len"] == 1400 and attack["options"]["dport"] == 53
        assert all(b["rate_pps"] == 3000.0 for b in attack["bots"])
        mine = np.flatnonzero(synth.labels == LABELS.index(kind))
        assert len(mine) > 1000
        buf, off = synth.frames.buf, synth.frames.offset[mine]
        ip_len = buf[off + 16].astype(int) << 8 | buf[off + 17]
        dport = buf[off + 36].astype(int) << 8 | buf[off + 37]
        assert set(ip_len.tolist()) == {1428} and set(dport.tolist()) == {53}
        if kind == "mirai_udp" and name.endswith("bot"):
            assert set(buf[off + 22].tolist()) == {128}
        assert synth.meta["option_space"] == repr(space)
    with pytest.raises(ValueError, match="OptionSpace"):
        synthesise("mirai_udp_bot", 2.0, seed=1, options={"force": {"payload_len": 1}})


def test_held_out_rates_stay_out_after_the_link_shares_them():
    """Bots too fast for the link are slowed in proportion, unless that lands on a held-out rate: then fewer
    bots send at their own rates."""
    from convert.synth.mirai import _bot_rates

    space = OptionSpace(exclude={"rate_pps": [(1500.0, 4000.0)]})
    assert _bot_rates("mirai_udp", [5000.0] * 3, 9000.0, None) == [3000.0] * 3
    assert _bot_rates("mirai_udp", [5000.0] * 3, 9000.0, space) == [5000.0]
    assert _bot_rates("mirai_udp", [900.0, 800.0], 9000.0, space) == [900.0, 800.0]
    for seed in range(6):
        synth = synthesise("mirai_ack_victim", 2.0, seed, options=space)
        for bot in synth.meta["attacks"][0]["bots"]:
            assert not 1500 <= bot["rate_pps"] <= 4000


# ---------------------------------------------------------------- the scanned board


def scanned_capture(tmp_path, seconds=20.0, seed=3, public=True, **plan_changes):
    """The board probed by scanning bots, planned with forced options, written to pcap and read back."""
    rng = np.random.default_rng(seed)
    lan = make_lan(rng, "board", public=public)
    scene = Scene(rng, lan, Timeline(seconds), seconds, BASE_US / 1e6)
    space = OptionSpace(force={"scanners_per_s": 5.0, "scan_variant": "mirai"})
    plan = plan_attack(scene, "mirai_scan", "scanned", 0.0, seconds, space=space)
    for key, value in plan_changes.items():
        setattr(plan, key, value)
    run_attack(scene, plan)
    merged = scene.timeline.merge(BASE_US)
    path = tmp_path / "scanned.pcap"
    write_pcap(path, merged.frames)
    roles = [merged.roles[i] for i in merged.role_index]
    return plan, scene, read_pcap(path), [LABELS[i] for i in merged.labels], roles


def test_scanned_board_meets_many_scanners_with_one_to_three_syns(tmp_path):
    plan, scene, records, labels, roles = scanned_capture(tmp_path, refuse_fraction=1.0)
    board = scene.lan.board
    decoded = [dict(fields(buf), ts=ts, wire=wire, label=label, role=role)
               for (ts, buf, wire), label, role in zip(records, labels, roles)]  # fmt: skip
    syns = [p for p in decoded if p["label"] == "mirai_scan" and p.get("flags") == dpkt.tcp.TH_SYN]
    per_source = defaultdict(list)
    for p in syns:
        assert p["dst"] == board.ip.to_bytes(4, "big") and p["seq"] == board.ip  # Mirai's fingerprint
        assert p["ip_len"] == 40 and p["opts"] == [] and not p["df"] and p["wire"] == 60 and p["ttl"] < 64
        assert p["dport"] in (23, 2323)
        per_source[p["src"]].append(p)
    assert len(per_source) >= 50 and len(per_source) == len(plan.bots)
    assert {len(v) for v in per_source.values()} == {1, 2, 3}
    for bot_syns in per_source.values():
        assert len({(p["sport"], p["win"], p["ttl"]) for p in bot_syns}) == 1  # fixed per scanner process
    # The board answers each SYN, unpadded, benign: RST-ACK from a closed port, SYN-ACK from an open one.
    answers = [p for p in decoded if p["src"] == board.ip.to_bytes(4, "big") and p["role"] == "reply:mirai_scan"]
    first = [p for p in answers if p["flags"] in (dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
             and p["ack"] == board.ip + 1]  # fmt: skip
    assert len(first) == len(syns) and all(p["label"] == "benign" and p["ttl"] == 64 for p in first)
    for p in first:
        opened = p["sport"] in plan.replies.open_ports
        assert p["flags"] == (dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK if opened else dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)


def test_scanned_board_with_telnet_open_gets_brute_forced(tmp_path):
    from convert.synth.attack import LINUX_REPLIES

    plan, scene, records, labels, roles = scanned_capture(
        tmp_path, seconds=12.0, replies=replace(LINUX_REPLIES, open_ports=(23, 2323)), bruteforce_share=1.0,
        refuse_fraction=1.0,
    )  # fmt: skip
    board = scene.lan.board.ip.to_bytes(4, "big")
    decoded = [dict(fields(buf), label=label, role=role) for (_, buf, _), label, role in zip(records, labels, roles)]
    synacks = [p for p in decoded if p["src"] == board and p.get("flags") == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK]
    resets = [p for p in decoded if p["dst"] == board and p.get("flags") == dpkt.tcp.TH_RST]
    assert synacks and all(p["label"] == "benign" and p["role"] == "reply:mirai_scan" for p in synacks)
    assert resets and all(p["label"] == "mirai_scan" for p in resets)  # the scanner's kernel
    # The bots log in: their typing is mirai_scan, the board's telnet output benign.
    typed = b"".join(p["payload"] for p in decoded if p["dst"] == board and p["label"] == "mirai_scan")
    assert any(u.encode() in typed for u, _, _ in MIRAI_CREDENTIALS)
    shown = b"".join(p["payload"] for p in decoded if p["src"] == board and p["role"] == "reply:mirai_scan")
    assert b"login: " in shown and b"Login incorrect" in shown


def test_scanned_board_behind_a_port_forward(tmp_path):
    """Scanners probe the router's address: the sequence number is that address, and only forwarded ports arrive."""
    plan, scene, records, labels, roles = scanned_capture(tmp_path, seed=4, public=False, reach="port-forward",
                                                          forwarded_ports=(23,), scanned_ip=0xCB007107)  # fmt: skip
    syns = [fields(buf) for (_, buf, _), label in zip(records, labels) if label == "mirai_scan"]
    syns = [p for p in syns if p.get("flags") == dpkt.tcp.TH_SYN]
    assert len(syns) > 20
    assert {(p["dst"], p["seq"], p["dport"]) for p in syns} == {(scene.lan.board.ip.to_bytes(4, "big"), 0xCB007107, 23)}


@pytest.mark.slow
def test_scanned_scenario_and_public_victims_meet_scanners():
    reaches = set()
    for seed in range(6):
        synth = synthesise("mirai_scan_scanned", 20.0, seed)
        meta = synth.meta
        attack = meta["attacks"][0]
        reaches.add(attack["reach"])
        assert attack["view"] == "scanned" and attack["scanners"] >= 2 and meta["packets_per_label"]["mirai_scan"] > 0
        replies = synth.labels[synth.roles == "reply:mirai_scan"]
        assert len(replies) and set(replies.tolist()) == {LABELS.index("benign")}
    assert len(reaches) >= 2
    # A victim's public LAN also shows the Internet's scanners probing the board.
    found = False
    for seed in range(12):
        synth = synthesise("mirai_syn_victim", 10.0, seed)
        scanned = [a for a in synth.meta["attacks"] if a["view"] == "scanned"]
        if scanned:
            assert synth.meta["lan"]["public"] and scanned[0]["targets"] == [synth.meta["board"]["ip"]]
            found = True
    assert found


@pytest.mark.slow
def test_options_and_scanned_board_are_reproducible(tmp_path):
    space = OptionSpace(exclude={"payload_len": [(900, 1100)]}, force={"dport": 53})
    for name, options in (("mirai_scan_scanned", None), ("mirai_ack_victim", space)):
        a = synthesise(name, 5.0, 9, options=options)
        b = synthesise(name, 5.0, 9, options=options)
        assert a.frames.buf.tobytes() == b.frames.buf.tobytes() and np.array_equal(a.labels, b.labels)
        assert a.meta == b.meta


def test_option_domains_cover_every_field():
    assert set(DOMAINS) == {f for f in AttackOptions.__dataclass_fields__}
    for kind, names in APPLIES.items():
        base = default_options(kind)
        assert all(DOMAINS[n].contains(getattr(base, n)) for n in names)
    assert default_options("mirai_syn").df and not default_options("mirai_ack").df
    assert default_options("mirai_ack").acknum is None and default_options("mirai_syn").acknum == 0
    assert RST not in (default_options(k).tcp_flags for k in APPLIES)


def test_ipv4_fragments_split_a_datagram_as_a_kernel_does_and_parse_back():
    """A 4,000-byte UDP datagram in 1,500-byte fragments: three frames, the first with the UDP header, the later
    ones marked as later fragments, 8-byte aligned offsets, the datagram's bytes all there, valid checksums."""
    from agent.capture.packets import FrameBatch, DecodeStats
    from agent.capture.parse import parse_frames
    from convert.synth.frames import ipv4_fragments, ones_complement_sum, udp_frames

    payload = np.arange(4000, dtype=np.int64).astype(np.uint8)[None, :].repeat(2, axis=0)
    whole = udp_frames(2, sport=40000, dport=80, payload=payload, src_ip=0xC0A80142, dst_ip=0xC0A80132,
                       src_mac=1, dst_mac=2, ip_id=7)  # fmt: skip
    pieces = ipv4_fragments(whole)
    assert [len(p) for p in pieces] == [2, 2, 2] and [int(p.length[0]) for p in pieces] == [1514, 1514, 1082]
    ip_bytes = [p.rows[0, 14 : p.length[0]] for p in pieces]
    assert all(ones_complement_sum(b[None, :20])[0] == 0xFFFF for b in ip_bytes)  # header checksums hold
    offsets = [int.from_bytes(b[6:8].tobytes(), "big") for b in ip_bytes]
    assert offsets == [0x2000, 0x2000 | 185, 370]  # MF on all but the last; offsets in 8-byte units
    assert b"".join(b[20:].tobytes() for b in ip_bytes) == whole.rows[0, 34 : whole.length[0]].tobytes()
    frames = [p.rows[0, : p.length[0]].tobytes() for p in pieces]
    packets = parse_frames(FrameBatch.from_frames(frames, [0.0, 0.001, 0.002]), DecodeStats())
    assert packets.frag.tolist() == [False, True, True] and packets.dport[0] == 80


def test_prior_contact_datagrams_carry_a_control_protocols_header():
    """A bot's datagrams to its victim before a flood are an application's commands: a magic number of the service
    and a sequence number before the text (the decision stage tells such streams from a flood's payloads)."""
    from convert.synth.prior_contact import UDP_PORTS

    synth = synthesise("mirai_udpplain_victim", 3.0, 2)
    packets = parse_frames(synth.frames, DecodeStats())
    roles = np.asarray(synth.roles)[packets.index]
    sent = np.flatnonzero((roles == "benign:prior-udp") & np.isin(packets.dport, UDP_PORTS)
                          & (packets.payload_len >= 16))  # fmt: skip
    assert len(sent) >= 5
    head = packets.udp_head_hi[sent]
    assert ((head >> np.uint64(56)) == 0xA5).all()
    assert (((head >> np.uint64(48)) & np.uint64(0xFF)) == (packets.dport[sent] & 0xFF)).all()
    counts = ((head >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
    for port in np.unique(packets.sport[sent]):  # each session's sequence numbers count up
        assert (np.diff(counts[packets.sport[sent] == port]) > 0).all()
