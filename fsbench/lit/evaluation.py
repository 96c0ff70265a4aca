"""Evaluating anomaly heads: one pass over each dataset, every head scored, metrics streamed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from fsbench.heads import AnomalyHead, AnomalyPrediction, resize_score
from fsbench.metrics import AnomalyMetrics, SegmentationMetrics


def predict_heads(
    segmenter: nn.Module, heads: Mapping[str, AnomalyHead], images: Tensor
) -> dict[str, AnomalyPrediction]:
    """Run every head on a batch; heads that only read one segmenter output share one forward."""
    predictions: dict[str, AnomalyPrediction] = {}
    shared = None
    for name, head in heads.items():
        if head.scores_single_pass:
            if shared is None:
                shared = segmenter(images)
            predictions[name] = AnomalyPrediction(score=head.score(shared), logits=shared.logits)
        else:
            predictions[name] = head(segmenter, images)
    return predictions


def match_label_size(score: Tensor, label: Tensor) -> Tensor:
    """Score [N, h, w] resized bilinearly to the label's [N, H, W] if they differ.

    Images may be resized for speed (a dataset's ``resize``); scores are always compared to the
    labels at label resolution, so the score is upsampled, never the label downsampled.
    """
    return resize_score(score, label.shape[-2:])


class AnomalyEvaluation(L.LightningModule):
    """Score anomaly datasets (and an inlier set for mIoU) with several heads at once.

    Use with ``trainer.test(module, dataloaders=[...])`` where the loaders follow
    ``dataset_names``. Batches of a dataset listed in ``anomaly_datasets`` must carry ``anomaly``
    (uint8 [N, H, W]: 0 inlier, 1 anomaly, 255 void); the dataset named ``inlier_dataset`` must
    carry ``label`` (train ids). After the run, :attr:`results` holds
    ``{head: {"miou": ..., "iou": [...], "datasets": {dataset: {ap, fpr95, auroc, ...}}}}``
    and :attr:`curves` the PR / ROC curves ``{head: {dataset: {threshold, tpr, fpr,
    precision}}}``. With ``per_image``, each dataset entry also lists every image's AP and
    anomaly fraction (by name in a single process; by position under DDP), computed on every
    ``per_image_stride``-th pixel of each row and column (1: exact; see :class:`AnomalyMetrics`).
    """

    def __init__(
        self,
        segmenter: nn.Module,
        heads: Mapping[str, AnomalyHead],
        dataset_names: Sequence[str],
        anomaly_datasets: Sequence[str],
        inlier_dataset: str | None = None,
        ignore_index: int = 255,
        per_image: bool = False,
        per_image_stride: int = 1,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("no anomaly head selected; pass e.g. head=max_softmax")
        self.segmenter = segmenter.eval()
        self.heads = nn.ModuleDict(dict(heads))
        self.dataset_names = list(dataset_names)
        self.anomaly_datasets = list(anomaly_datasets)
        self.inlier_dataset = inlier_dataset
        self.anomaly_metrics = nn.ModuleDict(
            {
                head: nn.ModuleDict(
                    {
                        ds: AnomalyMetrics(
                            ignore_index=ignore_index,
                            per_image=per_image,
                            per_image_stride=per_image_stride,
                        )
                        for ds in self.anomaly_datasets
                    }
                )
                for head in self.heads
            }
        )
        self.segmentation_metrics = nn.ModuleDict(
            {
                head: SegmentationMetrics(segmenter.num_classes, ignore_index=ignore_index)
                for head in self.heads
            }
        )
        self.results: dict[str, dict[str, Any]] = {}
        self.curves: dict[str, dict[str, Any]] = {}
        self.image_names: dict[str, list[str]] = {ds: [] for ds in self.anomaly_datasets}

    @torch.inference_mode()
    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        dataset = self.dataset_names[dataloader_idx]
        predictions = predict_heads(self.segmenter, self.heads, batch["image"])
        if dataset in self.anomaly_datasets:
            self.image_names[dataset] += list(batch.get("name", []))
        for head, prediction in predictions.items():
            if dataset in self.anomaly_datasets:
                score = match_label_size(prediction.score, batch["anomaly"])
                self.anomaly_metrics[head][dataset].update(score, batch["anomaly"])
            if dataset == self.inlier_dataset:
                self.segmentation_metrics[head].update(prediction.logits, batch["label"])

    def on_test_epoch_end(self) -> None:
        for head in self.heads:
            entry: dict[str, Any] = {"datasets": {}}
            if self.inlier_dataset is not None:
                seg = self.segmentation_metrics[head].compute()
                entry["miou"], entry["iou"] = seg["miou"], seg["iou"]
            self.curves[head] = {}
            for dataset in self.anomaly_datasets:
                metric = self.anomaly_metrics[head][dataset]
                values = metric.compute()
                total = values["n_anomaly"] + values["n_inlier"]
                values["anomaly_fraction"] = values["n_anomaly"] / total
                if "per_image" in values:
                    values["per_image"] = self._name_images(dataset, values["per_image"])
                entry["datasets"][dataset] = values
                self.curves[head][dataset] = metric.curves()
            self.results[head] = entry

    def _name_images(self, dataset: str, per_image: dict[str, list[float]]) -> list[dict]:
        names = self.image_names[dataset]
        if len(names) != len(per_image["ap"]):  # under DDP the names are only this process's
            names = [f"#{index}" for index in range(len(per_image["ap"]))]
        return [
            {"name": name, "ap": ap, "anomaly_fraction": fraction}
            for name, ap, fraction in zip(
                names, per_image["ap"], per_image["anomaly_fraction"], strict=True
            )
        ]
