"""``python -m fsbench.data``: the ``fsbench-data`` command line (:mod:`fsbench.cli.data`)."""

from __future__ import annotations

import sys

from fsbench.cli.data import main

if __name__ == "__main__":
    sys.exit(main())
