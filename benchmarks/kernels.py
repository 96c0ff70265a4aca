"""The two GPU hot spots of issue 6, taken apart: kNN's k-th-distance selection and per-image AP.

    python benchmarks/kernels.py --device cuda          # one chunk of DeepLabv3+ R101 at 1024x2048

* ``knn``: one chunk of ``--rows`` query pixels against a bank of ``--bank`` features of
  ``--dims`` dimensions: the distance ``addmm`` alone, then full-row ``topk`` against a
  two-stage selection (top-k within groups of ``m`` bank entries, then top-k of the group
  winners: exact, since each of the row's k smallest is among its group's k smallest), in
  float32 and float16.
* ``per_image``: :func:`fsbench.metrics.per_image.per_image_metrics` on ``--images`` score maps of
  ``--pixels`` pixels, and its steps one by one.

Each line prints milliseconds (mean of ``--rounds`` after a warm-up) and, for the selections,
whether the k-th values equal full-row ``topk``'s.
"""

from __future__ import annotations

import argparse
import time

import torch

from baselines.knn import smallest_k
from fsbench.metrics.per_image import per_image_metrics


def timed(function, device: torch.device, rounds: int) -> float:
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - started) / rounds


def grouped_kth(distances: torch.Tensor, k: int, group: int) -> torch.Tensor:
    """k-th smallest per row: top-k within groups of ``group`` columns, then of the winners."""
    rows, columns = distances.shape
    pad = (-columns) % group
    if pad:
        distances = torch.nn.functional.pad(distances, (0, pad), value=float("inf"))
    winners = distances.view(rows, -1, group).topk(k, dim=2, largest=False, sorted=False).values
    return winners.view(rows, -1).topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1)


def section_knn(args, device: torch.device) -> None:
    generator = torch.Generator(device=device).manual_seed(0)
    queries = torch.randn(args.rows, args.dims, device=device, generator=generator)
    bank = torch.randn(args.bank, args.dims, device=device, generator=generator)
    queries = torch.nn.functional.normalize(queries, dim=1)
    bank = torch.nn.functional.normalize(bank, dim=1)
    for dtype in (torch.float32, torch.float16):
        knn_in(args, device, queries.to(dtype), bank.to(dtype))


def knn_in(args, device: torch.device, q: torch.Tensor, b: torch.Tensor) -> None:
    """The kNN rows of one dtype (that of ``q`` and ``b``)."""
    k, bsq, name = args.k, b.float().square().sum(dim=1).to(b.dtype), str(b.dtype)[6:]
    distances = torch.addmm(bsq, q, b.T, alpha=-2)
    reference = distances.topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1)
    ms = timed(lambda: torch.addmm(bsq, q, b.T, alpha=-2), device, args.rounds)
    print(f"knn {name} addmm [{args.rows}x{args.dims}]x[{args.dims}x{args.bank}]: {ms:.2f} ms")
    for kk in (k, 2 * k):
        ms = timed(lambda kk=kk: distances.topk(kk, dim=1, largest=False), device, args.rounds)
        print(f"knn {name} topk({kk}) full rows: {ms:.2f} ms")
    for group in args.groups:
        got = grouped_kth(distances, k, group)
        same = bool(torch.equal(got, reference))
        ms = timed(lambda g=group: grouped_kth(distances, k, g), device, args.rounds)
        print(f"knn {name} grouped topk({k}), groups of {group}: {ms:.2f} ms, exact={same}")
    for kk in (k, 2 * k):
        full = distances.topk(kk, dim=1, largest=False).values.amax(dim=1)
        for groups in [None, *args.minima_groups]:
            got = smallest_k(distances, kk, groups)[0].amax(dim=1)
            same = bool(torch.equal(got, full))
            ms = timed(lambda kk=kk, g=groups: smallest_k(distances, kk, g), device, args.rounds)
            label = "default" if groups is None else groups
            print(f"knn {name} smallest_k({kk}), {label} groups: {ms:.2f} ms, exact={same}")
    ms = timed(lambda: distances.amin(dim=1), device, args.rounds)
    print(f"knn {name} amin (one read of the matrix): {ms:.2f} ms")


def section_per_image(args, device: torch.device) -> None:
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (args.images, args.pixels)
    target = (torch.rand(shape, device=device, generator=generator) < 0.05).to(torch.uint8)
    score = torch.randn(shape, device=device, generator=generator) + target
    ms = timed(lambda: per_image_metrics(score, target), device, args.rounds)
    print(f"per_image_metrics [{args.images}x{args.pixels}]: {ms:.2f} ms")
    ordered, order = torch.sort(score, dim=1, descending=True)
    positive = target == 1
    tps = torch.cumsum(positive.gather(1, order), dim=1, dtype=torch.int64)
    steps = {
        "sort rows": lambda: torch.sort(score, dim=1, descending=True),
        "sort flat (1-D, image-major keys)": lambda: torch.sort(score.reshape(-1)),
        "gather": lambda: positive.gather(1, order),
        "cumsum int64": lambda: torch.cumsum(positive.gather(1, order), dim=1, dtype=torch.int64),
        "cumsum flat int64": lambda: torch.cumsum(positive.reshape(-1), 0, dtype=torch.int64),
        "cummax int64": lambda: torch.cummax(tps, dim=1),
        "cummax flat int64": lambda: torch.cummax(tps.reshape(-1), dim=0),
        "compare neighbours": lambda: ordered[:, :-1] != ordered[:, 1:],
    }
    for name, step in steps.items():
        print(f"per_image step {name}: {timed(step, device, args.rounds):.2f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sections", nargs="+", default=["knn", "per_image"])
    parser.add_argument("--rows", type=int, default=13421, help="query pixels per kNN chunk")
    parser.add_argument("--bank", type=int, default=20000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--groups", type=int, nargs="*", default=[2000])
    parser.add_argument("--minima-groups", type=int, nargs="*", default=[128, 256, 1024, 2048])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--pixels", type=int, default=1024 * 2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}", flush=True)
    if "knn" in args.sections:
        section_knn(args, device)
    if "per_image" in args.sections:
        section_per_image(args, device)


if __name__ == "__main__":
    main()
