"""The code in docs/writing_a_head.md runs, and its heads compute what the page says."""

import math
import re
from pathlib import Path

import pytest
import torch

from fsbench.heads import AnomalyPrediction
from fsbench.models import SegOutput

PAGE = Path(__file__).resolve().parents[1] / "docs" / "writing_a_head.md"


@pytest.fixture(scope="module")
def namespace() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), scope)
    return scope


class _Mirror(torch.nn.Module):
    """Logits [N, 2, 1, 2], all zero but the left pixel's class 0: +3 where the image's green
    channel marks that pixel, -3 otherwise. The mirrored image moves the marker to the right."""

    def forward(self, images):
        logits = torch.zeros(images.shape[0], 2, 1, 2)
        logits[:, 0, :, 0] = 3.0 if images[0, 1, 0, 0] > 0 else -3.0
        return SegOutput(logits=logits, features=torch.zeros(images.shape[0], 1, 1, 1))


def test_post_hoc_example_scores_the_logit_margin(namespace):
    logits = torch.tensor([3.0, 1.0, -2.0]).reshape(1, 3, 1, 1)
    score = namespace["LogitMargin"]().score(SegOutput(logits=logits, features=logits))
    assert score.item() == pytest.approx(-2.0)


def test_multi_pass_example_averages_the_image_and_its_mirror(namespace):
    images = torch.zeros(1, 3, 1, 2)
    images[0, 1, 0, 0] = 1.0  # marker that the left pixel of the unflipped image is here
    prediction = namespace["FlipEntropy"]()(_Mirror(), images)
    assert isinstance(prediction, AnomalyPrediction)
    # Unflipped: left pixel logits (3, 0), right (0, 0). The flipped pass sees no marker at its
    # left pixel: logits (-3, 0) there, which flip back to the right pixel.
    p3 = 1 / (1 + math.exp(-3))
    left = [(p3 + 0.5) / 2, (1 - p3 + 0.5) / 2]
    right = [(0.5 + (1 - p3)) / 2, (0.5 + p3) / 2]

    def entropy(p):
        return -sum(v * math.log(v) for v in p)

    assert prediction.score.flatten().tolist() == pytest.approx([entropy(left), entropy(right)])


def test_training_time_example_hinges_the_outlier_max_logit(namespace):
    head = namespace["OutlierLogitHinge"](margin=1.0, weight=0.5)
    logits = torch.tensor([[3.0, 0.0], [0.5, 2.0], [-1.0, 4.0]]).T.reshape(1, 2, 1, 3)
    out = SegOutput(logits=logits, features=logits)
    batch = {"outlier": torch.tensor([[[1, 1, 0]]], dtype=torch.uint8)}
    # max logits of the two outlier pixels: 3 and 2 -> hinge 2 and 1 -> mean 1.5, x 0.5
    assert head.training_loss(out, batch).item() == pytest.approx(0.75)
    assert head.trained_with_segmenter
    none = head.training_loss(out, {"outlier": torch.zeros(1, 1, 3, dtype=torch.uint8)})
    assert none.item() == 0.0
    assert torch.equal(head.score(out), -torch.tensor([[[3.0, 2.0, 4.0]]]))
