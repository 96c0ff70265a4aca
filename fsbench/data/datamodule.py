"""One LightningDataModule for every dataset: a training set, a validation set, anomaly sets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class SegmentationDataModule(L.LightningDataModule):
    """Loaders for training a segmenter and evaluating anomaly heads.

    Args:
        train: inlier training set; items ``{image, label, name}``.
        val: inlier validation set (same items); evaluation reports its mIoU.
        anomaly: anomaly sets by name; items ``{image, anomaly, name}`` with ``anomaly`` uint8
            [H, W] holding 0 inlier, 1 anomaly, 255 void.
        batch_size: training batch size.
        eval_batch_size: batch size of validation and evaluation.
        num_workers: loader worker processes.
        shared: values that the dataset configs interpolate (image size, seed); kept for the record.
        paste_outliers: optional ``dataset -> dataset`` wrapper applied to the training set, e.g.
            a partial :class:`fsbench.data.OutlierPasting` for outlier exposure or the void
            classifier (its items gain ``outlier``).
    """

    def __init__(
        self,
        train: Dataset | None = None,
        val: Dataset | None = None,
        anomaly: Mapping[str, Dataset] | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        shared: Mapping[str, Any] | None = None,
        paste_outliers: Callable[[Dataset], Dataset] | None = None,
    ) -> None:
        super().__init__()
        if paste_outliers is not None and train is not None:
            train = paste_outliers(train)
        self.train_set, self.val_set = train, val
        self.anomaly_sets = dict(anomaly or {})
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.shared = dict(shared or {})

    def _loader(self, dataset: Dataset | None, role: str, shuffle: bool, batch_size: int):
        if dataset is None:
            raise ValueError(
                f"this data config defines no {role} set; set data.{role} in the config"
            )
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(
                f"the {role} set ({type(dataset).__name__}) is empty; check data.{role} in the "
                "config: its root folder, split and file pattern, or its length"
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # faster host-to-GPU copies
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "val", False, self.eval_batch_size)

    def anomaly_dataloaders(self) -> dict[str, DataLoader]:
        if not self.anomaly_sets:
            raise ValueError("this data config defines no anomaly set; set data.anomaly.NAME")
        return {
            name: self._loader(dataset, f"anomaly.{name}", False, self.eval_batch_size)
            for name, dataset in self.anomaly_sets.items()
        }
