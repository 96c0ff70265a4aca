"""Build a Fishyscapes-Static-like anomaly set from Cityscapes-layout inlier images.

``python -m fsbench.data make-anomaly-set CITYSCAPES_ROOT OUT [--objects FOLDER] ...`` pastes
objects (real ones from a :class:`~fsbench.data.paste.FolderOutliers` folder, or the procedural
polygons) into the frames of one Cityscapes split and writes them in the layout of Fishyscapes
Static, so :class:`~fsbench.data.anomaly_sets.FishyscapesStatic` (``data=fishyscapes``) reads the
result like the official set:

* ``OUT/fs_val_v{version}/DDDD_<frame>_labels.png``: 1 on pasted pixels, 255 where the Cityscapes
  label is void (ignore, train id 255) and nothing was pasted, 0 elsewhere;
* ``OUT/fs_val_v{version}/DDDD_<frame>_rgb.npz``: array ``rgb``, int16 [H, W, 3], the signed
  overlay ``pasted - base`` that the reader adds back to the Cityscapes frame.

Everything is fixed by ``seed``: frame ``i`` draws its objects from ``SeedSequence([seed, i])``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fsbench.data.cityscapes import Cityscapes
from fsbench.data.paste import BLENDS, FolderOutliers, OutlierSource, PolygonOutliers, paste_object


def make_static_like(
    cityscapes_root: str | Path,
    out_root: str | Path,
    split: str = "val",
    count: int | None = None,
    source: OutlierSource | None = None,
    blend: str = "poisson",
    objects: tuple[int, int] = (1, 3),
    size: tuple[float, float] = (0.05, 0.2),
    seed: int = 0,
    version: int = 3,
) -> Path:
    """Write the anomaly set; return its folder ``out_root/fs_val_v{version}``.

    Args:
        cityscapes_root: a tree in the Cityscapes layout (``leftImg8bit/`` and ``gtFine/``).
        out_root: where ``fs_val_v{version}/`` is created (it must not hold files already).
        split: the Cityscapes split whose frames receive objects.
        count: the first ``count`` frames (sorted by name); None = all.
        source: where objects come from (default: procedural polygons).
        blend: ``hard``, ``feather`` or ``poisson`` (the Fishyscapes Static way).
        objects: (fewest, most) objects per frame.
        size: (smallest, largest) object side as a fraction of the frame height.
        seed: base seed.
        version: the ``fs_val_v{version}`` folder name.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if not 1 <= objects[0] <= objects[1]:
        raise ValueError(f"objects must be (fewest, most) with 1 <= fewest <= most, got {objects}")
    inliers = Cityscapes(cityscapes_root, split=split)
    folder = Path(out_root) / f"fs_val_v{version}"
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already holds files; choose an empty output folder")
    folder.mkdir(parents=True, exist_ok=True)
    source = source if source is not None else PolygonOutliers()
    total = len(inliers) if count is None else min(count, len(inliers))
    for index in tqdm(range(total), desc="pasting objects", disable=None):
        item = inliers[index]
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        base = (item["image"] * 255).round().to(torch.uint8)
        image = base.float() / 255
        height = image.shape[1]
        pasted = torch.zeros(image.shape[1:], dtype=torch.bool)
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            side = int(height * rng.uniform(*size))
            rgb, mask = source.sample(rng, side)
            region = paste_object(image, rgb, mask, rng, blend)
            if region is not None:
                pasted |= region
        result = (image.clamp(0, 1) * 255).round().to(torch.int16)
        overlay = (result - base.to(torch.int16)).permute(1, 2, 0).numpy()
        label = np.where(pasted.numpy(), 1, np.where(item["label"].numpy() == 255, 255, 0))
        stem = f"{index:04d}_{item['name']}"
        Image.fromarray(label.astype(np.uint8), mode="L").save(folder / f"{stem}_labels.png")
        np.savez_compressed(folder / f"{stem}_rgb.npz", rgb=overlay)
    return folder


def folder_or_polygons(objects: str | None) -> OutlierSource:
    """The CLI's ``--objects``: a FolderOutliers folder, or None for the procedural polygons."""
    return PolygonOutliers() if objects is None else FolderOutliers(objects)
