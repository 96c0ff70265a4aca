"""Negative log-likelihood under a RealNVP flow of the decoder features (Dinh et al., 2017).

A feature head: the flow is trained on a uniform sample of the training features
(:class:`fsbench.heads.FeatureReservoir`); it scores every feature pixel and resizes the score
bilinearly to the image (float32 [N, H, W], higher = more anomalous). The training pixels and
the plumbing from features to pixel rows and back are :mod:`fsbench.heads.features`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

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

__all__ = ["AffineCoupling", "FlowDensity", "RealNVP"]


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
        if dims is not None and (positive_int(dims, "dims", self) < 2):
            raise ValueError(f"FlowDensity dims must be >= 2 (or null for all), got {dims}")
        self.dims = dims
        self.layers = positive_int(layers, "layers", self)
        self.hidden = positive_int(hidden, "hidden", self)
        self.steps = positive_int(steps, "steps", self)
        self.batch_size = positive_int(batch_size, "batch_size", self)
        if not lr > 0:
            raise ValueError(f"FlowDensity lr must be > 0, got {lr}")
        self.lr = float(lr)
        self.bank_size = positive_int(bank_size, "bank_size", self)
        self.seed = int(seed)
        self.chunk_size = positive_int(chunk_size, "chunk_size", self)
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
            pixels = training_pixels(segmenter, loader, "flow sample", self.ignore_index)
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
        x, shape = feature_pixels(out.features)

        def nll(chunk: Tensor) -> Tensor:
            return -self.flow.log_prob((chunk - self.feature_mean) @ self.projection)

        return pixels_to_image(in_chunks(nll, x, self.chunk_size), shape, out.logits.shape[-2:])


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
