"""Score a finished run again: on its own dev and test splits, or on labelled test splits it never saw
(`adapt evaluate RUN_DIR --test NAME=PATH`), or compute its label-free criteria on unlabelled text it never saw
(`--unlabeled NAME=PATH`); results merge into its report."""

from __future__ import annotations

from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.core.rundir import RunDir, name_problem
from adapt.data.features import Collator, tokenize, tokenize_splits
from adapt.data.splits import load_extra_split, load_splits, load_unlabeled_split
from adapt.evaluation.agreement import unlabeled_predictions
from adapt.evaluation.diagnostics import write_diagnostics
from adapt.evaluation.scoring import (
    check_label_free_texts,
    evaluate_all,
    label_free_probe,
    score_label_free,
    score_split,
)
from adapt.model.saving import load_saved_model
from adapt.model.start import recorded_start
from adapt.recipe import load_recipe
from adapt.reporting.report import load_report, write_reports
from adapt.training.accelerator import setup_accelerator, shutdown


def evaluate_run(run_dir: Path, tests: list[dict], diagnostics: bool = False, unlabeled: list[dict] = ()) -> dict:
    """Score a finished run on its own splits (neither `tests` nor `unlabeled`) or on the extra `tests`, compute its
    label-free criteria on each `unlabeled` text, and recompute diagnostics.json when asked; returns the updated
    report."""
    bad = [problem for t in tests if (problem := name_problem(t["name"], "--test name"))]
    bad += [problem for u in unlabeled if (problem := name_problem(u["name"], "--unlabeled name"))]
    if bad:  # a name becomes predictions/<name>.jsonl (unlabeled_<name>): `../../x` would write outside the run
        raise AdaptError("; ".join(bad))
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
        elif unlabeled:  # only the label-free criteria were asked for
            splits = {}
        else:
            splits = {n: s for n, s in load_splits(recipe)[0].items() if n.endswith(("_dev", "_test"))}
        model = accelerator.prepare(load_saved_model(run.model))
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run.model))
        tokenized = tokenize_splits(splits, tokenizer, recipe, accelerator)
        collate = Collator(tokenizer.pad_token_id)
        if splits:
            report["splits"].update(_score(accelerator, model, splits, tokenized, labels, recipe, run, collate,
                                           extra=bool(tests)))
        if unlabeled:
            keep = run.predictions if recipe.report.predictions else None
            on = _label_free_on(unlabeled, recipe, labels, accelerator, model, tokenizer, collate, keep)
            report["label_free_on"] = {**report.get("label_free_on", {}), **on}
        if diagnostics and accelerator.is_main_process:
            _diagnostics(run, recipe, report, accelerator.unwrap_model(model), tokenizer, accelerator)
        if accelerator.is_main_process:
            write_reports(run, report)
        accelerator.wait_for_everyone()
        return load_report(run)
    finally:
        shutdown(accelerator)


def _label_free_on(unlabeled: list[dict], recipe, labels: list[str], accelerator, model, tokenizer, collate,
                   predictions: Path | None) -> dict:
    """The label-free criteria of the saved model on each unlabelled text it never saw, computed as the run computed its
    own: a sample of `eval.label_free_examples` texts drawn with the run's seed, the run's source dev split (DEV) and
    its source training prior (class balance, the collapse alarm). The run's own unlabelled target file gives the run's
    own record. The run's splits are read and its source dev split tokenised once for all texts. With `predictions`
    (a folder), each sample's predicted classes go to `unlabeled_<name>.jsonl` there, for `adapt compare`'s seed
    agreement."""
    own = load_splits(recipe)[0]
    source_dev = tokenize_splits({"source_dev": own["source_dev"]}, tokenizer, recipe, accelerator)
    out = {}
    for u in unlabeled:
        split = load_unlabeled_split(u["path"], u["name"], u["domain"], recipe.data)
        check_label_free_texts(split, f"--unlabeled {u['name']}", "give a file with more texts")
        splits = {"source_train": own["source_train"], "source_dev": own["source_dev"], "target_unlabeled": split}
        tokenized = {**source_dev, **tokenize_splits({"target_unlabeled": split}, tokenizer, recipe, accelerator)}
        probe = label_free_probe(splits, tokenized, labels, recipe.eval.label_free_examples, recipe.seed)
        keep = predictions / f"{unlabeled_predictions(u['name'])}.jsonl" if predictions else None
        record = score_label_free(accelerator, model, probe, recipe.eval.batch_size, collate, predictions=keep)
        out[u["name"]] = {**record, "source": u["path"], "domain": split.domain}
    return out


def _diagnostics(run: RunDir, recipe, report: dict, model, tokenizer, accelerator) -> None:

    splits = load_splits(recipe)[0]
    tokenized = {n: tokenize(splits[n].dataset, tokenizer, recipe.data, n) for n in ("source_test", "target_test")}
    write_diagnostics(run, model, recorded_start(report["model"]), splits, tokenized, recipe,
                      Collator(tokenizer.pad_token_id), accelerator.device)


def _score(accelerator, model, splits, tokenized, labels, recipe, run, collate, extra: bool) -> dict:

    if not extra:
        return evaluate_all(accelerator, model, splits, tokenized, labels, recipe, run, collate)[0]
    out = {}
    for name, split in splits.items():
        entry, _ = score_split(accelerator, model, split, tokenized[name], labels, recipe.eval.batch_size, collate,
                               run if recipe.report.predictions else None)
        out[name] = {**entry, "kind": "test", "source": split.spec, "num_processes": accelerator.num_processes}
    return out
