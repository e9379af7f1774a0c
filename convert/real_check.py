"""The real-data check: how the model and the whole pipeline do on real captures and real N-BaIoT rows.

The default model never sees these files in training; they only measure it.  For every capture the
check runs the pipeline as ``python -m agent detect`` does (features, model, anomaly detector when
given, decisions) and reports both what the model says of each packet and what the pipeline decides:
on benign captures every verdict is a false conviction, on attack captures a verdict is the point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.capture.packets import VERDICT_LABELS
from agent.detect.model import Classifier
from agent.features.csv_file import read_feature_csv
from agent.pipeline import detect_capture

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
ATTACK_CAPTURES = (  # (file, the closest class; none of them is Mirai's own traffic)
    ("stopddos_pkt.TCP.synflood.spoofed.pcap", "mirai_syn"),
    ("esnet_masscan_tcp_0_1000_20190821.pcap", "mirai_scan"),
    ("chrissanders_ppa1e_dosattack.pcap", "mirai_syn"),
)
NBAIOT_ROWS = (("prabeen_benign_traffic.csv", "benign"), ("prabeen_thermostat_udp.csv", "mirai_udp"))


@dataclass
class Row:
    source: str
    rows: int
    attack_share: float  # packets the model calls an attack
    expected: str
    expected_share: float  # packets the pipeline labels with the expected class (model rows: the model)
    top_classes: str
    verdicts: str = "-"  # what the decision stage reported ("-" for feature rows)
    first_verdict_s: float | None = None  # from the capture's first packet to the first verdict


def _row(name: str, model: np.ndarray, final: np.ndarray, expected: str, verdicts: list | None = None,
         t0: float | None = None) -> Row:  # fmt: skip
    counts = np.bincount(final, minlength=len(VERDICT_LABELS))
    top = ", ".join(f"{VERDICT_LABELS[k]} {counts[k] / len(final):.1%}" for k in np.argsort(-counts)[:3] if counts[k])
    said = "-"
    first = None
    if verdicts is not None:
        said = ", ".join(f"{v.label} [{v.basis}]" for v in verdicts[:3]) + (f" +{len(verdicts) - 3}" if len(verdicts) > 3 else "")
        said = said or "none"
        first = min(v.decided_at for v in verdicts) - t0 if verdicts and t0 is not None else None
    return Row(name, len(final), float((model != 0).mean()) if len(model) else 0.0, expected,
               float((final == VERDICT_LABELS.index(expected)).mean()) if len(final) else 0.0, top, said, first)  # fmt: skip


def capture_row(path: Path, clf: Classifier, expected: str, anomaly=None) -> Row:
    result = detect_capture(path, clf, anomaly=anomaly)
    t0 = None
    if result.verdicts:
        from agent.capture.pcap import read_capture

        t0 = float(next(iter(read_capture(path, batch_size=1))).ts[0])
    return _row(path.name, result.labels, result.final_labels(), expected, result.verdicts, t0)


def missing_files(shared_data: Path) -> list[Path]:
    """The files the check reads that are not in ``shared_data`` (all of them when the folder is missing)."""
    wanted = [shared_data / "real" / name for name in BENIGN_CAPTURES]
    wanted += [shared_data / "real" / name for name, _ in ATTACK_CAPTURES]
    wanted += [shared_data / "nbaiot" / name for name, _ in NBAIOT_ROWS]
    return [path for path in wanted if not path.is_file()]


def run(shared_data: Path, clf: Classifier, anomaly=None) -> list[Row]:
    rows = []
    for name in BENIGN_CAPTURES:
        rows.append(capture_row(shared_data / "real" / name, clf, "benign", anomaly))
    for name, expected in ATTACK_CAPTURES:
        rows.append(capture_row(shared_data / "real" / name, clf, expected, anomaly))
    for name, expected in NBAIOT_ROWS:
        labels = clf.predict(read_feature_csv(shared_data / "nbaiot" / name))[0]
        rows.append(_row(name, labels, labels, expected))
    return rows


def markdown(rows: list[Row]) -> str:
    out = [
        "| data | packets | model: attack | expected | pipeline: expected | pipeline: top labels | verdicts | first verdict |",
        "|---|---:|---:|---|---:|---|---|---:|",
    ]
    for r in rows:
        first = "-" if r.first_verdict_s is None else f"{r.first_verdict_s:.3f} s"
        out.append(f"| {r.source} | {r.rows} | {r.attack_share:.2%} | {r.expected} | {r.expected_share:.2%} | "
                   f"{r.top_classes} | {r.verdicts} | {first} |")  # fmt: skip
    out.append("\nmodel: share of packets the CNN calls an attack; pipeline: each packet's label in hindsight "
               "(Detection.final_labels: a verdict's class for packets of the attack's shape; else the model's where "
               "someone the packet belongs to is convicted, or in a fast run of the label from many senders; else "
               "benign). N-BaIoT rows have no packets, only the model's labels.")  # fmt: skip
    return "\n".join(out)
