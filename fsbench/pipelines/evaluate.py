"""``evaluate.py`` / ``fsbench-evaluate``: score every anomaly set with every head, under every
selected protocol, from a config."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from fsbench.examples import FIGURE_RANKING_STRIDE, take_per_image, write_worst_best
from fsbench.fast import apply_fast_paths, autocast_dtype
from fsbench.heads import AnomalyHead
from fsbench.lit import AnomalyEvaluation
from fsbench.lit.evaluation import check_every_process_has_frames
from fsbench.loggers import show_progress, tidy_library_output
from fsbench.metrics.suite import describe, protocol_config, protocol_names
from fsbench.models import load_segmenter
from fsbench.models.checkpoint import ready_head
from fsbench.pipelines.common import INPUT_ERRORS, check_mandatory_values, selected_heads
from fsbench.report import PROTOCOL, write_json_atomic, write_results

# Evaluation runs the network in float32 (unless fast.autocast); a trainer config's precision
# is a training setting (conf/trainer/gpu.yaml: 16-mixed) and is not applied to evaluation.
EVALUATION_PRECISION = "32-true"
FLOAT32_PRECISIONS = ("32", "32-true")


def _fit_device(cfg: DictConfig) -> torch.device:
    """The device heads are fitted on: the trainer's GPU when it uses one, else the CPU."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def find_latest_checkpoint(*roots: str | Path) -> Path:
    """The newest ``last.ckpt`` written by train.py under the given output folders."""
    candidates = [
        path
        for root in roots
        for pattern in ("train/*/checkpoints/last.ckpt", "train/*/*/checkpoints/last.ckpt")
        for path in Path(root).glob(pattern)
    ]
    if not candidates:
        searched = ", ".join(f"{Path(root).resolve()}/train/" for root in roots)
        raise FileNotFoundError(
            f"no training checkpoint found under {searched}; run `python train.py` first "
            "or pass checkpoint=PATH"
        )
    return max(candidates, key=lambda path: path.stat().st_mtime)


def _announce_evaluation_precision(cfg: DictConfig) -> None:
    """One notice if the trainer config asks for a precision that evaluation does not use."""
    precision = cfg.trainer.get("precision")
    if precision is None or str(precision) in FLOAT32_PRECISIONS or rank_zero_only.rank != 0:
        return
    autocast = (cfg.get("fast") or {}).get("autocast")
    if autocast_dtype(autocast) is not None:
        how = f"fast.autocast={autocast} sets it here"
    else:
        how = "it runs in float32; for mixed precision pass fast.autocast=bf16"
    print(
        f"note: trainer.precision={precision} is a training setting, ignored for evaluation: "
        f"{how} (encoder and decoder in reduced precision, the heads score in float32)",
        file=sys.stderr,
    )


def _evaluation_precision(autocast: str | None) -> str:
    """What the network runs in: the fast.autocast value, or float32 (Lightning's 32-true)."""
    return EVALUATION_PRECISION if autocast_dtype(autocast) is None else str(autocast)


def _untrained_model(target: str) -> bool:
    return target in ("fsbench.models.Segmenter", "fsbench.models.segmenter.Segmenter")


def evaluation_segmenter(cfg: DictConfig) -> tuple[torch.nn.Module, str, Path | None]:
    """The network evaluate.py scores with: ``(segmenter, what it is, train.py checkpoint)``.

    Either a ``train.py`` checkpoint (``checkpoint=PATH``, or the newest with ``latest``) or a
    model config (``model=<published family> model.checkpoint=FILE``, ``model=wrapped ...``).
    The third item is the train.py checkpoint (training-time heads are restored from it), or
    ``None`` for a model config.
    """
    model = cfg.get("model")
    if model is None:
        if cfg.checkpoint in (None, "latest"):
            checkpoint = find_latest_checkpoint(cfg.paths.outputs, cfg.paths.multirun)
        else:
            checkpoint = Path(cfg.checkpoint)
        return load_segmenter(checkpoint), str(checkpoint), checkpoint
    if cfg.checkpoint not in (None, "latest"):
        raise ValueError(
            f"evaluate.py got both checkpoint={cfg.checkpoint} (a train.py checkpoint) and a "
            "model config; pass one: checkpoint=PATH, or model=<family> model.checkpoint=FILE "
            "for a published network (docs/reproduce.md)"
        )
    target = str(model.get("_target_", ""))
    if _untrained_model(target):
        raise ValueError(
            "this model config builds an untrained fsbench Segmenter; evaluate.py scores a "
            "trained network: checkpoint=PATH (a train.py checkpoint), or a published one, "
            "model=<family> model.checkpoint=FILE with family one of "
            f"{', '.join(published_families())} (docs/reproduce.md)"
        )
    try:
        segmenter = hydra.utils.instantiate(model)
    except InstantiationException as error:
        if isinstance(error.__cause__, INPUT_ERRORS):  # the loader's own message, unwrapped
            raise error.__cause__ from None
        raise
    if model.get("checkpoint"):
        return segmenter, str(model.checkpoint), None
    inner = model.get("module")  # model=wrapped: name the network it wraps
    inner = inner.get("_target_") if isinstance(inner, DictConfig) else None
    return segmenter, f"{target} of {inner}" if inner else target, None


def selected_protocols(cfg: DictConfig) -> dict[str, Any]:
    """``protocol=[...]``: each selected protocol's config, by name (default: fishyscapes)."""
    node = cfg.get("protocol")
    if node is None:
        return {PROTOCOL: protocol_config(PROTOCOL)}
    if not node:
        raise ValueError(
            f"protocol=[] selects no protocol; choose from {', '.join(protocol_names())}, "
            "e.g. protocol=[fishyscapes,smiyc]"
        )
    return {str(name): node[name] for name in node}


