"""Feature-density heads: how unlike the training data a pixel's decoder feature is.

Each head fits a model of the decoder features (``SegOutput.features``, float [N, D, h, w] with
h = ceil(H / 4)) of the training images in one streaming pass over the training loader, scores
every feature pixel, and resizes the score bilinearly to the image: float32 [N, H, W], higher =
more anomalous.

* :class:`ClassConditionalGaussian`: class-conditional Gaussians with a tied covariance, score =
  the smallest squared Mahalanobis distance to a class mean (Lee et al., NeurIPS 2018).
* :class:`KNNDensity`: distance to the k-th nearest neighbour in a bank of training features
  (Sun et al., ICML 2022).
* :class:`FlowDensity`: negative log-likelihood under a RealNVP normalizing flow (Dinh et al.,
  ICLR 2017) trained on the training features.

Training pixels: the ground-truth label is resized to feature resolution by nearest neighbour
(``nearest-exact``: the label pixel at the centre of each 4 x 4 cell); feature pixels whose label is
``ignore_index`` (void, unlabelled) are left out. A batch without a ``label`` uses every pixel.
The bank-based heads keep a uniform sample of at most ``bank_size`` training pixels drawn by
reservoir sampling (:class:`FeatureReservoir`), so their memory does not grow with the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from fsbench.heads import AnomalyHead, device_of, resize_score
from fsbench.models import SegOutput
from fsbench.models.protocol import check_segmenter

__all__ = [
    "AffineCoupling",
    "ClassConditionalGaussian",
    "FeatureReservoir",
    "FlowDensity",
    "KNNDensity",
    "RealNVP",
]


class ClassConditionalGaussian(AnomalyHead):
    """Min Mahalanobis distance to class means with a tied covariance (Lee et al., NeurIPS 2018).

    Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
    Adversarial Attacks": the features of class c are modelled as N(mu_c, Sigma) with one shared
    covariance, Sigma = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T / N. The score of a feature
    x is the squared Mahalanobis distance to the closest class mean,
    min_c (x - mu_c)^T P (x - mu_c) with P = (Sigma + r I)^-1, over the classes seen in fitting.

    The fit streams once over the loader, accumulating in float64 per-class counts n_c, per-class
    sums and the global sum of outer products S = sum_i x_i x_i^T; then Sigma = (S - sum_c n_c
    mu_c mu_c^T) / N. The ridge r = ``shrinkage`` * trace(Sigma) / D (a fraction of the mean
    feature variance) keeps Sigma invertible when some channels are (nearly) constant, as dead
    ReLU channels are. Scoring whitens with W = L^-T, where Sigma + r I = L L^T (so P = W W^T),
    and expands |(x - mu_c) W|^2 = |y|^2 - 2 y m_c^T + |m_c|^2 as matmuls (y = x W, m_c = mu_c W,
    both centred on the mean of the class means), in chunks of ``chunk_size`` pixels.

    Args:
        assign: the class of a training pixel: ``label`` (ground truth) or ``prediction`` (the
            segmenter's argmax at image resolution, resized like the label).
        shrinkage: the ridge as a fraction of the mean variance trace(Sigma) / D.
        chunk_size: feature pixels scored (or accumulated in float64 by the fit) at once.
        ignore_index: label of the pixels left out of the fit.

    Fitted buffers: ``class_ids`` int64 [K] (the classes seen), ``class_means`` [K, D],
    ``covariance`` [D, D] (Sigma, without the ridge) and ``whitener`` [D, D] (W).
    """

    ASSIGNS = ("label", "prediction")

    def __init__(
        self,
        assign: str = "label",
        shrinkage: float = 1e-6,
        chunk_size: int = 65536,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if assign not in self.ASSIGNS:
            raise ValueError(
                f"ClassConditionalGaussian assign must be one of {', '.join(self.ASSIGNS)}, "
                f"got {assign!r}"
            )
        if not shrinkage >= 0:
            raise ValueError(f"ClassConditionalGaussian shrinkage must be >= 0, got {shrinkage}")
        self.assign = assign
        self.shrinkage = float(shrinkage)
        self.chunk_size = _positive_int(chunk_size, "chunk_size", self)
        self.ignore_index = int(ignore_index)
        for name in ("class_ids", "class_means", "covariance", "whitener"):
            self.register_fitted(name)

    @property
    def precision(self) -> Tensor:
        """P = (Sigma + r I)^-1 = W W^T, [D, D]."""
        self.check_fitted()
        return self.whitener @ self.whitener.T

    def fit(self, segmenter: nn.Module, loader: Any) -> None:
        """Class means and the tied covariance of the training features, in one pass."""
        count = sums = outer = None
        segmenter.eval()
        with torch.inference_mode():
            pixels = _training_pixels(
                segmenter, loader, "Gaussian statistics", self.ignore_index, self.assign
            )
            for features, classes in pixels:
                if outer is None:
                    dims = features.shape[1]
                    outer = features.new_zeros(dims, dims, dtype=torch.float64)
                    count, sums = outer.new_zeros(0), outer.new_zeros(0, dims)
                grow = int(classes.max()) + 1 - count.shape[0]
                if grow > 0:  # classes are numbered as they come, no number of classes needed
                    count, sums = F.pad(count, (0, grow)), F.pad(sums, (0, 0, 0, grow))
                count += torch.bincount(classes, minlength=count.shape[0])
                # float64 copies of chunk_size pixels at a time bound the extra memory.
                for start in range(0, features.shape[0], self.chunk_size):
                    x = features[start : start + self.chunk_size].double()
                    sums.index_add_(0, classes[start : start + self.chunk_size], x)
                    outer += x.T @ x
        if outer is None:
            raise ValueError(
                "ClassConditionalGaussian.fit got no usable training pixel from the loader "
                f"(empty loader, or every label is ignore_index={self.ignore_index})"
            )
        seen = count > 0
        total, class_count = count.sum(), count[seen]
        means = sums[seen] / class_count[:, None]
        covariance = (outer - (means.T * class_count) @ means) / total
        covariance = (covariance + covariance.T) / 2
        dims = covariance.shape[0]
        ridge = self.shrinkage * covariance.trace() / dims
        eye = torch.eye(dims, dtype=covariance.dtype, device=covariance.device)
        factor, info = torch.linalg.cholesky_ex(covariance + ridge * eye)
        if info.item() != 0:
            raise ValueError(
                "ClassConditionalGaussian: the tied covariance is singular (constant features?); "
                f"increase shrinkage (now {self.shrinkage}), e.g. head.gaussian.shrinkage=1e-3"
            )
        whitener = torch.linalg.solve_triangular(factor, eye, upper=False).T  # L^-T
        self.class_ids = torch.nonzero(seen)[:, 0]
        self.class_means = means.float()
        self.covariance = covariance.float()
        self.whitener = whitener.float()

    def score(self, out: SegOutput) -> Tensor:
        self.check_fitted()
        x, shape = _pixels_of(out.features)
        center = self.class_means.mean(dim=0)
        means = (self.class_means - center) @ self.whitener  # [K, D]
        means_sq = means.square().sum(dim=1)

        def min_distance(chunk: Tensor) -> Tensor:
            y = (chunk - center) @ self.whitener
            distances = y.square().sum(dim=1, keepdim=True) - 2 * y @ means.T + means_sq
            return distances.amin(dim=1).clamp_(min=0)

        return _to_image(_in_chunks(min_distance, x, self.chunk_size), shape, out)


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
    # to 4096 query rows scored equally fast on 1 and 2 threads (256 rows were 1.5x slower on 2).
    # GPU: 1 GiB, few enough matmul and topk launches to keep the device busy.
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
        self.k = _positive_int(k, "k", self)
        self.bank_size = _positive_int(bank_size, "bank_size", self)
        if self.k > self.bank_size:
            raise ValueError(f"KNNDensity k={k} is larger than bank_size={bank_size}")
        self.normalize = bool(normalize)
        self.seed = int(seed)
        self.chunk_size = (
            None if chunk_size is None else _positive_int(chunk_size, "chunk_size", self)
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
            for features, _ in _training_pixels(segmenter, loader, "kNN bank", self.ignore_index):
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
        x, shape = _pixels_of(out.features)
        if self.normalize:
            x = F.normalize(x, dim=1)
        center = self.bank.mean(dim=0)
        bank = self.bank - center
        bank_sq = bank.square().sum(dim=1)
        chunk_size = self.chunk_size or self.auto_chunk_size(bank.shape[0], x.device)
        dtype = DISTANCE_DTYPES[self.distance_dtype]
        if dtype != torch.float32:
            shortlisted = self._shortlisted(x, center, bank, bank_sq, dtype, chunk_size)
            return _to_image(shortlisted, shape, out)
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

        return _to_image(_in_chunks(kth_distance, x, chunk_size), shape, out)

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

        return _in_chunks(kth_distance, x, chunk_size)


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


class FlowDensity(AnomalyHead):
    """Negative log-likelihood under a RealNVP flow of the training features (Dinh et al., 2017).

    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017. The features
    are first mapped to ``dims`` dimensions by a fixed PCA whitening z = (x - mean) V S^-1/2 (top
    principal directions V and their variances S, from the reservoir sample), then a flow of
    ``layers`` affine coupling layers (:class:`RealNVP`) with a standard normal base is trained by
    maximum likelihood: ``steps`` steps of Adam (learning rate ``lr`` with cosine decay) on
    minibatches of ``batch_size`` features drawn from a uniform reservoir sample of at most
    ``bank_size`` training pixels. Everything random (the sample, the flow's initialisation, the
    minibatches) follows ``seed``.

    The score is -log p(z), the NLL of the whitened projection. The linear map's Jacobian is a
    constant, so it is left out: it would shift every score by the same amount and change no
    ranking. Directions outside the top ``dims`` principal components are not modelled.

    Args:
        dims: PCA dimensions (at most D; ``None`` keeps all D).
        layers: coupling layers (masks alternate, so use an even number).
        hidden: width of the two hidden layers of each coupling MLP.
        steps, batch_size, lr: the maximum-likelihood training.
        bank_size: the most training features kept for the PCA and the training.
        seed: seed of everything random.
        chunk_size: feature pixels scored at once.
        ignore_index: label of the pixels left out of the fit.

    Fitted buffers: ``feature_mean`` [D] and ``projection`` [D, d] (V S^-1/2); the flow's weights
    are the parameters of the submodule ``flow``, built by :meth:`fit` (or when a fitted state
    dict is loaded) with d inputs and frozen after training.
    """

    def __init__(
        self,
        dims: int | None = 32,
        layers: int = 6,
        hidden: int = 64,
        steps: int = 1000,
        batch_size: int = 256,
        lr: float = 1e-3,
        bank_size: int = 20000,
        seed: int = 0,
        chunk_size: int = 65536,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if dims is not None and (_positive_int(dims, "dims", self) < 2):
            raise ValueError(f"FlowDensity dims must be >= 2 (or null for all), got {dims}")
        self.dims = dims
        self.layers = _positive_int(layers, "layers", self)
        self.hidden = _positive_int(hidden, "hidden", self)
        self.steps = _positive_int(steps, "steps", self)
        self.batch_size = _positive_int(batch_size, "batch_size", self)
        if not lr > 0:
            raise ValueError(f"FlowDensity lr must be > 0, got {lr}")
        self.lr = float(lr)
        self.bank_size = _positive_int(bank_size, "bank_size", self)
        self.seed = int(seed)
        self.chunk_size = _positive_int(chunk_size, "chunk_size", self)
        self.ignore_index = int(ignore_index)
        self.register_fitted("feature_mean")
        self.register_fitted("projection")
        self.register_module("flow", None)

    def build_flow(self, dims: int) -> RealNVP:
        """A fresh flow on ``dims`` inputs, initialised from ``seed`` (on the CPU)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return RealNVP(dims, self.layers, self.hidden)

    def fit(self, segmenter: nn.Module, loader: Any) -> None:
        """PCA whitening of a reservoir sample of training features, then the flow's training."""
        reservoir = FeatureReservoir(self.bank_size, self.seed)
        segmenter.eval()
        with torch.inference_mode():
            pixels = _training_pixels(segmenter, loader, "flow sample", self.ignore_index)
            for features, _ in pixels:
                reservoir.add(features)
        sample = reservoir.sample
        if sample is None or sample.shape[0] < 2:
            raise ValueError(
                "FlowDensity.fit got fewer than 2 usable training pixels from the loader "
                f"(empty loader, or every label is ignore_index={self.ignore_index})"
            )
        sample = sample.to(torch.float64, copy=True)
        if sample.shape[1] < 2:
            raise ValueError("FlowDensity needs features of at least 2 dimensions")
        dims = sample.shape[1] if self.dims is None else min(self.dims, sample.shape[1])
        mean = sample.mean(dim=0)
        centred = sample - mean
        variances, vectors = torch.linalg.eigh(centred.T @ centred / (sample.shape[0] - 1))
        variances, vectors = variances.flip(0)[:dims], vectors.flip(1)[:, :dims]
        floor = 1e-6 * variances[0].clamp(min=torch.finfo(torch.float64).tiny)
        self.feature_mean = mean.float()
        self.projection = (vectors / variances.clamp(min=floor).sqrt()).float()
        self._train_flow((centred @ self.projection.double()).float())

    def _train_flow(self, data: Tensor) -> None:
        """Build the flow and fit it to data float [M, d] by maximum likelihood."""
        generator = torch.Generator().manual_seed(self.seed)
        with torch.inference_mode(False), torch.enable_grad():  # whatever the caller's mode
            data = data.clone()
            self.flow = self.build_flow(data.shape[1]).to(data.device)
            optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.lr)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.steps)
            for _ in tqdm(range(self.steps), desc="flow training", disable=None):
                index = torch.randint(data.shape[0], (self.batch_size,), generator=generator)
                loss = -self.flow.log_prob(data[index.to(data.device)]).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        self.flow.requires_grad_(False)
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"FlowDensity training diverged (loss {loss.item()}); lower lr")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        projection = state_dict.get(prefix + "projection")
        if projection is not None and projection.numel() > 0:  # a fitted head: rebuild its flow
            device = self.projection.device
            self.flow = self.build_flow(projection.shape[1]).to(device).requires_grad_(False)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def score(self, out: SegOutput) -> Tensor:
        self.check_fitted()
        x, shape = _pixels_of(out.features)

        def nll(chunk: Tensor) -> Tensor:
            return -self.flow.log_prob((chunk - self.feature_mean) @ self.projection)

        return _to_image(_in_chunks(nll, x, self.chunk_size), shape, out)


