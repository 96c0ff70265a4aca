"""What the framework costs on top of the network, measured side by side in one run.

    python benchmarks/overhead.py                                   # CPU, 128x256 and 512x1024
    python benchmarks/overhead.py --device cuda --encoder resnet101 --sizes 1024x2048 --batch 2
    python benchmarks/overhead.py --model sml_r101_os8 --sections eval --eval-heads max_softmax

Sections (``--sections``, all by default), each a table of ratios:

* ``eval``: images/s of :class:`fsbench.lit.AnomalyEvaluation` under ``Trainer.test`` (batches
  already in memory on the device, metrics on, one head at a time) vs a bare
  ``segmenter(x)`` loop under ``torch.inference_mode()``. Goal: ratio >= 0.95.
* ``heads``: the multi-pass and fitted heads (MC dropout T=8 and T=32 at image resolution,
  the default, and at feature resolution; Gaussian, kNN, flow) vs one bare forward, both timed
  alone. Goal: MC dropout <= 1.3x (T=8) and <= 2x (T=32), density heads <= 1.3x.
* ``train``: steps/s of :class:`fsbench.lit.SegmentationTask` under ``Trainer.fit`` vs a
  bare PyTorch loop with the same model, loss, optimizer, poly schedule and batch (``--precision``
  applies to both). Goal: ratio >= 0.95.
* ``fast``: the fast paths of :mod:`fsbench.fast` (channels_last, bf16 autocast, and with
  ``--compile`` torch.compile) vs the plain float32 forward, plus training with AMP.

``--model FAMILY`` measures a rebuilt published network (``fsbench.models.published``, untrained
weights at the published shapes) instead of fsbench's Segmenter: its ``eval`` rows compare the
evaluation with the bare rebuilt module's forward. Goal there: ratio >= 0.98.

Steady-state rates: the Lightning runs are timed from the start of their third batch to the end
of their last one by a callback (the one-off start-up of ``Trainer.test``/``fit`` is printed
apart), and each comparison interleaves its two sides over ``--repeats`` rounds, reporting
medians, so noise on a shared machine hits both alike. On CUDA every timing synchronises.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fsbench.data import SyntheticScenes
from fsbench.fast import apply_fast_paths
from fsbench.lit import AnomalyEvaluation, SegmentationTask, predict_heads
from fsbench.lit.segmentation import poly_lr_factor
from fsbench.models import Segmenter

CONF = Path(__file__).resolve().parents[1] / "conf"
SOFTMAX_HEADS = ["max_softmax", "entropy", "max_logit", "energy", "sml"]
WARMUP = 2  # batches each Lightning run does before its clock starts
# Head variants by label NAME@VARIANT: the config overrides that make them.
VARIANTS = {
    "mc_dropout@T8": ["head.mc_dropout.num_samples=8"],
    "mc_dropout@T32": ["head.mc_dropout.num_samples=32"],
    # the cheaper feature-resolution approximation (samples and score at H/4, score resized)
    "mc_dropout@T8-features": [
        "head.mc_dropout.num_samples=8",
        "head.mc_dropout.resolution=features",
    ],
    "mc_dropout@T32-features": [
        "head.mc_dropout.num_samples=32",
        "head.mc_dropout.resolution=features",
    ],
    "knn@bf16": ["head.knn.distance_dtype=bfloat16"],
    "knn@fp16": ["head.knn.distance_dtype=float16"],
}


def build_heads(names: list[str]) -> dict:
    """Head configs of conf/head/NAME.yaml with their defaults (NAME@VARIANT: see VARIANTS)."""
    heads = {}
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for label in names:
            name = label.split("@")[0]
            extra = VARIANTS.get(label, [])
            cfg = compose("evaluate", overrides=[f"head={name}", *extra])
            heads[label] = instantiate(cfg.head[name])
    return heads


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(function, device: torch.device, rounds: int) -> float:
    """Mean seconds of one call, after one warm-up call."""
    function()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    synchronize(device)
    return (time.perf_counter() - started) / rounds


class SteadyClock(L.Callback):
    """Seconds from the start of batch ``WARMUP`` to the end of the last batch (test or fit)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.started, self.stopped, self.batches = device, None, None, 0

    def _start(self, batch_idx: int) -> None:
        if batch_idx == WARMUP:
            synchronize(self.device)
            self.started = time.perf_counter()

    def _end(self) -> None:
        self.batches += 1
        synchronize(self.device)
        self.stopped = time.perf_counter()

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self._start(batch_idx)

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self._end()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start(batch_idx)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._end()

    @property
    def per_batch(self) -> float:
        return (self.stopped - self.started) / (self.batches - WARMUP)


