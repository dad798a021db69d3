"""Train a recipe end to end: data -> model -> method phases -> evaluation -> report.

    accelerate launch -m adapt.train recipes/sentiment.yaml [key=value ...] [~key ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, TorchDynamoPlugin, broadcast_object_list, set_seed
from datasets import Dataset

from adapt.data import Split, load_splits
from adapt.errors import AdaptError, cli_entry, quiet_libraries
from adapt.features import Collator, tokenize
from adapt.heads import AdaptModel, classifier_of
from adapt.hub import check_can_push, push_run
from adapt.loop import LoopContext, train
from adapt.methods import Method, MethodContext, get_method, method_class
from adapt.modeling import (
    ResolvedModel,
    apply_finetune,
    count_parameters,
    load_classifier,
    load_encoder,
    load_tokenizer,
    pretrained_parameter_names,
    resolve_model,
    save_model,
)
from adapt.recipe import Recipe, load_recipe, recipe_to_dict, recipe_to_yaml
from adapt.report import SCHEMA_VERSION, summarize, write_reports
from adapt.rundir import (
    RunDir,
    atomic_write_json,
    atomic_write_text,
    default_output_dir,
    plan_output_dir,
    read_jsonl,
)
from adapt.scoring import score_split

# ----------------------------------------------------------------------------------------------------------
# Accelerator and processes.


def bf16_native() -> bool:
    """bf16 runs natively on Ampere+ GPUs and on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated (slow)."""
    if torch.cuda.is_available():
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation flag
            return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str) -> tuple[str, str]:
    """The effective precision and where it came from. A precision set through Accelerate wins over the recipe.

    `accelerate launch` always exports ACCELERATE_MIXED_PRECISION, as "no" when nothing was set, so only a
    value other than "no" is taken as an explicit Accelerate choice (use `train.mixed_precision=no` for fp32).
    """
    env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if env != "no":
        return env, "accelerate"
    if requested == "auto":
        return ("bf16" if bf16_native() else "no"), "auto"
    return requested, "recipe"


def setup_accelerator(recipe: Recipe) -> tuple[Accelerator, str]:
    precision, source = resolve_precision(recipe.train.mixed_precision)
    if precision == "fp16" and not torch.cuda.is_available():
        raise AdaptError("`train.mixed_precision=fp16` needs a CUDA GPU; use `bf16` or `no` on this machine")
    handlers = []
    if method_class(recipe.method.name).find_unused_parameters:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    dynamo = None
    if recipe.train.compile:
        # Regional compilation compiles one encoder layer and reuses it for the others: far less compile time.
        dynamo = TorchDynamoPlugin(backend="inductor", dynamic=True, use_regional_compilation=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision, kwargs_handlers=handlers,
                              dynamo_plugin=dynamo)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise AdaptError(
            f"{launched} processes were launched (WORLD_SIZE) but Accelerate sees {accelerator.num_processes}: each "
            "would train its own copy into the same directory. On a CPU machine launch with "
            "`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...`"
        )
    set_cpu_threads(accelerator, recipe.train.cpu_threads)
    return accelerator, source


def set_cpu_threads(accelerator: Accelerator, requested: int | None) -> None:
    """Torch's intra-op threads on CPU. `accelerate launch` without `--cpu` exports OMP_NUM_THREADS=1 to every
    process, which on a CPU-only machine halves training speed on 2 cores; spread the cores over the processes
    instead."""
    if accelerator.device.type != "cpu":
        return
    if requested is not None:
        torch.set_num_threads(requested)
        return
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ  # exported by `accelerate launch`
    if launched_by_accelerate and os.environ.get("OMP_NUM_THREADS") == "1":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // max(1, local)))


def shutdown(accelerator: Accelerator) -> None:
    """End trackers and destroy the process group (a 2-process gloo run aborts at exit without it); reset
    Accelerate's process-wide state so another run can start in the same process."""
    from accelerate.state import AcceleratorState, GradientState

    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


# ----------------------------------------------------------------------------------------------------------
# Stages.


def setup_run_dir(recipe: Recipe, accelerator: Accelerator, cwd: Path) -> tuple[Recipe, RunDir, Path | None]:
    """Choose the run directory (the same one on every process) and what to resume from."""
    root = [recipe.output_dir or str(default_output_dir(recipe.name, cwd))]
    if accelerator.num_processes > 1:
        broadcast_object_list(root)  # the timestamp must not differ between processes
    run = RunDir(Path(root[0]))
    recipe = replace(recipe, output_dir=str(run.root))
    resume_from = plan_output_dir(run, recipe.train.resume)
    if resume_from is not None and recipe.train.resume == "auto":
        check_same_recipe(recipe, run)
    return recipe, run, resume_from


