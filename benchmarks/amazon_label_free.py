#!/usr/bin/env python3
"""Do the label-free criteria tell good runs from bad ones? Judged over the runs of an `amazon_pairs.py` sweep.

    python benchmarks/amazon_label_free.py [--results benchmarks/results/amazon_pairs] [--out FILE.json]

Each result JSON of the sweep carries its final model's label-free criteria (`label_free`, computed on the
target's unlabelled text without its labels) and its target test accuracy. This is the one place target labels
are used: to judge the criteria, never to select. Two questions:

1. Rank correlation (Spearman) of each criterion with target test accuracy over all runs that have it, signed so
   that a useful criterion correlates positively (for a lower-is-better criterion its negation is ranked).
   Within-pair correlations are reported too: pairs differ in difficulty, and a criterion that only ranks pairs
   (e.g. low entropy on easy pairs) would not help a user choose between runs of their own pair. A criterion
   that estimates the accuracy itself (`atc`) also gets its mean (absolute) error against the test accuracy.
2. Selection: for every (pair, seed), among the candidate methods' runs, the run a criterion prefers against the
   run the source dev split prefers (macro-F1, then accuracy); the mean target accuracy of each choice over the
   (pair, seed) cells where every candidate has a result.

One criterion needs several runs and is computed here, not by a run: `seed_agreement`, how often a run's predicted
classes on the target texts agree with those of the other seeds of the same setting and pair (the mean over them;
Jiang et al. 2022, "Assessing generalization of SGD via disagreement": independently trained runs tend to disagree
where they are wrong). It reads the run folders' target test predictions, the predicted classes only, never the labels
in that file; a run whose folder is gone, or with no other seed, has none. It was added after the first GPU lease's
results were in (docs/benchmarks.md says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling runner is not a package
import amazon_pairs  # noqa: E402

from adapt.core.fileio import atomic_write_json, read_jsonl  # noqa: E402
from adapt.evaluation.agreement import agreement_with_others  # noqa: E402
from adapt.evaluation.label_free import CRITERIA  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ACCURACY_ESTIMATES = ("atc", "seed_agreement")  # criteria that estimate the target accuracy itself, not only rank runs
# Every criterion judged here, and whether higher is better: a run's own (adapt.evaluation.label_free) and the
# sweep's (computed across runs below).
HIGHER_IS_BETTER = {name: c.higher_is_better for name, c in CRITERIA.items()} | {"seed_agreement": True}


def load_runs(results: Path, methods: list[str] | None) -> list[dict]:
    """Every result record with a `label_free` record (a shared source-only run's records for its other targets have
    one from commit 5aa634f on: `adapt evaluate --unlabeled`)."""
    runs = []
    for path in sorted(results.glob("*/*.seed*.json")):
        rec = json.loads(path.read_text())
        name = path.parent.name  # method[+variant], or a stack's `A-then-B` (its record names only B)
        if (methods is None or name in methods) and rec.get("label_free"):
            runs.append({**rec, "name": name})
    add_seed_agreement(runs)
    return runs


def target_predictions(rec: dict) -> dict[str, str] | None:
    """{text id: predicted class} of the run on this pair's target test texts, from its run folder (a shared
    source-only run names that split after the target's domain); None when the folder or the file is gone."""
    run = Path(rec.get("run_dir", ""))
    if not (run / "report.json").is_file():
        return None
    split = amazon_pairs.target_test_split(json.loads((run / "report.json").read_text()), rec["target"])
    rows = read_jsonl(run / "predictions" / f"{split}.jsonl") if split else []
    return {str(row["id"]): row["pred"] for row in rows} or None  # the gold label in each row is not read


def add_seed_agreement(runs: list[dict]) -> None:
    """Each run's `seed_agreement` among its label-free criteria (see the module docstring), where it has one."""
    groups = defaultdict(dict)
    for i, rec in enumerate(runs):
        preds = target_predictions(rec)
        if preds:
            groups[(rec["name"], rec["pair"])][i] = preds
    for preds in groups.values():
        for i, value in agreement_with_others(preds).items():
            if value is not None:
                record = dict(runs[i]["label_free"])
                record["criteria"] = {**record.get("criteria", {}), "seed_agreement": value}
                runs[i] = {**runs[i], "label_free": record}


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho with average ranks for ties; None below 3 points or for a constant series."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):  # ties share their mean rank
        ranks[v == value] = ranks[v == value].mean()
    return ranks