def trainer(device: torch.device, clock: L.Callback, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        **kwargs,
    )


def in_memory_batches(split, keys, size, batch, count, device) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of synthetic scenes, already on ``device`` (8 distinct scenes, cycled)."""
    dataset = SyntheticScenes(split, min(8, batch * count), *size)
    items = [dataset[i % len(dataset)] for i in range(batch * count)]
    return [
        {key: torch.stack([it[key] for it in items[k : k + batch]]).to(device) for key in keys}
        for k in range(0, len(items), batch)
    ]


class Batches:
    """Batches held in memory, as one loader (a bare list would be read as several loaders)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def anomaly_batches(size, batch, count, device) -> list[dict[str, torch.Tensor]]:
    keys = ("image", "anomaly", "label")  # labels: for heads fitted on the inlier classes
    return in_memory_batches("anomaly", keys, size, batch, count, device)


def train_batches(size, batch, count, device) -> list[dict[str, torch.Tensor]]:
    return in_memory_batches("train", ("image", "label"), size, batch, count, device)


def bare_forward_seconds(segmenter, batches, device) -> float:
    def run():
        for item in batches[WARMUP:]:
            segmenter(item["image"])

    with torch.inference_mode():
        return seconds(run, device, 1) / (len(batches) - WARMUP)


def evaluation_seconds(
    segmenter, heads, batches, device, deferred: bool | None = None, per_image_stride: int = 0
) -> tuple[float, float]:
    """(steady seconds per batch, whole Trainer.test seconds) of AnomalyEvaluation.

    ``per_image_stride`` > 0 also computes per-image AP on that pixel stride (0: none).
    """
    module = AnomalyEvaluation(
        segmenter,
        heads,
        ["bench"],
        ["bench"],
        per_image=per_image_stride > 0,
        per_image_stride=max(1, per_image_stride),
    )
    for per_dataset in module.anomaly_metrics.values():
        for metric in per_dataset.values():
            metric.deferred_checks = deferred
    clock = SteadyClock(device)
    started = time.perf_counter()
    trainer(device, clock).test(module, dataloaders=[Batches(batches)], verbose=False)
    return clock.per_batch, time.perf_counter() - started


def section_eval(args, segmenter, size, device, rows) -> None:
    batches = anomaly_batches(size, args.batch, args.batches, device)
    heads = build_heads(args.eval_heads)
    fit = batches[:2]
    runs = [(name, name, None, 0) for name in heads]
    if device.type == "cuda" and "max_softmax" in heads:  # the cost of a sync per update
        runs.append(("max_softmax", "max_softmax, checks synchronised", False, 0))
    if "max_softmax" in heads:  # per-image AP: exact (per_image: true) or the figure's estimate
        for stride in args.per_image_strides:
            runs.append(
                ("max_softmax", f"max_softmax + per-image AP, stride {stride}", None, stride)
            )
    for name, label, deferred, stride in runs:
        head = heads[name]
        head.attach(segmenter)
        if head.requires_fit:
            head.fit(segmenter, fit)
        head.to(device)
        bare, framework, whole = [], [], []
        for _ in range(args.repeats):
            bare.append(bare_forward_seconds(segmenter, batches, device))
            steady, total = evaluation_seconds(
                segmenter, {name: head}, batches, device, deferred, stride
            )
            segmenter.to(device), head.to(device)  # Trainer.test hands modules back on the CPU
            framework.append(steady)
            whole.append(total)
        bare_s, eval_s = statistics.median(bare), statistics.median(framework)
        startup = statistics.median(whole) - eval_s * len(batches)
        add_row(
            rows,
            "eval",
            size,
            label,
            bare_img_s=args.batch / bare_s,
            fsbench_img_s=args.batch / eval_s,
            ratio=bare_s / eval_s,
            startup_s=startup,
        )


