"""Benchmark AWR against plain PyTorch / raw gymnasium: the entry point of the ``bench`` package next to it.

    python scripts/benchmark.py [--sections update,learner,relabel,collection,iteration,end_to_end] [--quick] ...

``python scripts/benchmark.py --help`` lists the options; ``scripts/bench/__init__.py`` describes the sections.
"""

from __future__ import annotations

import sys

from bench.cli import main  # scripts/ is on sys.path when a script in it runs

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
