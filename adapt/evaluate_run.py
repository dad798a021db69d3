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

    adapt evaluate RUN_DIR --unlabeled dvd=data/dvd_unlabeled.jsonl --domain dvd

computes the model's label-free criteria (`adapt/evaluation/label_free.py`) on unlabelled text it never saw, as the
run computed them on its own target (the same sample size and seed, its source dev split and training prior), into
report.json's `label_free_on.NAME`, with a warning when its predictions there collapse onto one class: how a model
trained for one domain would fare on another, without that domain's labels. The predicted classes of that sample go
to `predictions/unlabeled_NAME.jsonl`, where `adapt compare` measures how often seeds of one setting agree on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, is_main_rank, parser, quiet_libraries
from adapt.core.formatting import pct


class _SplitAction(argparse.Action):
    """--test and --unlabeled start a new split; --role and --domain modify the latest one."""

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string in ("--test", "--unlabeled"):
            name, sep, path = value.partition("=")
            if not sep or not name or not path:
                parser.error(f"{option_string} takes NAME=PATH, got {value!r}")
            entry = {"name": name, "path": path, "domain": None}
            if option_string == "--test":
                namespace.tests = [*namespace.tests, {**entry, "role": "target"}]
                namespace.latest = namespace.tests[-1]
            else:
                namespace.unlabeled = [*namespace.unlabeled, entry]
                namespace.latest = namespace.unlabeled[-1]
            return
        latest, key = namespace.latest, option_string.lstrip("-")
        if latest is None:
            parser.error(f"{option_string} must follow a --test NAME=PATH or an --unlabeled NAME=PATH")
        if key == "role" and "role" not in latest:
            parser.error("--role applies to a --test split; --unlabeled text is always target text")
        if key == "role" and value not in ("source", "target"):
            parser.error(f"--role must be source or target, got {value!r}")
        latest[key] = value


def make_parser(prog: str = "python -m adapt.evaluate_run") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--test", action=_SplitAction, metavar="NAME=PATH", help="an extra labelled test split")
    p.add_argument("--unlabeled", action=_SplitAction, metavar="NAME=PATH",
                   help="unlabelled text to compute the model's label-free criteria (and collapse alarm) on")
    p.add_argument("--role", action=_SplitAction, help="source or target (for the preceding --test)")
    p.add_argument("--domain", action=_SplitAction,
                   help="domain name / filter (for the preceding --test or --unlabeled)")
    p.add_argument("--diagnostics", action="store_true",
                   help="recompute diagnostics.json (proxy A-distance, vocabulary overlap) with the saved model")
    p.set_defaults(tests=[], unlabeled=[], latest=None)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    from adapt.evaluation.rerun import evaluate_run

    report = evaluate_run(args.run_dir, args.tests, args.diagnostics, args.unlabeled)
    if is_main_rank():
        for name, s in report["splits"].items():
            print(f"{name:<24} {s['role']:<7} {s['domain']:<14} n={s['n']:<6} accuracy {pct(s['accuracy'])}  "
                  f"macro-F1 {pct(s['macro_f1'])}")
        for u in args.unlabeled:
            lf = report["label_free_on"][u["name"]]
            criteria = ", ".join(f"{k} {v:.4g}" for k, v in lf["criteria"].items())
            shares = ", ".join(f"{k} {pct(v)}%" for k, v in lf["predicted_distribution"].items())
            print(f"label-free on {u['name']} ({lf['examples']} texts): {criteria}; predicted {shares}")
        for alarm in report.get("alarms", []):
            print(f"warning: {alarm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
