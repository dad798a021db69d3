"""Train a recipe end to end: data -> model -> method phases -> evaluation -> report.

    accelerate launch -m adapt.train recipes/sentiment.yaml [key=value ...] [~key ...]
    adapt train recipes/sentiment.yaml [key=value ...]          # the same, in this one process
"""

from __future__ import annotations

import argparse
import sys

from adapt.core.cli import cli_entry, is_main_rank, parser, quiet_libraries
from adapt.core.formatting import pct
from adapt.recipe import load_recipe


def make_parser(prog: str = "accelerate launch -m adapt.train") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("recipe", help="path to a YAML recipe, e.g. recipes/sentiment.yaml")
    p.add_argument("overrides", nargs="*", help="dotted `key=value` overrides and `~key` removals")
    return p


def print_summary(report: dict) -> None:
    s = report["summary"]
    run_dir = report["recipe"]["output_dir"]
    print(f"\nrun: {run_dir}")
    for role in ("source", "target"):
        if f"{role}_accuracy" in s:
            print(f"{role} test: accuracy {pct(s[f'{role}_accuracy'])}  macro-F1 {pct(s[f'{role}_macro_f1'])}")
    if "transfer_gap" in s:
        print(f"transfer gap: {pct(s['transfer_gap'])} points")
    t = report["timing"]
    print(f"training: {t['train_seconds']:.0f} s ({t['train_samples_per_second']:.1f} samples/s); report: {run_dir}/report.md")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)  # every recipe problem before torch is imported
    quiet_libraries()
    from adapt.training.run import run

    report = run(recipe)
    if is_main_rank():
        print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
