"""Per-packet labels in hindsight (agent.detect.hindsight): an attack label only where someone the packet belongs to
is convicted, or in a fast run of the label from many senders."""

from __future__ import annotations

import numpy as np
import pytest

from agent.capture.packets import LABELS, VERDICT_LABELS, format_ip, ip_words
from agent.detect.decide import Verdict
from agent.detect.hindsight import LOOKBACK_S, Parties, hindsight_labels, source_keys, target_keys

BENIGN, SYN, UDP, SCAN = (VERDICT_LABELS.index(n) for n in ("benign", "mirai_syn", "mirai_udp", "mirai_scan"))
ALL_FIT = 0x7F  # every class's shape


def parties(ts, srcs, dsts="10.0.0.1", proto=6, mac=1, fits=ALL_FIT, spared=False) -> Parties:
    n = len(ts)
    srcs = [srcs] * n if isinstance(srcs, str) else srcs
    dsts = [dsts] * n if isinstance(dsts, str) else dsts
    s = np.array([ip_words(a) for a in srcs], dtype=np.uint64)
    d = np.array([ip_words(a) for a in dsts], dtype=np.uint64)
    return Parties(np.asarray(ts, dtype=np.float64), source_keys(s[:, 0], s[:, 1]),
                   target_keys(d[:, 0], d[:, 1], np.full(n, proto)), np.full(n, mac, dtype=np.uint64),
                   np.broadcast_to(np.asarray(fits, dtype=np.uint8), (n,)).copy(),
                   np.broadcast_to(np.asarray(spared, dtype=bool), (n,)).copy())  # fmt: skip


def verdict(label: str, decided_at: float, first_seen: float = 0.0, **who) -> Verdict:
    kind = "spoofed" if "victim_ip" in who or "src_mac" in who and "src_ip" not in who else "source"
    return Verdict(kind=kind, label=label, confidence=0.9, packets=10, first_seen=first_seen, last_seen=decided_at,
                   decided_at=decided_at, **who)  # fmt: skip


def none_online(n: int) -> np.ndarray:
    return np.full(n, -1, dtype=np.int64)


@pytest.mark.parametrize("text", ["192.168.1.20", "0.0.0.1", "2001:db8::7", "fe80::1"])
def test_ip_words_is_the_inverse_of_format_ip(text):
    assert format_ip(*ip_words(text)) == text


def test_a_model_attack_label_of_a_party_nobody_convicted_is_benign():
    """A smart plug's odd datagram and an NTP request the model calls a flood, with no verdict: benign; the model's
    own labels stay as they were."""
    model = np.array([UDP, BENIGN, UDP, SYN])
    p = parties([0.0, 5.0, 60.0, 61.0], ["192.168.1.5", "192.168.1.5", "192.168.1.6", "192.168.1.7"])
    out = hindsight_labels(model, none_online(4), p, [])
    assert out.tolist() == [BENIGN] * 4
    assert model.tolist() == [UDP, BENIGN, UDP, SYN]


def test_a_convicted_sources_first_packets_take_the_verdicts_class_and_its_other_packets_the_models():
    """A bot convicted of a UDP flood at t=10: its packets of the flood's shape the model called an attack in the 30 s
    before take mirai_udp (the model had split them); what the model called benign stays benign; its packets long
    before keep the model's label; after the verdict the online label wins."""
    ts = [1.0, 9.0, 9.5, 9.8, 10.0, -30.0]
    model = np.array([UDP, LABELS.index("mirai_udpplain"), BENIGN, SYN, UDP, SYN])
    fits = [1 << UDP] * 3 + [1 << SYN, 1 << UDP, 1 << SYN]  # the SYN is no UDP flood's packet
    p = parties(ts, "192.168.1.66", fits=fits)
    online = np.array([-1, -1, -1, -1, UDP, -1])
    out = hindsight_labels(model, online, p, [verdict("mirai_udp", 10.0, src_ip="192.168.1.66")])
    assert out.tolist() == [UDP, UDP, BENIGN, SYN, UDP, SYN]
    assert ts[-1] < 10.0 - LOOKBACK_S  # (the last packet is outside the window, and keeps the model's label)


def test_a_packet_before_two_verdicts_of_its_source_takes_the_first_to_come():
    model = np.array([SYN, SYN])
    p = parties([1.0, 3.0], "10.1.1.1")
    verdicts = [verdict("mirai_scan", 5.0, src_ip="10.1.1.1"), verdict("mirai_syn", 2.0, src_ip="10.1.1.1")]
    assert hindsight_labels(model, none_online(2), p, verdicts).tolist() == [SYN, SCAN]


def test_packets_at_a_convicted_flood_target_keep_the_models_labels_and_others_do_not():
    """A spoofed flood at 10.0.0.1 (TCP), convicted: its forged sources' packets keep the model's label; the same
    label on a packet to another host, or to the victim over UDP, is benign."""
    model = np.array([SYN, SYN, SYN, UDP])
    p = parties([1.0, 1.1, 1.2, 1.3], ["1.2.3.4", "5.6.7.8", "9.9.9.9", "7.7.7.7"],
                ["10.0.0.1", "10.0.0.1", "10.0.0.9", "10.0.0.1"])
    p.dst[3] = target_keys(*map(np.atleast_1d, ip_words("10.0.0.1")), np.atleast_1d(17))[0]
    out = hindsight_labels(model, none_online(4), p, [verdict("mirai_syn", 2.0, victim_ip="10.0.0.1", proto=6)])
    assert out.tolist() == [SYN, SYN, BENIGN, BENIGN]


