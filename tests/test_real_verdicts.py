"""The whole pipeline on the real captures of ../shared/data: no verdict on benign devices, a verdict on
the real floods and scans (none of them Mirai's own traffic, so they are judged on headers).

These captures are a sample of the real world, not a target: nothing in the agent is tuned to them.
"""

from __future__ import annotations

import pytest

from agent.model import Classifier, load_bundle
from agent.pipeline import detect_capture
from convert.real_check import BENIGN_CAPTURES


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_bundle())


@pytest.mark.parametrize("name", BENIGN_CAPTURES)
def test_no_verdict_on_real_benign_devices(shared_data, classifier, name):
    result = detect_capture(shared_data / "real" / name, classifier)
    assert result.packets > 0
    assert [v.describe() for v in result.verdicts] == []


@pytest.mark.parametrize(
    "name, label",
    [("stopddos_pkt.TCP.synflood.spoofed.pcap", "mirai_syn"), ("esnet_masscan_tcp_0_1000_20190821.pcap", "mirai_scan")],
)
def test_real_flood_and_scan_get_a_verdict_within_a_second(shared_data, classifier, name, label):
    result = detect_capture(shared_data / "real" / name, classifier)
    assert [v.label for v in result.verdicts] == [label]  # by the model or on headers, whichever is first
    assert result.verdicts[0].latency < 1.0
    assert (result.final_labels() != 0).mean() > 0.9
