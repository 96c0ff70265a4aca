"""``fsbench score``: each protocol against an independent computation, every ``--explain`` rule
against a hand-computed curve, input checks, and the command line on files of every format.

The SMIYC pixel curve and component metrics are compared with the toolkit's own output in
``test_smiyc_golden.py``; here the command line's wiring of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fsbench.cli.score import main
from fsbench.data.anomaly_sets import SegmentMeIfYouCan
from fsbench.data.score_maps import SavedScores, ScoreError, match_frames
from fsbench.metrics.per_image import PerImageMetrics
from fsbench.metrics.protocols import (
    SmiycPixelCurve,
    fpr_at_tpr_rules,
    trapezoid_aupr,
)

SIZE = (64, 96)  # H, W of the fixture frames


# -- references --------------------------------------------------------------------------------


def sklearn_pooled(scores: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, float]:
    """Fishyscapes metrics by scikit-learn on every valid pixel (float32 scores)."""
    s = np.concatenate(
        [x[y != 255].astype(np.float32) for x, y in zip(scores, labels, strict=True)]
    )
    t = np.concatenate([y[y != 255] == 1 for y in labels])
    fpr, tpr, _ = roc_curve(t, s, drop_intermediate=False)
    return {
        "ap": average_precision_score(t, s),
        "auroc": roc_auc_score(t, s),
        "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
    }


def make_labels(seed: int = 0) -> dict[str, np.ndarray]:
    """Four frames, names with dots: anomaly squares, void bands, one anomaly-free frame."""
    rng = np.random.default_rng(seed)
    labels = {}
    for i, name in enumerate(["frame.a0", "frame.a1", "frame.a2", "frame.free"]):
        label = np.zeros(SIZE, np.uint8)
        label[:6] = 255
        if name != "frame.free":
            top, left = rng.integers(8, 30), rng.integers(0, 60)
            label[top : top + 25 + 3 * i, left : left + 30] = 1
        labels[name] = label
    return labels


def make_scores(labels: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    """Quantized scores k / 64 (exact in float16/32 and in 16-bit PNGs as k * 1024 / 65535)."""
    rng = np.random.default_rng(seed)
    scores = {}
    for name, label in labels.items():
        k = rng.integers(0, 40, SIZE) + 20 * (label == 1)
        scores[name] = (k / 64).astype(np.float32)
    return scores


@pytest.fixture
def smiyc_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A RoadAnomaly21-layout tree (read by fsbench's own reader) and its labels."""
    labels = make_labels()
    track = tmp_path / "data" / "dataset_AnomalyTrack"
    (track / "images").mkdir(parents=True)
    (track / "labels_masks").mkdir()
    for name, label in labels.items():
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(track / "images" / f"{name}.png")
        Image.fromarray(label).save(track / "labels_masks" / f"{name}_labels_semantic.png")
    return tmp_path / "data", labels


