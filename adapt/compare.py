"""Compare runs: one table of every run's setup and results, and a paired bootstrap on the test examples the runs
share (matched by id) that says whether each run differs from the first.

    adapt compare RUN_DIR RUN_DIR ... [--out DIR]
    adapt compare SWEEP_DIR [--out DIR]          # a benchmark sweep: per-pair table + heatmap
    python -m adapt.report compare ...           # the same

A sweep directory is the layout `benchmarks/amazon_pairs.py` writes (`<method>/<S>-<T>.seed<k>.json`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser


def make_parser(prog: str = "python -m adapt.report compare") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("runs", type=Path, nargs="+", help="run directories (the first is the baseline), or a sweep directory")
    p.add_argument("--out", type=Path, help="write compare.md / compare.html / compare.json (or the sweep table) here")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from adapt.reporting.compare import compare_main

    print(compare_main(args.runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
