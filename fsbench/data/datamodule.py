"""One LightningDataModule for every dataset: a training set, a validation set, anomaly sets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Every index exactly once across the processes: each its own contiguous block, no padding.

    torch's ``DistributedSampler`` (and Lightning's, injected into test loaders) pads the indices
    to a multiple of the number of processes by repeating some, so a frame can be scored twice.
    Here process r of W takes ``range(n * r // W, n * (r + 1) // W)``: the blocks differ by at
    most one index, and concatenated in rank order they are ``0 .. n-1``, the order in which
    metric states gathered with ``cat`` (per-image values) come back.

    The process group is read when the sampler is iterated, not when it is built, so the loaders
    can be made before Lightning starts the processes; outside a process group it is sequential.
    Being a ``DistributedSampler``, Lightning keeps it as it is under any strategy. Processes
    run different numbers of batches, which is safe for inference (``trainer.test``: nothing
    synchronises per batch), not for training under DDP.
    """

    # DistributedSampler.__init__ is not called: it fixes rank and world size at construction.
    def __init__(
        self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        self.dataset = dataset
        self._num_replicas, self._rank = num_replicas, rank
        self.shuffle, self.drop_last, self.seed, self.epoch = False, False, 0, 0

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        if self._num_replicas is not None:
            return self._num_replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:  # type: ignore[override]
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def _indices(self) -> range:
        size, world, rank = len(self.dataset), self.num_replicas, self.rank
        return range(size * rank // world, size * (rank + 1) // world)

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        return len(self._indices())

    @property
    def total_size(self) -> int:  # type: ignore[override]
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


class SegmentationDataModule(L.LightningDataModule):
    """Loaders for training a segmenter and evaluating anomaly heads.

    Loaders: :meth:`train_dataloader` (shuffled, ``drop_last``, outliers pasted if configured)
    trains the segmenter; :meth:`fit_dataloader` is what heads fit their statistics on: the
    training set as stored (no outliers pasted; the readers apply no random augmentation), every
    image once in index order at ``eval_batch_size``, so a fitted head does not depend on a
    shuffle or lose the last partial batch. :meth:`anomaly_dataloaders` and
    :meth:`inlier_dataloader` serve the evaluation: in index order through an
    :class:`UnpaddedDistributedSampler`, so under DDP every frame is scored exactly once.
    :meth:`val_dataloader` (validation during training) is left to Lightning's sampler.

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
        self.fit_set = train  # heads fit on the stored images, never on pasted outliers
        if paste_outliers is not None and train is not None:
            train = paste_outliers(train)
        self.train_set, self.val_set = train, val
        self.anomaly_sets = dict(anomaly or {})
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.shared = dict(shared or {})

    def _loader(
        self,
        dataset: Dataset | None,
        role: str,
        shuffle: bool,
        batch_size: int,
        unpadded: bool = False,
    ) -> DataLoader:
        if dataset is None:
            raise ValueError(
                f"this data config defines no {role} set; set data.{role} in the config"
            )
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(
                f"the {role} set ({type(dataset).__name__}) is empty; check data.{role} in the "
                "config: its root folder, split and file pattern, or its length"
            )
        sampler: Sampler | None = UnpaddedDistributedSampler(dataset) if unpadded else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),  # faster host-to-GPU copies
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", True, self.batch_size)

    def fit_dataloader(self) -> DataLoader:
        """The training images for fitting heads: each once, in index order, none augmented."""
        return self._loader(self.fit_set, "train", False, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "val", False, self.eval_batch_size)

    def inlier_dataloader(self) -> DataLoader:
        """The validation set for the evaluation's mIoU: every frame once under DDP."""
        return self._loader(self.val_set, "val", False, self.eval_batch_size, unpadded=True)

    def anomaly_dataloaders(self) -> dict[str, DataLoader]:
        if not self.anomaly_sets:
            raise ValueError("this data config defines no anomaly set; set data.anomaly.NAME")
        return {
            name: self._loader(
                dataset, f"anomaly.{name}", False, self.eval_batch_size, unpadded=True
            )
            for name, dataset in self.anomaly_sets.items()
        }
