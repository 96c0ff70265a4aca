"""Outlier pasting: the training data of outlier exposure and the void classifier.

Training-time anomaly methods need pixels that play the unknown: Hendrycks et al. (ICLR 2019)
expose the network to an auxiliary outlier dataset, and Chan et al. (ICCV 2021) adapt this to
segmentation by pasting COCO objects into Cityscapes images. :class:`OutlierPasting` wraps any
training set and pastes objects from an :class:`OutlierSource` into a share of its images; the
pasted pixels get label 255 (so the inlier cross-entropy ignores them) and ``outlier`` = 1.

:class:`PolygonOutliers` is the source that needs nothing on disk: random polygons and ellipses
with noise textures. They are deliberately *not* the synthetic anomaly split's objects (stars,
rings, crosses, blobs, boxes, diamonds in a fixed saturated palette with checker, stripe and dot
textures): like COCO versus Fishyscapes' objects, the proxy outliers share only "not a street
class" with the test anomalies, so a method cannot score well by memorising the test objects.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE = 255


class OutlierSource(Protocol):
    """Draws one outlier object: ``(rgb float32 [h, w, 3] in [0, 1], mask bool [h, w])``."""

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]: ...


class PolygonOutliers:
    """Random polygons (3 to ``max_vertices`` corners) and ellipses with value-noise textures.

    Args:
        max_vertices: most corners of a polygon.
        ellipse_share: fraction of ellipses among the objects.
    """

    def __init__(self, max_vertices: int = 7, ellipse_share: float = 0.3) -> None:
        if max_vertices < 3:
            raise ValueError(
                f"a polygon needs at least 3 vertices, got max_vertices={max_vertices}"
            )
        if not 0 <= ellipse_share <= 1:
            raise ValueError(f"ellipse_share must lie in [0, 1], got {ellipse_share}")
        self.max_vertices = max_vertices
        self.ellipse_share = ellipse_share

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        size = max(4, int(size))
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        yy, xx = (yy + 0.5) / size * 2 - 1, (xx + 0.5) / size * 2 - 1  # [-1, 1]
        if rng.random() < self.ellipse_share:
            ry, rx = rng.uniform(0.4, 1.0, size=2)
            mask = (yy / ry) ** 2 + (xx / rx) ** 2 < 1
        else:
            corners = int(rng.integers(3, self.max_vertices + 1))
            angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
            radii = rng.uniform(0.5, 1.0, corners)
            mask = _inside_polygon(yy, xx, radii * np.sin(angles), radii * np.cos(angles))
        base = rng.random(3).astype(np.float32)
        second = rng.random(3).astype(np.float32)
        grid = rng.random((4, 4)).astype(np.float32)
        noise = np.kron(grid, np.ones((size // 4 + 1, size // 4 + 1), np.float32))[:size, :size]
        rgb = base + (second - base) * noise[..., None] * rng.uniform(0, 1)
        return np.clip(rgb, 0, 1).astype(np.float32), mask


def _inside_polygon(yy: np.ndarray, xx: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Even-odd rule: which grid points lie inside the polygon with vertices (py, px)."""
    inside = np.zeros(yy.shape, bool)
    for i in range(len(py)):
        y0, x0, y1, x1 = py[i - 1], px[i - 1], py[i], px[i]
        crosses = (y0 > yy) != (y1 > yy)
        x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0 if y1 != y0 else 1e-12)
        inside ^= crosses & (xx < x_at)
    return inside


class OutlierPasting(Dataset):
    """Paste outlier objects into a share of a training set's images.

    Items gain ``outlier`` uint8 [H, W] (1 on pasted pixels, 0 elsewhere, also in untouched
    images); ``label`` becomes 255 on pasted pixels. What is pasted into image ``i`` is fixed by
    ``(seed, i)``, so runs are reproducible whatever the loader order.

    Args:
        dataset: the training set (items ``{image float [3, H, W], label int64 [H, W], ...}``).
        source: an :class:`OutlierSource` (default :class:`PolygonOutliers`).
        probability: share of images that receive outliers.
        max_objects: an image that receives outliers gets 1 to ``max_objects`` of them.
        min_size, max_size: object side as a fraction of the image height.
        seed: base seed of the pasting.
    """

    def __init__(
        self,
        dataset: Dataset,
        source: OutlierSource | None = None,
        probability: float = 0.5,
        max_objects: int = 2,
        min_size: float = 0.08,
        max_size: float = 0.35,
        seed: int = 0,
    ) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"pasting probability must lie in [0, 1], got {probability}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        if not 0 < min_size <= max_size <= 1:
            raise ValueError(
                f"need 0 < min_size <= max_size <= 1 (fractions of the image height), got "
                f"min_size={min_size}, max_size={max_size}"
            )
        if source is not None and not callable(getattr(source, "sample", None)):
            raise TypeError(
                f"outlier source must have a sample(rng, size) method, got {type(source).__name__}"
            )
        self.dataset = dataset
        self.source = source if source is not None else PolygonOutliers()
        self.probability, self.max_objects = probability, max_objects
        self.min_size, self.max_size, self.seed = min_size, max_size, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        image, label = item["image"].clone(), item["label"].clone()
        height, width = label.shape
        outlier = torch.zeros((height, width), dtype=torch.uint8)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x0E, index]))
        if rng.random() < self.probability:
            for _ in range(int(rng.integers(1, self.max_objects + 1))):
                side = int(height * rng.uniform(self.min_size, self.max_size))
                rgb, mask = self.source.sample(rng, side)
                self._paste(image, label, outlier, rgb, mask, rng)
        item.update(image=image, label=label, outlier=outlier)
        return item

    @staticmethod
    def _paste(image, label, outlier, rgb, mask, rng) -> None:
        """Paste at a random place; objects may stick out of the image and are clipped."""
        height, width = label.shape
        h, w = mask.shape
        top = int(rng.integers(-h // 2, height - h // 2))
        left = int(rng.integers(-w // 2, width - w // 2))
        y0, y1 = max(top, 0), min(top + h, height)
        x0, x1 = max(left, 0), min(left + w, width)
        if y0 >= y1 or x0 >= x1:
            return
        crop = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        region = torch.from_numpy(np.ascontiguousarray(mask[crop]))
        colours = torch.from_numpy(np.ascontiguousarray(rgb[crop])).permute(2, 0, 1)
        target = image[:, y0:y1, x0:x1]
        image[:, y0:y1, x0:x1] = torch.where(region, colours.to(image.dtype), target)
        label[y0:y1, x0:x1][region] = IGNORE
        outlier[y0:y1, x0:x1][region] = 1
