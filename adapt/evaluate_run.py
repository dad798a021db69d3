"""Re-evaluate a saved run, or score it on test splits that were not in its recipe.

    python -m adapt.evaluate_run RUN_DIR
    python -m adapt.evaluate_run RUN_DIR --test kitchen=data/kitchen.jsonl --role target --domain kitchen \\
                                         --test dvd=data/dvd.jsonl --domain dvd

Without `--test`, every dev and test split of the recipe is scored again. Each `--test NAME=PATH` adds a labelled
split (PATH takes the same forms as a recipe's data paths); the `--role` (default target) and `--domain`
after it apply to it (`--domain D` filters a file's `domain` column, as in recipes; without it the split is
named after NAME and not filtered). Results are merged into report.json / report.md, predictions are written
to `predictions/NAME.jsonl`. `--diagnostics` recomputes `diagnostics.json`. Runs under `accelerate launch` too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.errors import AdaptError, cli_entry, quiet_libraries
from adapt.features import Collator
from adapt.modeling import load_saved_model
from adapt.recipe import load_recipe
from adapt.report import load_report, write_reports
from adapt.rundir import RunDir


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


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapt.evaluate_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--test", action=_TestAction, metavar="NAME=PATH", help="an extra labelled test split")
    p.add_argument("--role", action=_TestAction, help="source or target (for the preceding --test)")
    p.add_argument("--domain", action=_TestAction, help="domain name / filter (for the preceding --test)")
    p.add_argument("--diagnostics", action="store_true",
                   help="recompute diagnostics.json (proxy A-distance, vocabulary overlap) with the saved model")
    p.set_defaults(tests=[])
    return p


def evaluate_run(run_dir: Path, tests: list[dict], diagnostics: bool = False) -> dict:
    """Score a finished run on its own splits (no `tests`) or on the extra `tests`, and recompute diagnostics.json
    when asked; returns the updated report."""
    from adapt.data import load_extra_split, load_splits
    from adapt.train import setup_accelerator, shutdown, tokenize_splits

    run = RunDir(run_dir)
    report = load_report(run)
    if not run.model.is_dir():
        raise AdaptError(f"{run_dir} has no model/ directory to evaluate")
    recipe = load_recipe(run.recipe)
    reserved = [t["name"] for t in tests if t["name"] in ("source_train", "target_train", "target_unlabeled")]
    if reserved:
        raise AdaptError(f"--test name(s) {reserved} are reserved for training splits; choose other names")
    accelerator, _ = setup_accelerator(recipe)
    try:
        labels = report["labels"]
        if tests:
            splits = {t["name"]: load_extra_split(t["path"], t["name"], t["role"], t["domain"], recipe.data, labels)
                      for t in tests}
        else:
            splits = {n: s for n, s in load_splits(recipe)[0].items() if n.endswith(("_dev", "_test"))}
        model = accelerator.prepare(load_saved_model(run.model))
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run.model))
        tokenized = tokenize_splits(splits, tokenizer, recipe, accelerator)
        collate = Collator(tokenizer.pad_token_id)
        results = _score(accelerator, model, splits, tokenized, labels, recipe, run, collate, extra=bool(tests))
        report["splits"].update(results)
        if diagnostics and accelerator.is_main_process:
            _diagnostics(run, recipe, report, accelerator.unwrap_model(model), tokenizer, accelerator)
        if accelerator.is_main_process:
            write_reports(run, report)
        accelerator.wait_for_everyone()
        return load_report(run)
    finally:
        shutdown(accelerator)


def _diagnostics(run: RunDir, recipe, report: dict, model, tokenizer, accelerator) -> None:
    from adapt.data import load_splits
    from adapt.features import tokenize
    from adapt.modeling import resolve_model
    from adapt.train import write_diagnostics

    splits = load_splits(recipe)[0]
    tokenized = {n: tokenize(splits[n].dataset, tokenizer, recipe.data, n) for n in ("source_test", "target_test")}
    write_diagnostics(run, model, resolve_model(report["model"]["name_or_path"]), splits, tokenized, recipe,
                      Collator(tokenizer.pad_token_id), accelerator.device)


def _score(accelerator, model, splits, tokenized, labels, recipe, run, collate, extra: bool) -> dict:
    from adapt.scoring import score_split
    from adapt.train import evaluate_all

    if not extra:
        return evaluate_all(accelerator, model, splits, tokenized, labels, recipe, run, collate)[0]
    out = {}
    for name, split in splits.items():
        entry, _ = score_split(accelerator, model, split, tokenized[name], labels, recipe.eval.batch_size, collate,
                               run if recipe.report.predictions else None)
        out[name] = {**entry, "kind": "test", "source": split.spec, "num_processes": accelerator.num_processes}
    return out


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    report = evaluate_run(args.run_dir, args.tests, args.diagnostics)
    for name, s in report["splits"].items():
        print(f"{name:<24} {s['role']:<7} {s['domain']:<14} n={s['n']:<6} accuracy {100 * s['accuracy']:.1f}  "
              f"macro-F1 {100 * s['macro_f1']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
