#!/usr/bin/env python3
"""The Amazon cross-domain benchmark: adaptation methods over the 12 source->target pairs of the fixed carve
(books, dvd, electronics, kitchen; `adapt.carve`), resumable, one small result JSON per (method, pair, seed).

    python benchmarks/amazon_pairs.py --data-dir ../shared/data/amazon_multidomain \
        [--methods source_only,dann,...] [--pairs B:K,D:E | all] [--seeds 1,2] [--out benchmarks/results/amazon_pairs] \
        [--work /tmp/adapt-amazon-pairs] [--test-dir DIR] [--unlabeled train|unlabeled] [--variant NAME] [--resume] \
        [--table-only] [--teachers METHOD] [--teacher-seeds 1,2,3] [-- key=value ...]

Each run is `adapt.train` on recipes/amazon.yaml (MiniLM-L6, max length 256, batch 16, 3 epochs, lr 5e-5, model
selection on the carved source dev split) through `adapt.sweep.run_training`. Work is shared where the method
allows it:
- `source_only` trains once per (source, seed) and is scored on the other targets with `adapt.evaluate_run --test`;
- the MLM phase of `dapt` / `udalm` (on target text only) runs once per (target, seed) and later pairs with that
  target start from its `mlm/` folder (`method.mlm.checkpoint`).
Unlabelled target text (`--unlabeled`): `train` = the target's carved training texts with labels dropped (never the
test texts); `unlabeled` = the Amazon `*.unlabeled.jsonl` files, with every split rewritten in their style
(`data.normalize=amazon_unlabeled`). `--test-dir` scores on `<domain>.test.jsonl` files from another folder
(the same runs, another test set). `--variant NAME` files results under `<method>+NAME` (e.g. other overrides).
Overrides after `--` go to every run, except keys of a method section the run's method does not use.

Stacks and distillation (issue 12):
- `A>B` in `--methods` (quote it in a shell) trains method B starting from the finished run of A for the same pair
  and seed (`model.init_from`), e.g. `dapt>self_training`, `dapt>dann`; filed under `A-then-B`. A must come
  earlier in `--methods` or have run already.
- `distill` distils an ensemble of finished runs of `--teachers` (default `self_training`) for the same pair, one
  per seed of `--teacher-seeds` (default: the `--seeds` given), into a student (the recipe's model; e.g.
  `--variant half -- model.num_layers=3 model.layer_choice=spread` for a 3-layer student).

Results: `<out>/<method>[+variant]/<S>-<T>.seed<k>.json`. The per-pair table (rows: methods; columns: the 12
pairs and the average; mean +- std over the seeds that exist) is printed and written to `<out>/table.md`,
`<out>/table.json` and `<out>/heatmap.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json
from adapt.evaluation.label_free import alarms
from adapt.reporting.compare import ALL_PAIRS, DOMAINS, collect, summarise, write_pair_table  # noqa: F401
from adapt.training.sweep import result_record, run_training

ROOT = Path(__file__).resolve().parent.parent

SCREEN_PAIRS = ["B:K", "D:E", "E:B", "K:D"]
METHODS = ["source_only", "dapt", "tapt", "udalm", "dann", "self_training"]
MLM_SHARED = ("dapt", "udalm")  # MLM on target text only: one phase per (target, seed)
# With --jobs > 1 the three pairs of a target would all start its MLM phase at once and each do it; the first takes
# the (target, seed) lock and the others wait for its mlm/ folder. (defaultdict's C-level insert holds the GIL.)
MLM_LOCKS: defaultdict[tuple[str, int], threading.Lock] = defaultdict(threading.Lock)
RECIPE = ROOT / "recipes" / "amazon.yaml"


def pair_overrides(src: str, tgt: str, args) -> list[str]:
    s, t = DOMAINS[src], DOMAINS[tgt]
    test = (lambda d: str(args.test_dir / f"{d}.test.jsonl")) if args.test_dir else (lambda d: f"amazon:{d}/test")
    out = [f"data.source.domain={s}", f"data.target.domain={t}", f"data.source.train=amazon:{s}/train",
           f"data.source.dev=amazon:{s}/dev", f"data.source.test={test(s)}", f"data.target.test={test(t)}"]
    if args.unlabeled == "unlabeled":
        out += [f"data.target.unlabeled=amazon:{t}/unlabeled", "data.normalize=amazon_unlabeled"]
    else:
        out += [f"data.target.unlabeled=amazon:{t}/train"]
    return out


def for_method(overrides: list[str], method: str) -> list[str]:
    """The pass-through overrides that apply to `method`: keys of another method's section (e.g.
    `method.mlm.steps=100` for source_only) are left out, since a recipe refuses keys its method does not use."""
    from adapt.methods import method_spec

    uses = method_spec(method).options
    keep = []
    for o in overrides:
        parts = o.lstrip("~").split("=", 1)[0].split(".")
        if parts[0] == "method" and len(parts) > 1 and parts[1] != "name" and parts[1] not in uses:
            continue
        keep.append(o)
    return keep


def method_dir(method: str) -> str:
    """A folder name for a method or a stack: `dapt>self_training` -> `dapt-then-self_training`."""
    return method.replace(">", "-then-")


def result_path(args, method: str, pair: str, seed: int) -> Path:
    name = method_dir(method) + (f"+{args.variant}" if args.variant else "")
    return args.out / name / f"{pair.replace(':', '-')}.seed{seed}.json"


def pair_record(report: dict, method: str, pair: str, seed: int, split: str, args, extra: dict | None = None) -> dict:
    src, tgt = pair.split(":")
    rec = result_record(report, [])
    rec.pop("overrides")
    target = report["splits"][split]
    return {"method": method, "variant": args.variant, "pair": pair, "source": DOMAINS[src], "target": DOMAINS[tgt],
            "seed": seed, "target_accuracy": target["accuracy"], "target_macro_f1": target["macro_f1"],
            "source_accuracy": report["splits"]["source_test"]["accuracy"], "unlabeled": args.unlabeled,
            "test_dir": str(args.test_dir) if args.test_dir else None, "extra_overrides": args.overrides,
            "model_weights_sha256": report["model"].get("weights_sha256"),  # what the run started from
            **rec, **(extra or {})}


def run_dir(args, method: str, pair: str, seed: int, variant: str | None = "") -> Path:
    """Where a run's directory is. `variant=None`: the plain method's (a stack's first stage or a teacher)."""
    variant = args.variant if variant == "" else variant
    name = method_dir(method) + (f"+{variant}" if variant else "")
    return args.work / name / f"{pair.replace(':', '-')}.seed{seed}"


def finished_run(args, method: str, pair: str, seed: int) -> Path:
    """The finished plain run of `method` for this pair and seed (source_only's, of any variant, is shared by its
    source)."""
    if method.split("+")[0] == "source_only":
        pair = pair.split(":")[0] + ":all"
    rd = run_dir(args, method, pair, seed, variant=None)
    if not (rd / "report.json").exists():
        raise AdaptError(f"{method} {pair} seed {seed} has not finished ({rd}); run it first (earlier in --methods)")
    return rd


def stage_overrides(args, method: str, pair: str, seed: int) -> tuple[str, list[str], dict]:
    """For a stack `A>B` or `distill`: the method that trains, and the overrides that point it at earlier runs."""
    if ">" in method:
        first, method = method.rsplit(">", 1)
        start = finished_run(args, first, pair, seed) if ">" not in first else \
            run_dir(args, first, pair, seed, variant=None)
        return method, [f"model.init_from={start}"], {"init_from": str(start)}
    if method == "distill":
        seeds = [int(x) for x in (args.teacher_seeds or args.seeds).split(",")]
        teachers = [str(finished_run(args, args.teachers, pair, s)) for s in seeds]
        return method, [f"method.distill.teachers=[{','.join(teachers)}]"], {"teachers": teachers}
    return method, [], {}


def env(args) -> dict:
    return {"ADAPT_AMAZON_DIR": str(args.data_dir.resolve()), "HF_HUB_OFFLINE": "1"}


def target_test_split(report: dict, domain: str) -> str | None:
    """The name of the run's test split of target `domain` (its own `target_test`, or one scored on it later)."""
    return next((name for name, sp in report["splits"].items()
                 if sp.get("role") == "target" and sp.get("domain") == domain and sp.get("kind") == "test"), None)


def run_source_only(args, source: str, pairs: list[str], seed: int) -> None:
    """One model per (source, seed); the other targets are scored on it with adapt.evaluate_run."""
    todo = [p for p in pairs if not result_path(args, "source_only", p, seed).exists()]
    if not todo:
        return
    first = todo[0]
    rd = run_dir(args, "source_only", f"{source}:all", seed)
    overrides = [*pair_overrides(source, first.split(":")[1], args), "method.name=source_only", f"seed={seed}",
                 *for_method(args.overrides, "source_only")]
    # A finished run (its records lost, or a pair added later) is scored again, not retrained.
    report = json.loads((rd / "report.json").read_text()) if (rd / "report.json").exists() else \
        run_training(RECIPE, overrides, rd, env=env(args))
    for pair in todo:
        tgt = DOMAINS[pair.split(":")[1]]
        split = target_test_split(report, tgt)  # the run's own target, or one scored before
        own = split == "target_test"  # the run's unlabelled text is this target's: its own label-free record applies
        extra = []
        if split is None:
            split = f"test_{tgt}"
            spec = str(args.test_dir / f"{tgt}.test.jsonl") if args.test_dir else f"amazon:{tgt}/test"
            extra += ["--test", f"{split}={spec}", "--role", "target", "--domain", tgt]
        if not own and report.get("label_free") and tgt not in report.get("label_free_on", {}):
            # The criteria on this target's unlabelled text, so that every pair's source-only run has them to be
            # compared with the adapted runs of the pair (the run computed its own target's only).
            extra += ["--unlabeled", f"{tgt}={unlabeled_spec(pair, args)}", "--domain", tgt]
        if extra:
            cmd = [sys.executable, "-m", "adapt.evaluate_run", str(rd), *extra]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env(args)})
            if done.returncode != 0:
                raise AdaptError(f"evaluate_run failed for {pair}: {done.stderr[-2000:]}")
            report = json.loads((rd / "report.json").read_text())
        rec = pair_record(report, "source_only", pair, seed, split, args, {"shared_run": str(rd)})
        label_free = report.get("label_free") if own else report.get("label_free_on", {}).get(tgt)
        if label_free:
            rec.update(label_free=label_free, alarms=report["alarms"] if own else alarms(label_free, []))
        atomic_write_json(result_path(args, "source_only", pair, seed), rec)
        print(f"  source_only {pair} seed {seed}: target {100 * rec['target_accuracy']:.1f}", flush=True)


