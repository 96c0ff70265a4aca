"""The k worst and k best images of an evaluation, chosen by per-image AP, and their figure.

Every ``evaluate.py`` run writes ``worst_best_<dataset>_<head>.png`` (``report_images: k`` in
conf/evaluate.yaml; 0 writes none). The per-image AP comes from the evaluation pass
(:class:`fsbench.metrics.AnomalyMetrics` with ``per_image``); unless ``per_image: true`` asks
for exact values, it is estimated on every ``FIGURE_RANKING_STRIDE``-th pixel of each row and
column, enough to rank the frames at a sixteenth of the cost. Only the 2k chosen frames are scored
again, to draw their score maps and segmentations and to print their exact AP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fsbench.heads import AnomalyHead, device_of, resize_score
from fsbench.metrics.per_image import per_image_metrics

FIGURE_RANKING_STRIDE = 4  # per-image AP on every 4th pixel of each row and column ranks frames


def exact_ap(score: Any, anomaly: Any) -> float:
    """The exact AP of one frame (NaN without both classes) from its score and anomaly maps."""
    values = per_image_metrics(torch.as_tensor(score)[None], torch.as_tensor(anomaly)[None])
    return float(values["ap"][0])


def pick_worst_best(per_image_ap: Sequence[float], k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` lowest-AP images (worst first) and the ``k`` highest (best first).

    Images without an AP (NaN: no anomaly pixel, or nothing but anomaly) are never chosen. When
    fewer than ``2k`` images have an AP, the two lists share none: the worst half goes to
    ``worst``, the rest to ``best``. Ties keep the dataset order.
    """
    if k < 0:
        raise ValueError(f"report_images must be >= 0 (images per side of the figure), got {k}")
    scored = [i for i, ap in enumerate(per_image_ap) if not math.isnan(ap)]
    ascending = sorted(scored, key=lambda i: per_image_ap[i])
    n_worst = min(k, (len(ascending) + 1) // 2)
    worst = ascending[:n_worst]
    best = sorted(ascending[n_worst:], key=lambda i: -per_image_ap[i])[:k]
    return worst, best


@torch.inference_mode()
def score_frames(
    segmenter: nn.Module, head: AnomalyHead, dataset: Dataset, indices: Sequence[int]
) -> list[dict[str, Any]]:
    """Score frames of an anomaly dataset again, one at a time, for the figure.

    Returns per frame ``image`` float [H, W, 3] in [0, 1], ``anomaly`` uint8 [H', W'] (0 / 1 /
    255 void), ``score`` float32 [H', W'] and ``segmentation`` int64 [H', W'] (train ids of the
    head's logits), all on the CPU at the label resolution (H', W') but the image.
    """
    device = device_of(segmenter)
    frames = []
    for index in indices:
        item = dataset[index]
        image = item["image"][None].to(device)
        prediction = head(segmenter, image)
        size = item["anomaly"].shape[-2:]
        logits = torch.nn.functional.interpolate(
            prediction.logits.float(), size=tuple(size), mode="nearest"
        )
        frames.append(
            {
                "image": item["image"].permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                "anomaly": item["anomaly"].cpu().numpy(),
                "score": resize_score(prediction.score, size)[0].float().cpu().numpy(),
                "segmentation": logits.argmax(1)[0].cpu().numpy(),
            }
        )
    return frames


def write_worst_best(
    segmenter: nn.Module,
    heads: Mapping[str, AnomalyHead],
    datasets: Mapping[str, Dataset],
    per_image: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    k: int,
    directory: str | Path,
) -> list[Path]:
    """Write ``worst_best_<dataset>_<head>.png`` per head and anomaly dataset; return the paths.

    ``per_image`` is ``{head: {dataset: [{"name", "ap", "anomaly_fraction"}, ...]}}`` in
    dataset order, as :class:`fsbench.lit.AnomalyEvaluation` lists it with ``per_image``.
    """
    from fsbench.plots import plot_worst_best  # matplotlib is imported only when plotting

    written: list[Path] = []
    if k == 0:
        return written
    for head_name, head in heads.items():
        for dataset_name, images in per_image.get(head_name, {}).items():
            worst, best = pick_worst_best([entry["ap"] for entry in images], k)
            if not worst and not best:
                continue
            frames = score_frames(segmenter, head, datasets[dataset_name], worst + best)
            for frame, index in zip(frames, worst + best, strict=True):
                frame["name"] = images[index]["name"]
                frame["ap"] = exact_ap(frame["score"], frame["anomaly"])
            path = Path(directory) / f"worst_best_{dataset_name}_{head_name}.png"
            written.append(
                plot_worst_best(
                    frames[: len(worst)], frames[len(worst) :], path, f"{dataset_name}: {head_name}"
                )
            )
    return written


def take_per_image(
    results: dict[str, dict[str, Any]], keep: bool
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{head: {dataset: per-image list}}`` from ``AnomalyEvaluation.results``.

    With ``keep`` false the lists are removed from ``results`` (``per_image: false`` keeps
    results.json short); the figure still gets them. Lists named by position (``#0``, ...: a
    distributed run, whose order is not the dataset's) are left out, as their frames are unknown.
    """
    per_image: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for head, entry in results.items():
        for dataset, values in entry["datasets"].items():
            images = values.get("per_image") if keep else values.pop("per_image", None)
            if images and not str(images[0]["name"]).startswith("#"):
                per_image.setdefault(head, {})[dataset] = images
    return per_image
