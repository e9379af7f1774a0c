"""The real-data check of issue 3: how the model does on real captures and real N-BaIoT rows.

The default model never sees these files in training; they only measure it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.feature_csv import read_feature_csv
from agent.model import Classifier
from agent.packets import LABELS, DecodeStats
from agent.pipeline import features_from_capture

BENIGN_CAPTURES = (
    "tjoconnor_lockly-hub-01.pcap",
    "ndpi_tplink_shp.pcap",
    "ndpi_tuya_lp.pcap",
    "ndpi_coap_mqtt.pcap",
    "ndpi_mqtt.pcap",
    "ndpi_dns.pcap",
    "ndpi_NTPv4.pcap",
    "ndpi_ssdp-m-search.pcap",
)
ATTACK_CAPTURES = (  # (file, the class a Mirai-trained model should name)
    ("stopddos_pkt.TCP.synflood.spoofed.pcap", "mirai_syn"),
    ("esnet_masscan_tcp_0_1000_20190821.pcap", "mirai_scan"),
    ("chrissanders_ppa1e_dosattack.pcap", "mirai_syn"),
)
NBAIOT_ROWS = (("prabeen_benign_traffic.csv", "benign"), ("prabeen_thermostat_udp.csv", "mirai_udp"))


@dataclass
class Row:
    source: str
    rows: int
    attack_share: float
    expected: str
    expected_share: float
    top_classes: str


def _row(name: str, labels: np.ndarray, expected: str) -> Row:
    counts = np.bincount(labels, minlength=len(LABELS))
    top = ", ".join(f"{LABELS[k]} {counts[k] / len(labels):.1%}" for k in np.argsort(-counts)[:3] if counts[k])
    return Row(name, len(labels), float((labels != 0).mean()), expected,
               float((labels == LABELS.index(expected)).mean()), top)  # fmt: skip


def capture_labels(path: Path, clf: Classifier) -> np.ndarray:
    return np.concatenate([clf.predict(fb.features)[0] for fb in features_from_capture(path, DecodeStats())])


def run(shared_data: Path, clf: Classifier) -> list[Row]:
    rows = []
    for name in BENIGN_CAPTURES:
        rows.append(_row(name, capture_labels(shared_data / "real" / name, clf), "benign"))
    for name, expected in ATTACK_CAPTURES:
        rows.append(_row(name, capture_labels(shared_data / "real" / name, clf), expected))
    for name, expected in NBAIOT_ROWS:
        rows.append(_row(name, clf.predict(read_feature_csv(shared_data / "nbaiot" / name))[0], expected))
    return rows


def markdown(rows: list[Row]) -> str:
    out = ["| data | rows | called attack | expected class | share expected | top classes |", "|---|---:|---:|---|---:|---|"]
    for r in rows:
        out.append(f"| {r.source} | {r.rows} | {r.attack_share:.2%} | {r.expected} | {r.expected_share:.2%} | {r.top_classes} |")
    return "\n".join(out)