def score(rec: dict, criterion: str) -> float | None:
    """The criterion's value for a run, signed so that higher is better; None when the run lacks it."""
    value = rec["label_free"].get("criteria", rec["label_free"]).get(criterion)
    if not isinstance(value, (int, float)):
        return None
    return value if HIGHER_IS_BETTER[criterion] else -value


def correlations(runs: list[dict]) -> dict:
    out = {}
    for name in HIGHER_IS_BETTER:
        have = [r for r in runs if score(r, name) is not None]
        by_pair = defaultdict(list)
        for r in have:
            by_pair[r["pair"]].append(r)
        within = {p: spearman([score(r, name) for r in rs], [r["target_accuracy"] for r in rs])
                  for p, rs in sorted(by_pair.items())}
        within_values = [v for v in within.values() if v is not None]
        out[name] = {"runs": len(have),
                     "spearman": spearman([score(r, name) for r in have], [r["target_accuracy"] for r in have]),
                     "mean_within_pair_spearman": float(np.mean(within_values)) if within_values else None,
                     "within_pair": within}
        if name in ACCURACY_ESTIMATES and have:  # it claims to be the accuracy: how far off is it?
            err = np.array([score(r, name) - r["target_accuracy"] for r in have])
            out[name].update(mean_error=float(err.mean()), mean_abs_error=float(np.abs(err).mean()))
    return out


def source_dev_score(rec: dict) -> tuple[float, float]:
    dev = rec["splits"]["source_dev"]
    return dev["macro_f1"], dev["accuracy"]


def selection(runs: list[dict]) -> dict:
    """Mean target accuracy of the run each criterion picks per (pair, seed), against source dev's pick and the
    oracle (the best run by target accuracy, which no user can pick)."""
    cells = defaultdict(list)
    for r in runs:
        cells[(r["pair"], r["seed"])].append(r)
    candidates = sorted({r["name"] for r in runs})
    full = {k: rs for k, rs in cells.items() if sorted(r["name"] for r in rs) == candidates}
    if not full:
        return {"cells": 0, "candidates": candidates}
    pick = {"source_dev": lambda rs: max(rs, key=source_dev_score),
            "oracle": lambda rs: max(rs, key=lambda r: r["target_accuracy"])}
    for name in HIGHER_IS_BETTER:
        if all(score(r, name) is not None for rs in full.values() for r in rs):
            pick[name] = lambda rs, name=name: max(rs, key=lambda run: score(run, name))
    out = {"cells": len(full), "candidates": candidates}
    for name, choose in pick.items():
        chosen = [choose(rs) for rs in full.values()]
        out[name] = {"mean_target_accuracy": float(np.mean([r["target_accuracy"] for r in chosen])),
                     "picked": {m: sum(r["name"] == m for r in chosen) for m in candidates}}
    return out


def render(result: dict) -> str:
    lines = ["| criterion | runs | Spearman (all runs) | mean within-pair Spearman |", "|---|---:|---:|---:|"]
    for name, c in result["correlations"].items():
        fmt = (lambda v: "–" if v is None else f"{v:+.2f}")
        lines.append(f"| {name} | {c['runs']} | {fmt(c['spearman'])} | {fmt(c['mean_within_pair_spearman'])} |")
    for name, c in result["correlations"].items():
        if "mean_abs_error" in c:
            lines += ["", f"{name} as an estimate of the target test accuracy: off by {100 * c['mean_abs_error']:.1f} "
                      f"points on average (mean signed error {100 * c['mean_error']:+.1f}) over {c['runs']} runs."]
    sel = result["selection"]
    if sel.get("cells"):
        lines += ["", f"Selection among {', '.join(sel['candidates'])} over {sel['cells']} (pair, seed) cells:", "",
                  "| selected by | mean target accuracy |", "|---|---:|"]
        lines += [f"| {k} | {100 * v['mean_target_accuracy']:.2f} |" for k, v in sel.items()
                  if isinstance(v, dict) and "mean_target_accuracy" in v]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "amazon_pairs")
    p.add_argument("--methods", default=None, help="only these result folders' names (method[+variant]), comma-separated")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args()
    runs = load_runs(args.results, args.methods.split(",") if args.methods else None)
    if not runs:
        print(f"no result with a `label_free` record under {args.results}", file=sys.stderr)
        return 1
    result = {"runs": len(runs), "correlations": correlations(runs), "selection": selection(runs)}
    print(render(result))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