def unlabeled_spec(pair: str, args) -> str:
    """The target's unlabelled text as this sweep's runs read it (`data.target.unlabeled`)."""
    src, tgt = pair.split(":")
    key = "data.target.unlabeled="
    return next(o[len(key):] for o in pair_overrides(src, tgt, args) if o.startswith(key))


def mlm_checkpoint(args, target: str, seed: int, overrides: list[str]) -> Path | None:
    """An MLM phase on this target's text with the same seed and MLM settings, saved by an earlier dapt/udalm run
    of this sweep (`<run>/mlm`), to start from instead of repeating it."""
    from adapt.recipe import load_recipe, recipe_to_dict

    want = recipe_to_dict(load_recipe(RECIPE, overrides).method.mlm)
    for method in MLM_SHARED:
        folder = args.work / (method + (f"+{args.variant}" if args.variant else ""))
        for rd in sorted(folder.glob(f"?-{target}.seed{seed}")):
            info_file = rd / "mlm" / "mlm.json"
            if info_file.exists() and json.loads(info_file.read_text())["mlm"] == want:
                return rd / "mlm"
    return None


def run_method(args, name: str, pair: str, seed: int) -> None:
    src, tgt = pair.split(":")
    method, stage, extra = stage_overrides(args, name, pair, seed)
    overrides = [*pair_overrides(src, tgt, args), f"method.name={method}", f"seed={seed}", *stage,
                 *for_method(args.overrides, method)]
    shareable = not any(o.startswith(("method.mlm.include_source=true", "method.mlm.checkpoint")) for o in args.overrides)
    sharing, rd = method in MLM_SHARED and shareable, run_dir(args, name, pair, seed)
    with MLM_LOCKS[(tgt, seed)] if sharing else nullcontext():
        ckpt = mlm_checkpoint(args, tgt, seed, overrides) if sharing else None
        if ckpt is None:  # this run does its own MLM phase (if any), holding the lock while it trains
            report = run_training(RECIPE, overrides, rd, env=env(args))
    if ckpt is not None:  # its own MLM settings (which matched) are in its mlm.json
        overrides = [o for o in overrides if not o.startswith("method.mlm.")] + [f"method.mlm.checkpoint={ckpt}"]
        extra["mlm_from"] = str(ckpt)
        report = run_training(RECIPE, overrides, rd, env=env(args))
    rec = pair_record(report, name, pair, seed, "target_test", args, extra)
    rec["method_summary"] = report.get("method_summary", {})
    for key in ("label_free", "alarms"):  # label-free criteria of the final model (no target labels)
        if key in report:
            rec[key] = report[key]
    atomic_write_json(result_path(args, name, pair, seed), rec)
    print(f"  {name} {pair} seed {seed}: target {100 * rec['target_accuracy']:.1f} "
          f"({rec['train_seconds']:.0f} s training)", flush=True)


