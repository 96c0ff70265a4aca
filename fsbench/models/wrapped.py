"""Any network that returns logits, as a protocol segmenter (:class:`WrappedSegmenter`)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fsbench.models.segmenter import IMAGENET_MEAN, IMAGENET_STD, SegOutput, resize_logits


class _FeaturesCaptured(Exception):
    """Raised by the feature hook to stop the network once the features are known."""


class WrappedSegmenter(nn.Module):
    """A network that returns class logits, turned into a segmenter of the protocol.

    The feature map is the output of a named submodule, captured by a forward hook; the logits
    are the network's own output (a tensor, the ``logits_key`` entry of a dict, or the
    ``logits_index`` item of a tuple or list), resized bilinearly to the images if they are
    smaller. Images come in float [N, 3, H, W] RGB in [0, 1] and are normalised with ``mean`` and
    ``std`` here, before the network sees them.

    Args:
        module: the network, an ``nn.Module`` (or a Hydra config with ``_target_``, built here).
        features: dotted name (as in ``named_modules()``) of the submodule whose output is the
            feature map [N, D, h, w] that the classifier reads, e.g. ``classifier.3`` for
            torchvision's ``deeplabv3_resnet50``. It must run once per forward pass, and its output
            must not be modified in place afterwards (by an ``inplace=True`` activation: name that
            activation instead).
        num_classes: C, the channels of the logits (checked on every forward).
        classifier: dotted name of the submodule mapping the features to the logits (e.g.
            ``classifier.4``); needed by :meth:`classify`, hence by MC dropout. Without it,
            :meth:`classify` raises. On the first forward in eval mode the wrapper checks that
            ``classify(features)`` reproduces the network's logits.
        feature_channels: D; inferred from one forward pass on a 64 x 64 probe when ``None``.
        mean, std: per-channel normalisation of the [0, 1] input (ImageNet's by default).
        align_corners: of the bilinear upsampling of the logits to the image size.
        logits_key: the entry of a dict output holding the logits.
        logits_index: the item of a tuple or list output holding the logits.
        dropout: rate of an ``nn.Dropout`` on the features before the classifier in
            :meth:`classify` (inactive in eval mode); MC dropout samples at this rate when its
            own rate is not given. 0 = none.
    """

    PROBE_SIZE = (64, 64)

    def __init__(
        self,
        module: nn.Module | Mapping[str, Any],
        features: str,
        num_classes: int,
        classifier: str | None = None,
        feature_channels: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        align_corners: bool = False,
        logits_key: str = "out",
        logits_index: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(module, Mapping) and "_target_" in module:
            import hydra.utils

            module = hydra.utils.instantiate(module)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"WrappedSegmenter module must be an nn.Module (or a config with _target_), got "
                f"{type(module).__name__}"
            )
        self.module = module
        self.num_classes = int(num_classes)
        self.features_name = features
        self.classifier_name = classifier
        self.align_corners = bool(align_corners)
        self.logits_key = logits_key
        self.logits_index = int(logits_index)
        self.dropout = nn.Dropout(dropout)
        self._feature_channels = None if feature_channels is None else int(feature_channels)
        feature_module = self._submodule(features, "features")
        # Not registered as submodules: they are part of self.module already (state_dict keys
        # stay the network's own, prefixed by "module.").
        self._classifier = (
            None if classifier is None else [self._submodule(classifier, "classifier")]
        )
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1), persistent=False)
        self._captured: list[Tensor] = []
        self._stop_at_features = False
        self._classify_checked = classifier is None
        feature_module.register_forward_hook(self._capture)

    def _submodule(self, name: str, role: str) -> nn.Module:
        modules = dict(self.module.named_modules())
        if name in modules and name != "":
            return modules[name]
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else "none is close"
        raise ValueError(
            f"WrappedSegmenter {role}={name!r}: {type(self.module).__name__} has no submodule of "
            f"that name ({hint}). Pass a dotted name from module.named_modules(), e.g. "
            f"model.{role}=NAME; print(module) shows the tree"
        )

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor) or output.ndim != 4:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"WrappedSegmenter features={self.features_name!r} must output a feature map "
                f"[N, D, h, w], got {got}; name the submodule whose output the classifier reads"
            )
        self._captured.append(output)
        if self._stop_at_features:
            raise _FeaturesCaptured

    @property
    def feature_channels(self) -> int:
        """D, the channels of the features (one probing forward pass if not given or seen)."""
        if self._feature_channels is None:
            was_training = self.training
            device = self.mean.device
            try:
                self.eval()
                with torch.no_grad():
                    probe = torch.zeros(1, 3, *self.PROBE_SIZE, device=device)
                    self._feature_channels = int(self.extract_features(probe).shape[1])
            except Exception as error:  # not AttributeError: nn.Module would hide it
                raise RuntimeError(
                    f"WrappedSegmenter could not infer feature_channels from a "
                    f"{self.PROBE_SIZE} probe ({error}); pass feature_channels=D"
                ) from error
            finally:
                self.train(was_training)
        return self._feature_channels

    def _run(self, images: Tensor, stop_at_features: bool) -> tuple[Any, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"WrappedSegmenter expects RGB images of shape [N, 3, H, W], got "
                f"{tuple(images.shape)}"
            )
        x = (images - self.mean) / self.std
        self._captured = []
        self._stop_at_features = stop_at_features
        output = None
        try:
            output = self.module(x)
        except _FeaturesCaptured:
            pass
        finally:
            self._stop_at_features = False
            captured, self._captured = self._captured, []
        if not captured:
            raise ValueError(
                f"WrappedSegmenter features={self.features_name!r}: that submodule did not run "
                f"in {type(self.module).__name__}'s forward pass; name one that does"
            )
        if len(captured) > 1:
            raise ValueError(
                f"WrappedSegmenter features={self.features_name!r} ran {len(captured)} times in "
                "one forward pass; name a submodule that runs once"
            )
        features = captured[0]
        if self._feature_channels is None:
            self._feature_channels = int(features.shape[1])
        elif features.shape[1] != self._feature_channels:
            raise ValueError(
                f"WrappedSegmenter features have {features.shape[1]} channels, but "
                f"feature_channels={self._feature_channels}"
            )
        return output, features

    def _logits_of(self, output: Any) -> Tensor:
        if isinstance(output, Tensor):
            logits = output
        elif isinstance(output, Mapping):
            if self.logits_key not in output:
                raise ValueError(
                    f"WrappedSegmenter: {type(self.module).__name__} returned a dict with keys "
                    f"{sorted(map(str, output))}, none is logits_key={self.logits_key!r}; pass "
                    "logits_key=KEY"
                )
            logits = output[self.logits_key]
        elif isinstance(output, (tuple, list)):
            if not -len(output) <= self.logits_index < len(output):
                raise ValueError(
                    f"WrappedSegmenter: {type(self.module).__name__} returned {len(output)} "
                    f"items, no logits_index={self.logits_index}"
                )
            logits = output[self.logits_index]
        else:
            raise ValueError(
                f"WrappedSegmenter: {type(self.module).__name__} returned "
                f"{type(output).__name__}; it must return logits as a tensor, a dict "
                "(logits_key) or a tuple/list (logits_index)"
            )
        if not isinstance(logits, Tensor) or logits.ndim != 4:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"WrappedSegmenter: the logits must be [N, C, H, W], got {got}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"WrappedSegmenter: the logits have {logits.shape[1]} channels but "
                f"num_classes={self.num_classes}; set num_classes={logits.shape[1]} or check "
                "which output holds the logits (logits_key, logits_index)"
            )
        return logits

    def extract_features(self, images: Tensor) -> Tensor:
        """The features [N, D, h, w] of images float [N, 3, H, W] in [0, 1].

        The network stops once the feature submodule has run.
        """
        return self._run(images, stop_at_features=True)[1]

    def classify(self, features: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """Logits [N, C, *size]: dropout (train mode only), the classifier, bilinear resize."""
        if self._classifier is None:
            raise ValueError(
                f"WrappedSegmenter has no classifier: classify (and so MC dropout) needs the "
                f"submodule mapping features={self.features_name!r} to the logits; pass "
                "classifier=NAME (model.classifier=NAME), e.g. classifier.4 for torchvision's "
                "deeplabv3_resnet50"
            )
        logits = self._classifier[0](self.dropout(features))
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"WrappedSegmenter classifier={self.classifier_name!r} maps the features to "
                f"{tuple(logits.shape)}, not [N, num_classes={self.num_classes}, h, w]"
            )
        return resize_logits(logits, size, self.align_corners)

    def forward(self, images: Tensor) -> SegOutput:
        output, features = self._run(images, stop_at_features=False)
        size = images.shape[-2:]
        logits = resize_logits(self._logits_of(output), size, self.align_corners)
        if not self._classify_checked and not self.training:
            self._check_classify(features, logits)
        return SegOutput(logits=logits, features=features)

    def _check_classify(self, features: Tensor, logits: Tensor) -> None:
        """Once: classify(features) must reproduce the network's logits (eval mode)."""
        with torch.no_grad():
            again = self.classify(features, logits.shape[-2:]).float()
            error = (again - logits.float()).abs().max().item()
            scale = logits.float().std().item() if logits.numel() > 1 else 1.0
        if not error <= 1e-4 * scale + 1e-5:
            raise ValueError(
                f"WrappedSegmenter: classifier={self.classifier_name!r} applied to "
                f"features={self.features_name!r} does not reproduce "
                f"{type(self.module).__name__}'s logits (max |difference| {error:.3g}, logits "
                f"std {scale:.3g}). Name the feature submodule the classifier reads directly "
                "and the classifier whose output are the logits, and match align_corners to "
                "the network's own upsampling"
            )
        self._classify_checked = True
