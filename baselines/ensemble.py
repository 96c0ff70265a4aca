"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017).

Several segmenters trained independently from different random seeds; their averaged softmax is
the ensemble's prediction, and its uncertainty the anomaly score. Train the members with

    python train.py --multirun seed=0,1,2,3,4

which writes ``multirun/train/<time>/<job>/checkpoints/last.ckpt`` for jobs 0..4, then evaluate
one of them and pass the others as members (the evaluated segmenter is a member by default):

    python evaluate.py head=ensemble checkpoint=multirun/train/<time>/0/checkpoints/last.ckpt \\
        'head.ensemble.checkpoints=[multirun/train/<time>/1/checkpoints/last.ckpt,...]'
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from baselines.sampling import SCORES, MemberAverage, check_score
from fsbench.heads import AnomalyHead, AnomalyPrediction
from fsbench.models import load_segmenter


class DeepEnsemble(AnomalyHead):
    """Average softmax of several segmenters; score = its uncertainty.

    With member probabilities p_1..p_T (the loaded checkpoints, plus the evaluated segmenter when
    ``include_segmenter``), each float [N, C, H, W] at image resolution, the mean prediction is
    p = mean_t p_t and the score one of (see :mod:`baselines.sampling`)

    * ``entropy``: predictive entropy H[p] (total uncertainty);
    * ``mutual_information``: H[p] - mean_t H[p_t], the disagreement of the members;
    * ``max_softmax``: 1 - max_c p_c (formerly ``max_prob``, which now raises an error naming
      the new name).

    The segmentation logits are log p (argmax = the ensemble's prediction). The members are
    frozen: always in eval mode, no gradients. They are submodules, so moving the head (or the
    ``AnomalyEvaluation`` holding it) to a device moves them too.

    Args:
        checkpoints: ``train.py`` checkpoints of the members, e.g. the ``last.ckpt`` files of
            ``python train.py --multirun seed=0,1,2,3,4``. Do not list the checkpoint of the
            evaluated segmenter when ``include_segmenter`` is true: it would count twice.
        score: ``entropy``, ``mutual_information`` or ``max_softmax``.
        include_segmenter: also average the evaluated segmenter's softmax.
    """

    def __init__(
        self,
        checkpoints: Sequence[str | Path] | str | Path,
        score: str = "entropy",
        include_segmenter: bool = True,
    ) -> None:
        super().__init__()
        self.score_kind = check_score(score, SCORES, "DeepEnsemble")
        if isinstance(checkpoints, (str, Path)):
            checkpoints = [checkpoints]
        paths = [Path(path) for path in checkpoints]
        if not paths:
            raise ValueError(
                "DeepEnsemble needs at least one member checkpoint, e.g. "
                "head.ensemble.checkpoints=[a.ckpt,b.ckpt] (train members with "
                "`python train.py --multirun seed=0,1,2,3,4`)"
            )
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"DeepEnsemble: {len(missing)} of {len(paths)} member checkpoints do not exist: "
                f"{missing}"
            )
        resolved = [path.resolve() for path in paths]
        repeated = sorted({str(p) for p in paths if resolved.count(p.resolve()) > 1})
        if repeated:
            raise ValueError(f"DeepEnsemble: checkpoints listed more than once: {repeated}")
        self.include_segmenter = bool(include_segmenter)
        if score == "mutual_information" and len(paths) + self.include_segmenter < 2:
            raise ValueError(
                "DeepEnsemble mutual_information needs at least two members (it is 0 for one)"
            )
        members = {str(path): load_segmenter(path) for path in paths}
        classes = {path: getattr(member, "num_classes", None) for path, member in members.items()}
        if len(set(classes.values())) > 1:
            raise ValueError(
                f"DeepEnsemble members must share their number of classes, got {classes}"
            )
        self.checkpoints = [str(path) for path in paths]
        self.num_classes = next(iter(classes.values()))
        self.members = nn.ModuleList(members.values()).requires_grad_(False).eval()
        self._checked_segmenter = False

    def train(self, mode: bool = True) -> DeepEnsemble:
        """Set the head's mode; the members stay in eval mode (their BatchNorm is frozen)."""
        super().train(mode)
        self.members.eval()
        return self

    def forward(self, segmenter: nn.Module, images: Tensor) -> AnomalyPrediction:
        """Score images float [N, 3, H, W] in [0, 1]: score float32 [N, H, W], logits [N, C, H, W].

        The logits are log mean_t p_t.
        """
        self._check_segmenter(segmenter)
        average = MemberAverage()
        if self.include_segmenter:
            average.add(segmenter(images).logits)
        for member in self.members:
            average.add(member(images).logits)
        return AnomalyPrediction(
            score=average.score(self.score_kind), logits=average.log_mean_probs()
        )

    def _check_segmenter(self, segmenter: nn.Module) -> None:
        classes = getattr(segmenter, "num_classes", None)
        if classes is not None and classes != self.num_classes:
            raise ValueError(
                f"DeepEnsemble members predict {self.num_classes} classes but the evaluated "
                f"segmenter predicts {classes}; the ensemble's segmentation and the segmenter's "
                "must use the same classes"
            )
        if self._checked_segmenter or not self.include_segmenter:
            return
        self._checked_segmenter = True
        weight = getattr(getattr(segmenter, "classifier", None), "weight", None)
        for path, member in zip(self.checkpoints, self.members, strict=True):
            other = getattr(getattr(member, "classifier", None), "weight", None)
            if (
                isinstance(weight, Tensor)
                and isinstance(other, Tensor)
                and weight.shape == other.shape
                and torch.equal(weight.detach().to(other.device), other)
            ):
                warnings.warn(
                    f"DeepEnsemble member {path} has the same weights as the evaluated segmenter, "
                    "which include_segmenter already counts: it is averaged in twice. Drop it "
                    "from head.ensemble.checkpoints or set head.ensemble.include_segmenter=false.",
                    stacklevel=2,
                )
