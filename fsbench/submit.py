"""Benchmark submissions: score a folder of images and write exactly what a grader reads.

The library behind ``fsbench-submit`` / ``python -m fsbench.submit`` (the command line is
:mod:`fsbench.cli.submit`): :func:`load_model` builds a segmenter and a ready anomaly head from a
checkpoint, :func:`submit` scores every image of a folder and writes, per format:

* ``fishyscapes`` (the default): for each input ``DDDD_<anything>.png``, the files
  ``DDDD_anomaly.npy`` (float32 [H, W], the anomaly score at the input's resolution, higher =
  more anomalous) and ``DDDD_segmentation.npy`` (uint8 [H, W], train ids 0..18). The grader
  (hermannsblum/fishyscapes ``eval.py``, ``list_img_from_dir``) reads every ``*_anomaly.npy`` of
  the output folder and pairs it with the labels by the integer before the first underscore, so
  the ``DDDD`` of each input must be unique. The submission container runs offline, read-only,
  as an unprivileged user, with ``/input`` and ``/output`` mounted (``deploy/fsbench.def``).
* ``smiyc``: SegmentMeIfYouCan's toolkit (SegmentMeIfYouCan/road-anomaly-benchmark,
  ``road_anomaly_benchmark/evaluation.py`` ``Evaluation.save_output`` and
  ``datasets/dataset_io.py`` ``ChannelLoaderHDF5``) reads
  ``anomaly_p/<method>/<dataset>/<fid>.hdf5``, each holding one HDF5 dataset ``value``: the score
  map [H, W] as float16 (gzip level 9). ``<fid>`` is the image's file name without its last
  suffix; ``<dataset>`` is ``AnomalyTrack-all`` or ``ObstacleTrack-all`` (the toolkit's
  ``name_for_persistence``); point the toolkit's ``DIR_OUTPUTS`` at the output folder.

The head is built from ``conf/head/NAME.yaml`` (with overrides), or is the training-time head
the checkpoint was trained with; a head fitted on the training set is restored from the state
``evaluate.py`` saved (``<run>/heads/NAME.pt``), never fitted here, so a submission needs no
training data. Scores are checked to be finite before anything is written, and every file is
written through a temporary name and a rename. Guide: ``docs/submission.md``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import tqdm

from fsbench.data.check import IMAGE_SUFFIXES, read_rgb
from fsbench.heads import AnomalyHead, device_of, resize_score
from fsbench.models import load_segmenter
from fsbench.models.checkpoint import read_checkpoint, ready_head
from fsbench.models.published import FAMILIES
from fsbench.registry import conf_dir, options

FORMATS = ("fishyscapes", "smiyc")
CONF_DIR = conf_dir()  # the packaged config tree (fsbench.conf), in a checkout or an install
FS_INPUT = re.compile(r"^(\d+)_.*\.png$")
FS_MAX_CLASSES = 20  # the Fishyscapes segmentation holds ints < 20
SMIYC_DATASETS = {
    "dataset_AnomalyTrack": "AnomalyTrack-all",
    "dataset_ObstacleTrack": "ObstacleTrack-all",
}
SMIYC_VARIABLE = "value"
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
RUN_CONFIG_KEY = "fsbench_run_config"


class SubmissionError(ValueError):
    """The submission cannot be written as asked: the message names the problem and the fix."""


def available_heads(conf_dir: str | Path = CONF_DIR) -> list[str]:
    """Names of the head configs ``conf_dir/head/NAME.yaml``."""
    return options("head", conf_dir)


def head_config(
    name: str, conf_dir: str | Path = CONF_DIR, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The arguments of head ``name`` (with ``_target_``) from its config, with overrides."""
    path = Path(conf_dir) / "head" / f"{name}.yaml"
    if not path.is_file():
        raise SubmissionError(
            f"unknown head {name!r}: there is no {path}; available heads: "
            f"{', '.join(available_heads(conf_dir))}"
        )
    config = OmegaConf.load(path)
    if overrides:
        bad = [item for item in overrides if "=" not in item]
        if bad:
            raise SubmissionError(f"--set takes KEY=VALUE, got {bad}")
        config = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_container(config, resolve=True)


def trained_head_config(checkpoint: str | Path) -> tuple[str, dict[str, Any]] | None:
    """The name and config of the training-time head a ``train.py`` checkpoint was trained with."""
    stored = read_checkpoint(checkpoint)  # weights_only=True, as load_segmenter reads it
    heads = (stored.get(RUN_CONFIG_KEY) or {}).get("head") or {}
    if len(heads) != 1:
        return None
    name, config = next(iter(heads.items()))
    return name, dict(config)


