"""Sweeps: a recipe over a grid of overrides, one training process per combination, one result file each,
resumable (see `adapt sweep --help`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json, atomic_write_text
from adapt.core.formatting import pct
from adapt.core.rundir import RunDir
from adapt.recipe import load_recipe, recipe_to_dict


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`key=v1,v2` items as (key, values); a key given twice is an error (say all its values at once)."""
    grid, seen = [], set()
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise AdaptError(f"--grid takes key=v1,v2,..., got {item!r} (e.g. --grid train.lr=2e-5,5e-5)")
        if key in seen:
            raise AdaptError(f"--grid {key} is given twice; list all its values in one --grid {key}=a,b,...")
        seen.add(key)
        grid.append((key, vals))
    return grid


def combinations(grid: list[tuple[str, list[str]]]) -> list[list[str]]:
    keys = [k for k, _ in grid]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(v for _, v in grid))]


def slug(overrides: list[str]) -> str:
    """A file-system-safe, readable name for a combination (`method.name=dann,seed=1` -> `method.name-dann_seed-1`).
    Not unique (`a/b` and `a-b` read the same) and not cut: `result_names` makes the names."""
    text = "_".join(o.replace("=", "-") for o in overrides) or "base"
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text).lstrip(".")


MAX_NAME = 200


def result_names(combos: list[list[str]], earlier: dict[str, list[str]]) -> list[str]:
    """One file and folder name per combination: its slug, or, when the slug is too long, is shared by another
    combination, or names an earlier result of other overrides (`earlier`: name -> its overrides), the slug cut
    short plus a hash of the overrides, so that no combination is ever taken for another and skipped."""
    slugs = [slug(c) for c in combos]
    count = Counter(slugs)
    return [s if len(s) <= MAX_NAME and count[s] == 1 and earlier.get(s, c) == c
            else f"{s[:MAX_NAME - 9]}-{hashlib.sha256(json.dumps(c).encode()).hexdigest()[:8]}"
            for s, c in zip(slugs, combos)]


def earlier_results(results_dir: Path) -> dict[str, list[str]]:
    """The result files a sweep folder already holds: name -> the overrides it records."""
    found = {}
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            found[path.stem] = json.loads(path.read_text())["overrides"]
        except (ValueError, KeyError, TypeError):
            raise AdaptError(f"{path} is not a result file of a sweep (no overrides recorded); move it out of "
                             f"{results_dir}") from None
    return found


def train_command(launcher: str | None, recipe: Path, overrides: list[str]) -> list[str]:
    prefix = shlex.split(launcher) if launcher else [sys.executable]
    return [*prefix, "-m", "adapt.train", str(recipe), *overrides]


def run_training(recipe: Path, overrides: list[str], run_dir: Path, launcher: str | None = None,
                 env: dict | None = None, log: Path | None = None) -> dict:
    """Train one combination into `run_dir` (continuing its checkpoint if a previous attempt was stopped) and
    return its report; a run already finished there with the same recipe is not trained again. Output goes to `log`
    (default `<run_dir>.log`)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    overrides = [*overrides, f"output_dir={run_dir}", "train.resume=auto"]
    finished = RunDir(run_dir)
    if finished.is_finished():  # a sweep stopped after the run had finished but before its result file was written
        report = json.loads(finished.report_json.read_text())
        if report.get("recipe") == recipe_to_dict(load_recipe(recipe, overrides)):
            return report
        # Another recipe's finished run: adapt.train refuses to overwrite it, with its message.
    cmd = train_command(launcher, recipe, overrides)
    log = log or run_dir.with_name(run_dir.name + ".log")
    with open(log, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise AdaptError(f"training failed (exit {done.returncode}); last lines of {log}:\n  " + "\n  ".join(tail))
    return json.loads((run_dir / "report.json").read_text())


def result_record(report: dict, overrides: list[str]) -> dict:
    """The small, committable result of one run: no model, no predictions."""
    return {
        "overrides": overrides, "method": report["method"], "run_dir": report["recipe"]["output_dir"],
        "summary": report["summary"],
        "splits": {k: {m: v[m] for m in ("n", "accuracy", "macro_f1") if m in v} | {"role": v.get("role")}
                   for k, v in report["splits"].items()},
        "train_seconds": report["timing"]["train_seconds"], "wall_seconds": report["timing"]["wall_seconds"],
        "optimizer_steps": report["training"]["optimizer_steps"],
        "device": report["environment"]["device"], "git_commit": report["environment"]["git_commit"],
    }


def table(results: list[dict], keys: list[str]) -> str:
    head = [*keys, "source acc", "target acc", "target F1", "gap", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        values = dict(o.split("=", 1) for o in r["overrides"])
        s = r["summary"]
        cells = [values.get(k, "") for k in keys] + [
            pct(s.get(m)) for m in ("source_accuracy", "target_accuracy", "target_macro_f1")
        ] + [pct(s.get("transfer_gap")), f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(recipe: Path, grid: list[tuple[str, list[str]]], fixed: list[str], out: Path, resume: bool,
              launcher: str | None = None, drop_models: bool = False) -> list[dict]:
    combos = combinations(grid)
    for combo in combos:  # every combination must be a valid recipe before anything trains
        load_recipe(recipe, [*fixed, *combo])
    results_dir = out / "results"
    earlier = earlier_results(results_dir)
    if earlier and not resume:
        raise AdaptError(f"{out} already has {len(earlier)} result(s); pass --resume to continue this sweep, "
                         "or choose another --out")
    done = list(earlier.values())
    failures = []
    for i, (combo, name) in enumerate(zip(combos, result_names(combos, earlier)), 1):
        path = results_dir / f"{name}.json"
        if combo in done:  # matched on the overrides the result records, not on its file name
            print(f"[{i}/{len(combos)}] {' '.join(combo)}: has a result already", flush=True)
            continue
        print(f"[{i}/{len(combos)}] {' '.join(combo)}", flush=True)
        tick = time.perf_counter()
        try:
            report = run_training(recipe, [*fixed, *combo], out / "runs" / name, launcher)
        except AdaptError as err:
            print(f"  failed: {err}", flush=True)
            failures.append(name)
            continue
        atomic_write_json(path, result_record(report, combo))
        if drop_models:
            shutil.rmtree(out / "runs" / name / "model", ignore_errors=True)
        s = report["summary"]
        print(f"  target {100 * s.get('target_accuracy', float('nan')):.1f}, source "
              f"{100 * s.get('source_accuracy', float('nan')):.1f} ({time.perf_counter() - tick:.0f} s)", flush=True)
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))] if results_dir.exists() else []
    keys = [k for k, _ in grid]
    atomic_write_text(out / "sweep.md", table(results, keys))
    atomic_write_json(out / "sweep.json", {"recipe": str(recipe), "grid": dict(grid), "fixed": fixed,
                                           "results": results, "failed": failures})
    print("\n" + table(results, keys))
    if failures:
        raise AdaptError(f"{len(failures)} combination(s) failed: {', '.join(failures)}; rerun with --resume")
    return results
