"""The synthetic default: deterministic, disjoint splits, the promised label sets."""

import numpy as np
import pytest
import torch

from fsbench.data import SyntheticScenes
from fsbench.data.synthetic import CLASSES_PRESENT, IGNORE


def test_same_seed_same_scene_and_different_index_different_scene():
    a = SyntheticScenes("train", 4, 64, 128, seed=3, cache=False)
    b = SyntheticScenes("train", 4, 64, 128, seed=3, cache=False)
    assert np.array_equal(a.scene(1).image, b.scene(1).image)
    assert np.array_equal(a.scene(1).label, b.scene(1).label)
    assert not np.array_equal(a.scene(0).image, a.scene(1).image)


def test_splits_and_seeds_are_disjoint():
    train = SyntheticScenes("train", 2, 64, 128, seed=0).scene(0).image
    val = SyntheticScenes("val", 2, 64, 128, seed=0).scene(0).image
    other_seed = SyntheticScenes("train", 2, 64, 128, seed=1).scene(0).image
    assert not np.array_equal(train, val)
    assert not np.array_equal(train, other_seed)


def test_cache_returns_identical_items():
    dataset = SyntheticScenes("val", 2, 64, 128)
    first, second = dataset[0], dataset[0]
    assert torch.equal(first["image"], second["image"])


def test_item_shapes_dtypes_and_ranges():
    item = SyntheticScenes("train", 1, 96, 160)[0]
    assert item["image"].shape == (3, 96, 160) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["label"].shape == (96, 160) and item["label"].dtype == torch.int64
    assert "anomaly" not in item


def test_inlier_splits_use_only_the_promised_train_ids():
    dataset = SyntheticScenes("train", 40, 64, 128)
    seen = set()
    for i in range(len(dataset)):
        seen |= set(np.unique(dataset.scene(i).label).tolist())
    assert seen <= set(CLASSES_PRESENT)
    # The common classes appear within a few dozen scenes.
    assert {0, 1, 2, 5, 8, 10, 13} <= seen


def test_anomaly_split_labels_and_void_border():
    dataset = SyntheticScenes("anomaly", 20, 64, 128)
    fractions = []
    for i in range(len(dataset)):
        item = dataset[i]
        anomaly = item["anomaly"]
        assert anomaly.dtype == torch.uint8
        assert set(torch.unique(anomaly).tolist()) <= {0, 1, IGNORE}
        assert (anomaly[0] == IGNORE).all() and (anomaly[:, -1] == IGNORE).all()
        # Anomaly pixels carry no inlier class in the semantic label.
        assert (item["label"][anomaly == 1] == IGNORE).all()
        fractions.append((anomaly == 1).float().mean().item())
    assert sum(f > 0 for f in fractions) >= 15
    assert 0.001 < float(np.mean(fractions)) < 0.2


def test_training_split_never_contains_anomaly_colours():
    # Anomalies are the only pixels with label 255 in the anomaly split; inlier splits have none.
    dataset = SyntheticScenes("train", 20, 64, 128)
    assert all((dataset.scene(i).label != IGNORE).all() for i in range(len(dataset)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        SyntheticScenes("test")
    with pytest.raises(IndexError):
        SyntheticScenes("train", 2).scene(2)