def published_families() -> list[str]:
    from fsbench.models.published import FAMILIES

    return list(FAMILIES)


def evaluate(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Evaluate the selected heads on every anomaly set of the data config; write the results.

    The network runs in float32 unless ``fast.autocast`` says otherwise: the trainer config's
    ``precision`` is a training setting and is replaced by float32 here (with a notice). Under
    DDP each process scores its own frames, every frame once (the datamodule's evaluation
    loaders), and rank 0 writes the results.
    """
    output_dir = Path(output_dir)
    check_mandatory_values(cfg, "evaluate.py")
    _announce_evaluation_precision(cfg)
    tidy_library_output()
    L.seed_everything(cfg.seed, workers=True)
    segmenter, source, checkpoint = evaluation_segmenter(cfg)
    print(f"checkpoint: {source}")
    heads = selected_heads(cfg)
    fast = cfg.get("fast") or {}
    apply_fast_paths(
        segmenter,
        heads.values(),
        autocast=fast.get("autocast"),
        channels_last=fast.get("channels_last", False),
        compile=fast.get("compile", False),
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    device = _fit_device(cfg)  # heads are fitted where the evaluation will run
    segmenter.to(device)
    model = cfg.get("model")
    model_name = model.get("family", "the model config") if model is not None else "the model"
    for name, head in heads.items():

        def fit_and_save(head: AnomalyHead, name: str = name) -> None:
            # Every training image once, in index order, none augmented: under DDP every
            # process fits the same statistics on the whole set.
            head.to(device)
            print(f"fitting head {name} on the training set")
            head.fit(segmenter, datamodule.fit_dataloader())
            if rank_zero_only.rank == 0:
                (output_dir / "heads").mkdir(parents=True, exist_ok=True)
                torch.save(head.state_dict(), output_dir / "heads" / f"{name}.pt")

        ready_head(
            head,
            segmenter,
            checkpoint,
            fit=fit_and_save,
            without_checkpoint=(
                f"head {name} is trained with the segmenter by train.py, and model="
                f"{model_name} has no such head. Train it "
                "first (python train.py model=<the model> model.checkpoint=FILE "
                "head=<the head> ...) and evaluate that run: checkpoint=<run>/checkpoints/"
                "last.ckpt"
            ),
        )
        head.to(device)

    protocols = selected_protocols(cfg)
    loaders = datamodule.anomaly_dataloaders()
    inlier = None
    if cfg.inlier_miou and datamodule.val_set is not None:
        inlier = "inlier_val"
        loaders[inlier] = datamodule.inlier_dataloader()
    module = AnomalyEvaluation(
        segmenter,
        heads,
        dataset_names=list(loaders),
        anomaly_datasets=list(datamodule.anomaly_sets),
        inlier_dataset=inlier,
        ignore_index=cfg.ignore_index,
        per_image=cfg.per_image or cfg.get("report_images", 0) > 0,  # the figure needs it
        # Without per_image the values only rank the frames of the figure: an estimate on every
        # 4th pixel of each row and column (16x cheaper); the chosen frames are scored exactly.
        per_image_stride=1 if cfg.per_image else FIGURE_RANKING_STRIDE,
        protocols=protocols,
        score_dir=output_dir / "scores" if cfg.get("save_scores") else None,
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        default_root_dir=str(output_dir),
        enable_progress_bar=show_progress(cfg.trainer.get("enable_progress_bar", True)),
        precision=EVALUATION_PRECISION,
    )
    # Here, not only in the module: a process without frames would skip the module's hooks.
    check_every_process_has_frames(list(loaders.values()), trainer.world_size)
    started = time.perf_counter()
    trainer.test(module, dataloaders=list(loaders.values()), verbose=False)
    per_image = take_per_image(module.results, keep=cfg.per_image)
    payload = {
        "protocol": PROTOCOL if PROTOCOL in protocols else next(iter(protocols)),
        "protocols": {name: describe(name, node) for name, node in protocols.items()},
        "checkpoint": source,
        "model": cfg.model.get("family") if cfg.get("model") is not None else None,
        "seconds": round(time.perf_counter() - started, 2),
        "datasets": {name: len(loader.dataset) for name, loader in loaders.items()},
        "results": module.results,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": {"torch": torch.__version__, "lightning": L.__version__},
        "threads": torch.get_num_threads(),
        "processes": trainer.world_size,
        # what the network ran in (the trainer config's precision is not applied here)
        "precision": _evaluation_precision(fast.get("autocast")),
    }
    if not trainer.is_global_zero:  # every process holds the gathered results; rank 0 writes
        return payload
    table = write_results(output_dir, payload)
    if PROTOCOL in protocols:
        curves = {"protocol": PROTOCOL, "curves": module.curves}
        write_json_atomic(output_dir / "curves.json", curves)
        from fsbench.plots import plot_curves  # matplotlib is imported only when plotting

        plot_curves(module.curves, module.results, output_dir)
    anomaly_sets = {name: loaders[name].dataset for name in datamodule.anomaly_sets}
    k = cfg.get("report_images", 0) if PROTOCOL in protocols else 0  # ranked by its AP
    write_worst_best(segmenter, heads, anomaly_sets, per_image, k, output_dir)
    print(table)
    print(f"results: {output_dir / 'results.json'}")
    return payload
