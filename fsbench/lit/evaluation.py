"""Evaluating anomaly heads: one pass over each dataset, every head scored, metrics streamed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from fsbench.data.datamodule import UnpaddedDistributedSampler
from fsbench.heads import AnomalyHead, AnomalyPrediction, resize_score
from fsbench.metrics import SegmentationMetrics
from fsbench.metrics.states import gather_objects
from fsbench.metrics.suite import protocol_metric, protocol_values, update_metric


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


def check_every_process_has_frames(loaders: Sequence[Any], world_size: int) -> None:
    """Refuse a run in which some process would get no frame of any set.

    Lightning skips the whole test loop, epoch-end hooks included, on a process without a
    batch, and the others would wait for it forever when they gather the metric states.
    """
    sizes = [len(loader.dataset) for loader in loaders]
    for rank in range(world_size):
        empty = [
            isinstance(loader.sampler, UnpaddedDistributedSampler)
            and len(UnpaddedDistributedSampler(loader.dataset, world_size, rank)) == 0
            for loader in loaders
        ]
        if all(empty):
            raise ValueError(
                f"the evaluated sets hold {', '.join(map(str, sizes))} frames, too few for "
                f"{world_size} processes: process {rank} would score none. Evaluate on at most "
                f"{max(sizes)} processes (trainer.devices)"
            )


class AnomalyEvaluation(L.LightningModule):
    """Score anomaly datasets (and an inlier set for mIoU) with several heads at once.

    Use with ``trainer.test(module, dataloaders=[...])`` where the loaders follow
    ``dataset_names``. Batches of a dataset listed in ``anomaly_datasets`` must carry ``anomaly``
    (uint8 [N, H, W]: 0 inlier, 1 anomaly, 255 void); the dataset named ``inlier_dataset`` must
    carry ``label`` (train ids). After the run, :attr:`results` holds
    ``{head: {"miou": ..., "iou": [...], "datasets": {dataset: {ap, fpr95, auroc, ...}}}}``
    and :attr:`curves` the PR / ROC curves ``{head: {dataset: {threshold, tpr, fpr,
    precision}}}``. With ``per_image``, each dataset entry also lists every image's AP and
    anomaly fraction by name (the batches' ``name``; by position without one), computed on every
    ``per_image_stride``-th pixel of each row and column (1: exact; see :class:`AnomalyMetrics`).

    ``protocols`` maps protocol names to their configs (``conf/protocol/*.yaml``; default: only
    ``fishyscapes``). The ``fishyscapes`` values fill ``"datasets"`` (and the curves); every other
    protocol's values go to ``results[head]["protocols"][protocol][dataset]``, built and computed
    by :mod:`fsbench.metrics.suite` exactly as ``fsbench score`` does (``{"error": message}``
    where a protocol is undefined on a set, e.g. per-image metrics without a frame holding both
    classes).

    Under DDP every process scores its own frames; metric states are summed (per-image values
    and names concatenated in rank order) at the epoch end. Each frame must be scored exactly
    once: loaders whose sampler pads (Lightning's default test ``DistributedSampler`` repeats
    frames to even out the processes) are refused; give them an
    :class:`~fsbench.data.datamodule.UnpaddedDistributedSampler`, as
    ``SegmentationDataModule.anomaly_dataloaders()`` and ``inlier_dataloader()`` do.
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
        protocols: Mapping[str, Mapping[str, Any]] | None = None,
        score_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("no anomaly head selected; pass e.g. head=max_softmax")
        if protocols is None:
            from fsbench.metrics.suite import protocol_config

            protocols = {"fishyscapes": protocol_config("fishyscapes")}
        if not protocols:
            raise ValueError("no protocol selected; pass e.g. protocol=[fishyscapes]")
        self.protocols = {name: dict(node) for name, node in protocols.items()}
        self.score_dir = Path(score_dir) if score_dir is not None else None
        self.segmenter = segmenter.eval()
        self.heads = nn.ModuleDict(dict(heads))
        self.dataset_names = list(dataset_names)
        self.anomaly_datasets = list(anomaly_datasets)
        self.inlier_dataset = inlier_dataset
        fishyscapes = self.protocols.get("fishyscapes")
        self.anomaly_metrics = nn.ModuleDict(
            {
                head: nn.ModuleDict(
                    {
                        ds: protocol_metric(
                            "fishyscapes",
                            fishyscapes,
                            ds,
                            ignore_index,
                            per_image=per_image,
                            per_image_stride=per_image_stride,
                        )
                        for ds in self.anomaly_datasets
                    }
                )
                for head in (self.heads if fishyscapes is not None else ())
            }
        )
        others = [name for name in self.protocols if name != "fishyscapes"]
        self.protocol_metrics = nn.ModuleDict(
            {
                name: nn.ModuleDict(
                    {
                        head: nn.ModuleDict(
                            {
                                ds: protocol_metric(name, self.protocols[name], ds, ignore_index)
                                for ds in self.anomaly_datasets
                            }
                        )
                        for head in self.heads
                    }
                )
                for name in others
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
        # Unpadded loaders leave a process without frames when a set has fewer frames than
        # there are processes; nothing synchronises per batch, so that is safe here.
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def on_test_start(self) -> None:
        if self.trainer.world_size > 1:
            loaders = self.trainer.test_dataloaders
            loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
            self._refuse_padded_samplers(loaders)
            check_every_process_has_frames(loaders, self.trainer.world_size)

    def _refuse_padded_samplers(self, loaders: list[Any]) -> None:
        for index, loader in enumerate(loaders):
            sampler = getattr(loader, "sampler", None)
            if not isinstance(sampler, DistributedSampler) or isinstance(
                sampler, UnpaddedDistributedSampler
            ):
                continue
            frames = len(sampler.dataset)
            if sampler.drop_last or sampler.total_size != frames:
                name = self.dataset_names[index] if index < len(self.dataset_names) else index
                raise ValueError(
                    f"the {name} loader's {type(sampler).__name__} spreads {frames} frames over "
                    f"{sampler.num_replicas} processes as {sampler.total_size}: frames would be "
                    "scored twice or not at all. Build the loaders with SegmentationDataModule "
                    "(anomaly_dataloaders, inlier_dataloader) or give them "
                    "sampler=fsbench.data.datamodule.UnpaddedDistributedSampler(dataset)"
                )

    @torch.inference_mode()
    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        dataset = self.dataset_names[dataloader_idx]
        predictions = predict_heads(self.segmenter, self.heads, batch["image"])
        if dataset in self.anomaly_datasets:
            self.image_names[dataset] += list(batch.get("name", []))
        names = batch.get("name")
        for head, prediction in predictions.items():
            if dataset in self.anomaly_datasets:
                score = match_label_size(prediction.score, batch["anomaly"])
                if head in self.anomaly_metrics:
                    self.anomaly_metrics[head][dataset].update(score, batch["anomaly"])
                for metrics in self.protocol_metrics.values():
                    update_metric(metrics[head][dataset], score, batch["anomaly"], names)
                if self.score_dir is not None:
                    self._save_scores(head, dataset, score, names)
            if dataset == self.inlier_dataset:
                self.segmentation_metrics[head].update(prediction.logits, batch["label"])

    def _save_scores(
        self, head: str, dataset: str, score: Tensor, names: Sequence[str] | None
    ) -> None:
        """Each frame's score map as float32 ``<score_dir>/<head>/<dataset>/<name>.npy``: the
        maps the protocols scored, for ``fsbench score`` (which gives the same numbers)."""
        if not names or len(names) != score.shape[0]:
            raise ValueError(
                f"save_scores needs the frames' names, and the {dataset} batches carry none"
            )
        folder = self.score_dir / head / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in zip(names, score.to(torch.float32).cpu().numpy(), strict=True):
            np.save(folder / f"{name}.npy", frame)

    def on_test_epoch_end(self) -> None:
        self._gather_image_names()
        for head in self.heads:
            entry: dict[str, Any] = {"datasets": {}}
            if self.inlier_dataset is not None:
                seg = self.segmentation_metrics[head].compute()
                entry["miou"], entry["iou"] = seg["miou"], seg["iou"]
            self.curves[head] = {}
            for name, metrics in self.protocol_metrics.items():
                entry.setdefault("protocols", {})[name] = {
                    dataset: _values_or_error(name, metrics[head][dataset])
                    for dataset in self.anomaly_datasets
                }
            for dataset in self.anomaly_datasets if head in self.anomaly_metrics else ():
                metric = self.anomaly_metrics[head][dataset]
                values, curves = metric.compute_with_curves()  # one sync serves both
                total = values["n_anomaly"] + values["n_inlier"]
                values["anomaly_fraction"] = values["n_anomaly"] / total
                if "per_image" in values:
                    values["per_image"] = self._name_images(dataset, values["per_image"])
                entry["datasets"][dataset] = values
                self.curves[head][dataset] = curves
            self.results[head] = entry

    def _gather_image_names(self) -> None:
        """Under DDP: every process's names, in rank order (the order of the gathered values)."""
        names = self.image_names
        self.image_names = {ds: gather_objects(names[ds]) for ds in self.anomaly_datasets}

    def _name_images(self, dataset: str, per_image: dict[str, list[float]]) -> list[dict]:
        names = self.image_names[dataset]
        if len(names) != len(per_image["ap"]):  # batches without names
            names = [f"#{index}" for index in range(len(per_image["ap"]))]
        return [
            {"name": name, "ap": ap, "anomaly_fraction": fraction}
            for name, ap, fraction in zip(
                names, per_image["ap"], per_image["anomaly_fraction"], strict=True
            )
        ]


def _values_or_error(name: str, metric: Any) -> dict[str, Any]:
    """A protocol's values, or ``{"error": message}`` where it is undefined on the set."""
    try:
        return protocol_values(name, metric)
    except ValueError as error:
        return {"error": str(error)}
