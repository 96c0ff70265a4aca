"""The ``smiyc`` protocol as a metric: the SegmentMeIfYouCan pixel curve, then components.

:class:`SmiycMetrics` is what ``evaluate.py protocol=[smiyc]`` and ``fsbench score --protocol
smiyc`` both run, so the two cannot disagree. Per frame it keeps the toolkit's binned counts
(:func:`~fsbench.metrics.protocols.smiyc_frame_counts`, at most 3 x 769 numbers) and the frame's
float16 scores and labels; at ``compute()`` the counts of every process are concatenated (rank
order: with fsbench's unpadded samplers, the frames' order), the curve gives the toolkit's
best-F1 threshold, every process labels the components of its own frames at that threshold
(:class:`~fsbench.metrics.components.ComponentMetrics`), and the per-frame component values are
gathered and pooled. A distributed run therefore reports exactly what one process reports.

The toolkit stores every score map as float16 before it scores (``Evaluation.save_output`` in
``SegmentMeIfYouCan/road-anomaly-benchmark`` @1c7804e) and labels the components of those stored
maps, so the frames are kept as float16: 3 bytes per pixel until ``compute()`` (1.3 GB for the
327 frames of 1920x1080 of a RoadObstacle21-sized set).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from fsbench.metrics import native
from fsbench.metrics.components import (
    ROAD_ANOMALY_21_SIZES,
    ROAD_OBSTACLE_21_SIZES,
    ComponentMetrics,
    FrameComponents,
)
from fsbench.metrics.protocols import (
    DEFAULT_SMIYC_COMMIT,
    SmiycPixelCurve,
    check_smiyc_options,
    float16_scores,
    smiyc_frame_counts,
)
from fsbench.metrics.states import cat_state, frame_batch, gather_objects

__all__ = ["TRACK_SIZES", "SmiycMetrics", "smiyc_track"]

#: track -> (min_predicted_size, min_gt_size) of the toolkit's component metrics.
TRACK_SIZES: dict[str, tuple[int, int]] = {
    "anomaly": ROAD_ANOMALY_21_SIZES,
    "obstacle": ROAD_OBSTACLE_21_SIZES,
}


#: Threads labelling the frames' components at ``compute()`` (at most 4, at most the CPUs).
COMPONENT_THREADS = max(1, min(4, os.cpu_count() or 1))


def smiyc_track(dataset: str, track: str | None = None) -> str:
    """The component sizes' track of a dataset: ``track`` if given, else ``obstacle`` for a name
    holding "obstacle" (``smiyc_obstacle``), else ``anomaly``."""
    if track is None:
        return "obstacle" if "obstacle" in dataset else "anomaly"
    if track not in TRACK_SIZES:
        raise ValueError(f"unknown smiyc track {track!r}; choose one of {sorted(TRACK_SIZES)}")
    return track


def _any_nonfinite(stored: np.ndarray) -> bool:
    """Whether a float16 map holds inf or NaN (all exponent bits set), without a temporary
    where the compiled kernels are available."""
    bits = np.ascontiguousarray(stored).view(np.uint16)
    if native.library() is not None:
        return native.nonfinite_f16(bits.reshape(-1)) > 0
    return bool(((bits & 0x7C00) == 0x7C00).any())


class SmiycMetrics(torchmetrics.Metric):
    """SegmentMeIfYouCan pixel metrics and component metrics at the toolkit's threshold.

    ``update(score, target, names=None)``: ``score`` real [N, H, W] (or [H, W]), ``target``
    0 / 1 / 255 of the same shape (pixels with a label >= 255 are void, as in the toolkit).
    Non-finite scores on void pixels are set to 0 (they are never counted); on valid pixels they
    are an error, as are values beyond the float16 range.

    ``compute()`` returns the pixel metrics of :meth:`SmiycPixelCurve.compute` (``ap, auroc,
    fpr95, best_f1, best_f1_threshold, n_anomaly, n_inlier, commit``) and, unless
    ``components=False``, ``"components"``: ``siou_gt, ppv, mean_f1`` (and the counts) of
    :func:`~fsbench.metrics.components.component_metrics` at that threshold rounded to float16
    (as the toolkit compares it), with ``threshold, track, sizes``; an undefined component
    result is reported as ``{"error": message}``.

    Args:
        commit: the toolkit commit to reproduce (``SMIYC_COMMITS``).
        num_bins: bins of the per-frame histogram (the toolkit's 768).
        track: ``anomaly`` (components >= 500 / 100 px) or ``obstacle`` (50 / 10 px).
        components: also compute the component metrics (keeps the float16 frames).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        commit: str = DEFAULT_SMIYC_COMMIT,
        num_bins: int = 768,
        track: str = "anomaly",
        components: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_smiyc_options(int(num_bins), commit)
        self.commit = commit
        self.num_bins = int(num_bins)
        self.track = smiyc_track("", track)
        self.components = bool(components)
        for key in ("thresholds", "tp", "fp"):
            self.add_state(key, default=[], dist_reduce_fx="cat")
        for key in ("n_anomaly", "n_inlier", "frames_without_valid_pixels"):
            self.add_state(key, default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self._frames: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, score: Tensor, target: Tensor, names: Sequence[str] | None = None) -> None:
        del names  # the protocol pools frames; names are not reported
        score, target = frame_batch(score, target)
        score = score.detach()
        if score.dtype == torch.bfloat16:
            score = score.to(torch.float32)
        scores, labels = score.cpu().numpy(), target.detach().cpu().numpy()
        for frame, label in zip(scores, labels, strict=True):
            label = label.astype(np.uint8, copy=False) if label.dtype != np.uint8 else label
            stored = float16_scores(frame)  # as the toolkit stores it
            if stored is frame:  # float16 already: kept until compute(), so never the caller's
                stored = frame.copy()
            # raises on a non-finite valid pixel
            counts = smiyc_frame_counts(stored, label, self.num_bins, self.commit)
            if self.components:
                # non-finite (all exponent bits set) on void pixels: never counted, set to 0
                if _any_nonfinite(stored):
                    stored = np.where(np.isfinite(stored), stored, np.float16(0))
            if counts is None:
                self.frames_without_valid_pixels += 1
                continue
            thresholds, tp, fp, n_anomaly, n_inlier = counts
            self.thresholds.append(torch.from_numpy(thresholds).to(self.device))
            self.tp.append(torch.from_numpy(np.asarray(tp, dtype=np.int64)).to(self.device))
            self.fp.append(torch.from_numpy(np.asarray(fp, dtype=np.int64)).to(self.device))
            self.n_anomaly += n_anomaly
            self.n_inlier += n_inlier
            if self.components:
                self._frames.append((stored, label))

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """torchmetrics' sync, safe for a process that saw no frame (empty list states)."""
        empty = {"thresholds": torch.float64, "tp": torch.int64, "fp": torch.int64}
        for key, dtype in empty.items():
            values = getattr(self, key)
            if isinstance(values, list) and not values:
                values.append(torch.empty(0, dtype=dtype, device=self.device))
        super().sync(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._frames = []

    def curve(self) -> SmiycPixelCurve:
        """The toolkit's curve of this metric's (synchronised) counts."""
        curve = SmiycPixelCurve(num_bins=self.num_bins, commit=self.commit)
        curve.add_counts(
            cat_state(self.thresholds, torch.float64).cpu().numpy(),
            cat_state(self.tp, torch.int64).cpu().numpy(),
            cat_state(self.fp, torch.int64).cpu().numpy(),
            int(self.n_anomaly),
            int(self.n_inlier),
        )
        curve.frames_without_valid_pixels = int(self.frames_without_valid_pixels)
        return curve

    def compute(self) -> dict[str, Any]:
        result = self.curve().compute()
        if self.components:
            result["components"] = self._component_result(result["best_f1_threshold"])
        return result

    def _component_result(self, best_f1_threshold: float) -> dict[str, Any]:
        sizes = TRACK_SIZES[self.track]
        threshold = SmiycPixelCurve.component_threshold(best_f1_threshold)
        metric = ComponentMetrics(threshold, *sizes)

        def components(frame: tuple[np.ndarray, np.ndarray]) -> FrameComponents:
            one = ComponentMetrics(threshold, *sizes)
            one.update(*frame)
            return one.frames[0]

        # Frames are independent and their numpy passes release the GIL: a few threads label
        # them side by side; map keeps the frames' order.
        with ThreadPoolExecutor(max_workers=COMPONENT_THREADS) as pool:
            own = list(pool.map(components, self._frames))
        frames: list[FrameComponents] = gather_objects(own)
        metric.extend(frames)
        try:
            result = metric.compute()
        except ValueError as error:
            result = {"error": str(error)}
        result.update(threshold=metric.threshold, track=self.track, sizes=list(sizes))
        return result