def test_a_spoofed_flood_at_many_hosts_keeps_its_labels_by_its_ethernet_sender():
    model = np.array([UDP, UDP])
    p = parties([1.0, 1.1], ["1.2.3.4", "5.6.7.8"], ["10.0.0.1", "10.0.0.2"], mac=0x0242AC110002)
    out = hindsight_labels(model, none_online(2), p, [verdict("mirai_udp", 2.0, src_mac="02:42:ac:11:00:02",
                                                              proto=17)])  # fmt: skip
    assert out.tolist() == [UDP, UDP]


@pytest.mark.parametrize(
    "n, sources, seconds, kept",
    [
        (100, 100, 0.016, True),  # a 100-packet sample of a spoofed SYN flood: every packet a new source
        (100, 100, 4.0, True),  # 25 forged packets a second
        (500, 5, 5.0, True),  # five bots, each too light to convict, at 100 packets a second
        (50, 1, 0.1, False),  # one host's burst (nobody convicted it)
        (500, 4, 5.0, False),  # four hosts
        (13, 13, 4.0, False),  # a dozen devices announcing themselves at 3 a second
        (9, 9, 0.1, False),  # too few for a flood
    ],
)
def test_a_fast_run_of_one_label_from_many_senders_keeps_it_without_a_verdict(n, sources, seconds, kept):
    ts = np.linspace(0.0, seconds, n)
    srcs = [f"100.64.{i % sources // 250}.{i % sources % 250 + 1}" for i in range(n)]
    out = hindsight_labels(np.full(n, SYN), none_online(n), parties(ts, srcs), [])
    assert (out == SYN).all() if kept else (out == BENIGN).all()


def test_a_run_among_busier_benign_traffic_is_no_flood():
    """Thirteen packets from thirteen senders the model calls SYN flood (26 a second) among four hundred in half a
    second: the label is too sparse to stand alone."""
    n = 400
    model = np.full(n, BENIGN)
    model[::33] = SYN
    ts = np.linspace(0.0, 0.5, n)
    srcs = [f"100.64.{i // 200}.{i % 200 + 1}" for i in range(n)]
    assert (hindsight_labels(model, none_online(n), parties(ts, srcs), []) == BENIGN).all()


def test_sensors_reporting_to_a_hub_are_no_run_whatever_the_model_says():
    """Thirty sensors at 50 datagrams a second each, one header across them (the decision stage's media judgement):
    the model calls them a UDP flood, and nobody is convicted: benign."""
    n = 1500
    ts = np.linspace(0.0, 1.0, n)
    srcs = [f"192.168.1.{i % 30 + 10}" for i in range(n)]
    p = parties(ts, srcs, proto=17, spared=True)
    assert (hindsight_labels(np.full(n, UDP), none_online(n), p, []) == BENIGN).all()
    p.spared[:] = False  # the same datagrams with random payloads: many senders' flood
    assert (hindsight_labels(np.full(n, UDP), none_online(n), p, []) == UDP).all()


def test_a_flood_verdict_leaves_the_models_scan_labels_before_it_alone():
    """A scanning bot's telnet logins have an ACK flood's shape: when it is later convicted of an ACK flood, the
    segments the model called scanning stay mirai_scan; its earlier SYN flood segments become mirai_ack only where
    they have the ACK shape (none here)."""
    ack = VERDICT_LABELS.index("mirai_ack")
    model = np.array([SCAN, SCAN, SYN])
    p = parties([1.0, 2.0, 3.0], "10.9.9.9", fits=[1 << ack, 1 << ack, 1 << SYN])
    out = hindsight_labels(model, none_online(3), p, [verdict("mirai_ack", 5.0, src_ip="10.9.9.9")])
    assert out.tolist() == [SCAN, SCAN, SYN]


def test_the_decision_stage_spares_a_servers_segments_to_its_client_and_answers():
    """A scanner logs in to the board's telnet: the board's SYN-ACK and its segments to the client are answers
    (``packet_spared``: never part of a run), the client's segments are not."""
    from agent.detect.decide import DecisionLayer
    from agent.features.engine import FeatureExtractor
    from tests.agent.detect.test_decide_headers import ACK, BOARD, PSHACK, SYN, SYNACK, T0, batch, benign_scores, ip, join

    scanner = ip(198, 51, 100, 7)
    client = dict(src=scanner, dst=BOARD, sport=40000, dport=23)
    server = dict(src=BOARD, dst=scanner, sport=23, dport=40000)
    b = join(batch([T0], flags=SYN, seq=100, ack=0, **client),
             batch([T0 + 0.01], flags=SYNACK, seq=500, ack=101, **server),
             batch([T0 + 0.02], flags=ACK, seq=101, ack=501, **client),
             batch([T0 + 0.03], flags=PSHACK, seq=501, ack=101, size=80, **server),
             batch([T0 + 0.04], flags=PSHACK, seq=101, ack=527, size=70, **client),
             batch([T0 + 0.05], flags=PSHACK, seq=527, ack=117, size=75, **server))  # fmt: skip
    d = DecisionLayer()
    d.update(b, benign_scores(len(b)), FeatureExtractor().update(b))
    assert d.packet_spared.tolist() == [False, True, False, True, False, True]