def section_heads(args, segmenter, size, device, rows) -> None:
    batches = anomaly_batches(size, args.batch, 3, device)
    images = batches[0]["image"]
    heads = build_heads(args.multi_heads)
    fit = batches
    scores: dict[str, torch.Tensor] = {}  # deterministic heads' scores, to compare variants
    with torch.inference_mode():
        for name, head in heads.items():
            head.attach(segmenter)
            head.to(device)
            if head.requires_fit:
                with torch.inference_mode(False):
                    head.fit(segmenter, fit)
            bare, timed = [], []
            for _ in range(args.repeats):
                bare.append(seconds(lambda: segmenter(images), device, args.rounds))
                timed.append(
                    seconds(
                        lambda h=head: predict_heads(segmenter, {"h": h}, images),
                        device,
                        args.rounds,
                    )
                )
            bare_s, head_s = statistics.median(bare), statistics.median(timed)
            extra = {}
            base = name.split("@")[0]
            if base == "knn":  # a variant must give the plain head's scores (kNN: exact re-rank)
                score = predict_heads(segmenter, {"h": head}, images)["h"].score.float()
                scores.setdefault(base, score)
                reference = scores[base]
                extra["max_rel_diff"] = float(
                    (score - reference).abs().max() / reference.abs().max()
                )
                extra["frac_pixels_diff"] = float(
                    ((score - reference).abs() > 1e-4 * reference.abs().max()).float().mean()
                )
            add_row(
                rows,
                "heads",
                size,
                name,
                bare_ms=1000 * bare_s,
                head_ms=1000 * head_s,
                cost=head_s / bare_s,
                **extra,
            )


def bare_training_seconds(segmenter, batches, precision: str, device) -> float:
    """Seconds per step of a plain loop: forward, cross-entropy, backward, AdamW, poly LR."""
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=1e-4, weight_decay=1e-4)
    total = len(batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: poly_lr_factor(s, total))
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    segmenter.train()
    started = None
    for step, batch in enumerate(batches):
        if step == WARMUP:
            synchronize(device)
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = segmenter(batch["image"]).logits
            loss = F.cross_entropy(logits, batch["label"], ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
    synchronize(device)
    return (time.perf_counter() - started) / (total - WARMUP)


def lightning_training_seconds(segmenter, batches, precision: str, device) -> float:
    task = SegmentationTask(
        segmenter,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4),
    )
    clock = SteadyClock(device)
    trainer(device, clock, max_steps=len(batches), precision=precision, limit_val_batches=0).fit(
        task, train_dataloaders=Batches(batches)
    )
    return clock.per_batch


def section_train(args, make_segmenter, size, device, rows, precision: str) -> None:
    batches = train_batches(size, args.batch, args.batches, device)
    bare, framework = [], []
    for _ in range(args.repeats):
        bare.append(bare_training_seconds(make_segmenter(), batches, precision, device))
        framework.append(lightning_training_seconds(make_segmenter(), batches, precision, device))
    bare_s, lit_s = statistics.median(bare), statistics.median(framework)
    add_row(
        rows,
        "train",
        size,
        f"SegmentationTask {precision}",
        bare_img_s=args.batch / bare_s,
        fsbench_img_s=args.batch / lit_s,
        ratio=bare_s / lit_s,
    )


