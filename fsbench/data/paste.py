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
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

IGNORE = 255
BLENDS = ("hard", "feather", "poisson")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


class FolderOutliers:
    """Objects cut out of real images: ``root/images/<stem>.{png,jpg}`` + ``root/masks/<stem>.png``.

    A mask is a single-channel PNG, nonzero on the object (e.g. one COCO or Pascal VOC instance
    mask per file, exported by the user). Each draw picks an object uniformly, crops it to its
    mask's bounding box and scales it so that its longer side is ``size`` pixels.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        images, masks = root / "images", root / "masks"
        for folder in (images, masks):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"outlier folder {folder} does not exist; FolderOutliers expects "
                    f"{root}/images/<stem>.png|jpg and {root}/masks/<stem>.png"
                )
        by_stem = {p.stem: p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        mask_stems = {p.stem for p in masks.glob("*.png")}
        self.stems = sorted(set(by_stem) & mask_stems)
        unpaired = sorted(set(by_stem) ^ mask_stems)
        if unpaired:
            raise ValueError(
                f"{len(unpaired)} outlier objects lack their image or mask in {root}, e.g. "
                f"{unpaired[:5]}; every images/<stem> needs masks/<stem>.png and vice versa"
            )
        if not self.stems:
            raise ValueError(f"no outlier objects in {root}/images and {root}/masks")
        self.images, self.masks = by_stem, masks

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        stem = self.stems[int(rng.integers(len(self.stems)))]
        with Image.open(self.images[stem]) as img, Image.open(self.masks / f"{stem}.png") as msk:
            rgb, mask = np.asarray(img.convert("RGB")), np.asarray(msk.convert("L")) > 0
        if rgb.shape[:2] != mask.shape:
            raise ValueError(f"outlier {stem}: image {rgb.shape[:2]} and mask {mask.shape} differ")
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ValueError(f"outlier mask {self.masks / stem}.png is empty")
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        rgb, mask = rgb[box], mask[box]
        scale = max(1, int(size)) / max(mask.shape)
        new = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(new, Image.BILINEAR), np.float32) / 255
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(new, Image.NEAREST))
        return rgb, mask > 0


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Seamless cloning (Pérez et al., SIGGRAPH 2003), as used to build Fishyscapes Static.

    Inside ``mask`` the result f keeps the source's gradients, solving the discrete Poisson
    equation sum_q (f_p - f_q) = sum_q (g_p - g_q) over the 4-neighbours q of each masked pixel p,
    with f = target on unmasked neighbours; neighbours outside the array are left out.
    target, source float [h, w, C]; mask bool [h, w]. Returns float [h, w, C].
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    index = -np.ones((h, w), np.int64)
    index[ys, xs] = np.arange(ys.size)
    rows, cols, values = [], [], []
    degree = np.zeros(ys.size)
    rhs = np.zeros((ys.size, source.shape[2]))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        p = np.flatnonzero(inside)
        qy, qx = qy[inside], qx[inside]
        degree[p] += 1
        rhs[p] += source[ys[p], xs[p]] - source[qy, qx]
        neighbour = index[qy, qx]
        unknown = neighbour >= 0
        rows.append(p[unknown])
        cols.append(neighbour[unknown])
        values.append(-np.ones(unknown.sum()))
        rhs[p[~unknown]] += target[qy[~unknown], qx[~unknown]]
    n = ys.size
    matrix = coo_matrix(
        (
            np.concatenate([degree, *values]),
            (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols])),
        ),
        shape=(n, n),
    ).tocsc()
    solution = spsolve(matrix, rhs)
    out = target.astype(np.float64).copy()
    out[ys, xs] = solution.reshape(n, -1)
    return out


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
        blend: ``hard`` (copy the object's pixels), ``feather`` (alpha falling off over
            ``feather`` pixels inside the object's edge) or ``poisson`` (seamless cloning, as
            Fishyscapes Static; see :func:`poisson_blend`). Labels always follow the hard mask.
        feather: width in pixels of the feathered edge.
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
        blend: str = "hard",
        feather: float = 2.0,
    ) -> None:
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
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
        self.blend, self.feather = blend, feather

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
                region = paste_object(image, rgb, mask, rng, self.blend, self.feather)
                if region is not None:
                    label[region] = IGNORE
                    outlier[region] = 1
        item.update(image=image, label=label, outlier=outlier)
        return item


def paste_object(
    image: torch.Tensor,
    rgb: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    blend: str = "hard",
    feather: float = 2.0,
) -> torch.Tensor | None:
    """Paste one object into image float [3, H, W] in place, at a random place (objects may stick
    out of the image and are clipped). Returns the pasted pixels, bool [H, W], or None.
    """
    _, height, width = image.shape
    h, w = mask.shape
    top = int(rng.integers(-h // 2, height - h // 2))
    left = int(rng.integers(-w // 2, width - w // 2))
    y0, y1 = max(top, 0), min(top + h, height)
    x0, x1 = max(left, 0), min(left + w, width)
    crop = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    if y0 >= y1 or x0 >= x1 or not mask[crop].any():
        return None
    region = torch.from_numpy(np.ascontiguousarray(mask[crop]))
    colours = torch.from_numpy(np.ascontiguousarray(rgb[crop])).permute(2, 0, 1).to(image.dtype)
    target = image[:, y0:y1, x0:x1]
    if blend == "poisson":
        blended = poisson_blend(
            target.permute(1, 2, 0).double().numpy(),
            colours.permute(1, 2, 0).double().numpy(),
            region.numpy(),
        )
        colours = torch.from_numpy(blended).permute(2, 0, 1).clamp(0, 1).to(image.dtype)
        alpha = region.to(image.dtype)
    elif blend == "feather" and feather > 0:
        alpha = _feathered(region, feather).to(image.dtype)
    else:
        alpha = region.to(image.dtype)
    image[:, y0:y1, x0:x1] = alpha * colours + (1 - alpha) * target
    full = torch.zeros((height, width), dtype=torch.bool)
    full[y0:y1, x0:x1] = region
    return full


def _feathered(region: torch.Tensor, width: float) -> torch.Tensor:
    """Alpha in [0, 1]: 0 outside the mask, rising over about ``width`` pixels inside its edge."""
    radius = max(1, int(math.ceil(2 * width)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * width**2))
    kernel = kernel / kernel.sum()
    x = region[None, None].float()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    inner = (2 * x[0, 0] - 1).clamp(0, 1)  # 0 at the edge (blur 0.5), 1 deep inside
    return torch.where(region, inner.clamp(min=0.05), torch.zeros_like(inner))
