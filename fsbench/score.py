"""``python -m fsbench.score``: the ``fsbench-score`` command line (:mod:`fsbench.cli.score`)."""

import sys

from fsbench.cli.score import main

if __name__ == "__main__":
    sys.exit(main())
