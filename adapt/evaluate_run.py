"""Re-evaluate a saved run, or score it on test splits that were not in its recipe.

    adapt evaluate RUN_DIR
    adapt evaluate RUN_DIR --test kitchen=data/kitchen.jsonl --role target --domain kitchen \\
                           --test dvd=data/dvd.jsonl --domain dvd
    python -m adapt.evaluate_run ...                 # the same; under `accelerate launch` too

Without `--test`, every dev and test split of the recipe is scored again. Each `--test NAME=PATH` adds a labelled
split (PATH takes the same forms as a recipe's data paths); the `--role` (default target) and `--domain`
after it apply to it (`--domain D` filters a file's `domain` column, as in recipes; without it the split is
named after NAME and not filtered). Results are merged into report.json / report.md, predictions are written
to `predictions/NAME.jsonl`. `--diagnostics` recomputes `diagnostics.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, is_main_rank, parser, quiet_libraries
from adapt.core.formatting import pct


class _TestAction(argparse.Action):
    """--test starts a new test split; --role / --domain modify the latest one."""

    def __call__(self, parser, namespace, value, option_string=None):
        tests = getattr(namespace, "tests", None) or []
        if option_string == "--test":
            name, sep, path = value.partition("=")
            if not sep or not name or not path:
                parser.error(f"--test takes NAME=PATH, got {value!r}")
            tests.append({"name": name, "path": path, "role": "target", "domain": None})
        elif not tests:
            parser.error(f"{option_string} must follow a --test NAME=PATH")
        else:
            key = option_string.lstrip("-")
            if key == "role" and value not in ("source", "target"):
                parser.error(f"--role must be source or target, got {value!r}")
            tests[-1][key] = value
        namespace.tests = tests


def make_parser(prog: str = "python -m adapt.evaluate_run") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--test", action=_TestAction, metavar="NAME=PATH", help="an extra labelled test split")
    p.add_argument("--role", action=_TestAction, help="source or target (for the preceding --test)")
    p.add_argument("--domain", action=_TestAction, help="domain name / filter (for the preceding --test)")
    p.add_argument("--diagnostics", action="store_true",
                   help="recompute diagnostics.json (proxy A-distance, vocabulary overlap) with the saved model")
    p.set_defaults(tests=[])
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    from adapt.evaluation.rerun import evaluate_run

    report = evaluate_run(args.run_dir, args.tests, args.diagnostics)
    if is_main_rank():
        for name, s in report["splits"].items():
            print(f"{name:<24} {s['role']:<7} {s['domain']:<14} n={s['n']:<6} accuracy {pct(s['accuracy'])}  "
                  f"macro-F1 {pct(s['macro_f1'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