def load_model(
    checkpoint: str | Path,
    head: str | None = None,
    head_state: str | Path | None = None,
    overrides: Sequence[str] = (),
    conf_dir: str | Path = CONF_DIR,
    device: str | torch.device = "cpu",
    family: str | None = None,
) -> tuple[nn.Module, AnomalyHead, str]:
    """The segmenter of ``checkpoint`` and a ready head, both in eval mode on ``device``.

    Returns ``(segmenter, head, head_name)``. ``checkpoint`` is a ``train.py`` checkpoint, or,
    with ``family`` (e.g. ``nvidia_wrn38``), a published network's file
    (``fsbench.models.published``). The head is built from its config (or the checkpoint's
    training-time head when ``head`` is None), attached, restored from the checkpoint if it is a
    training-time head, and restored from ``head_state`` if it is fitted.
    """
    if family is None:
        segmenter = load_segmenter(checkpoint)
        evaluated_with = f"checkpoint={checkpoint}"  # how evaluate.py names this network
    else:
        segmenter = _published_segmenter(checkpoint, family, head, conf_dir)
        evaluated_with = f"model={family} model.checkpoint={checkpoint}"
    if head is None:  # a train.py checkpoint's training-time head (a published file has none)
        trained = trained_head_config(checkpoint)
        if trained is None:
            raise SubmissionError(
                f"checkpoint {checkpoint} was trained without an anomaly head; choose one with "
                f"--head NAME, one of: {', '.join(available_heads(conf_dir))}"
            )
        name, config = trained
    else:
        name, config = head, head_config(head, conf_dir, overrides)
    try:
        built = hydra.utils.instantiate(config)
    except Exception as error:  # Hydra wraps the constructor's error; show its last line
        reason = str(error).strip().splitlines()[-1]
        raise SubmissionError(f"cannot build head {name!r}: {reason}") from error
    if built.trained_with_segmenter and family is not None:
        raise SubmissionError(
            f"head {name!r} is trained with the segmenter (train.py); a published {family} file "
            f"has no such head. Train it (python train.py model={family} "
            "model.checkpoint=FILE head=...) and pass that run's last.ckpt without --model"
        )
    ready_head(
        built,
        segmenter,
        checkpoint,
        fitted_state=head_state,
        without_fitted_state=(
            f"head {name!r} is fitted on the training set; fit it once with `python "
            f"evaluate.py {evaluated_with} head={name}` and pass the state it saves "
            f"with --head-state <run>/heads/{name}.pt"
        ),
    )
    return segmenter.to(device).eval(), built.to(device).eval(), name


def _published_segmenter(
    checkpoint: str | Path, family: str, head: str | None, conf_dir: str | Path
) -> nn.Module:
    """The published network of ``family`` in the file ``checkpoint`` (``--model FAMILY``)."""
    from fsbench.models.published import load_published

    if family not in FAMILIES:
        raise SubmissionError(
            f"--model {family!r} is not a published family; one of: {', '.join(FAMILIES)}"
        )
    if head is None:
        raise SubmissionError(
            f"a published {family} file holds no anomaly head; choose one with --head NAME, one "
            f"of: {', '.join(available_heads(conf_dir))}"
        )
    return load_published(family, checkpoint)


