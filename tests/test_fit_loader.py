"""Heads fit on every training image once, in index order, as stored (datamodule.fit_dataloader).

The training loader shuffles and drops the last partial batch (up to batch-1 images lost, and
reservoirs that depend on the shuffle); pasted outliers are for training the segmenter only.
"""

import torch
from torch.utils.data import Dataset, default_collate

from baselines.gaussian import ClassConditionalGaussian
from fsbench.data import OutlierPasting, SegmentationDataModule, SyntheticScenes
from fsbench.data.datamodule import UnpaddedDistributedSampler
from fsbench.models import Segmenter


class Indexed(Dataset):
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "image": torch.full((3, 2, 2), float(index))}


def test_fit_loader_yields_every_index_once_in_order():
    data = SegmentationDataModule(train=Indexed(7), batch_size=3, eval_batch_size=3)
    batches = [batch["index"].tolist() for batch in data.fit_dataloader()]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]  # the partial batch kept
    # the training loader it replaces for fitting: shuffled, 6 of the 7 images
    seen = [i for batch in data.train_dataloader() for i in batch["index"].tolist()]
    assert len(seen) == 6


def test_fit_loader_reads_the_stored_images_not_the_pasted_ones():
    train = SyntheticScenes("train", 3, 32, 64)
    data = SegmentationDataModule(
        train=train,
        batch_size=2,
        eval_batch_size=2,
        paste_outliers=lambda d: OutlierPasting(d, probability=1),
    )
    assert "outlier" in next(iter(data.train_dataloader()))  # training sees the pasted objects
    batch = next(iter(data.fit_dataloader()))
    assert "outlier" not in batch
    torch.testing.assert_close(batch["image"], default_collate([train[0], train[1]])["image"])


def test_gaussian_fitted_in_batches_equals_one_batch_of_every_image():
    torch.manual_seed(0)
    segmenter = Segmenter("resnet18", num_classes=19, decoder_channels=16).eval()
    train = SyntheticScenes("train", 7, 64, 128)  # 7 images, batches of 3: 3 + 3 + 1
    data = SegmentationDataModule(train=train, batch_size=3, eval_batch_size=3)
    batched, whole = ClassConditionalGaussian(), ClassConditionalGaussian()
    batched.fit(segmenter, data.fit_dataloader())
    whole.fit(segmenter, [default_collate([train[i] for i in range(len(train))])])
    torch.testing.assert_close(batched.class_ids, whole.class_ids)
    # The features of an image do not depend on its batch but for float32 convolution rounding
    # (oneDNN may block a batch of 3 and one of 7 differently): ~1e-6 relative. The statistics
    # sum in float64. 1e-4 of each statistic's scale bounds that rounding by a wide margin, and
    # is far below what one lost image changes (a seventh of the pixels: ~1e-1 of the scale).
    for name in ("class_means", "covariance"):
        got, want = getattr(batched, name), getattr(whole, name)
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)
    dropped = ClassConditionalGaussian()
    dropped.fit(segmenter, [default_collate([train[i] for i in range(6)])])  # one image lost
    scale = float(whole.class_means.abs().max())
    if dropped.class_ids.tolist() == whole.class_ids.tolist():
        gap = (dropped.class_means - whole.class_means).abs().max()
    else:  # a class only the lost image holds: the difference is obvious
        gap = torch.tensor(float("inf"))
    assert gap > 1e-2 * scale  # the tolerance above would catch a lost image


def test_unpadded_sampler_splits_without_repeats():
    for size in (0, 1, 2, 7, 8, 10):
        for world in (1, 2, 3, 4):
            blocks = [
                list(UnpaddedDistributedSampler(range(size), world, rank)) for rank in range(world)
            ]
            assert [i for block in blocks for i in block] == list(range(size))  # in order, once
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    # outside a process group: every index, sequentially
    assert list(UnpaddedDistributedSampler(range(5))) == [0, 1, 2, 3, 4]
    data = SegmentationDataModule(anomaly={"a": Indexed(5)}, eval_batch_size=2)
    loader = data.anomaly_dataloaders()["a"]
    assert isinstance(loader.sampler, UnpaddedDistributedSampler)  # Lightning keeps it as is
    assert [i for b in loader for i in b["index"].tolist()] == [0, 1, 2, 3, 4]
