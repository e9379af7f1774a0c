"""Generalisation measured, not assumed: attack options and benign backgrounds never seen in training.

``python -m convert evaluate`` trains a second CNN exactly as the default one, except that whole option
values are never drawn in its training traffic (``HELD_OUT``: payload sizes, destination ports, TTLs,
rates) and whole benign backgrounds are left out (``HELD_OUT_BACKGROUNDS``).  Then it synthesises
attacks that use exactly those values, in both views (the board as bot, the board as victim; for the
scanner also the board probed by many scanning bots), and runs them through the whole pipeline with
that model:

* per-packet recall of the attack's class, from the model alone and from the pipeline (a packet of the
  attack's shape from a convicted source carries the verdict's class);
* how long after the attack's first packet the first verdict came, and whether it named the class;
* false alarms on the left-out benign backgrounds (per packet, and verdicts), and on every real benign
  capture in ../shared/data/real (none of which any model sees in training: each is left out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.capture.packets import LABELS, VERDICT_LABELS, DecodeStats, format_ip, format_mac

log = logging.getLogger(__name__)

VIEWS = ("bot", "victim")
FLOODS = ("mirai_ack", "mirai_syn", "mirai_udp", "mirai_udpplain")


@dataclass(frozen=True)
class HeldOut:
    option: str  # an attack option of convert.synth (AttackOptions field)
    excluded: tuple  # values and (lo, hi) ranges never drawn in the held-out model's training
    probes: tuple  # values the test attacks are forced to
    classes: tuple[str, ...]  # the attacks that have this option


HELD_OUT = (
    HeldOut("payload_len", ((900, 1100), (20, 40)), (1000, 32), ("mirai_ack", "mirai_udp", "mirai_udpplain")),
    HeldOut("dport", (53, 8080), (53, 8080), FLOODS),
    HeldOut("ttl", ((100, 160),), (128,), ("mirai_ack", "mirai_syn", "mirai_udp")),
    HeldOut("rate_pps", ((1500, 4000),), (3000,), FLOODS),
)
HELD_OUT_BACKGROUNDS = ("https_sync",)  # a benign scenario the held-out model never sees
TEST_SECONDS = 20.0
TEST_SEEDS = (301, 302)


def held_out_space():
    from .synth import OptionSpace

    exclude: dict[str, list] = {}
    for h in HELD_OUT:
        exclude.setdefault(h.option, []).extend(h.excluded)
    return OptionSpace(exclude=exclude)


def held_out_recipe():
    from .build_model import default_recipe

    base = default_recipe()
    scenarios = tuple((name, s) for name, s in base.scenarios if name not in HELD_OUT_BACKGROUNDS)
    return replace(base, scenarios=scenarios, options=held_out_space())


@dataclass
class Case:
    what: str  # "payload_len=1000", "default options", ...
    kind: str
    view: str
    packets: int  # attack packets of the class
    model_recall: float
    pipeline_recall: float
    verdict_s: float | None  # first verdict after the attack's first packet (None: no verdict)
    verdict_label: str | None
    false_sources: int = 0  # hostile verdicts on sources that sent no attack packet


def attack_case(clf, what: str, kind: str, view: str, options, seed: int, anomaly=None) -> Case:
    from agent.capture.parse import parse_frames
    from agent.detect.decide import DecisionLayer
    from agent.pipeline import detect_packets, split_packets

    from .synth import synthesise

    synth = synthesise(f"{kind}_{view}", TEST_SECONDS, seed, options=options)
    stats = DecodeStats()
    packets = parse_frames(synth.frames, stats)
    truth = np.asarray(synth.labels, dtype=np.int64)[packets.index]
    result = detect_packets(split_packets(packets), stats, clf, DecisionLayer(), anomaly=anomaly)
    mine = truth == LABELS.index(kind)
    if not mine.any():
        return Case(what, kind, view, 0, float("nan"), float("nan"), None, None)
    hostile = truth > 0
    attackers = _addresses(packets, hostile, "src")
    false_sources = sum(v.kind == "source" and v.basis != "anomaly" and v.src_ip not in attackers for v in result.verdicts)
    start = float(packets.ts[mine].min())
    # The first verdict on this attack: on one of its sources, its targets or the link it came over (a victim
    # scenario's background holds internet scanners, whose verdicts say nothing about the flood).
    sources, targets = _addresses(packets, mine, "src"), _addresses(packets, mine, "dst")
    macs = {format_mac(m) for m in np.unique(packets.src_mac[mine])}
    later = [v for v in result.verdicts if v.decided_at >= start - 1e-9 and _about(v, sources, targets, macs)]
    first = min(later, key=lambda v: v.decided_at) if later else None
    return Case(
        what,
        kind,
        view,
        int(mine.sum()),
        float((result.labels[mine] == LABELS.index(kind)).mean()),
        float((result.final_labels()[mine] == VERDICT_LABELS.index(kind)).mean()),
        None if first is None else first.decided_at - start,
        None if first is None else first.label,
        false_sources,
    )


def _addresses(packets, which: np.ndarray, side: str) -> set[str]:
    hi, lo = getattr(packets, f"{side}_ip_hi")[which], getattr(packets, f"{side}_ip_lo")[which]
    return {format_ip(h, l) for h, l in set(zip(hi.tolist(), lo.tolist()))}


def _about(v, sources: set[str], targets: set[str], macs: set[str]) -> bool:
    """Whether verdict ``v`` names the attack: one of its sources, one of its targets (a flood from many
    sources), or the Ethernet sender it came from (a flood at many hosts)."""
    if v.kind == "source":
        return v.src_ip in sources
    return v.victim_ip in targets if v.victim_ip is not None else v.src_mac in macs


def attack_cases(clf) -> list[Case]:
    from .synth import OptionSpace

    cases = []
    for h in HELD_OUT:
        for value in h.probes:
            for kind in h.classes:
                for view in VIEWS:
                    for seed in TEST_SEEDS:
                        forced = OptionSpace(force={h.option: value})
                        cases.append(attack_case(clf, f"{h.option}={value}", kind, view, forced, seed))
                        log.info("%s", cases[-1])
    for scenario in ("mirai_scan_bot", "mirai_scan_victim", "mirai_scan_scanned"):
        for seed in TEST_SEEDS:
            kind, _, view = scenario.rpartition("_")
            cases.append(attack_case(clf, "scanner", kind, view, None, seed))
    return cases


def background_rows(clf, hours: float = 1.0) -> list[dict]:
    """False alarms on the left-out synthesised backgrounds."""
    from agent.capture.parse import parse_frames
    from agent.detect.decide import DecisionLayer
    from agent.pipeline import detect_packets, split_packets

    from .synth import synthesise

    rows = []
    for name in HELD_OUT_BACKGROUNDS:
        synth = synthesise(name, hours * 3600, TEST_SEEDS[0])
        stats = DecodeStats()
        packets = parse_frames(synth.frames, stats)
        result = detect_packets(split_packets(packets), stats, clf, DecisionLayer())
        rows.append({"data": f"synthesised {name} ({hours:g} h, left out of training)", "packets": result.packets,
                     **_false_alarms(result), "verdicts": len(result.verdicts)})  # fmt: skip
    return rows


def real_rows(clf, shared_data: Path) -> list[dict]:
    from agent.pipeline import detect_capture

    from .real_check import BENIGN_CAPTURES

    rows = []
    for name in BENIGN_CAPTURES:
        path = shared_data / "real" / name
        if not path.exists():
            continue
        result = detect_capture(path, clf)
        rows.append({"data": f"real {name}", "packets": result.packets, **_false_alarms(result),
                     "verdicts": len(result.verdicts)})  # fmt: skip
    return rows


def _false_alarms(result) -> dict:
    """Shares of a benign capture's packets called an attack by the model and by the pipeline (in hindsight)."""
    return {"false_alarm": float((result.labels != 0).mean()),
            "pipeline_false_alarm": float((result.final_labels() != 0).mean())}  # fmt: skip


