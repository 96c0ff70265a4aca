"""Former home of the feature-density heads, kept so that old imports and run configs resolve.

The heads now live one per module: :mod:`baselines.gaussian` (``ClassConditionalGaussian``),
:mod:`baselines.knn` (``KNNDensity``, ``smallest_k``) and :mod:`baselines.flow`
(``FlowDensity``, ``RealNVP``, ``AffineCoupling``); the helpers they share are public in
:mod:`fsbench.heads.features` (``FeatureReservoir``, ``training_pixels``, ...). The names below
are the same classes, so ``_target_: baselines.density.KNNDensity`` in an earlier run's
``.hydra/config.yaml`` builds the same head with the same state dict. Import from the new
modules in new code.
"""

from baselines.flow import AffineCoupling, FlowDensity, RealNVP
from baselines.gaussian import ClassConditionalGaussian
from baselines.knn import DISTANCE_DTYPES, KNNDensity, smallest_k
from fsbench.heads.features import FeatureReservoir

__all__ = [
    "DISTANCE_DTYPES",
    "AffineCoupling",
    "ClassConditionalGaussian",
    "FeatureReservoir",
    "FlowDensity",
    "KNNDensity",
    "RealNVP",
    "smallest_k",
]
