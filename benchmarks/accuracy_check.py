#!/usr/bin/env python3
"""Do the speed options cost accuracy? Full training runs of the default recipe on the Amazon carve, with the
fast defaults and with a speed option removed, over several seeds; then the mean target accuracy of each and a
paired bootstrap 95% interval of the difference on the shared target test examples.

    python benchmarks/accuracy_check.py --data-dir ../shared/data/amazon_multidomain \
        [--pair books:kitchen] [--seeds 1,2,3] [--configs defaults,no_length_grouping] [--work DIR]

The default recipe (recipes/sentiment.yaml: 3 epochs, lr 5e-5, batch 16, full fine-tuning) runs on the carved
source train/dev/test and the carved target test, at max length 256. Each (config, seed) is one result JSON in
--out, written as it finishes (a stopped check resumes where it stopped); run directories go to --work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = {
    "defaults": [],
    "no_length_grouping": ["train.group_by_length=false"],
    "plain": ["train.group_by_length=false", "model.attention=eager"],
    "fp32": ["train.mixed_precision=no"],
}


def run_one(args, config: str, seed: int, run_dir: Path) -> dict:
    src, tgt = args.pair.split(":")
    overrides = [
        f"data.source.train=amazon:{src}/train", f"data.source.dev=amazon:{src}/dev", f"data.source.test=amazon:{src}/test",
        f"data.source.domain={src}", f"data.target.domain={tgt}", f"data.target.test=amazon:{tgt}/test",
        "~data.target.unlabeled", f"data.max_length={args.max_length}", f"seed={seed}", f"output_dir={run_dir}",
        "train.resume=auto", *CONFIGS[config],
    ]
    env = {**os.environ, "ADAPT_AMAZON_DIR": str(args.data_dir.resolve()), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "adapt.train", str(ROOT / "recipes" / "sentiment.yaml"), *overrides]
    if not (run_dir / "report.json").exists():  # a run that finished before the check was stopped is reused
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{config} seed {seed} failed:\n{done.stderr[-3000:]}")
    report = json.loads((run_dir / "report.json").read_text())
    preds = [json.loads(line) for line in (run_dir / "predictions" / "target_test.jsonl").read_text().splitlines()]
    return {"config": config, "seed": seed, "pair": args.pair, "overrides": CONFIGS[config],
            "source_accuracy": report["summary"]["source_accuracy"], "target_accuracy": report["summary"]["target_accuracy"],
            "train_seconds": report["timing"]["train_seconds"],
            "correct": {str(p["id"]): int(p["pred"] == p["label"]) for p in preds}}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b with a 95% percentile interval, resampling examples (rows) with replacement."""
    rng = np.random.default_rng(seed)
    diff = a - b
    idx = rng.integers(0, len(diff), size=(n, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(results: list[dict], base: str, other: str) -> dict | None:
    by = {c: {r["seed"]: r for r in results if r["config"] == c} for c in (base, other)}
    seeds = sorted(set(by[base]) & set(by[other]))
    if not seeds:
        return None
    ids = sorted(set.intersection(*(set(by[c][s]["correct"]) for c in (base, other) for s in seeds)))
    # Per example: correctness averaged over the seeds, so the interval covers seeds and examples together.
    acc = {c: np.array([[by[c][s]["correct"][i] for i in ids] for s in seeds]).mean(axis=0) for c in (base, other)}
    diff, lo, hi = paired_bootstrap(acc[base], acc[other])
    return {"base": base, "other": other, "seeds": seeds, "examples": len(ids),
            "base_target_accuracy": float(acc[base].mean()), "other_target_accuracy": float(acc[other].mean()),
            "per_seed": {c: [by[c][s]["target_accuracy"] for s in seeds] for c in (base, other)},
            "difference_points": 100 * diff, "ci95_points": [100 * lo, 100 * hi],
            "train_seconds_mean": {c: float(np.mean([by[c][s]["train_seconds"] for s in seeds])) for c in (base, other)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--pair", default="books:kitchen")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--configs", default="defaults,no_length_grouping", help=f"first is the base; from {', '.join(CONFIGS)}")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy_check")
    p.add_argument("--work", type=Path, default=Path("/tmp/adapt-accuracy-check"))
    args = p.parse_args()
    configs, seeds = args.configs.split(","), [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for config in configs:
            path = args.out / f"{args.pair.replace(':', '-')}.{config}.seed{seed}.json"
            if path.exists():
                continue
            tick = time.perf_counter()
            result = run_one(args, config, seed, args.work / f"{config}-seed{seed}")
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result) + "\n")
            tmp.replace(path)
            print(f"{config} seed {seed}: target {100 * result['target_accuracy']:.1f}, source "
                  f"{100 * result['source_accuracy']:.1f} ({time.perf_counter() - tick:.0f} s)", flush=True)
    results = [json.loads(f.read_text()) for f in sorted(args.out.glob(f"{args.pair.replace(':', '-')}.*.json"))]
    summary = {c: compare(results, configs[0], c) for c in configs[1:]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for c, s in summary.items():
        if s:
            print(f"{configs[0]} {100 * s['base_target_accuracy']:.2f} vs {c} {100 * s['other_target_accuracy']:.2f} "
                  f"over seeds {s['seeds']}: difference {s['difference_points']:+.2f} points, 95% CI "
                  f"[{s['ci95_points'][0]:+.2f}, {s['ci95_points'][1]:+.2f}] on {s['examples']} target test examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