def section_fast(args, make_segmenter, size, device, rows) -> None:
    batches = anomaly_batches(size, args.batch, 3, device)
    images = batches[0]["image"]
    variants: dict[str, dict[str, Any]] = {
        "channels_last": {"channels_last": True},
        "bf16 autocast": {"autocast": "bf16"},
        "bf16 + channels_last": {"autocast": "bf16", "channels_last": True},
    }
    if device.type == "cuda":
        variants["fp16 + channels_last"] = {"autocast": "fp16", "channels_last": True}
    if args.compile:
        variants["compile"] = {"compile": True}
        variants["bf16 + channels_last + compile"] = {
            "autocast": "bf16",
            "channels_last": True,
            "compile": True,
        }
    plain = make_segmenter().eval()
    with torch.inference_mode():
        reference = plain(images).logits.float()
        for name, switches in variants.items():
            fast = make_segmenter().eval()
            fast.load_state_dict(plain.state_dict())
            apply_fast_paths(fast, **switches)
            started = time.perf_counter()
            logits = fast(images).logits  # the first call pays any compilation
            synchronize(device)
            first_s = time.perf_counter() - started
            error = float((logits - reference).abs().max() / reference.abs().max())
            base, timed = [], []
            for _ in range(args.repeats):
                base.append(seconds(lambda: plain(images), device, args.rounds))
                timed.append(seconds(lambda f=fast: f(images), device, args.rounds))
            base_s, fast_s = statistics.median(base), statistics.median(timed)
            add_row(
                rows,
                "fast",
                size,
                name,
                fp32_img_s=args.batch / base_s,
                fast_img_s=args.batch / fast_s,
                speedup=base_s / fast_s,
                max_rel_logit_err=error,
                first_call_s=first_s,
            )


JSON_PATH: Path | None = None  # --json


def add_row(rows: list, section: str, size: tuple[int, int], what: str, **values: Any) -> None:
    """Add a row, print it at once and rewrite the JSON file: an interrupted run keeps its rows."""
    row = {"section": section, "size": f"{size[0]}x{size[1]}", "what": what, **values}
    rows.append(row)
    if JSON_PATH is not None:
        JSON_PATH.write_text(json.dumps(rows, indent=1))
    cells = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()]
    print(" | ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument(
        "--model", help="a published network family instead of the Segmenter, e.g. sml_r101_os8"
    )
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--sizes", nargs="+", default=["128x256", "512x1024"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=8, help="batches per Lightning run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", nargs="+", default=["eval", "heads", "train", "fast"])
    parser.add_argument("--eval-heads", nargs="+", default=SOFTMAX_HEADS)
    parser.add_argument(
        "--multi-heads",
        nargs="+",
        default=[
            "mc_dropout@T8",
            "mc_dropout@T8-features",
            "mc_dropout@T32",
            "gaussian",
            "knn",
            "flow",
        ],
    )
    parser.add_argument(
        "--per-image-strides",
        nargs="*",
        type=int,
        default=[1, 4],
        help="eval rows of max_softmax with per-image AP at these pixel strides (1 = exact)",
    )
    parser.add_argument("--precision", nargs="+", default=["32-true"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    global JSON_PATH
    JSON_PATH = Path(args.json) if args.json else None
    device = torch.device(args.device)
    torch.manual_seed(0)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    def make_segmenter() -> torch.nn.Module:
        torch.manual_seed(0)
        if args.model:
            from fsbench.models.published import build_published

            return build_published(args.model).to(device)
        return Segmenter(
            args.encoder, num_classes=19, output_stride=args.output_stride, dropout=0.1
        ).to(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    network = args.model or f"{args.encoder} OS{args.output_stride}"
    print(
        f"# {network}, batch {args.batch}, {name}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for text in args.sizes:
        size = tuple(int(v) for v in text.split("x"))
        segmenter = make_segmenter().eval()
        if "eval" in args.sections:
            section_eval(args, segmenter, size, device, rows)
        if "heads" in args.sections:
            section_heads(args, segmenter, size, device, rows)
        if "train" in args.sections:
            for precision in args.precision:
                section_train(args, make_segmenter, size, device, rows, precision)
        if "fast" in args.sections:
            section_fast(args, make_segmenter, size, device, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