def summarise(cases: list[Case]) -> list[dict]:
    """One row per (held-out value, class): both views and seeds together."""
    rows: dict[tuple, dict] = {}
    for c in cases:
        if not c.packets:
            continue
        r = rows.setdefault((c.what, c.kind), {"what": c.what, "kind": c.kind, "packets": 0, "model": 0.0, "pipeline": 0.0,
                                                "runs": 0, "verdicts": 0, "in_1s": 0, "right_class": 0})  # fmt: skip
        r["packets"] += c.packets
        r["model"] += c.model_recall * c.packets
        r["pipeline"] += c.pipeline_recall * c.packets
        r["runs"] += 1
        r["verdicts"] += c.verdict_s is not None
        r["in_1s"] += c.verdict_s is not None and c.verdict_s <= 1.0
        r["right_class"] += c.verdict_label == c.kind
    for r in rows.values():
        r["model"] /= r["packets"]
        r["pipeline"] /= r["packets"]
    return list(rows.values())


def markdown(rows: list[dict], benign: list[dict]) -> str:
    out = [
        "| held-out value | class | attack packets | recall (model) | recall (pipeline) | runs with a verdict | within 1 s | verdict of the class |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(f"| {r['what']} | {r['kind']} | {r['packets']:,} | {r['model']:.3f} | {r['pipeline']:.3f} | "
                   f"{r['verdicts']}/{r['runs']} | {r['in_1s']}/{r['runs']} | {r['right_class']}/{r['runs']} |")  # fmt: skip
    out += ["", "| benign data (never in training) | packets | false alarms per packet (model) | (pipeline) | verdicts |",
            "|---|---:|---:|---:|---:|"]  # fmt: skip
    for b in benign:
        out.append(f"| {b['data']} | {b['packets']:,} | {b['false_alarm']:.4%} | {b['pipeline_false_alarm']:.4%} | "
                   f"{b['verdicts']} |")  # fmt: skip
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['kind'].replace('mirai_', '')} {r['what']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(rows)), 4.5))
    ax.bar(x - 0.2, [r["model"] for r in rows], 0.4, label="model alone")
    ax.bar(x + 0.2, [r["pipeline"] for r in rows], 0.4, label="pipeline (with the decision stage)")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("per-packet recall")
    ax.set_title("Attacks with option values never seen in training")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_generalisation(out: Path, seed: int, epochs: int, workers: int, shared_data: Path) -> str:
    """Train the held-out model, run every case, write ``generalisation.md`` and ``.png`` under ``out``."""
    import tempfile

    from agent.detect.model import Classifier, load_bundle

    from .build_model import cached_splits, train_bundle

    recipe = held_out_recipe()
    splits = cached_splits(recipe, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        train_bundle(splits, Path(tmp), "heldout", seed, epochs, {"held_out": repr(recipe.options)})
        clf = Classifier(load_bundle(Path(tmp) / "heldout.json"))
        metrics = clf.bundle.meta["metrics"]
        cases = attack_cases(clf)
        benign = background_rows(clf) + real_rows(clf, shared_data)
    rows = summarise(cases)
    table = markdown(rows, benign)
    text = (
        "# Generalisation: attack options and benign backgrounds never seen in training\n\n"
        "The model scored here is trained exactly as the default one, except that these option values never "
        "occur in its training traffic: "
        + "; ".join(f"{h.option} {', '.join(map(str, h.excluded))}" for h in HELD_OUT)
        + f"; and the benign scenario(s) {', '.join(HELD_OUT_BACKGROUNDS)} are left out. Its own test split: "
        f"int8 accuracy {metrics['int8']['accuracy']:.4f}. Test attacks are forced to the held-out values, "
        f"{TEST_SECONDS:g} s captures, seeds {TEST_SEEDS}, both views (bot and victim; the scanner also as the "
        "board probed by many scanning bots, at its default options).\n\n" + table + "\n\n"
        "![recall per held-out value](generalisation.png)\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "generalisation.md").write_text(text)
    plot(rows, out / "generalisation.png")
    return table
