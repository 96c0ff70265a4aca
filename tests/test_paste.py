"""Outlier pasting: blending modes against closed forms, the folder source, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from fsbench.data import FolderOutliers, OutlierPasting, paste_object, poisson_blend


def _residual(f, g, t, mask):
    """Max violation of the discrete Poisson equation that poisson_blend solves."""
    h, w = mask.shape
    worst = 0.0
    for y, x in zip(*np.nonzero(mask), strict=True):
        lhs = rhs = 0.0
        for qy, qx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= qy < h and 0 <= qx < w:
                lhs += f[y, x] - f[qy, qx]
                rhs += g[y, x] - g[qy, qx]
        worst = max(worst, float(np.abs(lhs - rhs).max()))
    return worst


def test_poisson_blend_solves_the_discrete_poisson_equation():
    rng = np.random.default_rng(0)
    target, source = rng.random((12, 15, 3)), rng.random((12, 15, 3))
    mask = np.zeros((12, 15), bool)
    mask[3:9, 4:12] = True
    mask[0, 0:3] = True  # touching the array border: those neighbours are left out
    out = poisson_blend(target, source, mask)
    assert _residual(out, source, target, mask) < 1e-9
    np.testing.assert_array_equal(out[~mask], target[~mask])


def test_poisson_blend_of_a_shifted_copy_gives_the_target_back():
    """Same gradients, boundary from the target: the unique solution is the target itself."""
    rng = np.random.default_rng(1)
    target = rng.random((10, 10, 3))
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:7] = True
    np.testing.assert_allclose(poisson_blend(target, target + 0.3, mask), target, atol=1e-9)
    # a linear ramp pasted onto a constant background: harmonic with constant boundary = constant
    ramp = np.broadcast_to(np.linspace(0, 1, 10)[None, :, None], (10, 10, 3))
    flat = np.full((10, 10, 3), 0.25)
    np.testing.assert_allclose(poisson_blend(flat, ramp, mask), flat, atol=1e-9)


def _place(blend, feather=2.0):
    image = torch.zeros(3, 40, 40)
    rgb = np.ones((20, 20, 3), np.float32)
    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True

    class Centre:  # a generator whose integers() puts the object at (10, 10)
        def integers(self, low, high):
            return 10

    region = paste_object(image, rgb, mask, Centre(), blend, feather)
    return image, region


def test_hard_and_feathered_pasting():
    image, region = _place("hard")
    assert region.sum() == 16 * 16 and region[12:28, 12:28].all()
    assert torch.equal(image[0] > 0, region)  # hard: exactly the mask is painted
    assert image[:, region].eq(1).all()
    image, region = _place("feather", feather=2.0)
    alpha = image[0]
    assert alpha[~region].eq(0).all()  # nothing outside the mask
    assert alpha[20, 20] == pytest.approx(1.0)  # deep inside: the object
    assert 0 < alpha[12, 20] < 0.5  # at the edge: mostly background
    assert (alpha[12:20, 20].diff() >= 0).all()  # rising inwards


def test_poisson_pasting_keeps_labels_hard():
    image, region = _place("poisson")
    assert region.sum() == 256
    # a uniform object has zero gradients: cloned onto a black image it stays black
    assert image.abs().max() < 1e-6


def _object_folder(tmp_path, stems=("a", "b"), drop_mask=None):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, stem in enumerate(stems):
        rgb = np.full((30, 50, 3), 40 * (i + 1), np.uint8)
        mask = np.zeros((30, 50), np.uint8)
        mask[5:25, 10:20] = 255  # a 20 x 10 object
        Image.fromarray(rgb).save(tmp_path / "images" / f"{stem}.jpg", quality=100)
        if stem != drop_mask:
            Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")
    return tmp_path


def test_folder_outliers_crop_to_the_mask_and_scale_the_longer_side(tmp_path):
    source = FolderOutliers(_object_folder(tmp_path))
    rgb, mask = source.sample(np.random.default_rng(0), 40)
    assert mask.shape == (40, 20) and rgb.shape == (40, 20, 3)  # 20x10 box, longer side 40
    assert mask.all()
    assert rgb.min() >= 0 and rgb.max() <= 1
    pasted = OutlierPasting(_Plain(), source=source, probability=1.0, blend="feather")
    assert pasted[0]["outlier"].any()


def test_folder_outliers_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/<stem>"):
        FolderOutliers(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"lack their image or mask.*'b'"):
        FolderOutliers(_object_folder(tmp_path, drop_mask="b"))
    with pytest.raises(ValueError, match="blend"):
        OutlierPasting(_Plain(), blend="alpha")


class _Plain(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return {"image": torch.full((3, 40, 60), 0.5), "label": torch.zeros(40, 60).long()}
