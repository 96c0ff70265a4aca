"""Monte Carlo dropout (Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016).

For semantic segmentation as in Bayesian SegNet (Kendall et al., BMVC 2017) and, with DeepLabv3+,
Mukhoti & Gal, "Evaluating Bayesian Deep Learning Methods for Semantic Segmentation" (2018):
dropout stays active at test time and the predictive distribution is the average of T stochastic
softmax outputs. fsbench's segmenter has its dropout right before the 1x1 classifier, so the
decoder features are computed once and only the cheap classifier is sampled T times; each
sample's logits are upsampled to the image before the softmax (``resolution="image"``), as
the definition and the single-pass heads have it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.sampling import (
    SCORES,
    MemberAverage,
    check_score,
    expected_entropy,
    mutual_information,
    predictive_entropy,
)
from fsbench.heads import AnomalyHead, AnomalyPrediction, resize_score
from fsbench.models.protocol import check_segmenter

# The helpers on stacked member probabilities [T, N, C, ...] live in baselines.sampling (shared
# with baselines.ensemble); they are re-exported here for convenience.
__all__ = ["MCDropout", "expected_entropy", "mutual_information", "predictive_entropy"]


def sample_dropout(features: Tensor, rate: float) -> Tensor:
    """Inverted dropout, ``F.dropout(features, rate, training=True)`` in distribution.

    On the CPU the mask comes from one uniform draw per element, thresholded in place (an
    element is kept with probability P(u >= rate) = 1 - rate and scaled by 1 / (1 - rate)),
    which is cheaper there than ``F.dropout``'s Bernoulli sampling (benchmarks/README.md). On
    GPUs ``F.dropout``'s fused kernel is used.
    """
    if rate == 0:
        return features
    if features.device.type != "cpu" or features.requires_grad:
        return F.dropout(features, rate, training=True)
    keep = torch.rand_like(features).ge_(rate)  # 1.0 where kept, 0.0 where dropped
    return keep.mul_(features).mul_(1.0 / (1.0 - rate))


class MCDropout(AnomalyHead):
    """MC dropout on the decoder features; score = predictive entropy, mutual info., max softmax.

    ``forward`` runs ``segmenter.extract_features`` once (features [N, D, h, w], h = ceil(H/4)),
    then draws T samples with dropout applied functionally (:func:`sample_dropout`): the
    segmenter is never switched to train mode, so its BatchNorm layers keep their running
    statistics. With ``resolution="image"`` (the default) every sample is
    ``segmenter.classify(dropout(features, p), (H, W))``, the segmenter's own 1x1 classifier and
    bilinear upsampling (its dropout module is inactive in eval mode), so p_t = softmax of that
    sample's logits at each image pixel, exactly as the single-pass softmax heads score; the
    score is computed from the T samples there (see :mod:`baselines.sampling`). Memory does not
    grow with T: one float64 [N, C, H, W] running sum of p_t and one [N, H, W] sum of H[p_t],
    updated in place as the samples come, plus one sample's logits and the work buffers of
    :class:`~baselines.sampling.MemberAverage` (two float64 tensors of the logits' size, or
    cache-sized chunks on a single-threaded CPU).

    ``resolution="features"`` is the cheaper approximation: the samples p_t =
    softmax(classify(dropout(features, p), (h, w))), the classifier without the upsampling,
    stay at feature resolution [N, C, h, w] and the
    finished score is resized bilinearly to [N, H, W]. It is not the same score: on a class
    boundary the image-resolution logits pass through a mixed, uncertain distribution between
    two confident feature pixels, while the resized score only interpolates the two confident
    pixels' low values, so the boundary's uncertainty is lost (an entropy of 0.017 instead of
    0.47 on a two-class edge; ``tests/test_sampling_heads.py``). It costs T softmaxes over h x w
    instead of H x W.

    The segmentation logits are the deterministic ``segmenter.classify(features, (H, W))``
    either way.

    Args:
        num_samples: T, the number of stochastic passes of the classifier.
        score: ``entropy`` (predictive entropy H[mean_t p_t], total uncertainty),
            ``mutual_information`` (H[mean_t p_t] - mean_t H[p_t], the disagreement of the
            samples, as Bayesian DeepLab scores in Mukhoti & Gal 2018; needs T >= 2) or
            ``max_softmax`` (1 - max_c mean_t p_tc, the max-softmax score of the averaged
            prediction; formerly ``max_prob``, which now raises an error naming the new name).
        dropout: dropout rate p for the samples; ``None`` uses the segmenter's own rate
            (``segmenter.dropout.p``, set by ``model.dropout`` at training time).
        resolution: ``image`` (per image pixel, the definition) or ``features`` (at feature
            resolution, then the score resized; see above).
    """

    SCORES = SCORES
    RESOLUTIONS = ("image", "features")

    def __init__(
        self,
        num_samples: int = 8,
        score: str = "entropy",
        dropout: float | None = None,
        resolution: str = "image",
    ) -> None:
        super().__init__()
        self.score_kind = check_score(score, self.SCORES, "MCDropout")
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"MCDropout num_samples must be an integer >= 1, got {num_samples}")
        if score == "mutual_information" and num_samples < 2:
            raise ValueError(
                "MCDropout mutual_information needs num_samples >= 2 (it is 0 for one sample)"
            )
        if dropout is not None and not 0 <= dropout < 1:
            raise ValueError(f"MCDropout dropout must be in [0, 1), got {dropout}")
        if resolution not in self.RESOLUTIONS:
            raise ValueError(
                f"MCDropout resolution must be one of {', '.join(self.RESOLUTIONS)}; "
                f"got {resolution!r}"
            )
        self.num_samples = int(num_samples)
        self.dropout_rate = None if dropout is None else float(dropout)
        self.resolution = resolution

    def resolve_dropout(self, segmenter: nn.Module) -> float:
        """The dropout rate the samples use: the override, else the segmenter's own rate."""
        if self.dropout_rate is not None:
            return self.dropout_rate
        rate = getattr(getattr(segmenter, "dropout", None), "p", None)
        if rate is None:
            raise ValueError(
                f"MCDropout: {type(segmenter).__name__} has no `dropout` module to take the rate "
                "from; pass it explicitly, e.g. head.mc_dropout.dropout=0.1"
            )
        if rate == 0:
            raise ValueError(
                "MCDropout: the segmenter was trained without dropout (model.dropout=0), so "
                "there is nothing to sample. Train with model.dropout>0 (e.g. `python train.py "
                "model.dropout=0.1`) or pass a rate explicitly, e.g. head.mc_dropout.dropout=0.1"
            )
        return float(rate)

    def forward(self, segmenter: nn.Module, images: Tensor) -> AnomalyPrediction:
        """Score images float [N, 3, H, W] in [0, 1]: score float32 [N, H, W], logits [N, C, H, W].

        The logits are the deterministic ones of the segmenter.
        """
        check_segmenter(segmenter, "MCDropout", needs=("extract_features", "classify"))
        rate = self.resolve_dropout(segmenter)
        size = tuple(images.shape[-2:])
        features = segmenter.extract_features(images)
        samples = MemberAverage()
        for _ in range(self.num_samples):
            dropped = sample_dropout(features, rate)
            if self.resolution == "image":
                samples.add(segmenter.classify(dropped, size))  # [N, C, H, W]
            else:
                samples.add(segmenter.classify(dropped, dropped.shape[-2:]))  # [N, C, h, w]
            del dropped  # freed before the next mask is drawn
        score = resize_score(samples.score(self.score_kind), size)  # float32 [N, H, W]
        del samples
        return AnomalyPrediction(score=score, logits=segmenter.classify(features, size))
