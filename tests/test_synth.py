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

from agent.capture_file import read_capture, write_pcap
from agent.packets import LABELS, DecodeStats
from agent.parse import parse_frames
from convert.synth import SCENARIOS, sidecar_paths, synthesise, write
from convert.synth.mirai import AttackPlan, Bot, Target, run_attack
from convert.synth.network import make_lan
from convert.synth.payloads import MIRAI_CREDENTIALS
from convert.synth.scene import Scene
from convert.synth.timeline import Timeline

REPO = Path(__file__).resolve().parents[1]
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
    tmp_path: Path, kind: str, view: str, *, spoof=False, targets=None, seconds=2.0, seed=5, **plan_args
):
    """A capture of one attack with chosen bots and targets, written to pcap and read back."""
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
        bots[0].rate, targets = 160.0, []
    plan = AttackPlan(kind, view, 0.05, seconds - 0.05, bots, targets, **plan_args)
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


def test_udp_flood_victims_see_bots_with_history_and_linux_replies():
    """Some bots talked to their victim before flooding it; the victim answers the flood as Linux does."""
    found = []
    for seed in range(8):
        synth = synthesise("mirai_udp_victim", 30.0, seed)
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