def predict_image(
    segmenter: nn.Module, head: AnomalyHead, image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Score one image uint8 [H, W, 3]: (score float32 [H, W], segmentation uint8 [H, W]).

    The image becomes float [1, 3, H, W] in [0, 1] exactly as the dataset readers convert it,
    so the scores equal those of ``evaluate.py`` on the same file.
    """
    device = device_of(segmenter)
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    images = tensor[None].to(device).float().div_(255)
    with torch.inference_mode():
        prediction = head(segmenter, images)
        score = resize_score(prediction.score, images.shape[-2:])[0]
        segmentation = prediction.logits[0].argmax(dim=0)
    return score.float().cpu().numpy(), segmentation.to(torch.uint8).cpu().numpy()


def fishyscapes_inputs(folder: str | Path) -> list[tuple[str, Path]]:
    """``(DDDD, path)`` of every ``DDDD_*.png`` in ``folder``, by integer id."""
    folder = _input_folder(folder)
    frames: dict[int, tuple[str, Path]] = {}
    others, repeated = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".png" or not path.is_file():
            continue
        match = FS_INPUT.match(path.name)
        if match is None:
            others.append(path.name)
        elif int(match.group(1)) in frames:
            repeated.append(f"{frames[int(match.group(1))][1].name} and {path.name}")
        else:
            frames[int(match.group(1))] = (match.group(1), path)
    if others:
        raise SubmissionError(
            f"{folder} holds PNG files not named DDDD_*.png: {others[:5]}; the Fishyscapes "
            "grader pairs outputs with labels by the integer DDDD, so rename or remove them"
        )
    if repeated:
        raise SubmissionError(
            f"{folder}: several inputs share one Fishyscapes id: {repeated[:5]}; their "
            "DDDD_anomaly.npy outputs would overwrite each other"
        )
    if not frames:
        raise SubmissionError(f"{folder} holds no DDDD_*.png image to score")
    return [frames[key] for key in sorted(frames)]


def smiyc_inputs(folder: str | Path) -> list[tuple[str, Path]]:
    """``(fid, path)`` of every image in ``folder`` or its ``images/`` subfolder."""
    folder = _input_folder(folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    frames = [
        (path.stem, path)
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not frames:
        raise SubmissionError(
            f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)}) to score; pass a "
            "SegmentMeIfYouCan track folder (with images/) or a folder of images"
        )
    fids = [fid for fid, _ in frames]
    repeated = sorted({fid for fid in fids if fids.count(fid) > 1})
    if repeated:
        raise SubmissionError(f"{folder}: several images share the frame id(s) {repeated[:5]}")
    return frames


def smiyc_dataset_name(folder: str | Path) -> str:
    """The toolkit's dataset name for a track folder (``dataset_AnomalyTrack`` and so on)."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        if candidate.name in SMIYC_DATASETS:
            return SMIYC_DATASETS[candidate.name]
    raise SubmissionError(
        f"cannot tell the SegmentMeIfYouCan track of {folder}: pass --dataset, one of "
        f"{', '.join(SMIYC_DATASETS.values())}"
    )


def write_fishyscapes(
    output: Path, fs_id: str, score: np.ndarray, segmentation: np.ndarray
) -> list[Path]:
    """Write ``DDDD_anomaly.npy`` and ``DDDD_segmentation.npy``; return their paths."""
    if int(segmentation.max(initial=0)) >= FS_MAX_CLASSES:
        raise SubmissionError(
            f"frame {fs_id}: the segmentation holds class {int(segmentation.max())}, but "
            f"Fishyscapes takes train ids < {FS_MAX_CLASSES}"
        )
    paths = [output / f"{fs_id}_anomaly.npy", output / f"{fs_id}_segmentation.npy"]
    for path, array in zip(paths, (score.astype(np.float32), segmentation), strict=True):
        _atomic(path, lambda file, array=array: np.save(file, array))
    return paths


def write_smiyc(output: Path, fid: str, score: np.ndarray) -> Path:
    """Write ``<output>/<fid>.hdf5`` with the score as float16 under ``value``."""
    import h5py  # a core dependency, imported where it is used

    peak = float(np.abs(score).max())
    if peak > FLOAT16_MAX:
        raise SubmissionError(
            f"frame {fid}: scores reach {peak:.4g}, beyond float16's range (+-{FLOAT16_MAX:g}) in "
            "which the SegmentMeIfYouCan toolkit stores them; submit a head with bounded scores "
            "or rescale them monotonically"
        )
    path = output / f"{fid}.hdf5"

    def save(file) -> None:
        with h5py.File(file, "w") as handle:
            handle.create_dataset(SMIYC_VARIABLE, data=score.astype(np.float16), compression=9)

    _atomic(path, save)
    return path


def submit(
    segmenter: nn.Module,
    head: AnomalyHead,
    input_dir: str | Path,
    output_dir: str | Path,
    fmt: str = "fishyscapes",
    method: str = "fsbench",
    dataset: str | None = None,
) -> list[Path]:
    """Score every input image and write the benchmark's files; return the written paths."""
    if fmt not in FORMATS:
        raise SubmissionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output = Path(output_dir)
    if fmt == "fishyscapes":
        frames = fishyscapes_inputs(input_dir)
    else:
        frames = smiyc_inputs(input_dir)
        dataset = dataset or smiyc_dataset_name(input_dir)
        output = output / "anomaly_p" / method / dataset
    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for frame, score, segmentation in _scored(segmenter, head, frames):
        if fmt == "fishyscapes":
            written += write_fishyscapes(output, frame, score, segmentation)
        else:
            written.append(write_smiyc(output, frame, score))
    return written


def _scored(
    segmenter: nn.Module, head: AnomalyHead, frames: list[tuple[str, Path]]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for frame, path in tqdm(frames, desc="submission", disable=None):
        image = read_rgb(path)
        score, segmentation = predict_image(segmenter, head, image)
        if score.shape != image.shape[:2]:
            raise SubmissionError(
                f"{path.name}: the head scored {score.shape}, not the image's {image.shape[:2]}"
            )
        finite = np.isfinite(score)
        if not finite.all():
            raise SubmissionError(
                f"{path.name}: {int((~finite).sum())} pixels have non-finite scores (NaN or "
                "inf); nothing is written for it. Fix the head or its fitted state"
            )
        yield frame, score, segmentation


def _input_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise SubmissionError(f"input folder {folder} {state}")
    return folder


def _atomic(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        write(file)
    os.replace(tmp, path)


if __name__ == "__main__":  # python -m fsbench.submit: the command line of fsbench.cli.submit
    sys.exit(importlib.import_module("fsbench.cli.submit").main())