def write_scores(folder: Path, scores: dict[str, np.ndarray], fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, score in scores.items():
        if fmt == "npy":
            np.save(folder / f"{name}.npy", score)
        elif fmt == "npz":
            np.savez(folder / f"{name}.npz", score=score)
        elif fmt == "png":
            values = np.round(score * 64).astype(np.uint16) * 1024
            Image.fromarray(values).save(folder / f"{name}.png")
        else:
            import h5py

            with h5py.File(folder / f"{name}.hdf5", "w") as handle:
                handle.create_dataset("value", data=score.astype(np.float16), compression=9)


def run(tmp_path: Path, root: Path, *extra: str, pred: str = "pred") -> dict:
    out = tmp_path / "out"
    code = main([str(tmp_path / pred), str(root), "--data", "smiyc_anomaly", "--out", str(out),
                 "--quiet", *extra])  # fmt: skip
    assert code == 0
    return json.loads((out / "results.json").read_text())


# -- protocols ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npy", "npz", "png", "hdf5"])
def test_fishyscapes_protocol_in_every_format_matches_sklearn(tmp_path, smiyc_root, fmt):
    root, labels = smiyc_root
    scores = make_scores(labels)
    write_scores(tmp_path / "pred", scores, fmt)
    payload = run(tmp_path, root)
    reference = sklearn_pooled(list(scores.values()), list(labels.values()))
    assert payload["protocol"] == "fishyscapes"
    for key in ("ap", "auroc", "fpr95"):
        assert payload["results"][key] == pytest.approx(reference[key], abs=1e-12), key
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "protocol `fishyscapes`" in markdown.splitlines()[0]
    assert "| protocol `fishyscapes`:" in markdown


def test_smiyc_protocol_components_on_a_hand_made_case(tmp_path, smiyc_root):
    """Inliers score 0.05, each anomaly square 0.9 but for its top-left pixel (0.5), and the
    anomaly-free frame holds a 20x30 false blob at 0.95. The toolkit's threshold is the lower
    edge 0.5 of the corner pixels' bin, compared strictly (score > 0.5): every corner is
    missed. By hand: sIoU of a square of n pixels = (n - 1) / n; precisions 1, 1, 1, 0, so
    PPV = 0.75; TP = 3, FN = 0, FP = 1 at every τ, so mean F1 = 6 / 7."""
    root, labels = smiyc_root
    scores, sizes = {}, []
    for name, label in labels.items():
        score = np.where(label == 1, 0.9, 0.05).astype(np.float32)
        if name == "frame.free":
            score[30:50, 10:40] = 0.95
        else:
            rows, cols = np.nonzero(label == 1)
            score[rows.min(), cols.min()] = 0.5
            sizes.append(rows.size)
        scores[name] = score
    write_scores(tmp_path / "pred", scores, "npy")
    payload = run(tmp_path, root, "--protocol", "smiyc")
    results = payload["results"]
    # the pixel curve itself is checked against the toolkit's output in test_smiyc_golden.py
    assert results["best_f1_threshold"] == 0.5 and results["commit"] == "1c7804e"
    components = results["components"]
    assert components["threshold"] == 0.5
    expected_siou = np.mean([(n - 1) / n for n in sizes])
    assert components["siou_gt"] == pytest.approx(expected_siou, abs=1e-15)
    assert components["ppv"] == 0.75
    assert components["mean_f1"] == pytest.approx(6 / 7)
    assert components["n_gt_components"] == 3 and components["n_predicted_components"] == 4
    assert payload["protocol"] == "smiyc" and "`smiyc`" in (tmp_path / "out/results.md").read_text()


def test_per_image_protocol_means_and_worst_frames(tmp_path, smiyc_root):
    root, labels = smiyc_root
    scores = make_scores(labels)
    write_scores(tmp_path / "pred", scores, "npy")
    results = run(tmp_path, root, "--protocol", "per_image")["results"]
    per_frame = {
        name: sklearn_pooled([scores[name]], [label])
        for name, label in labels.items()
        if name != "frame.free"
    }
    assert results["ap"] == pytest.approx(np.mean([v["ap"] for v in per_frame.values()]), abs=1e-12)
    assert results["fpr95"] == pytest.approx(np.mean([v["fpr95"] for v in per_frame.values()]))
    assert results["worst"][0]["name"] == min(per_frame, key=lambda n: per_frame[n]["ap"])
    assert results["skipped"] == ["frame.free"]
    assert results["ap_quantiles"]["100"] == pytest.approx(max(v["ap"] for v in per_frame.values()))


def test_per_image_without_a_frame_of_both_classes_raises():
    metrics = PerImageMetrics()
    metrics.update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.uint8), ["empty"])
    with pytest.raises(ValueError, match="no frame holds both anomaly and inlier pixels"):
        metrics.compute()


# -- --explain rules against hand-computed curves ---------------------------------------------

# Hand-made ROC, 200 anomaly and 10 inlier pixels, four thresholds:
#   TPR 0.5, 0.945, 0.96, 1.0 at FPR 0.0, 0.1, 0.4, 1.0 (no threshold at TPR 0.95 exactly).
TPS, FPS = np.array([100, 189, 192, 200]), np.array([0, 1, 4, 10])


def test_fpr95_rules_on_a_hand_computed_curve_without_an_exact_hit():
    rules = fpr_at_tpr_rules(TPS, FPS)
    assert rules["first_tpr_geq"] == 0.4  # TPR 0.96 is the first >= 0.95
    assert rules["first_tpr_gt"] == 0.4
    assert rules["interpolated"] == pytest.approx(0.1 + (0.005 / 0.015) * 0.3)  # = 0.2
    assert rules["closest"] == 0.1  # |0.945 - 0.95| < |0.96 - 0.95|


def test_fpr95_rules_when_a_threshold_hits_tpr_095_exactly():
    # TPR 0.5, 0.95, 0.96, 1.0 at FPR 0.0, 0.2, 0.4, 1.0
    rules = fpr_at_tpr_rules(np.array([100, 190, 192, 200]), np.array([0, 2, 4, 10]))
    assert rules["first_tpr_geq"] == 0.2
    assert rules["first_tpr_gt"] == 0.4
    assert rules["interpolated"] == 0.2
    assert rules["closest"] == 0.2


def test_trapezoid_aupr_by_hand_and_beside_ap():
    recall = [0.0, 0.5, 0.945, 0.96, 1.0]
    precision = [1.0, 1.0, 189 / 190, 192 / 196, 200 / 210]
    by_hand = sum(
        (recall[i + 1] - recall[i]) * (precision[i + 1] + precision[i]) / 2 for i in range(4)
    )
    assert trapezoid_aupr(TPS, FPS) == pytest.approx(by_hand, abs=1e-15)
    # A constant scorer at 5 % prevalence: trapezoid (1 + 0.05) / 2, AP the prevalence.
    assert trapezoid_aupr(np.array([5]), np.array([95])) == pytest.approx(0.525)


