"""A whole run: data -> model -> method phases -> evaluation -> report (and the Hub push a recipe asks for).

`run(recipe)` is what `accelerate launch -m adapt.train RECIPE` and `adapt train RECIPE` call."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from adapt.core.errors import AdaptError, RecipeError
from adapt.core.fileio import atomic_write_text, read_jsonl, replace_dir
from adapt.core.rundir import RunClaim, RunDir, check_output_dir, default_output_dir, plan_output_dir
from adapt.data.features import Collator, tokenize_splits
from adapt.data.splits import Split, load_splits
from adapt.evaluation.agreement import unlabeled_predictions
from adapt.evaluation.diagnostics import write_diagnostics
from adapt.evaluation.label_free import CRITERIA, LOG_KEY, logged_values
from adapt.evaluation.scoring import (
    LabelFreeProbe,
    check_label_free_texts,
    evaluate_all,
    label_free_probe,
    score_label_free,
)
from adapt.hub.push import check_can_push, push_run
from adapt.methods import get_method
from adapt.methods.base import BaseMethod, MethodContext
from adapt.model.finetune import apply_finetune, count_parameters, pretrained_parameter_names
from adapt.model.heads import AdaptModel, classifier_of
from adapt.model.init_run import start_text
from adapt.model.limits import max_length_problem, start_problems
from adapt.model.loading import ResolvedModel
from adapt.model.peft_setup import checkpointed_state, per_step_calls
from adapt.model.saving import save_model
from adapt.model.start import load_start
from adapt.recipe import Recipe, recipe_to_dict, recipe_to_yaml
from adapt.reporting.report import SCHEMA_VERSION, summarize, write_reports
from adapt.training.accelerator import device_name, lost_process_error, setup_accelerator, shutdown
from adapt.training.loop import LoopContext, train
from adapt.training.record import environment, timing

# ----------------------------------------------------------------------------------------------------------
# Stages.


@contextmanager
def claim_run_dir(recipe: Recipe, accelerator: Accelerator, cwd: Path) -> Iterator[tuple[Recipe, RunDir, Path | None]]:
    """Choose the run directory, check that this run may write it, and hold its lock until the run ends (the main
    process decides; every process gets the same directory, checkpoint to resume from, or error)."""
    claim, error, shared = None, None, [None, None, None]  # directory, checkpoint, error message
    if accelerator.is_main_process:
        claim = RunClaim(RunDir(Path(recipe.output_dir or default_output_dir(recipe.name, cwd))))
        try:
            shared = [str(claim.run.root), _claim(claim, replace(recipe, output_dir=str(claim.run.root))), None]
        except AdaptError as err:
            error, shared[2] = err, str(err)
    try:
        if accelerator.num_processes > 1:
            # Also the barrier that keeps the other processes from writing before the main process holds the lock.
            broadcast_object_list(shared)
        if shared[2] is not None:
            raise error or AdaptError(shared[2])
        run = RunDir(Path(shared[0]))
        yield replace(recipe, output_dir=str(run.root)), run, Path(shared[1]) if shared[1] else None
    finally:
        if claim is not None:
            claim.release()


def _claim(claim: RunClaim, recipe: Recipe) -> str | None:
    """Refuse a folder that is not ours, lock it, check what it holds against the recipe, then mark it as a run
    (nothing is written before the checks pass); returns the checkpoint to resume from."""
    check_output_dir(claim.run)
    claim.acquire()
    resume_from = plan_output_dir(claim.run, recipe.train.resume)
    if resume_from is not None and recipe.train.resume == "auto":
        check_same_recipe(recipe, claim.run)
    claim.write_marker(recipe.name)
    return str(resume_from) if resume_from is not None else None


# Keys that may change between an interrupted run and its continuation without changing what it computes.
RESUMABLE_CHANGES = {"train.resume", "train.max_steps", "train.checkpoint_every_steps", "train.keep_checkpoints",
                     "train.num_workers", "train.cpu_threads", "hub.push", "hub.repo_id", "hub.private"}


# Defaults that changed, each to a value that computes the same for every run the old one could start:
# `model.attention: sdpa` only loaded models with SDPA, where `auto` is SDPA; `[query, value]` only applied to models
# with such modules, whose family default it is (`adapt.model.families`).
FORMER_DEFAULTS = {"model.attention": ("sdpa", "auto"), "model.lora.target_modules": (["query", "value"], None)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_same_recipe(recipe: Recipe, run: RunDir) -> None:
    """Continuing another recipe's checkpoint would silently mix two experiments in one directory."""
    if not run.recipe.exists():
        return
    import yaml

    before = _flatten(yaml.safe_load(run.recipe.read_text()))
    now = _flatten(recipe_to_dict(recipe))
    # A key the saved recipe lacks was added to adapt after the run started: at its default it changes nothing
    # (upgrading adapt between an interruption and its resume must not orphan the run).
    defaults = _flatten(recipe_to_dict(Recipe()))
    before = {**{k: defaults[k] for k in now.keys() - before.keys() if k in defaults}, **before}
    # A run saved under a former default and resumed at the new one: the same computation.
    before.update({k: new for k, (old, new) in FORMER_DEFAULTS.items()
                   if before.get(k) == old and now.get(k, old) == new})
    changed = sorted(k for k in before.keys() | now.keys() if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise AdaptError(
            f"`output_dir` {run.root} holds an unfinished run of a different recipe ({diffs}); continue it with its "
            f"own recipe ({run.recipe}), or choose another `output_dir`"
        )


def open_run_dir(run: RunDir, recipe: Recipe, resume_from: Path | None, accelerator: Accelerator,
                 method_dirs: tuple[str, ...] = ()) -> None:
    """Start writing the run directory (claimed, so ours) once data and model have loaded: bad input leaves it as
    it was."""
    if accelerator.is_main_process:
        if resume_from is None:  # a fresh start in a directory a killed run left behind
            run.train_log.unlink(missing_ok=True)
            for leftover in {"pseudo_labels", "mlm", *method_dirs}:  # what a killed run's method had written
                shutil.rmtree(run.root / leftover, ignore_errors=True)
            run.diagnostics.unlink(missing_ok=True)
        atomic_write_text(run.recipe, recipe_to_yaml(recipe))
    accelerator.wait_for_everyone()


@dataclass
class ModelBundle:
    model: torch.nn.Module  # the classifier, or an AdaptModel holding it and the method's heads
    tokenizer: object
    resolved: ResolvedModel
    finetune_info: dict
    start_info: dict  # where it started: `init_from` (the chain of runs), `layers` (kept of the loaded model's)


def setup_model(recipe: Recipe, label_names: list[str], method: BaseMethod) -> ModelBundle:
    start = load_start(recipe.model, label_names)  # pretrained or `model.init_from`; `model.num_layers` kept
    model, resolved = start.model, start.resolved
    if problem := max_length_problem(recipe.data.max_length, model.config.to_dict(), resolved.name_or_path):
        raise RecipeError([problem])  # a Hub model's config is known only now (a local one's was checked at the start)
    model, info = apply_finetune(model, recipe.model)
    heads = method.heads(recipe, model, resolved.path)
    if heads:
        model = AdaptModel(model, heads)
        method.prepare_model(model, recipe)
    return ModelBundle(model, start.tokenizer, resolved, info, start.record)


def l2sp_anchors(recipe: Recipe, net: torch.nn.Module, resolved: ResolvedModel) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, starting value) for the pretrained encoder weights that train; the heads are not anchored. With
    `model.init_from` the anchor is the init run's weights, where this run starts (all of its encoder)."""
    if recipe.train.l2sp <= 0:
        return []
    classifier = classifier_of(net)
    names = set(pretrained_parameter_names(classifier, None if resolved.init_dir else resolved.path))
    return [(p, p.detach().float().clone()) for n, p in classifier.named_parameters() if n in names]


