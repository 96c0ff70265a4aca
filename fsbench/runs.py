"""What ``train.py`` and ``evaluate.py`` do, as functions of a composed Hydra config."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from inspect import signature
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from fsbench.examples import FIGURE_RANKING_STRIDE, take_per_image, write_worst_best
from fsbench.fast import apply_fast_paths, autocast_dtype
from fsbench.heads import AnomalyHead
from fsbench.lit import AnomalyEvaluation, SegmentationTask
from fsbench.lit.evaluation import check_every_process_has_frames
from fsbench.loggers import make_loggers, show_progress, tidy_library_output
from fsbench.models import load_segmenter
from fsbench.models.checkpoint import initialise_from, load_head_state
from fsbench.report import PROTOCOL, write_json_atomic, write_results

# What fsbench raises about a run's input (paths, checkpoints, labels, options); hydra wraps
# errors raised while building an object from a config in InstantiationException; omegaconf
# raises MissingMandatoryValue on reading a ``???`` value that check_mandatory_values missed.
INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    ModuleNotFoundError,
    InstantiationException,
    MissingMandatoryValue,
)

# Evaluation runs the network in float32 (unless fast.autocast); a trainer config's precision
# is a training setting (conf/trainer/gpu.yaml: 16-mixed) and is not applied to evaluation.
EVALUATION_PRECISION = "32-true"
FLOAT32_PRECISIONS = ("32", "32-true")


def report_input_errors(run: Callable[[], Any]) -> Any:
    """Run an entry point; an input error prints as one message (no traceback) and exits 1.

    fsbench's messages name the problem and the fix; a traceback through Lightning and Hydra
    would bury them. ``FSBENCH_TRACEBACK=1`` re-raises, for debugging.
    """
    try:
        return run()
    except INPUT_ERRORS as error:
        if os.environ.get("FSBENCH_TRACEBACK"):
            raise
        message = str(error)
        if isinstance(error, (MissingMandatoryValue, InterpolationToMissingValueError)):
            message = missing_values_message([_missing_key(error)], _script_name())
        print(
            f"error: {message}\n(set FSBENCH_TRACEBACK=1 to see the traceback)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def _missing_key(error: Exception) -> str:
    """The unset key of omegaconf's (several-line) error; an interpolation's target if any."""
    named = re.search(r"Missing mandatory value: (\S+)", str(error))
    if isinstance(error, InterpolationToMissingValueError) and named:
        return named.group(1)
    return getattr(error, "full_key", None) or (named.group(1) if named else "?")


def _script_name() -> str:
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if script in ("train.py", "evaluate.py") else "evaluate.py"


def _example_value(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
    if leaf.endswith("root"):
        return f"/path/to/{leaf.removesuffix('root').rstrip('_') or 'data'}"
    if leaf == "checkpoints":
        return "[/path/to/seed1.ckpt,/path/to/seed2.ckpt]"
    if "checkpoint" in leaf or "path" in leaf:
        return "/path/to/file"
    return "VALUE"


def missing_values_message(keys: list[str], script: str) -> str:
    """One line: which config values are unset (``???``) and a command line that sets them."""
    given = [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
    given = [o for o in given if o.split("=", 1)[0].lstrip("+~") not in keys]
    settings = [f"{key}={_example_value(key)}" for key in keys]
    example = " ".join(["python", script, *map(shlex.quote, given + settings)])
    what = f"{keys[0]} has" if len(keys) == 1 else f"{', '.join(keys)} have"
    them = "it" if len(keys) == 1 else "them"
    return f"{what} no value (??? in the config); set {them} on the command line, e.g. {example}"


def _missing_keys(node: Any, prefix: str) -> list[str]:
    """Dotted keys of the ``???`` values in a config container, interpolations left unresolved."""
    if isinstance(node, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
    else:
        return [prefix] if node == "???" else []
    return [key for name, value in items for key in _missing_keys(value, name)]


def check_mandatory_values(cfg: DictConfig, script: str) -> None:
    """Raise one ValueError naming every ``???`` value of the composed config, with the fix."""
    missing = _missing_keys(OmegaConf.to_container(cfg, resolve=False), "")
    if missing:
        raise ValueError(missing_values_message(missing, script))


def _selected_heads(cfg: DictConfig) -> dict[str, AnomalyHead]:
    heads = cfg.get("head") or {}
    return {name: hydra.utils.instantiate(head_cfg) for name, head_cfg in heads.items()}


def _extra_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Lightning callbacks from ``callbacks: {name: {_target_: ...}}`` (e.g. early stopping)."""
    return [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]


def train(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train a segmenter; return the final validation metrics and the checkpoint path."""
    output_dir = Path(output_dir)
    check_mandatory_values(cfg, "train.py")
    tidy_library_output()
    L.seed_everything(cfg.seed, workers=True)
    heads = _selected_heads(cfg)
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
    heads = _selected_heads(cfg)
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
    for name, head in heads.items():
        head.attach(segmenter)
        head.to(device)
        if head.trained_with_segmenter:
            if checkpoint is None:
                raise ValueError(
                    f"head {name} is trained with the segmenter by train.py, and model="
                    f"{cfg.model.get('family', 'the model config')} has no such head. Train it "
                    "first (python train.py model=<the model> model.checkpoint=FILE "
                    "head=<the head> ...) and evaluate that run: checkpoint=<run>/checkpoints/"
                    "last.ckpt"
                )
            load_head_state(checkpoint, head)
        if head.requires_fit:
            # Every training image once, in index order, none augmented: under DDP every
            # process fits the same statistics on the whole set.
            print(f"fitting head {name} on the training set")
            head.fit(segmenter, datamodule.fit_dataloader())
            if rank_zero_only.rank == 0:
                (output_dir / "heads").mkdir(parents=True, exist_ok=True)
                torch.save(head.state_dict(), output_dir / "heads" / f"{name}.pt")

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
        "protocol": PROTOCOL,
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
    write_json_atomic(output_dir / "curves.json", {"protocol": PROTOCOL, "curves": module.curves})
    from fsbench.plots import plot_curves  # matplotlib is imported only when plotting

    plot_curves(module.curves, module.results, output_dir)
    anomaly_sets = {name: loaders[name].dataset for name in datamodule.anomaly_sets}
    k = cfg.get("report_images", 0)
    write_worst_best(segmenter, heads, anomaly_sets, per_image, k, output_dir)
    print(table)
    print(f"results: {output_dir / 'results.json'}")
    return payload
