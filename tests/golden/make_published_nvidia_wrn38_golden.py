"""Writes the nvidia_wrn38 golden files of tests/test_published_nvidia_wrn38.py from NVIDIA's code.

Run by hand (the tests only read the two files it writes next to itself), from the repository
root:

    .venv/bin/python tests/golden/make_published_nvidia_wrn38_golden.py \
        --nvidia-repo /work/.mirror/NVIDIA+semantic-segmentation/repo

(or set NVIDIA_REPO instead of the option). It needs a git snapshot, bare or not, of
NVIDIA/semantic-segmentation holding commit 2f548ab30ab0d56e91de66a4dea4757a0c64e7e4 (the tip of
branch ``sdcnet``, whose README publishes ``cityscapes_best.pth``). Into a temporary folder it
extracts, with ``git show``, ``network/deepv3.py`` and the modules it imports
(``network/wider_resnet.py``, ``network/mynn.py``, ``network/Resnet.py``,
``network/SEresnext.py``), ``config.py``, ``utils/attr_dict.py`` and ``loss.py``; nothing of them
is copied into fsbench. It imports them unmodified, on the CPU, with two stand-ins:

* ``apex`` (NVIDIA's mixed-precision library, imported by ``mynn.py`` for the decorator
  ``amp.float_function`` on ``Upsample``) is a stub whose ``amp.float_function`` returns the
  function itself (in float32 that decorator changes nothing);
* ``network/__init__.py`` is not run: a package object with the extracted folder as its path
  stands in for it (its ``get_net`` only calls the constructor and ``.cuda()``).

It then builds the network as ``cityscapes_best.pth`` was saved by ``train.py``:
``config.assert_and_infer_cfg`` without ``--syncbn`` (``mynn.Norm2d`` = ``torch.nn.BatchNorm2d``,
what eval.py and demo.py use; the apex SyncBatchNorm of training has the same tensors),
``deepv3.DeepWV3Plus(19)`` holding the training criterion as ``self.criterion`` (its first
submodule: ``__init__`` assigns it on its first line) and wrapped in a data-parallel module
(``module.`` prefix). The criterion is ``loss.py::ImageBasedCrossEntropyLoss2d``: the published
file holds ``module.criterion.nll_loss.weight`` [19] (downstream loaders drop that key), the buffer
that loss's forward assigns (``self.nll_loss.weight = torch.Tensor(weights)``); the other losses
of loss.py hold no tensor. The network is built with ``criterion=None`` (with a criterion the
constructor reads ImageNet weights from ./pretrained_models) and the criterion, with the buffer
its forward would set, is put in first place afterwards.

The state dict's key list (the file's own keys, ``module.`` included) is written to
``published_nvidia_wrn38_keys.json``; the network is filled with ``seeded_state`` of it and run in
eval mode on ``seeded_images()`` prepared as ``demo.py`` does (a PIL RGB image through
``transforms.ToTensor()`` and ``transforms.Normalize`` with the ImageNet mean and std). The input
of ``final.6`` (the classifier conv) is captured with a forward pre-hook.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mirrors import git, git_dir  # noqa: E402
from seeded_weights import golden_arrays, golden_line, key_list, seeded_images, seeded_state  # noqa: E402

COMMIT = "2f548ab30ab0d56e91de66a4dea4757a0c64e7e4"
FAMILY = "nvidia_wrn38"
FILES = (
    "network/deepv3.py",
    "network/wider_resnet.py",
    "network/mynn.py",
    "network/Resnet.py",
    "network/SEresnext.py",
    "config.py",
    "utils/__init__.py",
    "utils/attr_dict.py",
    "loss.py",
)
MEAN_STD = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # demo.py / eval.py mean_std


def _extract(repo: Path, into: Path) -> dict[str, str]:
    for name in FILES:
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(git(repo, "show", f"{COMMIT}:{name}"))
    return {
        "commit": git(repo, "rev-parse", COMMIT).decode().strip(),
        "deepv3_blob": git(repo, "rev-parse", f"{COMMIT}:network/deepv3.py").decode().strip(),
        "wider_resnet_blob": git(repo, "rev-parse", f"{COMMIT}:network/wider_resnet.py")
        .decode()
        .strip(),
    }


def _import_original(into: Path):
    apex = types.ModuleType("apex")
    apex.amp = types.SimpleNamespace(float_function=lambda function: function)
    sys.modules["apex"] = apex
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the CPU stands in for the GPU
    sys.path.insert(0, str(into))
    network = types.ModuleType("network")
    network.__path__ = [str(into / "network")]  # skip network/__init__.py
    sys.modules["network"] = network
    import config
    import loss
    from network import deepv3

    with contextlib.redirect_stdout(io.StringIO()):  # "Using regular batch norm"
        config.assert_and_infer_cfg(argparse.Namespace(), train_mode=False)
    if config.cfg.MODEL.BNFUNC is not torch.nn.BatchNorm2d:
        raise SystemExit(f"Norm2d is {config.cfg.MODEL.BNFUNC}, not BatchNorm2d")
    return deepv3, loss


def _build(deepv3, loss) -> torch.nn.Module:
    """DeepWV3Plus as train.py saved it: criterion first, inside a data-parallel wrapper."""
    net = deepv3.DeepWV3Plus(19, criterion=None)
    criterion = loss.ImageBasedCrossEntropyLoss2d(
        classes=19, size_average=True, ignore_index=255, upper_bound=1.0
    )
    # What ImageBasedCrossEntropyLoss2d.forward does on each training batch (its histogram call,
    # np.histogram(normed=True), no longer runs on numpy >= 1.24): a float32 [19] buffer.
    criterion.nll_loss.weight = torch.Tensor(np.ones(19))
    net.criterion = criterion
    net._modules = OrderedDict(
        [("criterion", criterion)] + [(k, v) for k, v in net._modules.items() if k != "criterion"]
    )
    # Without a GPU, DataParallel only wraps (keys "module.*") and calls the network.
    return torch.nn.DataParallel(net)


def _prepare(image: torch.Tensor) -> torch.Tensor:
    """demo.py's input: PIL RGB image -> ToTensor -> Normalize(ImageNet)."""
    import torchvision.transforms as transforms

    pixels = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*MEAN_STD)])
    return transform(Image.fromarray(pixels, mode="RGB")).unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvidia-repo", default=os.environ.get("NVIDIA_REPO"))
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    if not args.nvidia_repo:
        parser.error("give --nvidia-repo (or NVIDIA_REPO)")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as folder:
        meta = _extract(git_dir(args.nvidia_repo), Path(folder))
        deepv3, loss = _import_original(Path(folder))
        wrapped = _build(deepv3, loss)
        keys = key_list(wrapped.state_dict())
        if keys[0][0] != "module.criterion.nll_loss.weight":
            raise SystemExit(f"unexpected first key {keys[0][0]}")
        document = {
            "family": FAMILY,
            "source": f"NVIDIA/semantic-segmentation@{meta['commit']}",
            "container": "state_dict",
            "prefix": "module.",
            "keys": keys,
        }
        (out / f"published_{FAMILY}_keys.json").write_text(json.dumps(document) + "\n")
        wrapped.load_state_dict(seeded_state(keys), strict=True)
        wrapped.eval()
        net = wrapped.module
        captured: list[torch.Tensor] = []
        net.final[6].register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        arrays: dict[str, np.ndarray] = {}
        for index, image in enumerate(seeded_images()):
            x = _prepare(image)
            if not torch.allclose(
                x * torch.tensor(MEAN_STD[1]).view(1, 3, 1, 1)
                + torch.tensor(MEAN_STD[0]).view(1, 3, 1, 1),
                image,
                atol=1e-6,
            ):
                raise SystemExit("ToTensor/Normalize did not reproduce the image")
            captured.clear()
            with torch.no_grad():
                logits = wrapped(x)
            features = captured[0]
            arrays.update(golden_arrays(index, logits, features))
            print(golden_line(index, x, arrays))
        np.savez_compressed(out / f"published_{FAMILY}.npz", **arrays)
    print(f"{len(keys)} keys from {document['source']}")
    for path in sorted(out.glob(f"published_{FAMILY}*")):
        print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
