"""Writes the mmseg_r101_d8 golden files from mmsegmentation's own DeepLabV3+ R101-D8 output.

Run by hand (tests/test_published_mmseg_r101_d8.py only reads the two files it writes), with the
interpreter of a separate environment that holds the ORIGINAL code, from the repository root:

    python -m venv /tmp/mmseg-venv          # with the project's interpreter, .venv/bin/python
    echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/mmseg-venv/lib/python3.11/site-packages/project.pth   # share the project's torch
    /tmp/mmseg-venv/bin/pip install wheel "setuptools<70" addict yapf==0.32.0 prettytable \
        opencv-python-headless
    MMCV_WITH_OPS=0 /tmp/mmseg-venv/bin/pip install --no-build-isolation --no-deps mmcv==1.7.2
    /tmp/mmseg-venv/bin/pip install --no-deps mmsegmentation==0.30.0
    /tmp/mmseg-venv/bin/python tests/golden/make_published_mmseg_r101_d8_golden.py

mmcv 1.7.2 is built without its compiled ops (``MMCV_WITH_OPS=0``: the pure-Python ``mmcv``,
not ``mmcv-full``); mmsegmentation 0.30.0 is the last 0.x release, whose module names are those of
the 2020 file (``ConvModule`` ``.conv``/``.bn``, ``DepthwiseSeparableConvModule``
``.depthwise_conv``/``.pointwise_conv``). Its wheel ships the original configs under
``mmseg/.mim/configs``; the network is built from
``configs/deeplabv3plus/deeplabv3plus_r101-d8_512x1024_80k_cityscapes.py`` with mmseg's own
``build_segmentor``, and nothing of mmseg is copied into fsbench. Two things stand in for what
cannot run on this CPU:

* ``mmcv._ext`` (the compiled ops library) is a stub module whose functions raise when called:
  ``import mmseg.models`` imports ``mmcv.ops`` (the focal loss, point sampling, ...), which looks
  those functions up at import time; DeepLabV3+ calls none of them.
* SyncBN is converted to BatchNorm with mmcv's ``revert_sync_batchnorm``, as mmseg's own
  ``tools/test.py`` does for non-distributed testing; the two have the same tensors and names
  (checked below), and in eval mode the same arithmetic.

The checkpoint: mmcv's ``save_checkpoint`` (mmcv/runner/checkpoint.py) writes
``{"meta", "state_dict": get_state_dict(model), "optimizer"}``, where ``get_state_dict`` unwraps
(Distributed)DataParallel, so the keys carry no ``module.`` prefix; mmseg's
``tools/publish_model.py`` deletes ``optimizer`` before publishing. The state dict of the whole
``EncoderDecoder`` is therefore ``backbone.*``, ``decode_head.*`` and ``auxiliary_head.*``.

The inputs are fed as mmseg's test pipeline feeds them: the 8-bit image as ``LoadImageFromFile``
reads it (BGR, HWC, uint8), then mmseg's ``Normalize`` with the config's ``img_norm_cfg``
(``to_rgb=True``, mean/std on 0-255) and ``ImageToTensor``. The pipeline's ``Resize`` to
(2048, 1024) with keep_ratio is the identity on Cityscapes frames and is not part of the network,
so it is left out: the logits are ``EncoderDecoder.encode_decode``'s, i.e. the decode head's at
stride 4 resized bilinearly (``align_corners=False``) to the input, which is also what
``whole_inference`` returns before its softmax when the image was not resized (checked below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from seeded_weights import golden_arrays, golden_line, key_list, seeded_images, seeded_state  # noqa: E402

FAMILY = "mmseg_r101_d8"
CONFIG = "deeplabv3plus/deeplabv3plus_r101-d8_512x1024_80k_cityscapes.py"
MMSEG_VERSION = "0.30.0"
MMCV_VERSION = "1.7.2"
# sha256 of the PyPI files the golden files were written with.
MMSEG_WHEEL_SHA256 = "6a6523d3068e4773410bd5893fc40f198def255ec2bb32cacc25a6ffa0668458"
MMCV_SDIST_SHA256 = "2116a1609f9d3f59824074774366fd8b9410437bc95a24d535669b35d55352be"


def _stub_compiled_ops() -> None:
    """A stand-in for mmcv's compiled ``_ext``: every op is found, and raises if it is called."""
    ext = types.ModuleType("mmcv._ext")

    def _lookup(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv compiled op {name} is not built here")

        return missing

    ext.__getattr__ = _lookup
    sys.modules["mmcv._ext"] = ext


def _import_mmseg():
    _stub_compiled_ops()
    import mmcv
    import mmseg
    from mmcv.cnn.utils import revert_sync_batchnorm
    from mmseg.datasets.pipelines import ImageToTensor, Normalize
    from mmseg.models import build_segmentor

    if mmseg.__version__ != MMSEG_VERSION or mmcv.__version__ != MMCV_VERSION:
        raise SystemExit(
            f"need mmsegmentation {MMSEG_VERSION} with mmcv {MMCV_VERSION}, found "
            f"{mmseg.__version__} with {mmcv.__version__}"
        )
    return mmcv, mmseg, revert_sync_batchnorm, build_segmentor, Normalize, ImageToTensor


def _pipeline_input(image: torch.Tensor, cfg, Normalize, ImageToTensor) -> torch.Tensor:
    """[1, 3, H, W] RGB in [0, 1] -> the network input as mmseg's test pipeline makes it."""
    rgb = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what LoadImageFromFile (cv2) reads
    results = {"img": bgr, "img_shape": bgr.shape, "ori_shape": bgr.shape}
    results = Normalize(**cfg.img_norm_cfg)(results)
    results = ImageToTensor(keys=["img"])(results)
    return results["img"][None].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE), help="folder for the golden files")
    args = parser.parse_args()
    torch.set_num_threads(2)

    mmcv, mmseg, revert_sync_batchnorm, build_segmentor, Normalize, ImageToTensor = _import_mmseg()
    config_path = Path(mmseg.__file__).parent / ".mim" / "configs" / CONFIG
    cfg = mmcv.Config.fromfile(str(config_path))
    assert cfg.model.backbone.depth == 101 and cfg.model.backbone.type == "ResNetV1c"
    assert cfg.model.decode_head.type == "DepthwiseSeparableASPPHead"
    assert cfg.model.test_cfg.mode == "whole"

    # Built as trained (SyncBN), then converted as tools/test.py does; init_weights() is not
    # called (it would download the ImageNet backbone), the seeded state replaces every tensor.
    synced = build_segmentor(cfg.model)
    synced_keys = key_list(synced.state_dict())
    model = revert_sync_batchnorm(synced)
    state = model.state_dict()
    keys = key_list(state)
    assert keys == synced_keys, "SyncBN -> BN changed the state dict"
    prefixes = {key.split(".", 1)[0] for key, _, _ in keys}
    assert prefixes == {"backbone", "decode_head", "auxiliary_head"}, prefixes

    model.load_state_dict(seeded_state(keys), strict=True)
    model.eval()

    captured: list[torch.Tensor] = []
    model.decode_head.conv_seg.register_forward_pre_hook(
        lambda module, inputs: captured.append(inputs[0].detach().clone())
    )
    arrays: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for index, image in enumerate(seeded_images()):
            img = _pipeline_input(image, cfg, Normalize, ImageToTensor)
            height, width = img.shape[-2:]
            meta = [
                {
                    "img_shape": (height, width, 3),
                    "ori_shape": (height, width, 3),
                    "pad_shape": (height, width, 3),
                    "flip": False,
                }
            ]
            captured.clear()
            logits = model.encode_decode(img, meta)
            features = captured[0]
            whole = model.whole_inference(img, meta, rescale=True)
            assert torch.equal(whole, logits), "whole_inference differs"
            assert logits.shape == (1, 19, height, width)
            arrays.update(golden_arrays(index, logits, features))
            print(golden_line(index, img, arrays))

    out = Path(args.out)
    np.savez_compressed(out / f"published_{FAMILY}.npz", **arrays)
    config_sha256 = hashlib.sha256(config_path.read_bytes()).hexdigest()
    document = {
        "family": FAMILY,
        "source": f"open-mmlab/mmsegmentation@v{MMSEG_VERSION} (PyPI mmsegmentation=="
        f"{MMSEG_VERSION}, wheel sha256 {MMSEG_WHEEL_SHA256}) with mmcv=={MMCV_VERSION} "
        f"(sdist sha256 {MMCV_SDIST_SHA256}, MMCV_WITH_OPS=0)",
        "mmseg_version": mmseg.__version__,
        "mmcv_version": mmcv.__version__,
        "config": f"configs/{CONFIG}",
        "config_sha256": config_sha256,
        "container": "state_dict",
        "prefix": "",
        "keys": keys,
    }
    (out / f"published_{FAMILY}_keys.json").write_text(json.dumps(document) + "\n")
    print(f"{len(keys)} tensors; wrote {out}/published_{FAMILY}.npz and _keys.json")


if __name__ == "__main__":
    main()
