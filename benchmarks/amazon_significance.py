#!/usr/bin/env python3
"""Is a method's gain over `source_only` on the Amazon pairs real? A paired bootstrap on the pooled target test
predictions of every (pair, seed) that both have, from the run directories an `amazon_pairs.py` sweep left in
its `--work` folder (the committed result JSONs hold metrics only, not predictions).

    python benchmarks/amazon_significance.py --work /tmp/adapt-amazon-pairs [--methods self_training,dapt] \
        [--baseline source_only] [--out benchmarks/results/amazon_pairs/significance.json]

`--baseline` names the source-only result folder to pair with (`source_only+mpnet` for a setting that trains MPNet:
the same model without adaptation).

Pooling 200 test reviews x pairs x seeds makes the pooled accuracy the 12-pair average (every pair has the same
test size) and resamples examples, so the interval covers test-set noise; the seeds it pools do not make it a
test over training randomness (the per-pair mean +- std in the table shows that).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from adapt.evaluation.metrics import paired_bootstrap
from adapt.reporting.compare import DOMAINS

ROOT = Path(__file__).resolve().parent.parent


def target_predictions(run_dir: Path, target: str) -> dict[str, tuple[str, str]]:
    """{example id: (label, prediction)} on the target's test split of a run (a shared source-only run holds one
    test split per target)."""
    report = json.loads((run_dir / "report.json").read_text())
    (split,) = [name for name, s in report["splits"].items()
                if s.get("role") == "target" and s.get("domain") == target and s.get("kind") == "test"]
    rows = [json.loads(line) for line in (run_dir / "predictions" / f"{split}.jsonl").read_text().splitlines()]
    return {r["id"]: (r["label"], r["pred"]) for r in rows}


def run_dir(work: Path, method: str, pair: str, seed: int) -> Path:
    src, tgt = pair.split(":")
    if method.split("+")[0] == "source_only":  # one model per (source, seed), scored on every target
        return work / method / f"{src}-all.seed{seed}"
    return work / method / f"{src}-{tgt}.seed{seed}"


def pooled(work: Path, results: Path, method: str, baseline: str = "source_only") -> dict | None:
    labels, base, other, used = [], [], [], []
    for rec_path in sorted((results / method).glob("*.json")):
        rec = json.loads(rec_path.read_text())
        pair, seed = rec["pair"], rec["seed"]
        a_dir, b_dir = run_dir(work, baseline, pair, seed), run_dir(work, method, pair, seed)
        if not b_dir.exists():  # results refiled under a variant name after the runs (the old DANN runs)
            b_dir = run_dir(work, method.split("+")[0], pair, seed)
        if not (a_dir / "report.json").exists() or not (b_dir / "report.json").exists():
            continue
        target = DOMAINS[pair.split(":")[1]]
        a, b = target_predictions(a_dir, target), target_predictions(b_dir, target)
        if set(a) != set(b):
            raise SystemExit(f"{method} {pair} seed {seed}: the runs scored different test examples")
        for i in sorted(a):
            labels.append(a[i][0]), base.append(a[i][1]), other.append(b[i][1])
        used.append(f"{pair}.seed{seed}")
    if not used:
        return None
    names = sorted(set(labels))
    code = {n: k for k, n in enumerate(names)}
    enc = [np.array([code[x] for x in xs]) for xs in (labels, base, other)]
    return {"method": method, "baseline": baseline, "runs": used, "examples": len(labels),
            "source_only_accuracy": float((enc[1] == enc[0]).mean()), "method_accuracy": float((enc[2] == enc[0]).mean()),
            "paired_bootstrap": paired_bootstrap(*enc, num_labels=len(names))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="the sweep's run directories (amazon_pairs.py --work)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "amazon_pairs")
    p.add_argument("--methods", help="comma-separated (default: every method with results)")
    p.add_argument("--baseline", default="source_only", help="the source-only result folder to pair with")
    p.add_argument("--out", type=Path, help="write the tests as JSON here")
    args = p.parse_args()
    methods = args.methods.split(",") if args.methods else sorted(
        d.name for d in args.results.iterdir() if d.is_dir() and d.name.split("+")[0] != "source_only")
    out = [r for m in methods if (r := pooled(args.work, args.results, m, args.baseline)) is not None]
    print(f"| method | runs pooled | examples | {args.baseline} | method | difference (points) | 95% interval | p |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in out:
        test = r["paired_bootstrap"]["accuracy"]
        lo, hi = test["ci95"]
        print(f"| {r['method']} | {len(r['runs'])} | {r['examples']} | {100 * r['source_only_accuracy']:.2f} | "
              f"{100 * r['method_accuracy']:.2f} | {100 * test['difference']:+.2f} | [{100 * lo:+.2f}, {100 * hi:+.2f}] | "
              f"{test['p_value']:.4f} |".replace("0.0000", "< 0.001"))  # 0 of 2,000 resamples crossed 0
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
