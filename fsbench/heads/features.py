"""Helpers for heads that model the decoder features: training pixels, samples, pixel maps.

A feature head fits a model of the decoder features (``SegOutput.features``, float [N, D, h, w]
with h = ceil(H / 4)) of the training images in one streaming pass over the training loader,
scores every feature pixel, and resizes the score bilinearly to the image (float32 [N, H, W],
higher = more anomalous). The pieces every such head needs:

* :func:`training_pixels`: the usable training features of each batch, as rows [P, D], with
  their classes. The ground-truth label is resized to feature resolution by nearest neighbour
  (``nearest-exact``: the label pixel at the centre of each 4 x 4 cell); feature pixels whose
  label is ``ignore_index`` (void, unlabelled) are left out. A batch without a ``label`` uses
  every pixel.
* :class:`FeatureReservoir`: a uniform sample of at most ``capacity`` of those rows (reservoir
  sampling), so a bank of training features does not grow with the dataset.
* :func:`feature_pixels`, :func:`in_chunks` and :func:`pixels_to_image`: from features to rows
  [N * h * w, D], a row-wise score in bounded memory, and back to an image-sized score map.
* :func:`positive_int`: the check of a head's integer options, with the head's name.

For example, a head scoring the distance to the mean training feature::

    class DistanceToMean(AnomalyHead):
        def __init__(self) -> None:
            super().__init__()
            self.register_fitted("mean")

        def fit(self, segmenter, loader) -> None:
            reservoir = FeatureReservoir(20000)
            with torch.inference_mode():
                for rows, _ in training_pixels(segmenter, loader, "mean feature"):
                    reservoir.add(rows)
            self.mean = reservoir.sample.mean(dim=0)

        def score(self, out):
            self.check_fitted()
            x, shape = feature_pixels(out.features)
            distance = in_chunks(lambda rows: (rows - self.mean).norm(dim=1), x, 65536)
            return pixels_to_image(distance, shape, out.logits.shape[-2:])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from fsbench.heads.base import device_of, resize_score
from fsbench.models.protocol import check_segmenter

__all__ = [
    "FeatureReservoir",
    "feature_pixels",
    "in_chunks",
    "pixels_to_image",
    "positive_int",
    "training_pixels",
]

# The values of training_pixels' ``assign``: where a training pixel's class comes from.
_ASSIGNS = ("label", "prediction", None)


def training_pixels(
    segmenter: nn.Module,
    loader: Any,
    desc: str,
    ignore_index: int = 255,
    assign: str | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield each batch's usable training features [P, D] and their classes int64 [P] (or None).

    The classes are the labels (``assign="label"``), the segmenter's argmax at image resolution
    (``"prediction"``), both resized to feature resolution by nearest neighbour, or None
    (``None``). Pixels labelled ``ignore_index`` are dropped in every case; batches left without
    any pixel are skipped. ``desc`` names the pass in the progress bar and in errors. Run it under
    the caller's grad mode (``torch.inference_mode()`` for a fit). The segmenter must have
    ``forward`` and ``extract_features`` (:func:`fsbench.models.protocol.check_segmenter`).

    Raises:
        ValueError: for ``assign="label"`` on a batch without a ``label`` entry, or an unknown
            ``assign``.
    """
    if assign not in _ASSIGNS:
        raise ValueError(f"training_pixels: assign must be one of {_ASSIGNS}, got {assign!r}")
    check_segmenter(segmenter, f"fitting the {desc}", needs=("forward", "extract_features"))
    device = device_of(segmenter)
    for batch in tqdm(loader, desc=desc, disable=None):
        images = batch["image"].to(device)
        if assign == "prediction":
            out = segmenter(images)
            features = out.features
            classes = _nearest(out.logits.argmax(dim=1), features.shape[-2:])
        else:
            features = segmenter.extract_features(images)
        labels = batch.get("label")
        if labels is None and assign == "label":
            raise ValueError(f"{desc}: assign=label needs batches with a 'label' entry")
        if labels is None:
            usable = torch.ones_like(features[:, 0], dtype=torch.bool)
        else:
            labels = _nearest(labels.to(device), features.shape[-2:])
            usable = labels != ignore_index
        if assign == "label":
            classes = labels
        pixels = features.permute(0, 2, 3, 1)[usable]
        if pixels.shape[0] > 0:
            yield pixels, None if assign is None else classes[usable]


class FeatureReservoir:
    """A uniform random sample of at most ``capacity`` rows of a stream (Vitter's Algorithm R).

    Algorithm R (Vitter, "Random sampling with a reservoir", ACM TOMS 1985) keeps the first
    ``capacity`` rows; row i > capacity (counting from 1) then replaces a uniformly chosen kept
    row with probability capacity / i. After n rows, each of them is in the sample with
    probability min(1, capacity / n), and the memory is ``capacity`` rows whatever n. :meth:`add`
    does the same for a batch of rows at once, with one uniform draw per row from a generator
    seeded by ``seed``.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.seen = 0
        self.rows: Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, rows: Tensor) -> None:
        """Offer rows [M, D] (in order)."""
        count = rows.shape[0]
        if count == 0:
            return
        if self.rows is None:
            self.rows = rows.new_empty(self.capacity, rows.shape[1])
        position = torch.arange(self.seen, self.seen + count, dtype=torch.int64)  # from 0
        uniform = torch.rand(count, generator=self.generator, dtype=torch.float64)
        slot = torch.minimum((uniform * (position + 1)).long(), position)  # uniform in 0..position
        slot = torch.where(position < self.capacity, position, slot)
        kept = slot < self.capacity
        # Rows replace in stream order, so of several rows drawing one slot the last one stays.
        last = torch.full((self.capacity,), -1, dtype=torch.int64)
        last.scatter_reduce_(0, slot[kept], torch.arange(count)[kept], reduce="amax")
        filled = torch.nonzero(last >= 0)[:, 0]
        self.rows[filled.to(rows.device)] = rows[last[filled].to(rows.device)]
        self.seen += count

    @property
    def sample(self) -> Tensor | None:
        """The kept rows [min(capacity, seen), D], or None before any row."""
        return None if self.rows is None else self.rows[: min(self.capacity, self.seen)]


def feature_pixels(features: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """float32 [N * h * w, D] pixel vectors of features [N, D, h, w], and (N, h, w)."""
    n, d, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(-1, d).float(), (n, h, w)


def in_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int) -> Tensor:
    """fn applied to chunks of at most ``chunk_size`` rows of x, concatenated (bounded memory)."""
    return torch.cat([fn(chunk) for chunk in x.split(chunk_size)])


def pixels_to_image(
    values: Tensor, shape: tuple[int, int, int], size: tuple[int, int] | torch.Size
) -> Tensor:
    """float32 [N, *size]: per-pixel values [N * h * w] (shape (N, h, w)) resized bilinearly.

    The inverse of :func:`feature_pixels` for a score per row; ``size`` is the image's, e.g.
    ``out.logits.shape[-2:]``.
    """
    return resize_score(values.view(shape).float(), size)


def positive_int(value: Any, name: str, owner: object) -> int:
    """``value`` as an int if it is an integer >= 1 (not a bool), else a ValueError naming it.

    The message reads "<owner's class> <name> must be an integer >= 1, got <value>".
    """
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{type(owner).__name__} {name} must be an integer >= 1, got {value}")
    return int(value)


def _nearest(labels: Tensor, size: torch.Size) -> Tensor:
    """int64 [N, h, w]: labels [N, H, W] resized by nearest neighbour (pixel centres)."""
    if labels.shape[-2:] == size:
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()