def final_label_free(accelerator: Accelerator, model: torch.nn.Module, probe: LabelFreeProbe | None, recipe: Recipe,
                     collate: Collator, run: RunDir) -> dict | None:
    """The label-free criteria of the final model on the target sample (a collective: call on every process).
    `domain_balance` reads the last quarter of the logged discriminator accuracies, as the report's alarm does."""
    if probe is None or not recipe.eval.label_free:
        return None
    acc = logged_values(read_jsonl(run.train_log), LOG_KEY) if run.train_log.exists() else []
    return score_label_free(accelerator, model, probe, recipe.eval.batch_size, collate, acc[-max(1, len(acc) // 4):],
                            run.predictions / f"{unlabeled_predictions()}.jsonl" if recipe.report.predictions else None)


def selection_record(recipe: Recipe, select: str, best_value: float | None, best_step: int | None) -> dict:
    """What selection compared: a metric on a labelled dev split, or a label-free criterion on the unlabelled target
    (its value as computed, not flipped to "higher is better" as the loop compares it)."""
    name = recipe.eval.select_on
    if name not in CRITERIA:
        return {"split": select, "metric": recipe.eval.selection_metric, "best_value": best_value, "best_step": best_step}
    if best_value is not None and not CRITERIA[name].higher_is_better:
        best_value = -best_value
    return {"split": "target_unlabeled", "metric": name, "label_free": True,
            "higher_is_better": CRITERIA[name].higher_is_better, "best_value": best_value, "best_step": best_step}


# ----------------------------------------------------------------------------------------------------------
# The report's record of the run.


def check_trackers(recipe: Recipe) -> None:
    """A requested tracker whose package is missing stops the run before any work, naming the install."""
    import importlib.util

    from adapt.recipe import TRACKERS

    missing = [t for t in recipe.report.trackers
               if importlib.util.find_spec(TRACKERS[t]) is None
               and not (t == "tensorboard" and importlib.util.find_spec("tensorboardX"))]
    if missing:
        pkgs = " ".join(TRACKERS[t] for t in missing)
        raise AdaptError(f"`report.trackers`: {', '.join(missing)} needs `pip install {pkgs}`; install it or remove it "
                         "from report.trackers")


def start_trackers(accelerator: Accelerator, recipe: Recipe, run: RunDir) -> None:
    """Accelerate trackers logging under <run>/trackers, with the flattened recipe as the run's config."""
    if not recipe.report.trackers:
        return
    # Set here rather than in Accelerator(...): the run directory is only known once the Accelerator exists.
    accelerator.log_with = list(recipe.report.trackers)
    accelerator.project_configuration.set_directories(str(run.root / "trackers"))
    config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _flatten(recipe_to_dict(recipe)).items()}
    accelerator.init_trackers(recipe.name, config=config)


def phase_summaries(run: RunDir) -> list[dict]:
    """Per phase, from train_log.jsonl: steps, and the first and last logged value of every loss the method logs
    (the curve itself stays in the log), plus the best selection score when the phase selected on one."""
    if not run.train_log.exists():
        return []
    phases: dict[int, dict] = {}
    for rec in read_jsonl(run.train_log):
        p = phases.setdefault(rec.get("phase", 0), {"phase": rec.get("phase", 0), "first": {}, "last": {}})
        if "phase_name" in rec:
            p["name"], p["last_step"] = rec["phase_name"], rec["global_step"]
            for k, v in rec.items():
                if k not in ("phase", "phase_name", "global_step", "epoch") and isinstance(v, (int, float)):
                    p["first"].setdefault(k, v)
                    p["last"][k] = v
        for k, v in rec.items():
            if k.endswith(("_macro_f1", "_accuracy")) and isinstance(v, (int, float)):
                p[f"best_{k}"] = max(v, p.get(f"best_{k}", v))
        if "pseudo_labels" in rec:
            p["pseudo_labels"] = rec["pseudo_labels"]
    return [phases[k] for k in sorted(phases)]


# ----------------------------------------------------------------------------------------------------------
# The whole run.


def run(recipe: Recipe, *, cwd: Path | None = None) -> dict:
    """Train and evaluate `recipe`; returns the report (also written to `<output_dir>/report.json`)."""
    wall = time.perf_counter()
    accelerator, precision_source = setup_accelerator(recipe)
    try:
        if recipe.hub.push:  # fail before training, not after it: the push happens at the end
            check_can_push(recipe.hub.repo_id)
        check_trackers(recipe)
        if problems := start_problems(recipe.model, recipe.data.max_length, recipe.data.label_names):
            raise RecipeError(problems)  # before the data loads
        with claim_run_dir(recipe, accelerator, cwd or Path.cwd()) as (recipe, run_dir, resume_from):
            return _run(recipe, run_dir, resume_from, accelerator, precision_source, wall)
    except RuntimeError as err:
        if (lost := lost_process_error(accelerator, err)) is None:
            raise
        raise lost from None
    finally:
        shutdown(accelerator)


def _run(recipe: Recipe, run: RunDir, resume_from: Path | None, accelerator: Accelerator, precision_source: str,
         wall: float) -> dict:
    set_seed(recipe.seed)
    with accelerator.main_process_first():
        splits, label_names = load_splits(recipe)
    criteria_on = recipe.eval.label_free or recipe.eval.select_on in CRITERIA  # selecting on one computes them all
    if criteria_on and "target_unlabeled" in splits:
        check_label_free_texts(splits["target_unlabeled"], "data.target.unlabeled",
                               "give more unlabelled target text, or set `eval.label_free=false` and select on "
                               "`eval.select_on=source_dev`")
    method = get_method(recipe.method.name)
    bundle = setup_model(recipe, label_names, method)
    open_run_dir(run, recipe, resume_from, accelerator, method.run_dirs)
    _print_setup(accelerator, run, resume_from, splits, label_names, bundle, recipe)
    start_trackers(accelerator, recipe, run)
    tokenized = tokenize_splits(splits, bundle.tokenizer, recipe, accelerator)
    collate = Collator(bundle.tokenizer.pad_token_id)
    model = accelerator.prepare(bundle.model)
    select = "target_dev" if recipe.eval.select_on == "target_dev" else "source_dev"
    net = accelerator.unwrap_model(model, keep_torch_compile=False)
    # Selection on a label-free criterion still scores (and logs) source dev each evaluation.
    probe = label_free_probe(splits, tokenized, label_names, recipe.eval.label_free_examples, recipe.seed) \
        if criteria_on else None
    ctx = LoopContext(accelerator, recipe, model, run, collate, label_names, splits[select], tokenized[select],
                      l2sp_anchors=l2sp_anchors(recipe, net, bundle.resolved), run_dirs=method.run_dirs,
                      label_free=probe, model_step_calls=per_step_calls(net),
                      model_extra_state=checkpointed_state(net))
    method_ctx = MethodContext(recipe, tokenized, bundle.tokenizer, net, run)
    state = train(ctx, method.phases(method_ctx), resume_from)

    results, eval_throughput = evaluate_all(accelerator, model, splits, tokenized, label_names, recipe, run, collate)
    label_free = final_label_free(accelerator, model, probe, recipe, collate, run)
    classifier = classifier_of(net)  # the heads a method trained alongside are not part of the result
    if accelerator.is_main_process:
        _save_model_atomically(classifier, bundle.tokenizer, run, merge=bundle.resolved.stacked)
        if recipe.eval.diagnostics:
            write_diagnostics(run, classifier, bundle.resolved, splits, tokenized, recipe, collate, accelerator.device)
    accelerator.wait_for_everyone()
    total, trainable = count_parameters(classifier)
    report = {
        "schema_version": SCHEMA_VERSION,
        "name": recipe.name,
        "method": recipe.method.name,
        "recipe": recipe_to_dict(recipe),
        "labels": label_names,
        "model": {"name_or_path": bundle.resolved.name_or_path, "resolved_path": bundle.resolved.path,
                  "finetune": recipe.model.finetune, "params_total": total, "params_trainable": trainable,
                  # the kernel used (`model.attention: auto` resolves per model class)
                  "attention": getattr(classifier.config, "_attn_implementation", None),
                  **bundle.finetune_info, **bundle.start_info},
        "splits": results,
        "method_summary": {**method.summary(method_ctx), "phases": phase_summaries(run),
                           **({"l2sp": {"weight": recipe.train.l2sp, "anchored_tensors": len(ctx.l2sp_anchors)}}
                              if ctx.l2sp_anchors else {})},
        "training": {
            "optimizer_steps": state.global_step, "epochs_run": state.epochs_run, "stopped_early": state.stopped_early,
            "effective_batch_size": recipe.train.batch_size * recipe.train.grad_accum * accelerator.num_processes,
            "selection": selection_record(recipe, select, state.best_value, state.best_step),
        },
        "timing": timing(state, eval_throughput, time.perf_counter() - wall),
        "environment": environment(accelerator, precision_source, splits),
    }
    if label_free is not None:
        report["label_free"] = label_free
    report["summary"] = summarize(results)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        report = write_reports(run, report)  # what run() returns is what report.json holds
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # the finished model supersedes them
        shutil.rmtree(run.best, ignore_errors=True)
    push_error = None
    if accelerator.is_main_process and recipe.hub.push:
        try:
            print(f"pushed to {push_run(run.root, recipe.hub.repo_id, private=recipe.hub.private)}")
        except AdaptError as err:  # raised after the barrier, or the other processes would wait there forever
            push_error = err
    accelerator.wait_for_everyone()
    if push_error is not None:
        raise push_error
    return report


def _print_setup(accelerator: Accelerator, run: RunDir, resume_from: Path | None, splits: dict[str, Split],
                 label_names: list[str], bundle: ModelBundle, recipe: Recipe) -> None:
    """One line per stage, so a person sees what is about to train before the progress bar starts."""
    total, trainable = count_parameters(bundle.model)
    sizes = ", ".join(f"{name} {len(s.dataset)}" for name, s in splits.items())
    accelerator.print(f"run: {run.root}" + (f" (resuming {resume_from.name})" if resume_from else ""))
    accelerator.print(f"data: {sizes}; labels {label_names}")
    accelerator.print(f"model: {bundle.resolved.name_or_path} from {bundle.resolved.path}; finetune {recipe.model.finetune}"
                      + (f" ({recipe.model.peft.type})" if recipe.model.peft else "")
                      + f", {trainable:,} of {total:,} parameters train")
    if start := start_text(bundle.start_info):
        accelerator.print(f"start: {start}")
    accelerator.print(f"method: {recipe.method.name}; {accelerator.num_processes} process(es) on {device_name(accelerator)}, "
                      f"{torch.get_num_threads()} threads, precision {accelerator.mixed_precision}")


def _save_model_atomically(net: torch.nn.Module, tokenizer, run: RunDir, merge: bool = False) -> None:
    tmp = run.root / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(net, tokenizer, tmp, merge=merge)
    replace_dir(tmp, run.model)
