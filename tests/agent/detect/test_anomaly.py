"""The anomaly detector (agent/detect/anomaly.py): it learns benign traffic and flags what is unlike it, its
vectorised score equals a plain per-row computation, its file round-trips and refuses corrupt or
mismatched content with one line, and the committed default model keeps quiet on real benign traffic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agent.detect.anomaly import (
    CLIP,
    DEFAULT_MODEL,
    MIN_SPAN,
    OUT_MIN_SPAN,
    AnomalyDetector,
    AnomalyModelError,
    _content_sha256,
    load_anomaly,
    repeated_rows,
)
from agent.features.columns import N_FEATURES
from convert.dataset import SynthJob, synth_features


def benign(scenario: str, seed: int, seconds: float) -> np.ndarray:
    X, y = synth_features(SynthJob(scenario, seed, seconds))
    return X[y == 0]


@pytest.fixture(scope="module")
def traffic() -> dict:
    X, y = synth_features(SynthJob("mirai_syn_bot", 1, 5.0))
    flood = X[y > 0]
    return {
        "learn": benign("smart_home", 1, 60.0),
        "held_out": benign("smart_home", 2, 30.0),
        "flood": flood[np.random.default_rng(0).choice(len(flood), 5000, replace=False)],
    }


@pytest.fixture(scope="module")
def trained(traffic) -> AnomalyDetector:
    """A board's learning period in miniature: batches of 2,048 rows, several passes, threshold from what it learned."""
    det = AnomalyDetector(map_rows=2000, output_warmup=4000, seed=3)
    X = traffic["learn"]
    for _ in range(6):
        for lo in range(0, len(X), 2048):
            det.learn(X[lo : lo + 2048])
    det.fix_threshold()
    return det


def test_learns_benign_and_flags_a_flood_and_shuffled_features(trained, traffic):
    held_out = (trained.score(traffic["held_out"]) > 1).mean()
    flood = (trained.score(traffic["flood"]) > 1).mean()
    rng = np.random.default_rng(1)
    shuffled = rng.permuted(traffic["held_out"][:5000], axis=1)  # each row's values in other columns
    odd = (trained.score(shuffled) > 1).mean()
    assert held_out < 0.02
    assert flood > 0.5 and flood > 20 * held_out
    assert odd > 0.9


def test_groups_partition_the_features_and_stay_small(trained):
    assert sorted(i for g in trained.groups for i in g) == list(range(N_FEATURES))
    assert max(len(g) for g in trained.groups) <= trained.max_group


# --- a plain per-row implementation, from the file's content only ----------------------------------


def scalar_score(model: dict, row: list[float]) -> float:
    def sig(a: float) -> float:
        return 1.0 / (1.0 + math.exp(-a))

    def ae_rmse(z: list[float], ae: dict) -> float:
        W, b, c = ae["W"], ae["b"], ae["c"]
        hidden = [sig(sum(z[i] * W[i][j] for i in range(len(z))) + b[j]) for j in range(len(b))]
        out = [sig(sum(hidden[j] * W[i][j] for j in range(len(b))) + c[i]) for i in range(len(z))]
        return math.sqrt(sum((z[i] - out[i]) ** 2 for i in range(len(z))) / len(z))

    def normalise(x: float, lo: float, hi: float, min_span: float) -> float:
        span = hi - lo
        if span < min_span:
            lo, span = (lo + hi - min_span) / 2, min_span
        return min(max((x - lo) / span, -CLIP), 1.0 + CLIP)

    x = [min(v, cap) if cap is not None else v for v, cap in zip(row, model["caps"])]
    x = [math.asinh(v) for v in x] if model["transform"] == "asinh" else x
    z = [normalise(v, lo, hi, MIN_SPAN) for v, lo, hi in zip(x, model["ranges"]["lo"], model["ranges"]["hi"])]
    rmses = [ae_rmse([z[i] for i in g], ae) for g, ae in zip(model["groups"], model["ensemble"])]
    out = model["output"]
    zo = [normalise(r, lo, hi, OUT_MIN_SPAN) for r, lo, hi in zip(rmses, out["lo"], out["hi"])]
    return ae_rmse(zo, out) / model["threshold"]


def test_vectorised_score_equals_the_plain_per_row_computation(trained, traffic):
    model = trained.to_dict()
    rows = np.concatenate([traffic["held_out"][:40], traffic["flood"][:40]])
    rows[0, 70] = 5e9  # a jitter mean over its cap
    rows[1, :] = 0.0
    expected = np.array([scalar_score(model, r.tolist()) for r in rows])
    got = trained.score(rows)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)
    assert (expected > 1).any() and (expected < 1).any()  # both sides of the threshold were checked


def test_repeated_rows_are_scored_once_and_alike(trained, traffic):
    """A spoofed flood's rows repeat: each run of equal rows is scored once, every row gets its own score.
    Rows equal but for a column beyond its cap (a new jitter stream's absolute time) count as equal; a NaN
    or a change in any other column starts a new run."""
    rng = np.random.default_rng(9)
    distinct = np.concatenate([traffic["held_out"][:30], traffic["flood"][:30]])
    rows = np.repeat(distinct[rng.integers(0, len(distinct), 60)], 50, axis=0)  # runs of 50
    caps = trained.caps
    capped = int(np.flatnonzero(np.isfinite(caps))[0])
    rows[:, capped] = caps[capped] + 1.0 + np.arange(len(rows))  # beyond the cap, different in every row
    rows[125, 3] = np.nan
    rows[130, 10] += 1e-3 * max(1.0, abs(rows[130, 10]))
    first, inverse = repeated_rows(rows, caps)
    assert inverse is not None and 60 <= len(first) <= 64
    assert inverse[125] not in (inverse[124], inverse[126]) and inverse[130] not in (inverse[129], inverse[131])
    others = np.flatnonzero(~np.isfinite(caps))
    same = rows[first][inverse][:, others] == rows[:, others]
    assert same.all(axis=1).sum() == len(rows) - 1  # all but the NaN row (NaN != NaN)
    got = trained.score(rows)
    one_by_one = np.concatenate([trained.score(rows[i : i + 1]) for i in range(0, len(rows), 97)])
    np.testing.assert_allclose(got[::97], one_by_one, rtol=1e-5)
    assert repeated_rows(rng.random((500, N_FEATURES)), caps)[1] is None  # nothing repeats: no grouping


