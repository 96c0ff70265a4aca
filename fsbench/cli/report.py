"""``fsbench-report DIR [--out OUT]`` (``python -m fsbench.report``): the leaderboard of a sweep.

Gathers every ``results.json`` under ``DIR`` (an ``evaluate.py`` run or a Hydra multirun folder)
into ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard.png``, written into ``--out``
(default: ``DIR``), with :func:`fsbench.report.write_leaderboard`. Exit status 1 when ``DIR``
holds no result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsbench.report import write_leaderboard


def main(argv: list[str] | None = None) -> int:
    """``fsbench-report DIR [--out OUT]``: the leaderboard of every evaluation under DIR."""
    parser = argparse.ArgumentParser(
        prog="fsbench-report",
        description="Gather every results.json under DIR (an evaluate.py run or a Hydra "
        "multirun folder) into leaderboard.md, leaderboard.csv and leaderboard.png.",
    )
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--out", help="where to write (default: DIR)")
    args = parser.parse_args(argv)
    try:
        print(write_leaderboard(args.directory, args.out))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"leaderboard: {Path(args.out or args.directory) / 'leaderboard.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