# ----------------------------------------------------------------------------------------------------------
# The table: adapt.compare renders a sweep directory (also `python -m adapt.report compare OUT`).


def level(method: str) -> int:
    """Which wave a method runs in: plain methods first, then what starts from or learns from their runs."""
    return method.count(">") + (1 if method == "distill" or method.endswith(">distill") else 0)


def plan(args, methods: list[str], pairs: list[str], seeds: list[int]) -> list[list[tuple[str, Callable[[], None]]]]:
    """Every (method, pair, seed) whose result is missing, in waves (a stack or a student only runs once the runs
    it starts from or learns from are done, even with --jobs > 1), and within a wave in the order a sweep should
    take them: the screening pairs first, seed by seed, then the other pairs, seed by seed; within that the methods
    in the order given (so `dapt` comes before `udalm`, which can then start from its MLM phase). A sweep stopped
    early has the screen."""
    todo = []
    for seed in seeds:
        for rank, method in enumerate(methods):
            if method == "source_only":  # one task per source: its model is scored on every target asked for
                for source in dict.fromkeys(pr.split(":")[0] for pr in pairs):
                    mine = [pr for pr in pairs if pr.startswith(source + ":")]
                    if any(not result_path(args, method, pr, seed).exists() for pr in mine):
                        todo.append(((0, False, seed, rank), f"source_only {source}:* seed {seed}",
                                     partial(run_source_only, args, source, mine, seed)))
                continue
            for pair in pairs:
                if not result_path(args, method, pair, seed).exists():
                    todo.append(((level(method), pair not in SCREEN_PAIRS, seed, rank), f"{method} {pair} seed {seed}",
                                 partial(run_method, args, method, pair, seed)))
    todo.sort(key=lambda t: t[0])  # stable: pairs keep their order within a key
    waves: dict[int, list] = {}
    for key, name, fn in todo:
        waves.setdefault(key[0], []).append((name, fn))
    return [waves[k] for k in sorted(waves)]