def test_bad_rows_get_a_score_and_bad_shapes_a_clear_error(trained):
    rows = np.zeros((3, N_FEATURES))
    rows[1, 5] = np.nan
    rows[2, 7] = np.inf
    scores = trained.score(rows)
    assert np.isfinite(scores).all() and scores[1] > 1 and scores[2] > 1
    with pytest.raises(ValueError, match="115"):
        trained.score(np.zeros((4, 114)))
    assert trained.score(np.zeros((0, N_FEATURES))).shape == (0,)


def test_an_untrained_detector_says_so():
    det = AnomalyDetector()
    with pytest.raises(AnomalyModelError, match="not learned enough"):
        det.score(np.zeros((2, N_FEATURES)))
    det.learn(np.random.default_rng(0).random((100, N_FEATURES)))  # fewer than map_rows: still mapping
    with pytest.raises(AnomalyModelError, match="not learned enough"):
        det.fix_threshold()


def test_same_data_and_seed_give_the_same_model(traffic):
    def make() -> dict:
        det = AnomalyDetector(map_rows=2000, output_warmup=2000, seed=5)
        det.learn(traffic["learn"][:6000], epochs=2)
        det.fix_threshold()
        return det.to_dict()

    assert make() == make()


# --- files ------------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_scores(trained, traffic, tmp_path):
    path = trained.save(tmp_path / "a.json")
    again = AnomalyDetector.load(path)
    X = np.concatenate([traffic["held_out"][:3000], traffic["flood"][:1000]])
    np.testing.assert_array_equal(again.score(X), trained.score(X))
    assert again.to_dict() == trained.to_dict()
    assert again.save(tmp_path / "b.json").read_bytes() == path.read_bytes()


def resigned(d: dict) -> dict:
    body = {k: v for k, v in d.items() if k != "sha256"}
    return {**body, "sha256": _content_sha256(body)}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: {**d, "threshold": d["threshold"] * 2}, "sha256 does not match"),
        (lambda d: resigned({**d, "schema": "iotguard.anomaly/0"}), "schema"),
        (lambda d: resigned({**d, "feature_schema": "nbaiot-100/1"}), "features"),
        (lambda d: resigned({**d, "groups": d["groups"][1:]}), "partition"),
        (lambda d: resigned({**d, "groups": d["groups"], "ensemble": d["ensemble"][1:]}), "autoencoders for"),
        (lambda d: resigned({**d, "threshold": -1.0}), "threshold"),
        (lambda d: resigned({**d, "ranges": {"lo": d["ranges"]["lo"][:10], "hi": d["ranges"]["hi"]}}), "wrong length"),
        (lambda d: resigned({**d, "ensemble": [{**d["ensemble"][0], "W": [[1.0]]}] + d["ensemble"][1:]}), "malformed"),
        (lambda d: resigned({k: v for k, v in d.items() if k != "output"}), "malformed"),
        (lambda d: [1, 2, 3], "not a JSON object"),
    ],
)
def test_corrupt_or_mismatched_models_are_refused_in_one_line(trained, tmp_path, damage, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(damage(trained.to_dict())))
    with pytest.raises(AnomalyModelError, match=message) as info:
        AnomalyDetector.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_truncated_and_binary_files_are_refused(trained, tmp_path):
    with pytest.raises(AnomalyModelError, match="no such"):
        AnomalyDetector.load(tmp_path / "absent.json")
    good = trained.save(tmp_path / "good.json").read_bytes()
    (tmp_path / "cut.json").write_bytes(good[: len(good) // 2])
    with pytest.raises(AnomalyModelError, match="not JSON"):
        AnomalyDetector.load(tmp_path / "cut.json")
    (tmp_path / "bin.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(AnomalyModelError):
        AnomalyDetector.load(tmp_path / "bin.json")


# --- the committed default model --------------------------------------------------------------------


def test_default_model_is_small_and_loads():
    det = AnomalyDetector.load()
    assert DEFAULT_MODEL.stat().st_size < 64_000
    assert det.threshold > 0 and len(det.groups) >= 5
    assert det.info["sources"]["benign_pcaps"] == []  # trained on synthesised traffic only


def test_load_anomaly_follows_the_agent_setting(trained, tmp_path):
    assert load_anomaly("off") is None
    assert load_anomaly("report").to_dict() == AnomalyDetector.load().to_dict()
    path = trained.save(tmp_path / "mine.json")
    assert load_anomaly("enforce", str(path)).threshold == trained.threshold
    with pytest.raises(AnomalyModelError, match="no such"):
        load_anomaly("report", str(tmp_path / "absent.json"))  # a configured file must exist


def test_default_model_stays_quiet_on_real_benign_iot_traffic(shared_data):
    from agent.capture.packets import DecodeStats
    from agent.pipeline import features_from_capture

    path = shared_data / "real" / "ndpi_coap_mqtt.pcap"
    X = np.concatenate([fb.features for fb in features_from_capture(path, DecodeStats())])
    share = (AnomalyDetector.load().score(X) > 1).mean()
    assert len(X) > 1000
    assert share < 0.02, f"{share:.2%} of real benign CoAP/MQTT packets scored anomalous"
