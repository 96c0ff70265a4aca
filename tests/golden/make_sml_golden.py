"""Writes the SML golden files of tests/test_sml_golden.py from the official code's own output.

Run by hand (the tests only read the NPZ files it writes next to itself), from the repository root:

    .venv/bin/python tests/golden/make_sml_golden.py \
        --sml-repo /work/.mirror/shjung13+Standardized-max-logits/repo \
        --kornia-repo /work/.mirror/kornia+kornia/repo

(or set SML_REPO and KORNIA_REPO instead of the two options). It needs two git snapshots, bare or
not: shjung13/Standardized-max-logits, which must hold commit c52a513, and kornia/kornia, which
must hold commit af948c5 (the kornia SML pins in its requirements.txt). Into a temporary folder it
extracts, with `git show` and `git archive`, SML's `network/deepv3.py`, the two modules it imports
(`network/mynn.py`, `network/Resnet.py`) with their `config.py` and `utils/`, and kornia's package
at af948c5; nothing of either is copied into fsbench. It then imports the official
`BoundarySuppressionWithSmoothing` and `DeepV3Plus.forward` unmodified, on the CPU:

* `torch.Tensor.cuda` is made the identity before the import (deepv3 builds its morphology kernels
  with `.cuda()` at import time);
* `network/__init__.py` is not run (it imports SML's dataset loaders): a package object with the
  extracted folder as its path stands in for it, so `network.mynn` and `network.Resnet` are the
  original files.

Every case is a seeded label map (fsbench's predicted classes) with a score map derived from
logits, run through every configuration; the official output is stored with the inputs. The score
is the official one (SML, higher = inlier); fsbench scores -SML, and the post-processing is linear,
so the tests negate. The official code ran on torch 1.7; here it runs on the project's torch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mirrors import git, git_dir

SML_COMMIT = "c52a513"
KORNIA_COMMIT = "af948c5"
HERE = Path(__file__).resolve().parent

# name -> BoundarySuppressionWithSmoothing arguments (kernel_size stays 7: the official module
# replaces its convolution's weight by a fixed 7x7, sigma-1 Gaussian whatever kernel_size says).
CONFIGS: dict[str, dict] = {
    "suppress_w4_i4": dict(boundary_suppression=True, dilated_smoothing=False),
    "suppress_w4_i4_smooth_d6": dict(boundary_suppression=True, dilated_smoothing=True),
    "smooth_d6": dict(boundary_suppression=False, dilated_smoothing=True),
    "suppress_w6_i3": dict(boundary_width=6, boundary_iteration=3, dilated_smoothing=False),
    "suppress_w2_i2": dict(boundary_width=2, boundary_iteration=2, dilated_smoothing=False),
    "suppress_w0_i4": dict(boundary_width=0, boundary_iteration=4, dilated_smoothing=False),
    "suppress_w4_i1": dict(boundary_width=4, boundary_iteration=1, dilated_smoothing=False),
    "suppress_w8_i4": dict(boundary_width=8, boundary_iteration=4, dilated_smoothing=False),
    "suppress_w10_i2": dict(boundary_width=10, boundary_iteration=2, dilated_smoothing=False),
    "suppress_w4_i4_smooth_d3": dict(dilation=3),
}
DEFAULTS = dict(
    boundary_suppression=True,
    boundary_width=4,
    boundary_iteration=4,
    dilated_smoothing=True,
    kernel_size=7,
    dilation=6,
)


def _extract(sml_repo: Path, kornia_repo: Path, into: Path) -> dict[str, str]:
    for name in ("network/deepv3.py", "network/mynn.py", "network/Resnet.py", "config.py"):
        target = into / "sml" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(git(sml_repo, "show", f"{SML_COMMIT}:{name}"))
    utils = into / "sml" / "utils"
    utils.mkdir()
    for name in ("__init__.py", "attr_dict.py"):
        (utils / name).write_bytes(git(sml_repo, "show", f"{SML_COMMIT}:utils/{name}"))
    archive = git(kornia_repo, "archive", "--format=tar", KORNIA_COMMIT, "kornia")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into / "kornia", filter="data")
    return {
        "sml_commit": git(sml_repo, "rev-parse", SML_COMMIT).decode().strip(),
        "kornia_commit": git(kornia_repo, "rev-parse", KORNIA_COMMIT).decode().strip(),
        "deepv3_blob": git(sml_repo, "rev-parse", f"{SML_COMMIT}:network/deepv3.py")
        .decode()
        .strip(),
    }


def _import_official(into: Path):
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the CPU stands in for the GPU
    sys.path[:0] = [str(into / "kornia"), str(into / "sml")]
    network = types.ModuleType("network")
    network.__path__ = [str(into / "sml" / "network")]  # skip network/__init__.py (datasets)
    sys.modules["network"] = network
    with contextlib.redirect_stdout(io.StringIO()):  # deepv3 prints its kernels when imported
        import kornia  # noqa: F401  (the pinned one, first on sys.path)
        from network import deepv3
    kornia_file = Path(sys.modules["kornia"].__file__).resolve()
    if not kornia_file.is_relative_to((into / "kornia").resolve()):
        raise SystemExit(f"imported kornia from {kornia_file}, not the extracted af948c5")
    return deepv3


def _smooth_noise(rng: np.random.Generator, shape: tuple, height: int, width: int, cell: int):
    """Random maps [*shape, height, width], bilinear from a grid of about ``cell`` pixels."""
    coarse = torch.from_numpy(
        rng.standard_normal((*shape, max(2, height // cell), max(2, width // cell)))
    )
    flat = coarse.reshape(-1, 1, *coarse.shape[-2:])
    fine = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return fine.reshape(*shape, height, width).numpy()


def _draw_scene(rng: np.random.Generator, height: int, width: int, background: int) -> np.ndarray:
    """Classes 0..18 on curved regions, thin lines and single pixels, many touching the border."""
    labels = np.full((height, width), background, dtype=np.int64)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(7):  # ellipses, rotated; centres may lie on or beyond the border
        cy, cx = rng.uniform(-0.15, 1.15) * height, rng.uniform(-0.15, 1.15) * width
        ry, rx = rng.uniform(2.5, height / 2.5), rng.uniform(2.5, width / 2.5)
        angle = rng.uniform(0, math.pi)
        dy, dx = rows - cy, cols - cx
        u = dy * math.cos(angle) + dx * math.sin(angle)
        v = -dy * math.sin(angle) + dx * math.cos(angle)
        labels[(u / ry) ** 2 + (v / rx) ** 2 <= 1] = rng.integers(0, 19)
    labels[rng.integers(0, height), :] = rng.integers(2, 19)  # 1-px line across the image
    column = rng.integers(0, width - 1)
    labels[:, column : column + 2] = rng.integers(0, 19)  # 2-px line, border to border
    for step in range(min(height, width) - 4):  # 1-px diagonal, 8-connected only
        labels[2 + step, 2 + step] = 1
    for _ in range(6):  # single-pixel islands, anywhere (border included)
        labels[rng.integers(0, height), rng.integers(0, width)] = rng.integers(0, 19)
    labels[0, 0], labels[-1, rng.integers(0, width)] = rng.integers(2, 19, size=2)
    return labels


def _score_from_logits(rng: np.random.Generator, labels: np.ndarray, classes: int = 19):
    """SML maps: logits from smooth noise with the labelled class on top, standardized per class."""
    n, height, width = labels.shape
    logits = 2 * _smooth_noise(rng, (n, classes), height, width, cell=6)
    top = logits.max(axis=1) + 1 + np.abs(_smooth_noise(rng, (n,), height, width, cell=8))
    mean, std = rng.uniform(2, 8, classes), rng.uniform(0.5, 3, classes)
    score = (top - mean[labels]) / std[labels]
    return (np.round(score * 64) / 64).astype(np.float32)  # multiples of 1/64: many ties


def _cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    scenes = np.stack([_draw_scene(rng, 40, 56, background) for background in (0, 7, 13)])
    score = _score_from_logits(rng, scenes)
    score[2, :, :12] = np.round(score[2, :, :12] * 2) / 2  # ties: runs of equal values
    score[1, 5:15, 20:30] = 0.25  # a constant patch across class boundaries
    tall = _draw_scene(rng, 33, 21, background=18)[None]
    tiny = rng.integers(0, 4, (2, 4, 6))  # every pixel near the border, islands, ties
    strip = np.array([[[0, 0, 3, 3, 1, 1, 2, 0, 0]]])
    cases = {"scenes": (scenes, score), "tall": (tall, _score_from_logits(rng, tall))}
    cases["tiny"] = (tiny, _score_from_logits(rng, tiny))
    cases["strip"] = (strip, _score_from_logits(rng, strip))
    return cases


def _forward_case(rng: np.random.Generator, deepv3) -> dict[str, np.ndarray]:
    """The official DeepV3Plus.forward (score_mode standardized_max_logit) on given logits.

    Its network layers are replaced by pass-throughs, so `main_out` is the logits themselves (the
    bilinear Upsample to the same size is checked to be the identity); the standardization and the
    post-processing are the forward's own code. Logits are multiples of 1/32 with exact ties
    between two classes on a patch; class statistics are dicts of floats, as eval.py loads them.
    """
    n, classes, height, width = 2, 6, 24, 32
    logits = np.round(3 * _smooth_noise(rng, (n, classes), height, width, cell=5) * 32) / 32
    logits[:, 4, 8:14, 10:18] = logits[:, :4, 8:14, 10:18].max(axis=1)  # ties with classes 0-3
    logits = logits.astype(np.float32)
    class_mean = {c: float(v) for c, v in enumerate(rng.uniform(-1, 3, classes))}
    class_var = {c: float(v) for c, v in enumerate(rng.uniform(0.3, 4, classes))}
    tensor = torch.from_numpy(logits)
    identity = torch.nn.Identity()
    fake = types.SimpleNamespace(
        layer0=identity,
        layer1=identity,
        layer2=identity,
        layer3=identity,
        layer4=identity,
        aspp=identity,
        bot_aspp=identity,
        bot_fine=lambda low_level: low_level[:, :0],
        final1=identity,
        final2=identity,
        score_mode="standardized_max_logit",
        class_mean=class_mean,
        class_var=class_var,
        num_classes=classes,
        training=False,
    )
    out = {"logits": logits}
    out["class_mean"] = np.array([class_mean[c] for c in range(classes)])
    out["class_var"] = np.array([class_var[c] for c in range(classes)])
    for name, post in (("plain", None), ("defaults", DEFAULTS)):
        fake.enable_post_processing = post is not None
        if post is not None:
            fake.multi_scale = deepv3.BoundarySuppressionWithSmoothing(**post)
        with torch.no_grad():
            main_out, score = deepv3.DeepV3Plus.forward(fake, tensor)
        assert torch.equal(main_out, tensor), "the pass-through network changed the logits"
        out[f"out__{name}"] = score.numpy().astype(np.float32)
    return out


def parse_arguments(description: str) -> argparse.Namespace:
    """--sml-repo and --kornia-repo (or SML_REPO and KORNIA_REPO), --out (default: here)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sml-repo", default=os.environ.get("SML_REPO"))
    parser.add_argument("--kornia-repo", default=os.environ.get("KORNIA_REPO"))
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    if not args.sml_repo or not args.kornia_repo:
        parser.error("give --sml-repo and --kornia-repo (or SML_REPO and KORNIA_REPO)")
    return args


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0])
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        meta = _extract(git_dir(args.sml_repo), git_dir(args.kornia_repo), Path(folder))
        deepv3 = _import_official(Path(folder))
        rng = np.random.default_rng(20210924)
        configs = {name: {**DEFAULTS, **change} for name, change in CONFIGS.items()}
        for case, (labels, score) in _cases(rng).items():
            prediction = torch.from_numpy(labels)
            arrays = {"prediction": labels.astype(np.uint8), "score": score}
            with torch.no_grad():
                boundaries = deepv3.find_boundaries(prediction[:, None])
                for radius in range(4):
                    expanded = deepv3.expand_boundaries(boundaries, r=radius)[:, 0]
                    arrays[f"boundary__r{radius}"] = expanded.numpy().astype(bool)
                for name, kwargs in configs.items():
                    module = deepv3.BoundarySuppressionWithSmoothing(**kwargs)
                    found = module(torch.from_numpy(score), prediction)
                    arrays[f"out__{name}"] = found.numpy().astype(np.float32)
            np.savez_compressed(Path(args.out) / f"sml_{case}.npz", **arrays)
        forward = _forward_case(rng, deepv3)
        np.savez_compressed(Path(args.out) / "sml_forward.npz", **forward)
    meta["configs"] = configs
    meta["forward_configs"] = {"plain": None, "defaults": DEFAULTS}
    (Path(args.out) / "sml_golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    for path in sorted(Path(args.out).glob("sml_*")):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