def execute(todo: list[tuple[str, Callable[[], None]]], jobs: int) -> list[tuple[str, Exception]]:
    """Run the tasks, `jobs` at a time (each is a training subprocess, so threads suffice). A failed run is
    reported and the others go on: on a borrowed GPU one bad combination must not waste the rest of the lease."""
    failures = []

    def one(name: str, fn: Callable[[], None]) -> None:
        print(f"{name} ...", flush=True)
        try:
            fn()
        except (AdaptError, OSError, KeyError) as err:
            print(f"FAILED {name}: {err}", flush=True)
            failures.append((name, err))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, name, fn) for name, fn in todo]:
            future.result()
    return failures


def write_table(out: Path) -> str:
    return write_pair_table(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=False, help="the Amazon folder (*.train.jsonl, *.unlabeled.jsonl)")
    p.add_argument("--test-dir", type=Path, help="score on <domain>.test.jsonl files from this folder instead")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--pairs", default=",".join(SCREEN_PAIRS), help="e.g. B:K,E:B, or `all` for the 12 pairs")
    p.add_argument("--seeds", default="1")
    p.add_argument("--unlabeled", choices=["train", "unlabeled"], default="train")
    p.add_argument("--variant", default=None, help="file results under <method>+VARIANT")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "amazon_pairs")
    p.add_argument("--work", type=Path, default=Path("/tmp/adapt-amazon-pairs"), help="run directories (models)")
    p.add_argument("--resume", action="store_true", help="skip (method, pair, seed) results that exist")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings run at once (a GPU has room for several small ones; give each a few CPU threads, "
                        "e.g. OMP_NUM_THREADS=2). Default 1")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from the results")
    p.add_argument("--teachers", default="self_training", help="`distill`: the method whose finished runs teach")
    p.add_argument("--teacher-seeds", default=None, help="`distill`: the teachers' seeds (default: --seeds)")
    p.add_argument("overrides", nargs="*", help="recipe overrides for every run (after --)")
    args = p.parse_args()
    if args.table_only:
        print(write_table(args.out))
        return 0
    if args.data_dir is None:
        p.error("--data-dir is required (unless --table-only)")
    pairs = ALL_PAIRS if args.pairs == "all" else args.pairs.split(",")
    bad = [x for x in pairs if x not in ALL_PAIRS]
    if bad:
        p.error(f"unknown pair(s) {bad}; pairs look like B:K (B books, D dvd, E electronics, K kitchen)")
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    existing = [m for m in methods for pr in pairs for s in seeds if result_path(args, m, pr, s).exists()]
    if existing and not args.resume:
        p.error(f"{len(existing)} of these results already exist in {args.out}; pass --resume to continue")
    start = time.perf_counter()
    failures = [f for wave in plan(args, methods, pairs, seeds) for f in execute(wave, args.jobs)]
    print(write_table(args.out))
    print(f"wall time {time.perf_counter() - start:.0f} s; machine: {os.cpu_count()} cores")
    shutil.rmtree(args.work / "tmp", ignore_errors=True)
    for name, err in failures:
        print(f"FAILED {name}: {err}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