def test_explain_pooled_per_image_and_anomaly_free_against_sklearn(tmp_path, smiyc_root):
    root, labels = smiyc_root
    scores = make_scores(labels)
    write_scores(tmp_path / "pred", scores, "npy")
    explain = run(tmp_path, root, "--explain")["explain"]
    names = [n for n in labels if n != "frame.free"]
    without = sklearn_pooled([scores[n] for n in names], [labels[n] for n in names])
    pooled = sklearn_pooled(list(scores.values()), list(labels.values()))
    per_image = [sklearn_pooled([scores[n]], [labels[n]]) for n in names]
    for key in ("ap", "fpr95", "auroc"):
        assert explain["without_anomaly_free"][key] == pytest.approx(without[key], abs=1e-12)
        assert explain["pooled"][key] == pytest.approx(pooled[key], abs=1e-12)
        assert explain["per_image_mean"][key] == pytest.approx(
            np.mean([v[key] for v in per_image]), abs=1e-12
        )
    assert explain["anomaly_free_frames"] == ["frame.free"]
    assert explain["without_anomaly_free"]["fpr95"] != explain["pooled"]["fpr95"]
    binned = {c: SmiycPixelCurve(commit=c) for c in ("1c7804e", "05552386")}
    for name, score in scores.items():
        for curve in binned.values():
            curve.update(score, labels[name])
    assert explain["fpr95"]["binned"] == binned["1c7804e"].compute()["fpr95"]
    for commit, curve in binned.items():
        assert explain["precision_recall"][f"smiyc_ap_{commit}"] == curve.compute()["ap"]
    text = (tmp_path / "out" / "results.md").read_text()
    for rule in ("first_tpr_geq", "first_tpr_gt", "interpolated", "closest", "binned"):
        assert rule in text


# -- input safety ------------------------------------------------------------------------------


def fails(tmp_path, root, capsys, *extra) -> str:
    code = main([str(tmp_path / "pred"), str(root), "--data", "smiyc_anomaly", "--quiet",
                 "--out", str(tmp_path / "out"), *extra])  # fmt: skip
    assert code == 1
    return capsys.readouterr().err


def test_missing_and_surplus_frames_are_listed(tmp_path, smiyc_root, capsys):
    root, labels = smiyc_root
    scores = make_scores(labels)
    scores["frame.extra"] = scores.pop("frame.a1")
    write_scores(tmp_path / "pred", scores, "npy")
    err = fails(tmp_path, root, capsys)
    assert "1 frame(s) have no score file: frame.a1" in err
    assert "1 score file(s) match no frame of the dataset: frame.extra" in err


def test_wrong_size_is_refused(tmp_path, smiyc_root, capsys):
    root, labels = smiyc_root
    scores = make_scores(labels)
    scores["frame.a0"] = scores["frame.a0"][:, :48]
    write_scores(tmp_path / "pred", scores, "npy")
    assert "the score map is 64x48 (HxW) but the frame's label is 64x96" in fails(
        tmp_path, root, capsys
    )


def test_nan_on_a_valid_pixel_is_refused_but_allowed_on_void(tmp_path, smiyc_root, capsys):
    root, labels = smiyc_root
    scores = make_scores(labels)
    scores["frame.a0"][0, 0] = np.nan  # row 0 is void
    write_scores(tmp_path / "pred", scores, "npy")
    assert run(tmp_path, root)["results"]["ap"] > 0
    scores["frame.a0"][10, 3] = np.inf
    write_scores(tmp_path / "pred", scores, "npy")
    assert "1 valid (non-void) pixels are NaN or inf, the first at (row, col) (10, 3)" in fails(
        tmp_path, root, capsys
    )


def test_integer_maps_that_look_like_labels_are_refused(tmp_path, smiyc_root, capsys):
    root, labels = smiyc_root
    write_scores(tmp_path / "pred", {n: y.astype(np.int64) for n, y in labels.items()}, "npy")
    assert "looks like a label or a thresholded mask" in fails(tmp_path, root, capsys)


def test_8_bit_png_is_refused(tmp_path, smiyc_root, capsys):
    root, labels = smiyc_root
    (tmp_path / "pred").mkdir()
    for name in labels:
        Image.fromarray(np.full(SIZE, 7, np.uint8)).save(tmp_path / "pred" / f"{name}.png")
    assert "score PNGs must be 16-bit grey" in fails(tmp_path, root, capsys)


