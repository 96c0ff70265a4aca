"""Peak memory of loading a published network's file, against the file's size, side by side.

    python benchmarks/loading.py                        # nvidia_wrn38: a 549 MB file
    python benchmarks/loading.py --family vainf_r101_os16

Writes a file in the family's published layout (untrained weights at the published shapes), then
in a fresh process for each way of loading it, loads it and runs one forward pass (so every
weight page is touched), and reports the process's peak resident memory (anonymous plus
file-backed pages, /proc/self/status) above its start, as a multiple of the file's size, and
what stays resident after the pass:

* ``load_published``: fsbench's loader (memory-mapped file, network built on the meta device,
  ``load_state_dict(assign=True)``). Goal: <= 1.2x (one copy: the file's pages).
* ``torch.load + load_state_dict``: the usual recipe (the file read into memory, the network
  built with its own initialised weights, the file's copied in): two copies.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

WAYS = ("load_published", "torch.load + load_state_dict")


def _memory_mib() -> dict[str, float]:
    """This process's resident memory (MiB): anonymous, file-backed, and the peak of the total."""
    status = Path("/proc/self/status").read_text()
    values = {}
    for key in ("RssAnon", "RssFile", "VmHWM"):
        values[key] = int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024  # kB
    return values


def measure(family: str, path: str, way: str) -> dict:
    """In this process: load ``path`` the given way, run one forward; the peak above the start."""
    import torch

    from fsbench.models.published import FAMILIES, build_published, load_published
    from fsbench.models.published.base import weights_of

    torch.set_num_threads(1)
    start = _memory_mib()
    if way == "load_published":
        network = load_published(family, path)
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)  # read in full
        state = weights_of(raw, FAMILIES[family].family, Path(path))
        del raw
        network = build_published(family)
        network.load_state_dict(state)
        del state
    with torch.inference_mode():
        network.eval()(torch.rand(1, 3, 64, 64))
    end = _memory_mib()
    return {
        "peak_above_start_mib": end["VmHWM"] - (start["RssAnon"] + start["RssFile"]),
        "anonymous_mib": end["RssAnon"] - start["RssAnon"],
        "file_pages_mib": end["RssFile"] - start["RssFile"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="nvidia_wrn38")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "WAY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.family, *args.measure)))
        return 0
    import torch

    from fsbench.models.published import FAMILIES, build_published

    family = FAMILIES[args.family].family
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / family.file_name
        network = build_published(args.family)
        state = {family.prefix + key: value for key, value in network.state_dict().items()}
        torch.save({family.container: state} if family.container else state, path)
        del network, state
        size_mib = path.stat().st_size / 2**20
        print(f"# {args.family}: {family.file_name}, {size_mib:.0f} MiB, torch {torch.__version__}")
        for way in WAYS:
            done = subprocess.run(
                [sys.executable, __file__, "--family", args.family, "--measure", str(path), way],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            peak = row["peak_above_start_mib"]
            print(
                f"way={way} | file_mib={size_mib:.0f} | peak_above_start_mib={peak:.0f} | "
                f"ratio_to_file={peak / size_mib:.2f} | after: anonymous_mib="
                f"{row['anonymous_mib']:.0f}, file_pages_mib={row['file_pages_mib']:.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
