"""The converter end to end on a small recipe, the paper's metrics, and the N-BaIoT CSV path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from agent.capture.packets import LABELS
from agent.detect.model import Classifier, load_bundle
from convert.metrics import score


def test_metrics_follow_the_paper():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    s = score(y, p)
    assert s.accuracy == pytest.approx(6 / 8)
    assert s.false_alarm == pytest.approx(1 / 4)  # one benign packet called an attack
    assert s.recall == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert s.g_mean == pytest.approx((3 / 4 * 1 * 1 / 2) ** (1 / 3))


@pytest.mark.slow
def test_small_recipe_trains_quantises_and_loads(tmp_path):
    # Imported here, not at module level: tensorflow takes seconds to import, and only training needs it.
    pytest.importorskip("tensorflow", reason="training needs tensorflow-cpu (extra 'convert')")
    from convert.build_model import Recipe, build_splits, train_bundle

    recipe = Recipe(
        scenarios=(("smart_home", 30.0), ("mirai_syn_victim", 3.0), ("mirai_udp_bot", 3.0)),
        seeds={"train": (1,), "val": (2,), "test": (3,)},
        cap_per_class=800,
    )
    splits = build_splits(recipe, workers=1)
    assert set(np.unique(splits["train"].y)) >= {0, LABELS.index("mirai_syn"), LABELS.index("mirai_udp")}
    meta = train_bundle(splits, tmp_path, "small", seed=3, epochs=5, training={"test": True})
    bundle = load_bundle(tmp_path / "small.json")
    assert len(bundle.tflite) < 64 * 1024
    assert meta["metrics"]["float_vs_int8_agreement"] > 0.95
    clf = Classifier(bundle)
    got = clf.predict_int8(np.asarray(meta["self_test"]["features"]))
    np.testing.assert_array_equal(got, np.asarray(meta["self_test"]["int8"]))
    labels, _ = clf.predict(splits["test"].X)
    majority = np.bincount(splits["test"].y).max() / len(splits["test"].y)
    assert (labels == splits["test"].y).mean() > majority + 0.1  # it learned something beyond the base rate


def test_nbaiot_csvs_in_their_own_naming(shared_data, tmp_path):
    from convert.dataset import SPLITS, Dataset, add_nbaiot

    shutil.copy(shared_data / "nbaiot" / "prabeen_benign_traffic.csv", tmp_path / "3.benign.csv")
    shutil.copy(shared_data / "nbaiot" / "prabeen_thermostat_udp.csv", tmp_path / "3.mirai.udp.csv")
    (tmp_path / "notes.txt").write_text("ignored")
    splits = {s: Dataset.empty() for s in SPLITS}
    add_nbaiot(splits, tmp_path, cap=1000, seed=0)
    assert sum(len(d) for d in splits.values()) == 598
    assert set(splits["train"].y.tolist()) == {0, LABELS.index("mirai_udp")}
    # Consecutive blocks per file: no row of one split appears in another.
    assert len(splits["test"]) > 0 and len(splits["val"]) > 0


def test_benign_pcaps_of_ones_own_network(shared_data):
    from convert.dataset import SPLITS, Dataset, add_benign_pcaps

    splits = {s: Dataset.empty() for s in SPLITS}
    add_benign_pcaps(splits, [shared_data / "real" / "ndpi_coap_mqtt.pcap"], cap=100_000, seed=0)
    assert sum(len(d) for d in splits.values()) == 1082  # every decoded packet, in consecutive blocks
    assert all((d.y == 0).all() for d in splits.values())
    assert len(splits["train"]) > len(splits["test"]) > 0
