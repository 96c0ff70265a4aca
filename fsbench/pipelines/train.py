"""``train.py`` / ``fsbench-train``: train a segmenter (and a training-time head) from a config."""

from __future__ import annotations

from inspect import signature
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from fsbench.fast import apply_fast_paths
from fsbench.lit import SegmentationTask
from fsbench.loggers import make_loggers, show_progress, tidy_library_output
from fsbench.models.checkpoint import initialise_from
from fsbench.pipelines.common import check_mandatory_values, selected_heads


def _extra_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Lightning callbacks from ``callbacks: {name: {_target_: ...}}`` (e.g. early stopping)."""
    return [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]


def train(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train a segmenter; return the final validation metrics and the checkpoint path."""
    output_dir = Path(output_dir)
    check_mandatory_values(cfg, "train.py")
    tidy_library_output()
    L.seed_everything(cfg.seed, workers=True)
    heads = selected_heads(cfg)
    if len(heads) > 1:
        raise ValueError(f"train.py takes at most one training-time head, got {list(heads)}")
    for name, head in heads.items():
        if not head.trained_with_segmenter:
            raise ValueError(
                f"head {name} adds no training loss, so training with it changes nothing; "
                "train.py takes training-time heads only (void_classifier, outlier_exposure). "
                "Post-hoc heads are chosen at evaluation: python evaluate.py head=..."
            )
    datamodule = hydra.utils.instantiate(cfg.data)
    # train mode: a published network's loader hands it over in eval mode
    segmenter = hydra.utils.instantiate(cfg.model).train()
    if cfg.get("init_from"):
        initialise_from(segmenter, cfg.init_from)
        print(f"segmenter weights initialised from {cfg.init_from}")
    fast = cfg.get("fast") or {}
    if fast.get("autocast"):
        raise ValueError(
            "train.py takes mixed precision from Lightning: pass trainer.precision=bf16-mixed "
            "(or 16-mixed on a GPU) instead of fast.autocast"
        )
    apply_fast_paths(
        segmenter,
        channels_last=fast.get("channels_last", False),
        compile=fast.get("compile", False),
    )
    task = SegmentationTask(
        segmenter,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        poly_power=cfg.poly_power,
        ignore_index=cfg.ignore_index,
        head=next(iter(heads.values()), None),
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
        save_last=True,
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        default_root_dir=str(output_dir),
        callbacks=[checkpoints, *_extra_callbacks(cfg)],
        logger=make_loggers(cfg.get("logger", "csv"), output_dir),
        enable_progress_bar=show_progress(cfg.trainer.get("enable_progress_bar", True)),
    )
    # Resume checkpoints are read with weights_only=True where this Lightning version can.
    safe = {"weights_only": True} if "weights_only" in signature(trainer.fit).parameters else {}
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.resume_from, **safe)
    last = output_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(last, weights_only=False)  # a full checkpoint: resumable
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"checkpoint: {last}")
    return {"checkpoint": str(last), **metrics}
