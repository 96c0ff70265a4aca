"""Writes the sml_r101_os8 golden files (tests/test_published_sml_r101_os8.py) from the original.

Run by hand (the test only reads the files this writes next to itself), from the repository root:

    .venv/bin/python tests/golden/make_published_sml_r101_os8_golden.py \
        --sml-repo /work/.mirror/shjung13+Standardized-max-logits/repo \
        --kornia-repo /work/.mirror/kornia+kornia/repo

(or set SML_REPO and KORNIA_REPO). It needs two git snapshots, bare or not:
shjung13/Standardized-max-logits holding commit c52a513 and kornia/kornia holding commit af948c5
(`network/deepv3.py` imports kornia's morphology at import time). It extracts and imports the
original files exactly as tests/golden/make_sml_golden.py does (its helpers are reused: `git show`
into a temporary folder, `torch.Tensor.cuda` made the identity, a package object standing in for
`network/__init__.py`), and builds `network.deepv3.DeepR101V3PlusD_OS8` as
`scripts/train_r101_os8.sh` trained it through `train.py`:

* `args`: `score_mode` is train.py's default "msp", and `enable_boundary_suppression` /
  `enable_dilated_smoothing` are train.py's defaults (False), so the network has no `multi_scale`
  module; `criterion` and `criterion_aux` are `nn.CrossEntropyLoss(weight=None)` (`loss.py`
  without `--cls_wt_loss`), which hold no tensors.
* `Resnet.resnet101(pretrained=True)` reads `./pretrained/resnet101-imagenet.pth` relative to the
  working directory: the script runs in the temporary folder, where that file is an empty dict
  (`forgiving_state_restore` then keeps the initial weights; the seeded ones replace them anyway).
* Norm layers: train.py sets `cfg.MODEL.BNFUNC` to SyncBatchNorm and converts the network with
  `convert_sync_batchnorm`; here `config.assert_and_infer_cfg` is called with `syncbn=False`, so
  they are BatchNorm2d, which has the same state-dict keys and the same eval-mode computation and
  runs on the CPU.
* The file: `utils/misc.py::evaluate_eval` saves `{"state_dict": net.state_dict(), "optimizer",
  "scheduler", "epoch", "mean_iu", "command"}` with `net` the DistributedDataParallel wrapper
  (`network/__init__.py::warp_network_in_dataparallel`), so every key carries "module.".

The network is filled with `seeded_state` of that key list and run in eval mode on
`seeded_images()`, normalised as `eval.py::preprocess_image` does (`ToTensor` then `Normalize` with
ImageNet mean/std on RGB); the logits are `main_out`, the first output of the eval forward, and the
features the input of `final2` (a forward pre-hook). The official code ran on torch 1.7; here it
runs on the project's torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_sml_golden import (  # noqa: E402
    SML_COMMIT,
    _extract,
    _import_official,
    parse_arguments,
)
from mirrors import git_dir  # noqa: E402
from seeded_weights import golden_arrays, golden_line, key_list, seeded_images, seeded_state  # noqa: E402

FAMILY = "sml_r101_os8"
CONTAINER = "state_dict"
PREFIX = "module."
MEAN_STD = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # eval.py, __main__


def _build_original(into: Path) -> torch.nn.Module:
    """The original DeepR101V3PlusD_OS8 as train.py builds it (see the module docstring)."""
    deepv3 = _import_official(into)
    import config  # the extracted config.py (first on sys.path after the import above)

    config.assert_and_infer_cfg(types.SimpleNamespace(syncbn=False), train_mode=False)
    args = types.SimpleNamespace(
        score_mode="msp", enable_boundary_suppression=False, enable_dilated_smoothing=False
    )
    criterion = torch.nn.CrossEntropyLoss(reduction="mean", ignore_index=255)
    criterion_aux = torch.nn.CrossEntropyLoss(reduction="mean", ignore_index=255)
    (into / "pretrained").mkdir(exist_ok=True)
    torch.save({}, into / "pretrained" / "resnet101-imagenet.pth")
    cwd = os.getcwd()
    os.chdir(into)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            net = deepv3.DeepR101V3PlusD_OS8(
                args, num_classes=19, criterion=criterion, criterion_aux=criterion_aux
            )
    finally:
        os.chdir(cwd)
    return net


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0])
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as folder:
        meta = _extract(git_dir(args.sml_repo), git_dir(args.kornia_repo), Path(folder))
        net = _build_original(Path(folder))
    # The file's keys: DistributedDataParallel's "module." before the network's own.
    keys = key_list({PREFIX + key: value for key, value in net.state_dict().items()})
    state = seeded_state(keys)
    net.load_state_dict({key[len(PREFIX) :]: value for key, value in state.items()}, strict=True)
    net.eval()

    captured: list[torch.Tensor] = []
    net.final2.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].clone()))
    arrays: dict[str, np.ndarray] = {}
    mean = torch.tensor(MEAN_STD[0]).view(1, 3, 1, 1)
    std = torch.tensor(MEAN_STD[1]).view(1, 3, 1, 1)
    for index, image in enumerate(seeded_images()):
        captured.clear()
        with torch.no_grad():
            main_out, _ = net((image - mean) / std)
        features = captured[0]
        arrays.update(golden_arrays(index, main_out, features))
        print(golden_line(index, image, arrays))
    np.savez_compressed(out / f"published_{FAMILY}.npz", **arrays)
    document = {
        "family": FAMILY,
        "source": f"shjung13/Standardized-max-logits@{meta['sml_commit']}",
        "container": CONTAINER,
        "prefix": PREFIX,
        "keys": keys,
    }
    (out / f"published_{FAMILY}_keys.json").write_text(json.dumps(document) + "\n")
    assert meta["sml_commit"].startswith(SML_COMMIT)
    for path in sorted(out.glob(f"published_{FAMILY}*")):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB, {len(keys)} keys")


if __name__ == "__main__":
    main()