class AffineCoupling(nn.Module):
    """One affine coupling layer of RealNVP: y = x * exp(s(x_m)) + t(x_m) on the free dims.

    ``mask`` (1 = conditioning dimension) selects x_m = mask * x; s and t come from an MLP of x_m
    and are zero on the conditioning dimensions, which pass through unchanged. s = tanh(.) bounds
    each layer's log-scale to (-1, 1) for stable training; log |det dy/dx| = sum s. The MLP's last
    layer starts at zero, so an untrained layer is the identity.
    """

    def __init__(self, mask: Tensor, hidden: int) -> None:
        super().__init__()
        dims = mask.numel()
        self.register_buffer("mask", mask.float())
        self.net = nn.Sequential(
            nn.Linear(dims, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2 * dims),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """y [M, d] and log |det dy/dx| [M] of x [M, d]."""
        log_scale, shift = self.net(x * self.mask).chunk(2, dim=1)
        free = 1 - self.mask
        log_scale = torch.tanh(log_scale) * free
        return x * log_scale.exp() + shift * free, log_scale.sum(dim=1)


class RealNVP(nn.Module):
    """A stack of affine couplings with a standard normal base (Dinh et al., ICLR 2017).

    Layers come in pairs with complementary masks, so every dimension is transformed; each pair
    draws a new random half of the dimensions as its conditioning set (from the global RNG: build
    it under a seed), which mixes the dimensions better than a fixed split.
    """

    def __init__(self, dims: int, layers: int, hidden: int) -> None:
        super().__init__()
        if dims < 2:
            raise ValueError(f"RealNVP needs at least 2 dimensions, got {dims}")
        couplings = []
        for index in range(layers):
            if index % 2 == 0:
                mask = torch.zeros(dims)
                mask[torch.randperm(dims)[: dims // 2]] = 1
            else:
                mask = 1 - mask
            couplings.append(AffineCoupling(mask, hidden))
        self.couplings = nn.ModuleList(couplings)
        self.dims = dims

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z = f(x) [M, d] and log |det df/dx| [M]."""
        log_det = x.new_zeros(x.shape[0])
        for coupling in self.couplings:
            x, layer_log_det = coupling(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) [M] by the change of variables: log N(f(x); 0, I) + log |det df/dx|."""
        z, log_det = self(x)
        return -0.5 * z.square().sum(dim=1) - 0.5 * self.dims * math.log(2 * math.pi) + log_det


class FeatureReservoir:
    """A uniform random sample of at most ``capacity`` rows of a stream (Vitter's Algorithm R).

    Algorithm R (Vitter, "Random sampling with a reservoir", ACM TOMS 1985) keeps the first
    ``capacity`` rows; row i > capacity (counting from 1) then replaces a uniformly chosen kept
    row with probability capacity / i. After n rows, each of them is in the sample with
    probability min(1, capacity / n), and the memory is ``capacity`` rows whatever n. :meth:`add`
    does the same for a batch of rows at once, with one uniform draw per row from a generator
    seeded by ``seed``.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.seen = 0
        self.rows: Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, rows: Tensor) -> None:
        """Offer rows [M, D] (in order)."""
        count = rows.shape[0]
        if count == 0:
            return
        if self.rows is None:
            self.rows = rows.new_empty(self.capacity, rows.shape[1])
        position = torch.arange(self.seen, self.seen + count, dtype=torch.int64)  # from 0
        uniform = torch.rand(count, generator=self.generator, dtype=torch.float64)
        slot = torch.minimum((uniform * (position + 1)).long(), position)  # uniform in 0..position
        slot = torch.where(position < self.capacity, position, slot)
        kept = slot < self.capacity
        # Rows replace in stream order, so of several rows drawing one slot the last one stays.
        last = torch.full((self.capacity,), -1, dtype=torch.int64)
        last.scatter_reduce_(0, slot[kept], torch.arange(count)[kept], reduce="amax")
        filled = torch.nonzero(last >= 0)[:, 0]
        self.rows[filled.to(rows.device)] = rows[last[filled].to(rows.device)]
        self.seen += count

    @property
    def sample(self) -> Tensor | None:
        """The kept rows [min(capacity, seen), D], or None before any row."""
        return None if self.rows is None else self.rows[: min(self.capacity, self.seen)]


def _training_pixels(
    segmenter: nn.Module, loader: Any, desc: str, ignore_index: int, assign: str | None = None
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield each batch's usable training features [P, D] and their classes int64 [P].

    The classes are the labels (``assign="label"``), the segmenter's argmax at image resolution
    (``prediction``), both resized to feature resolution by nearest neighbour, or None (``None``).
    Pixels labelled ``ignore_index`` are dropped in every case. Run it under the caller's grad
    mode (inference mode for a fit).
    """
    check_segmenter(segmenter, f"fitting the {desc}", needs=("forward", "extract_features"))
    device = device_of(segmenter)
    for batch in tqdm(loader, desc=desc, disable=None):
        images = batch["image"].to(device)
        if assign == "prediction":
            out = segmenter(images)
            features = out.features
            classes = _nearest(out.logits.argmax(dim=1), features.shape[-2:])
        else:
            features = segmenter.extract_features(images)
        labels = batch.get("label")
        if labels is None and assign == "label":
            raise ValueError(f"{desc}: assign=label needs batches with a 'label' entry")
        if labels is None:
            usable = torch.ones_like(features[:, 0], dtype=torch.bool)
        else:
            labels = _nearest(labels.to(device), features.shape[-2:])
            usable = labels != ignore_index
        if assign == "label":
            classes = labels
        pixels = features.permute(0, 2, 3, 1)[usable]
        if pixels.shape[0] > 0:
            yield pixels, None if assign is None else classes[usable]


def _nearest(labels: Tensor, size: torch.Size) -> Tensor:
    """int64 [N, h, w]: labels [N, H, W] resized by nearest neighbour (pixel centres)."""
    if labels.shape[-2:] == size:
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()


def _pixels_of(features: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """float32 [N * h * w, D] pixel vectors of features [N, D, h, w], and (N, h, w)."""
    n, d, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(-1, d).float(), (n, h, w)


def _in_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int) -> Tensor:
    """fn applied to row chunks of x, concatenated."""
    return torch.cat([fn(chunk) for chunk in x.split(chunk_size)])


def _to_image(values: Tensor, shape: tuple[int, int, int], out: SegOutput) -> Tensor:
    """float32 [N, H, W]: per-pixel values [N * h * w] resized bilinearly to the logits' size."""
    return resize_score(values.view(shape).float(), out.logits.shape[-2:])


def _positive_int(value: Any, name: str, owner: nn.Module) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{type(owner).__name__} {name} must be an integer >= 1, got {value}")
    return int(value)