def test_reversed_scores_warn_and_negate_fixes_them(tmp_path, smiyc_root, capsys):
    root, labels = smiyc_root
    scores = make_scores(labels)
    write_scores(tmp_path / "pred", {n: 1 - s for n, s in scores.items()}, "npy")
    payload = run(tmp_path, root)
    assert payload["warnings"] and "rerun with --negate" in payload["warnings"][0]
    assert "AUROC" in capsys.readouterr().err
    fixed = run(tmp_path, root, "--negate")
    assert not fixed["warnings"]
    assert fixed["results"]["auroc"] == pytest.approx(
        sklearn_pooled(list(scores.values()), list(labels.values()))["auroc"], abs=1e-12
    )


def test_anomaly_suffixed_names_are_matched_and_segmentation_files_skipped(tmp_path, smiyc_root):
    """``<name>_anomaly.npy`` matches frame ``<name>``; ``*_segmentation.npy`` is not a score."""
    root, labels = smiyc_root
    scores = make_scores(labels)
    write_scores(tmp_path / "pred", {f"{n}_anomaly": s for n, s in scores.items()}, "npy")
    np.save(tmp_path / "pred" / "frame.a0_segmentation.npy", np.zeros(SIZE, np.int64))
    reference = sklearn_pooled(list(scores.values()), list(labels.values()))
    assert run(tmp_path, root)["results"]["ap"] == pytest.approx(reference["ap"], abs=1e-12)


@pytest.mark.parametrize("read_ahead", [0, 1, 3])
def test_saved_scores_read_ahead_yields_every_frame_in_order_and_errors_in_place(
    tmp_path, smiyc_root, read_ahead
):
    root, labels = smiyc_root
    scores = make_scores(labels)
    write_scores(tmp_path / "pred", scores, "npy")
    dataset = SegmentMeIfYouCan(root, track="anomaly")
    frames = SavedScores(tmp_path / "pred", dataset, read_ahead=read_ahead)
    seen = [frame["name"] for frame in frames]
    assert seen == [frames[index]["name"] for index in range(len(frames))] == frames.names
    for frame in frames:
        np.testing.assert_array_equal(frame["score"], scores[frame["name"]])
    broken = frames.names[1]
    np.save(tmp_path / "pred" / f"{broken}.npy", np.zeros((3, 3), np.float32))
    yielded = []
    with pytest.raises(ScoreError, match=broken):
        for frame in frames:
            yielded.append(frame["name"])
    assert yielded == frames.names[:1]


def test_fishyscapes_submission_ids_are_matched():
    """The Fishyscapes submission writes ``DDDD_anomaly.npy`` for frame ``DDDD_<base id>``."""
    files = {"0001_anomaly": Path("0001_anomaly.npy"), "0002_x": Path("0002_x.npy")}
    assert match_frames(["0001_04_Maurener_Weg", "0002_x"], files) == [
        Path("0001_anomaly.npy"),
        Path("0002_x.npy"),
    ]


def test_score_reproduces_the_evaluation_of_the_same_model(tmp_path):
    """One metric code path: `fsbench score` on a model's saved maps == AnomalyEvaluation."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from baselines.softmax import MaxSoftmax
    from fsbench.data import SyntheticScenes
    from fsbench.lit import AnomalyEvaluation
    from fsbench.models import Segmenter

    torch.manual_seed(0)
    segmenter = Segmenter("resnet18", num_classes=19).eval()
    data = SyntheticScenes("anomaly", 6, 64, 128)
    module = AnomalyEvaluation(segmenter, {"msp": MaxSoftmax()}, ["a"], ["a"])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(module, dataloaders=[DataLoader(data, batch_size=3)], verbose=False)
    evaluated = module.results["msp"]["datasets"]["a"]
    (tmp_path / "pred").mkdir()
    with torch.inference_mode():
        for index in range(len(data)):
            item = data[index]
            score = MaxSoftmax.from_logits(segmenter(item["image"][None]).logits)[0]
            np.save(tmp_path / "pred" / f"{item['name']}.npy", score.numpy())
    out = tmp_path / "out"
    argv = [str(tmp_path / "pred"), "--data", "synthetic_anomaly", "--length", "6", "--size", "64",
            "128", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    scored = json.loads((out / "results.json").read_text())["results"]
    assert (scored["n_anomaly"], scored["n_inlier"]) == (
        evaluated["n_anomaly"],
        evaluated["n_inlier"],
    )
    # The evaluation ran batches of 3, the saved maps batches of 1: other convolution shapes,
    # scores equal up to float32 rounding. That may swap an anomaly and an inlier scoring that
    # close (AP moves by at most 1 / (anomaly pixels x rank), AUROC by 1 / (anomaly x inlier
    # pixels)): 1e-4, the histogram's own tolerance, not 1e-6, which assumed equal scores.
    for key in ("ap", "auroc", "fpr95"):
        assert scored[key] == pytest.approx(evaluated[key], abs=1e-4), key
