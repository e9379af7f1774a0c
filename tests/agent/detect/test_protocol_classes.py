"""The model's scores restricted to the classes a packet's header allows."""

from __future__ import annotations

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.protocol_classes import (
    FAMILY_ANY,
    FAMILY_TCP,
    FAMILY_UDP,
    allowed_classes,
    packet_classes,
    restrict_scores,
)
from tests.agent.detect.test_decide_headers import ACK, SYN, SYNACK, batch, ip

L = {name: i for i, name in enumerate(LABELS)}


def test_each_packet_keeps_only_the_classes_its_header_allows():
    t = 1.7e9 + np.arange(6)
    b = batch(t, ip(10, 0, 0, 1), ip(10, 0, 0, 2), proto=[17, 6, 6, 6, 1, 17], flags=[0, SYN, ACK, SYNACK, 0, 0])
    b.frag[5] = True  # a non-first fragment: no L4 header to judge
    allowed = packet_classes(b)
    names = [{LABELS[j] for j in np.flatnonzero(row)} for row in allowed]
    assert names == [
        {"benign", "mirai_udp", "mirai_udpplain"},
        {"benign", "mirai_scan", "mirai_syn"},  # a SYN without ACK is no ACK flood
        {"benign", "mirai_ack", "mirai_scan"},  # an ACK without SYN is no SYN flood
        {"benign", "mirai_ack", "mirai_scan", "mirai_syn"},
        {"benign"},
        {"benign"},
    ]


def test_packets_opening_a_socket_pair_are_no_udpplain_and_no_scanner_session():
    """Features say which packets open a new socket pair: UDP through fresh sockets is no udpplain (one
    connected socket per target), a fresh ACK or FIN segment no scanner's brute-force session."""
    from agent.features.engine import FeatureExtractor

    t = 1.7e9 + np.arange(8) * 0.01
    # UDP and ACKs: first through new ports each time, then twice more through the last pair.
    b = batch(t, ip(10, 0, 0, 1), ip(10, 0, 0, 2), proto=[17, 17, 17, 17, 6, 6, 6, 6],
              sport=[1, 2, 2, 2, 3, 4, 4, 4], flags=ACK)
    allowed = packet_classes(b, FeatureExtractor().update(b))
    assert allowed[:, L["mirai_udpplain"]].tolist()[:4] == [False, False, True, True]
    assert allowed[:, L["mirai_scan"]].tolist()[4:] == [False, False, True, True]
    assert allowed[:, L["mirai_udp"]][:4].all() and allowed[:, L["mirai_ack"]][4:].all()


def test_a_fresh_segment_with_rst_among_odd_flags_is_no_scanner_packet_and_a_bare_rst_may_be():
    """The scanner's kernel refuses SYN-ACKs with bare RSTs (labelled mirai_scan): those stay possible.  A segment
    with RST, FIN, PSH and URG set and data (Mirai's ack flood with flags 61) is no scanner's."""
    from agent.features.engine import FeatureExtractor

    t = 1.7e9 + np.arange(4) * 0.01
    b = batch(t, ip(10, 0, 0, 1), ip(10, 0, 0, 2), sport=[1, 2, 3, 4], flags=[0x3D, 0x3D, 0x04, 0x14])
    b.payload_len[:2] = 5
    allowed = packet_classes(b, FeatureExtractor().update(b))
    assert allowed[:, L["mirai_scan"]].tolist() == [False, False, True, True]


def test_restricted_scores_are_rescaled_and_fall_back_to_benign():
    scores = np.array([[0.1, 0.6, 0.0, 0.0, 0.3, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    out = restrict_scores(scores, allowed_classes(np.array([FAMILY_UDP, FAMILY_UDP])))
    assert np.allclose(out.sum(axis=1), 1.0)
    assert out[0].argmax() == L["mirai_udp"] and out[0, L["mirai_ack"]] == 0  # an "ACK flood" of UDP packets
    assert out[1].tolist() == [1.0, 0, 0, 0, 0, 0]  # nothing allowed scored: benign
    assert (allowed_classes(np.array([FAMILY_ANY, FAMILY_TCP]))[0]).all()  # CSV rows: no protocol known


def test_restricted_logits_are_the_restricted_softmax():
    from agent.detect.model import restrict_logits

    logits = np.array([[1.0, 2.0, 3.0, 0.0, -1.0, 5.0], [-40.0, 9.0, 0.0, 0.0, -30.0, -50.0]])
    allowed = allowed_classes(np.array([FAMILY_TCP, FAMILY_UDP]))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = restrict_logits(logits, allowed)
    assert np.allclose(out[0], restrict_scores(softmax, allowed)[0], atol=1e-6)
    # Where the int8 softmax would round every allowed class to 0, the logits still rank them.
    assert np.allclose(out.sum(axis=1), 1.0) and out[1].argmax() == L["mirai_udp"] and out[1, L["mirai_ack"]] == 0
    assert restrict_logits(logits, np.zeros((2, len(LABELS)), bool))[:, 0].tolist() == [1.0, 1.0]  # nothing allowed: benign
    assert np.allclose(restrict_logits(logits), softmax, atol=1e-6)
