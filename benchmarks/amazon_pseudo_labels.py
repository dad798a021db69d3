#!/usr/bin/env python3
"""Why self-training gained or lost on a pair: how many of each round's pseudo-labels were right.

    python benchmarks/amazon_pseudo_labels.py --results benchmarks/results/issue12_cpu_seed1 \\
        --data-dir ../shared/data/amazon_multidomain [--methods self_training] [--out FILE.json]

A self-training run writes each round's pseudo-labels to `<run>/pseudo_labels/roundN.json` (rows of the target's
unlabelled split, their labels, the kept probabilities). On this benchmark the target's "unlabelled" text is its
carved *labelled* training split with the labels withheld (`--unlabeled train`), so the labels the run never saw can
say afterwards how many of its pseudo-labels were wrong, per round and per class. Like `amazon_label_free.py`, this
uses target labels to explain results, never to choose anything.

Per run: for every round, the pseudo-labels kept, their accuracy, and per class how many were kept and how many of
them were right (the precision of that class's pseudo-labels); beside it the run's target test accuracy and its
gain over the same pair's and seed's source-only run when that result exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling runner is not a package
import amazon_pairs  # noqa: E402

from adapt.core.fileio import atomic_write_json  # noqa: E402
from adapt.data.splits import load_extra_split  # noqa: E402
from adapt.recipe import load_recipe  # noqa: E402


def true_labels(run: Path) -> tuple[np.ndarray, list[str]]:
    """The labels of the run's unlabelled target split, in the row order its pseudo-label files index."""
    recipe = load_recipe(run / "recipe.yaml")
    names = json.loads((run / "report.json").read_text())["labels"]
    cfg = recipe.data
    split = load_extra_split(cfg.target.unlabeled, "target_unlabeled", "target", cfg.target.domain, cfg, names)
    return np.asarray(split.dataset["label"]), names


def round_quality(saved: dict, truth: np.ndarray, names: list[str]) -> dict:
    rows, labels = np.asarray(saved["rows"], dtype=int), np.asarray(saved["labels"], dtype=int)
    right = truth[rows] == labels
    per_class = {name: {"kept": int((labels == c).sum()), "right": int(right[labels == c].sum()),
                        "in_pool": int((truth == c).sum())} for c, name in enumerate(names)}
    return {"round": saved["round"], "candidates": saved["candidates"], "kept": len(rows), "right": int(right.sum()),
            "accuracy": float(right.mean()) if len(rows) else None, "per_class": per_class}


def run_quality(run: Path) -> list[dict]:
    files = sorted((run / "pseudo_labels").glob("round*.json"), key=lambda f: int(f.stem[len("round"):]))
    if not files:
        return []
    truth, names = true_labels(run)
    return [round_quality(json.loads(f.read_text()), truth, names) for f in files]


def source_only_accuracy(results: Path, rec: dict) -> float | None:
    where = argparse.Namespace(out=results, variant=None)  # where the runner files the same pair's and seed's result
    path = amazon_pairs.result_path(where, "source_only", rec["pair"], rec["seed"])
    return json.loads(path.read_text())["target_accuracy"] if path.exists() else None


def analyse(results: Path, methods: list[str]) -> list[dict]:
    out = []
    for method in methods:
        for path in sorted((results / method).glob("*.seed*.json")):
            rec = json.loads(path.read_text())
            rounds = run_quality(Path(rec["run_dir"]))
            if not rounds:
                continue
            base = source_only_accuracy(results, rec)
            out.append({"method": method, "pair": rec["pair"], "seed": rec["seed"],
                        "target_accuracy": rec["target_accuracy"], "source_only_accuracy": base,
                        "gain": None if base is None else rec["target_accuracy"] - base, "rounds": rounds})
    return out


def render(rows: list[dict]) -> str:
    """One line per run: the gain, then each round's kept pseudo-labels, their accuracy, and the worse class's
    precision."""
    rounds = " | ".join(f"round {r['round']}: kept / right % / worse class %" for r in rows[0]["rounds"])
    lines = [f"| method | pair | seed | target | gain | {rounds} |", "|---" * (5 + len(rows[0]["rounds"])) + "|"]
    for row in rows:
        gain = "" if row["gain"] is None else f"{100 * row['gain']:+.1f}"
        cells = []
        for r in row["rounds"]:
            if not r["kept"]:  # nothing kept (e.g. one class had no confident prediction): source only this round
                cells.append("0 / – / –")
                continue
            worst = min((c["right"] / c["kept"], name) for name, c in r["per_class"].items() if c["kept"])
            cells.append(f"{r['kept']} / {100 * r['accuracy']:.1f} / {100 * worst[0]:.1f} ({worst[1]})")
        lines.append(f"| {row['method']} | {row['pair']} | {row['seed']} | {100 * row['target_accuracy']:.1f} | {gain} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, required=True, help="a sweep's result folder (method/PAIR.seedN.json)")
    p.add_argument("--data-dir", type=Path, required=True, help="the Amazon folder the runs read")
    p.add_argument("--methods", default="self_training", help="result folders of self-training runs, comma-separated")
    p.add_argument("--out", type=Path, default=None, help="write the per-round figures as JSON here")
    args = p.parse_args()
    os.environ.update(amazon_pairs.env(args))  # `amazon:` specs read the data folder from the environment
    rows = analyse(args.results, args.methods.split(","))
    if not rows:
        raise SystemExit(f"no run of {args.methods} under {args.results} has pseudo-label files "
                         "(<run>/pseudo_labels/roundN.json); are the run folders still there?")
    print(render(rows))
    if args.out:
        atomic_write_json(args.out, {"runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
