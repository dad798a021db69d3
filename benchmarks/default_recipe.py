#!/usr/bin/env python3
"""Benchmark the default recipe end to end, as a user runs it.

    python benchmarks/default_recipe.py [--recipe recipes/sentiment.yaml] [--out benchmarks/results] [-- overrides...]

Runs `accelerate launch -m adapt.train RECIPE` in a subprocess (a fresh run directory each time) and prints
wall time, training samples/s, peak memory (RSS of the training process), and source/target accuracy. The
result is also written to `<out>/default_recipe.json` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "sentiment.yaml"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="adapt-bench-")) / "run"
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "adapt.train", args.recipe, f"output_dir={run_dir}", *args.overrides]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(f"training failed with exit code {done.returncode}", file=sys.stderr)
        return done.returncode
    peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    report = json.loads((run_dir / "report.json").read_text())
    s, t = report["summary"], report["timing"]
    result = {
        "recipe": os.path.relpath(args.recipe, ROOT), "overrides": args.overrides,
        "wall_seconds": round(wall, 1), "train_seconds": round(t["train_seconds"], 1),
        "train_samples_per_second": round(t["train_samples_per_second"], 2),
        "eval_samples_per_second": round(t["eval_samples_per_second"], 1),
        "peak_rss_gib": round(peak_rss_gib, 2),
        "source_accuracy": round(s["source_accuracy"], 4), "target_accuracy": round(s["target_accuracy"], 4),
        "transfer_gap_points": round(100 * s["transfer_gap"], 1),
        "machine": {"device": report["environment"]["device"], "threads": report["environment"]["threads"],
                    "precision": report["environment"]["mixed_precision"]},
        "versions": report["environment"]["versions"], "git_commit": report["environment"]["git_commit"],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print("\n| wall time | training samples/s | peak RSS | source acc | target acc | gap |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {wall:.0f} s | {result['train_samples_per_second']:.1f} | {peak_rss_gib:.2f} GiB | "
          f"{100 * s['source_accuracy']:.1f} | {100 * s['target_accuracy']:.1f} | {result['transfer_gap_points']:.1f} pts |")
    print(f"machine: {result['machine']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "default_recipe.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(run_dir.parent, ignore_errors=True)
    else:
        print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
