"""The two pipelines, as functions of a composed Hydra config: instantiate and run.

* :func:`train` (``train.py``, ``fsbench-train``): a segmenter, with a training-time head if one
  is selected; writes checkpoints into the run folder.
* :func:`evaluate` (``evaluate.py``, ``fsbench-evaluate``): every head on every anomaly set of the
  data config, under every selected protocol (``protocol=[fishyscapes,smiyc,per_image]``);
  writes results.json / results.md (and curves, figures) into the run folder.

The command lines of :mod:`fsbench.cli` call them; so can a user's own script.
"""

from fsbench.pipelines.common import check_mandatory_values, report_input_errors
from fsbench.pipelines.evaluate import evaluate
from fsbench.pipelines.train import train

__all__ = ["check_mandatory_values", "evaluate", "report_input_errors", "train"]