# Keys that may change between an interrupted run and its continuation without changing what it computes.
RESUMABLE_CHANGES = {"train.resume", "train.max_steps", "train.checkpoint_every_steps", "train.keep_checkpoints",
                     "train.num_workers", "train.cpu_threads", "hub.push", "hub.repo_id", "hub.private"}


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
    changed = sorted(k for k in before.keys() | now.keys() if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
    if changed:
        diffs = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise AdaptError(
            f"`output_dir` {run.root} holds an unfinished run of a different recipe ({diffs}); continue it with its "
            f"own recipe ({run.recipe}), or choose another `output_dir`"
        )


def open_run_dir(run: RunDir, recipe: Recipe, resume_from: Path | None, accelerator: Accelerator) -> None:
    """Create the run directory once data and model have loaded, so bad input leaves nothing behind."""
    if accelerator.is_main_process:
        run.root.mkdir(parents=True, exist_ok=True)
        if resume_from is None:  # a fresh start in a directory a killed run left behind
            run.train_log.unlink(missing_ok=True)
            for leftover in ("pseudo_labels", "mlm"):
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


def setup_model(recipe: Recipe, label_names: list[str], method: Method) -> ModelBundle:
    resolved = resolve_model(recipe.model.name_or_path)
    tokenizer = load_tokenizer(resolved)
    model = load_classifier(resolved, label_names, recipe.model.attention)
    model, info = apply_finetune(model, recipe.model)
    heads = method.heads(recipe, model, resolved.path)
    if heads:
        model = AdaptModel(model, heads)
        method.prepare_model(model, recipe)
    return ModelBundle(model, tokenizer, resolved, info)


def l2sp_anchors(recipe: Recipe, net: torch.nn.Module, model_path: str) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, starting value) for the pretrained encoder weights that train; the heads are not anchored."""
    if recipe.train.l2sp <= 0:
        return []
    classifier = classifier_of(net)
    names = set(pretrained_parameter_names(classifier, model_path))
    return [(p, p.detach().float().clone()) for n, p in classifier.named_parameters() if n in names]


def tokenize_splits(splits: dict[str, Split], tokenizer, recipe: Recipe, accelerator: Accelerator) -> dict[str, Dataset]:
    # The main process tokenises first and fills the datasets cache; the others then read it.
    with accelerator.main_process_first():
        return {name: tokenize(s.dataset, tokenizer, recipe.data, name) for name, s in splits.items()}


def evaluate_all(accelerator: Accelerator, model, splits: dict[str, Split], tokenized: dict[str, Dataset],
                 label_names: list[str], recipe: Recipe, run: RunDir, collate: Collator) -> tuple[dict, float]:
    """Metrics for every labelled dev and test split; returns them and evaluation throughput (samples/s)."""
    results, seconds, n = {}, 0.0, 0
    for name, split in splits.items():
        if not split.labeled or not name.endswith(("_dev", "_test")):
            continue
        entry, secs = score_split(accelerator, model, split, tokenized[name], label_names, recipe.eval.batch_size,
                                  collate, run if recipe.report.predictions else None)
        results[name] = {**entry, "kind": "test" if name.endswith("_test") else "dev"}
        seconds, n = seconds + secs, n + entry["n"]
    return results, n / max(seconds, 1e-9)


# ----------------------------------------------------------------------------------------------------------
# The report's record of the run.


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import accelerate
    import datasets
    import peft
    import sklearn
    import transformers

    mods = {"torch": torch, "transformers": transformers, "accelerate": accelerate, "peft": peft,
            "datasets": datasets, "scikit-learn": sklearn}
    return {"python": platform.python_version(), **{k: m.__version__ for k, m in mods.items()}}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(accelerator.device)})"
    return f"cpu ({cpu_model()}, {len(os.sched_getaffinity(0))} cores)"


def environment(accelerator: Accelerator, precision_source: str, splits: dict[str, Split]) -> dict:
    return {
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "mixed_precision_source": precision_source,
        "device": device_name(accelerator),
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "data_sha256": {name: s.sha256 for name, s in splits.items()},
        "versions": versions(),
    }


def timing(state, eval_throughput: float, wall_seconds: float) -> dict:
    """Throughput over all processes; token counts let benchmarks compute padding and FLOP utilisation."""
    secs = max(state.train_seconds, 1e-9)
    return {
        "train_seconds": state.train_seconds, "train_samples_per_second": state.samples / secs,
        "train_tokens_per_second": state.real_tokens / secs,
        "train_padding_fraction": 1 - state.real_tokens / max(state.padded_tokens, 1),
        "train_real_tokens": state.real_tokens, "train_sum_len_sq": state.sum_len_sq,
        "eval_samples_per_second": eval_throughput, "wall_seconds": wall_seconds,
    }


def write_diagnostics(run: RunDir, classifier, resolved: ResolvedModel, splits: dict, tokenized: dict, recipe: Recipe,
                      collate: Collator, device) -> None:
    """diagnostics.json (main process): domain-shift measures for the report (adapt.diagnostics)."""
    from adapt.diagnostics import compute_diagnostics

    pretrained = load_encoder(resolved, recipe.model.attention).to(device)
    atomic_write_json(run.diagnostics, compute_diagnostics(classifier, pretrained, splits, tokenized, recipe, collate,
                                                           device))


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
        return _run(recipe, accelerator, precision_source, cwd or Path.cwd(), wall)
    finally:
        shutdown(accelerator)


def _run(recipe: Recipe, accelerator: Accelerator, precision_source: str, cwd: Path, wall: float) -> dict:
    if recipe.hub.push:  # fail before training, not after it: the push happens at the end
        check_can_push(recipe.hub.repo_id)
    recipe, run, resume_from = setup_run_dir(recipe, accelerator, cwd)
    check_trackers(recipe)
    set_seed(recipe.seed)
    with accelerator.main_process_first():
        splits, label_names = load_splits(recipe)
    method = get_method(recipe.method.name)
    bundle = setup_model(recipe, label_names, method)
    open_run_dir(run, recipe, resume_from, accelerator)
    _print_setup(accelerator, run, resume_from, splits, label_names, bundle, recipe)
    start_trackers(accelerator, recipe, run)
    tokenized = tokenize_splits(splits, bundle.tokenizer, recipe, accelerator)
    collate = Collator(bundle.tokenizer.pad_token_id)
    model = accelerator.prepare(bundle.model)
    select = "target_dev" if recipe.eval.select_on == "target_dev" else "source_dev"
    net = accelerator.unwrap_model(model, keep_torch_compile=False)
    ctx = LoopContext(accelerator, recipe, model, run, collate, label_names, splits[select], tokenized[select],
                      l2sp_anchors=l2sp_anchors(recipe, net, bundle.resolved.path))
    method_ctx = MethodContext(recipe, tokenized, bundle.tokenizer, net, run)
    state = train(ctx, method.phases(method_ctx), resume_from)

    results, eval_throughput = evaluate_all(accelerator, model, splits, tokenized, label_names, recipe, run, collate)
    classifier = classifier_of(net)  # the heads a method trained alongside are not part of the result
    if accelerator.is_main_process:
        _save_model_atomically(classifier, bundle.tokenizer, run)
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
                  **bundle.finetune_info},
        "splits": results,
        "method_summary": {**method.summary(method_ctx), "phases": phase_summaries(run),
                           **({"l2sp": {"weight": recipe.train.l2sp, "anchored_tensors": len(ctx.l2sp_anchors)}}
                              if ctx.l2sp_anchors else {})},
        "training": {
            "optimizer_steps": state.global_step, "epochs_run": state.epochs_run, "stopped_early": state.stopped_early,
            "effective_batch_size": recipe.train.batch_size * recipe.train.grad_accum * accelerator.num_processes,
            "selection": {"split": select, "metric": recipe.eval.selection_metric,
                          "best_value": state.best_value, "best_step": state.best_step},
        },
        "timing": timing(state, eval_throughput, time.perf_counter() - wall),
        "environment": environment(accelerator, precision_source, splits),
    }
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
    accelerator.print(f"model: {bundle.resolved.name_or_path} from {bundle.resolved.path}; finetune {recipe.model.finetune}, "
                      f"{trainable:,} of {total:,} parameters train")
    accelerator.print(f"method: {recipe.method.name}; {accelerator.num_processes} process(es) on {device_name(accelerator)}, "
                      f"{torch.get_num_threads()} threads, precision {accelerator.mixed_precision}")


def _save_model_atomically(net: torch.nn.Module, tokenizer, run: RunDir) -> None:
    tmp = run.root / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(net, tokenizer, tmp)
    shutil.rmtree(run.model, ignore_errors=True)
    tmp.rename(run.model)


# ----------------------------------------------------------------------------------------------------------
# Command line.


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accelerate launch -m adapt.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="path to a YAML recipe, e.g. recipes/sentiment.yaml")
    p.add_argument("overrides", nargs="*", help="dotted `key=value` overrides and `~key` removals")
    return p


def _print_summary(report: dict) -> None:
    s = report["summary"]
    run_dir = report["recipe"]["output_dir"]
    print(f"\nrun: {run_dir}")
    for role in ("source", "target"):
        if f"{role}_accuracy" in s:
            print(f"{role} test: accuracy {100 * s[f'{role}_accuracy']:.1f}  macro-F1 {100 * s[f'{role}_macro_f1']:.1f}")
    if "transfer_gap" in s:
        print(f"transfer gap: {100 * s['transfer_gap']:.1f} points")
    t = report["timing"]
    print(f"training: {t['train_seconds']:.0f} s ({t['train_samples_per_second']:.1f} samples/s); report: {run_dir}/report.md")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quiet_libraries()
    recipe = load_recipe(args.recipe, args.overrides)
    report = run(recipe)
    if os.environ.get("RANK", "0") == "0":
        _print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
