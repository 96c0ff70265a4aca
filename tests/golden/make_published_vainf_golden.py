"""Writes the golden files of tests/test_published_vainf.py from VainF's own code and output.

Run by hand (the tests only read the files it writes next to itself), from the repository root:

    .venv/bin/python tests/golden/make_published_vainf_golden.py \
        --vainf-repo /work/.mirror/VainF+DeepLabV3Plus-Pytorch/repo

(or set VAINF_REPO instead of the option). It needs a git snapshot, bare or not, of
VainF/DeepLabV3Plus-Pytorch holding commit 4e1087de98bc49d55b9239ae92810ef7368660db (the network
code has not changed since December 2019, before the Cityscapes weights were published). Into a
temporary folder it extracts, with `git archive`, the repository's `network/` package and
`utils/ext_transforms.py`; nothing of them is copied into fsbench. It then builds the networks the
published files were trained as, with the original code unmodified, on the CPU:

* `network.modeling.deeplabv3plus_resnet101(num_classes=19, output_stride=16)` (the
  `best_deeplabv3plus_resnet101_cityscapes_os16.pth` file), and the same function at
  `output_stride=8` (families vainf_r101_os16 and vainf_r101_os8: the same file, the same keys);
* `network.modeling.deeplabv3plus_mobilenet(num_classes=19, output_stride=16)`
  (`best_deeplabv3plus_mobilenet_cityscapes_os16.pth`, family vainf_mbv2_os16);

without `convert_to_separable_conv` (README: "All pre-trained models in this repo were trained
without atrous separable convolution") and with `pretrained_backbone=False` (the ImageNet
weights are replaced anyway). main.py's `save_ckpt` writes
`{"cur_itrs", "model_state": model.module.state_dict(), "optimizer_state", "scheduler_state",
"best_score"}`: the weights under "model_state", without DataParallel's "module." prefix, and
nothing but the network's own tensors (the loss is not a submodule). So the key list recorded is
`model.state_dict()`'s.

Each network is filled with `seeded_state` of its key list and run in eval mode on
`seeded_images()`, converted to 8-bit HWC arrays and normalised by the original validation
transform: `utils/ext_transforms.py`'s `ExtToTensor` and `ExtNormalize` with the mean and std
that main.py's Cityscapes `val_transform` passes (read from main.py, not restated here).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mirrors import git, git_dir  # noqa: E402
from seeded_weights import golden_arrays, golden_line, key_list, seeded_images, seeded_state  # noqa: E402

COMMIT = "4e1087de98bc49d55b9239ae92810ef7368660db"
REPO = "VainF/DeepLabV3Plus-Pytorch"
CONTAINER = "model_state"
PREFIX = ""

# golden name -> (families, modeling function, output stride, keys file)
CASES = {
    "vainf_r101_os16": ("deeplabv3plus_resnet101", 16, "published_vainf_r101_keys.json"),
    "vainf_r101_os8": ("deeplabv3plus_resnet101", 8, "published_vainf_r101_keys.json"),
    "vainf_mbv2_os16": ("deeplabv3plus_mobilenet", 16, "published_vainf_mbv2_keys.json"),
}
KEY_FAMILIES = {
    "published_vainf_r101_keys.json": ["vainf_r101_os16", "vainf_r101_os8"],
    "published_vainf_mbv2_keys.json": ["vainf_mbv2_os16"],
}


def _extract(repo: Path, into: Path) -> str:
    archive = git(repo, "archive", "--format=tar", COMMIT, "network", "utils/ext_transforms.py")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "main.py").write_bytes(git(repo, "show", f"{COMMIT}:main.py"))
    return git(repo, "rev-parse", COMMIT).decode().strip()


def _import_original(into: Path):
    """The original ``network`` package and ``utils/ext_transforms.py`` (not ``utils/__init__``,
    which imports visdom for the training visualiser)."""
    sys.path.insert(0, str(into))
    import network  # network/__init__.py imports modeling and the backbones only

    if not Path(network.__file__).resolve().is_relative_to(into.resolve()):
        raise SystemExit(f"imported network from {network.__file__}, not the extracted {COMMIT}")
    spec = importlib.util.spec_from_file_location(
        "ext_transforms", into / "utils/ext_transforms.py"
    )
    ext_transforms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext_transforms)
    return network, ext_transforms


def _val_normalisation(main_py: str) -> tuple[list[float], list[float]]:
    """The mean and std of main.py's Cityscapes ``val_transform`` (every ExtNormalize agrees)."""
    block = main_py[main_py.index("if opts.dataset == 'cityscapes':") :]
    block = block[block.index("val_transform") :]
    found = re.search(r"ExtNormalize\(mean=\[([^\]]*)\],\s*std=\[([^\]]*)\]\)", block)
    mean = [float(v) for v in found.group(1).split(",")]
    std = [float(v) for v in found.group(2).split(",")]
    return mean, std


