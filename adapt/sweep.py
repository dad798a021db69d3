"""Run a recipe over a grid of overrides, one training run per combination, resumable.

    adapt sweep recipes/sentiment.yaml --grid method.name=source_only,dann --grid seed=1,2 \\
        [--out runs/sweep] [--resume] [--launcher "accelerate launch --num_processes 2"] [--drop-models] [key=value ...]
    python -m adapt.sweep ...     # the same

Each combination trains in its own process (`python -m adapt.train`, or the `--launcher` command in front of
`-m adapt.train`) into `<out>/runs/<combination>/`, and leaves one small `<out>/results/<combination>.json`
(overrides, summary metrics, per-split metrics, training time); `<combination>` is the overrides made a file name,
plus a short hash when that name is too long or reads like another combination's. A combination whose overrides
already have a result file is skipped with `--resume` (and says so), so a sweep can stop and continue, or grow
with more values, across sessions. A run that fails is reported and the sweep goes on; its result file is not
written, so `--resume` retries it. The table of all results is printed at the end and written to `<out>/sweep.md`
and `<out>/sweep.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser
from adapt.core.errors import AdaptError


def make_parser(prog: str = "python -m adapt.sweep") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", help="`key=value` overrides applied to every run")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a swept key (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="sweep directory (default runs/sweep-<recipe name>)")
    p.add_argument("--resume", action="store_true", help="skip combinations that already have a result")
    p.add_argument("--launcher", help='command in front of `-m adapt.train`, e.g. "accelerate launch --num_processes 2"')
    p.add_argument("--drop-models", action="store_true", help="delete each run's model/ once its result is written")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from adapt.training.sweep import parse_grid, run_sweep

    grid = parse_grid(args.grid)
    if not grid:
        raise AdaptError("give at least one --grid key=v1,v2 (for a single run use `adapt train`)")
    out = args.out or Path("runs") / f"sweep-{args.recipe.stem}"
    run_sweep(args.recipe.resolve(), grid, args.overrides, out.resolve(), args.resume, args.launcher, args.drop_models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
