"""The whole pipeline on the real captures of ../shared/data: no verdict on benign devices, a verdict on
the real floods and scans (none of them Mirai's own traffic, so they are judged on headers).

These captures are a sample of the real world, not a target: nothing in the agent is tuned to them.
"""

from __future__ import annotations

import pytest

from agent.detect.model import Classifier, load_bundle
from agent.pipeline import detect_capture
from convert.real_check import BENIGN_CAPTURES

pytestmark = pytest.mark.slow  # the whole pipeline on real captures


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_bundle())


@pytest.mark.parametrize("name", BENIGN_CAPTURES)
def test_no_verdict_on_real_benign_devices(shared_data, classifier, name):
    result = detect_capture(shared_data / "real" / name, classifier)
    assert result.packets > 0
    assert [v.describe() for v in result.verdicts] == []
    # ...and no packet an attack in the pipeline's labels: where the model errs, nobody it belongs to is convicted
    assert (result.final_labels() != 0).sum() == 0


@pytest.mark.parametrize(
    "name, label",
    [("stopddos_pkt.TCP.synflood.spoofed.pcap", "mirai_syn"), ("esnet_masscan_tcp_0_1000_20190821.pcap", "mirai_scan")],
)
def test_real_flood_and_scan_get_a_verdict_within_a_second(shared_data, classifier, name, label):
    result = detect_capture(shared_data / "real" / name, classifier)
    named = [v for v in result.verdicts if v.label == label]  # by the model or on headers, whichever is first
    assert named and named[0].latency < 1.0
    # A spoofed flood of bare SYNs begins with what a scanning bot's lone probe is (DecisionLayer's lone-probe
    # rule): its first source may be reported as a scanner, no other.
    others = [v for v in result.verdicts if v.label != label]
    assert len(others) <= 1 and all(v.packets == 1 and v.label == "mirai_scan" for v in others)
    assert (result.final_labels() != 0).mean() > 0.9