def _inputs(ext_transforms, mean, std) -> list[torch.Tensor]:
    """seeded_images() through the original validation transform (8-bit HWC -> normalised)."""
    transform = ext_transforms.ExtCompose(
        [ext_transforms.ExtToTensor(), ext_transforms.ExtNormalize(mean=mean, std=std)]
    )
    inputs = []
    for image in seeded_images():
        array = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        label = np.zeros(array.shape[:2], dtype=np.uint8)
        tensor, _ = transform(array, label)
        inputs.append(tensor.unsqueeze(0))
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vainf-repo", default=os.environ.get("VAINF_REPO"))
    parser.add_argument("--out", default=str(HERE), help="folder for the golden files")
    args = parser.parse_args()
    if not args.vainf_repo:
        raise SystemExit("pass --vainf-repo (a git snapshot of VainF/DeepLabV3Plus-Pytorch)")
    repo = git_dir(args.vainf_repo)
    out = Path(args.out)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp)
        commit = _extract(repo, into)
        network, ext_transforms = _import_original(into)
        mean, std = _val_normalisation((into / "main.py").read_text())
        print(f"{REPO}@{commit}: val normalisation mean={mean} std={std}")
        inputs = _inputs(ext_transforms, mean, std)
        written_keys: dict[str, list] = {}
        for name, (function, output_stride, keys_file) in CASES.items():
            model = network.modeling.__dict__[function](
                num_classes=19, output_stride=output_stride, pretrained_backbone=False
            )
            keys = key_list(model.state_dict())  # = model.module.state_dict() in save_ckpt
            if keys_file in written_keys:
                if written_keys[keys_file] != keys:
                    raise SystemExit(f"{name}: key list differs from {keys_file}'s")
            else:
                written_keys[keys_file] = keys
                (out / keys_file).write_text(
                    json.dumps(
                        {
                            "family": KEY_FAMILIES[keys_file],
                            "source": f"{REPO}@{commit}",
                            "container": CONTAINER,
                            "prefix": PREFIX,
                            "keys": keys,
                        }
                    )
                    + "\n"
                )
            model.load_state_dict(seeded_state(keys), strict=True)
            model.eval()
            last_conv = model.classifier.classifier[3]  # the 256 -> 19 classifier conv
            captured: list[torch.Tensor] = []
            hook = last_conv.register_forward_pre_hook(
                lambda module, args, into=captured: into.append(args[0].clone())
            )
            arrays: dict[str, np.ndarray] = {}
            for index, x in enumerate(inputs):
                captured.clear()
                logits = model(x)
                features = captured[0]
                arrays.update(golden_arrays(index, logits, features))
                print(f"{name} {golden_line(index, x, arrays)}")
            hook.remove()
            np.savez_compressed(out / f"published_{name}.npz", **arrays)
    for path in sorted(out.glob("published_vainf*")):
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
