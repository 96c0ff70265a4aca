"""The k worst / k best images figure: which frames it picks and what it draws."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from baselines.softmax import MaxLogit
from fsbench.data import SyntheticScenes
from fsbench.examples import (
    exact_ap,
    pick_worst_best,
    score_frames,
    take_per_image,
    write_worst_best,
)
from fsbench.lit.evaluation import AnomalyEvaluation
from fsbench.models import Segmenter
from fsbench.plots import colour_anomaly_mask, colour_segmentation, plot_worst_best


def test_pick_skips_images_without_ap_and_orders_worst_and_best():
    aps = [0.5, math.nan, 0.1, 0.9, 0.3, 0.7]
    assert pick_worst_best(aps, 2) == ([2, 4], [3, 5])
    assert pick_worst_best(aps, 0) == ([], [])
    # fewer scored images than 2k: the two sides never show the same image
    assert pick_worst_best([0.2, 0.8, 0.4], 4) == ([0, 2], [1])
    assert pick_worst_best([math.nan, math.nan], 3) == ([], [])
    with pytest.raises(ValueError, match="report_images must be >= 0"):
        pick_worst_best(aps, -1)


def test_colour_maps_follow_cityscapes_and_the_mask_convention():
    rgb = colour_segmentation(np.array([[0, 13], [255, 18]]))
    assert rgb[0, 0].tolist() == [128, 64, 128]  # road
    assert rgb[0, 1].tolist() == [0, 0, 142]  # car
    assert rgb[1, 0].tolist() == [0, 0, 0]  # ignore
    mask = colour_anomaly_mask(np.array([[0, 1, 255]], dtype=np.uint8))
    assert mask[0, :, 0].tolist() == [0, 255, 128]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    segmenter = Segmenter(encoder_name="resnet18", encoder_weights=None).eval()
    return segmenter, SyntheticScenes("anomaly", 6, 64, 128)


def test_frames_are_chosen_by_the_per_image_ap_of_scikit_learn(tiny, tmp_path):
    segmenter, dataset = tiny
    head = MaxLogit()
    module = AnomalyEvaluation(segmenter, {"max_logit": head}, ["a"], ["a"], per_image=True)
    reference = []
    for index in range(len(dataset)):
        item = dataset[index]
        batch = {"image": item["image"][None], "anomaly": item["anomaly"][None], "name": ["x"]}
        module.test_step(batch, 0)
        with torch.inference_mode():
            score = MaxLogit.from_logits(segmenter(item["image"][None]).logits)[0]
        valid = item["anomaly"] != 255
        reference.append(average_precision_score(item["anomaly"][valid], score[valid]))
    module.on_test_epoch_end()
    per_image = take_per_image(module.results, keep=False)
    assert "per_image" not in module.results["max_logit"]["datasets"]["a"]  # not in results.json
    aps = [entry["ap"] for entry in per_image["max_logit"]["a"]]
    np.testing.assert_allclose(aps, reference, atol=1e-6)
    order = np.argsort(reference, kind="stable")
    assert pick_worst_best(aps, 2) == (order[:2].tolist(), order[::-1][:2].tolist())

    frames = score_frames(segmenter, head, dataset, [int(order[0])])
    item = dataset[int(order[0])]
    with torch.inference_mode():
        logits = segmenter(item["image"][None]).logits
    np.testing.assert_allclose(frames[0]["score"], MaxLogit.from_logits(logits)[0], atol=1e-5)
    np.testing.assert_array_equal(frames[0]["segmentation"], logits.argmax(1)[0])
    assert exact_ap(frames[0]["score"], frames[0]["anomaly"]) == pytest.approx(reference[order[0]])
    assert frames[0]["image"].shape == (64, 128, 3)

    paths = write_worst_best(segmenter, {"max_logit": head}, {"a": dataset}, per_image, 2, tmp_path)
    assert [path.name for path in paths] == ["worst_best_a_max_logit.png"]
    with Image.open(paths[0]) as figure:
        width, height = figure.size
    assert width > 800 and height > 4 * 100  # four rows of four panels
    assert (
        write_worst_best(segmenter, {"max_logit": head}, {"a": dataset}, per_image, 0, tmp_path)
        == []
    )


def test_plot_refuses_an_empty_figure(tmp_path):
    with pytest.raises(ValueError, match="no image to draw"):
        plot_worst_best([], [], tmp_path / "x.png", "nothing")
