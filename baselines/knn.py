"""Distance to the k-th nearest training feature (Sun et al., ICML 2022).

A feature head: its bank is a uniform sample of the training features
(:class:`fsbench.heads.FeatureReservoir`); it scores every feature pixel and resizes the score
bilinearly to the image (float32 [N, H, W], higher = more anomalous). The training pixels and
the plumbing from features to pixel rows and back are :mod:`fsbench.heads.features`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.heads import (
    AnomalyHead,
    FeatureReservoir,
    feature_pixels,
    in_chunks,
    pixels_to_image,
    positive_int,
    training_pixels,
)
from fsbench.models import SegOutput

__all__ = ["DISTANCE_DTYPES", "KNNDensity", "smallest_k"]


class KNNDensity(AnomalyHead):
    """Distance to the k-th nearest training feature (Sun et al., ICML 2022).

    Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors": the score
    of a feature x is its Euclidean distance to the k-th nearest neighbour in a bank of training
    features, after L2 normalisation (``normalize``, as in the paper: then it is a monotone
    function of the k-th largest cosine similarity). The bank is a uniform sample of at most
    ``bank_size`` training pixels (reservoir sampling, seeded by ``seed``), like the paper's
    random fraction of the training set. k = 10 is a small k for a bank of 20 000 pixels (the
    paper uses k = 50 for 50 000 CIFAR images, and smaller k for smaller fractions); pixels
    of one image are strongly correlated, so a bank holds many near-duplicates and a k of one
    or two would mostly measure that redundancy.

    Squared distances |q|^2 - 2 q b^T + |b|^2 (q and the bank centred on the bank's mean) are
    computed for ``chunk_size`` query pixels at a time into one reused buffer: |b|^2 - 2 q b^T is
    one ``addmm``, and |q|^2, the same for a whole row, is added to the row's k-th smallest only.
    The k-th smallest is the largest of ``topk(k, largest=False)`` (much faster than ``kthvalue``
    on the CPU). ``chunk_size=None`` sizes the chunks to the bank and the device
    (:meth:`auto_chunk_size`): on a GPU a few large chunks instead of hundreds of small matmul
    and topk launches.

    ``distance_dtype="bfloat16"`` or ``"float16"`` (for GPUs with tensor cores; the CPU has no
    fast path for them) computes the chunk's distance matrix in that precision, half the memory
    traffic of the top-k pass, to shortlist the ``2k`` nearest candidates; their exact float32
    distances then give the k-th. The score equals the float32 one unless a true k nearest
    neighbour falls outside the shortlist, which needs a rounding error (2**-8 relative in
    bfloat16, 2**-11 in float16) larger than the gap between the k-th and the 2k-th distance.

    Args:
        k: the neighbour whose distance is the score (1 = nearest).
        bank_size: the most training features kept.
        normalize: L2-normalise features (the bank and the queries).
        seed: seed of the reservoir sampling.
        chunk_size: query pixels scored at once (memory chunk_size x bank_size floats), or
            ``None`` for :meth:`auto_chunk_size`.
        ignore_index: label of the pixels left out of the bank.
        distance_dtype: ``"float32"`` (exact), ``"bfloat16"`` or ``"float16"`` (shortlist in
            that precision, then exact float32 re-ranking; see above).

    Fitted buffer: ``bank`` [B, D], B = min(bank_size, training pixels), normalised if asked.
    """

    # Distance entries (float32) per chunk. CPU: 64 MiB; against 20 000 bank rows, chunks of 512
    # to 4096 query rows scored equally fast on 1 and 2 threads, smaller ones slower on 2
    # (benchmarks/README.md). GPU: 1 GiB, few enough matmul and topk launches to keep the device
    # busy.
    CPU_DISTANCE_BUDGET = 2**24
    GPU_DISTANCE_BUDGET = 2**28

    def __init__(
        self,
        k: int = 10,
        bank_size: int = 20000,
        normalize: bool = True,
        seed: int = 0,
        chunk_size: int | None = None,
        ignore_index: int = 255,
        distance_dtype: str = "float32",
    ) -> None:
        super().__init__()
        if distance_dtype not in DISTANCE_DTYPES:
            raise ValueError(
                f"KNNDensity distance_dtype must be one of {sorted(DISTANCE_DTYPES)}, "
                f"got {distance_dtype!r}"
            )
        if distance_dtype == "float16" and not normalize:
            raise ValueError(
                "KNNDensity distance_dtype='float16' needs normalize=true: squared distances of "
                "unnormalised features can exceed float16's largest value (65504); use "
                "distance_dtype='bfloat16' (float32's range) or float32"
            )
        self.distance_dtype = distance_dtype
        self.k = positive_int(k, "k", self)
        self.bank_size = positive_int(bank_size, "bank_size", self)
        if self.k > self.bank_size:
            raise ValueError(f"KNNDensity k={k} is larger than bank_size={bank_size}")
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self.chunk_size = (
            None if chunk_size is None else positive_int(chunk_size, "chunk_size", self)
        )
        self.ignore_index = int(ignore_index)
        self.register_fitted("bank")

    @classmethod
    def auto_chunk_size(cls, bank_rows: int, device: torch.device) -> int:
        """Query rows per chunk when ``chunk_size`` is None: the device's budget / bank rows."""
        budget = cls.CPU_DISTANCE_BUDGET if device.type == "cpu" else cls.GPU_DISTANCE_BUDGET
        return max(1, budget // max(1, bank_rows))

    def fit(self, segmenter: nn.Module, loader: Any) -> None:
        """Fill the bank with a uniform sample of the training features."""
        reservoir = FeatureReservoir(self.bank_size, self.seed)
        segmenter.eval()
        with torch.inference_mode():
            for features, _ in training_pixels(segmenter, loader, "kNN bank", self.ignore_index):
                reservoir.add(features)
        bank = reservoir.sample
        if bank is None:
            raise ValueError(
                "KNNDensity.fit got no usable training pixel from the loader "
                f"(empty loader, or every label is ignore_index={self.ignore_index})"
            )
        if bank.shape[0] < self.k:
            raise ValueError(
                f"KNNDensity: the loader gave {bank.shape[0]} training pixels, "
                f"fewer than k={self.k}"
            )
        bank = bank.to(torch.float32, copy=True)
        self.bank = F.normalize(bank, dim=1) if self.normalize else bank

    def score(self, out: SegOutput) -> Tensor:
        self.check_fitted()
        x, shape = feature_pixels(out.features)
        if self.normalize:
            x = F.normalize(x, dim=1)
        center = self.bank.mean(dim=0)
        bank = self.bank - center
        bank_sq = bank.square().sum(dim=1)
        chunk_size = self.chunk_size or self.auto_chunk_size(bank.shape[0], x.device)
        dtype = DISTANCE_DTYPES[self.distance_dtype]
        if dtype != torch.float32:
            shortlisted = self._shortlisted(x, center, bank, bank_sq, dtype, chunk_size)
            return pixels_to_image(shortlisted, shape, out.logits.shape[-2:])
        # A fresh [chunk, B] tensor per chunk would cost the CPU page faults of the order of the
        # matmul itself; one buffer serves every chunk (not under autograd, which refuses out=).
        reuse = not (torch.is_grad_enabled() and x.requires_grad)
        buffer = x.new_empty(min(chunk_size, x.shape[0]), bank.shape[0]) if reuse else None

        def kth_distance(chunk: Tensor) -> Tensor:
            query = chunk - center
            into = None if buffer is None else buffer[: chunk.shape[0]]
            rest = torch.addmm(bank_sq, query, bank.T, alpha=-2, out=into)
            kth = smallest_k(rest, self.k)[0].amax(dim=1)
            return kth.add_(query.square().sum(dim=1)).clamp_(min=0).sqrt_()

        return pixels_to_image(in_chunks(kth_distance, x, chunk_size), shape, out.logits.shape[-2:])

    def _shortlisted(
        self,
        x: Tensor,
        center: Tensor,
        bank: Tensor,
        bank_sq: Tensor,
        dtype: torch.dtype,
        chunk_size: int,
    ) -> Tensor:
        """k-th distances: 2k candidates from low-precision distances, re-ranked in float32."""
        low_bank = bank.to(dtype)
        low_bank_sq = bank_sq.to(dtype)
        candidates = min(2 * self.k, bank.shape[0])

        def kth_distance(chunk: Tensor) -> Tensor:
            query = chunk - center
            rest = torch.addmm(low_bank_sq, query.to(dtype), low_bank.T, alpha=-2)
            shortlist = smallest_k(rest, candidates)[1]
            exact = (bank[shortlist] - query[:, None, :]).square().sum(dim=2)
            kth = exact.topk(self.k, dim=1, largest=False, sorted=False).values.amax(dim=1)
            return kth.sqrt_()

        return in_chunks(kth_distance, x, chunk_size)


DISTANCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def smallest_k(distances: Tensor, k: int, groups: int | None = None) -> tuple[Tensor, Tensor]:
    """The k smallest entries of each row of [C, B] and their columns (unsorted), exactly.

    ``topk`` over long rows makes many passes over the matrix; this reads it once. The columns
    are dealt into ``groups`` groups (column j to group j mod groups; default ~sqrt(B k)) and
    each group's minimum is taken, a reduction over the matrix's rows of [C, B / groups, groups]
    with contiguous reads. The k groups with the smallest minima then hold every one of the
    row's k smallest values: the k-th smallest group minimum t bounds the k-th smallest value
    from above (k groups each hold a value <= t), and a value below t lies in a group whose
    minimum is below t, one of the k chosen. Only those groups' entries (about k B / groups) are
    gathered for the final ``topk``. The values equal ``topk``'s; among ties the columns may
    differ.
    """
    rows, columns = distances.shape
    if groups is None:
        groups = math.ceil(math.sqrt(columns * k))
    depth = columns // groups  # full rounds of the deal
    if groups <= k or depth <= 1:
        result = distances.topk(k, dim=1, largest=False, sorted=False)
        return result.values, result.indices
    minima = distances[:, : depth * groups].unflatten(1, (depth, groups)).amin(dim=1)
    left = columns - depth * groups  # the last, partial round: columns of the first groups
    if left:
        minima[:, :left] = torch.minimum(minima[:, :left], distances[:, depth * groups :])
    chosen = minima.topk(k, dim=1, largest=False, sorted=False).indices
    rounds = torch.arange(depth + (1 if left else 0), device=distances.device) * groups
    candidates = (chosen[:, :, None] + rounds).reshape(rows, -1)
    inside = candidates < columns
    candidates = candidates.clamp_(max=columns - 1)
    values = distances.gather(1, candidates).masked_fill_(~inside, float("inf"))
    best = values.topk(k, dim=1, largest=False, sorted=False)
    return best.values, candidates.gather(1, best.indices)
