#!/usr/bin/env python3
"""Add label-free criteria introduced after a sweep ran to its result files, from the finished runs, without
retraining.

    python benchmarks/amazon_rescore.py --results benchmarks/results/issue12_cpu_seed1 \\
        --data-dir ../shared/data/amazon_multidomain [--methods self_training,source_only] [--jobs 2] [--work-from A --work-to B]

For every result JSON (`amazon_pairs.py`'s) whose `label_free` record lacks a criterion of
`adapt.evaluation.label_free.CRITERIA`, the run that produced it (`run_dir`, or `shared_run` for a source-only model
serving several targets) is scored again with `adapt evaluate RUN --unlabeled TARGET=SPEC --domain TARGET`: the same
target text, sample, seed, source dev split and prior as the run's own record. The missing criteria are added; the
ones the record already had are kept as they were, and how far the new evaluation moved each of them is written
beside them (`rescored.changes`: new minus old; `rescored.max_relative_change`, which overstates the moves of
criteria near zero such as class balance), so a reader can see the new numbers come from the same models. Each file is
replaced whole (written to a temporary file, then renamed), so an interrupted rescore loses nothing; rerunning it
skips the files already complete.

Result files record absolute run paths; `--work-from A --work-to B` rewrites a prefix for runs that moved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling runner is not a package
import amazon_pairs  # noqa: E402

from adapt.core.fileio import atomic_write_json  # noqa: E402
from adapt.evaluation.label_free import CRITERIA  # noqa: E402
from adapt.training.record import git_commit  # noqa: E402


def wanted(rec: dict) -> list[str]:
    """The criteria an evaluation of this run gives that its record lacks (not `domain_balance`: it is read from the
    training log, not from predictions)."""
    have = rec.get("label_free", {}).get("criteria", {})
    return [k for k in CRITERIA if k not in have and not any(n.startswith("log:") for n in CRITERIA[k].needs)]


def run_of(rec: dict, args) -> Path:
    path = rec.get("shared_run") or rec["run_dir"]
    if args.work_from and path.startswith(args.work_from):
        path = args.work_to + path[len(args.work_from):]
    return Path(path)


def rescore(path: Path, rec: dict, args) -> str:
    missing = wanted(rec)
    if not rec.get("label_free") or not missing:
        return f"{path.parent.name}/{path.name}: nothing to add"
    run, tgt = run_of(rec, args), rec["target"]
    if not (run / "report.json").exists():
        raise SystemExit(f"{path}: its run {run} is gone (no report.json); pass --work-from/--work-to if it moved")
    # The target text exactly as the runner gave it to the run (`data.target.unlabeled`), in the runner's environment.
    spec = amazon_pairs.unlabeled_spec(rec["pair"], argparse.Namespace(unlabeled=rec["unlabeled"], test_dir=None))
    cmd = [sys.executable, "-m", "adapt.evaluate_run", str(run), "--unlabeled", f"{tgt}={spec}", "--domain", tgt]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **amazon_pairs.env(args)})
    if done.returncode != 0:
        raise SystemExit(f"{path}: adapt evaluate failed:\n{done.stderr[-2000:]}")
    new = json.loads((run / "report.json").read_text())["label_free_on"][tgt]
    old = rec["label_free"]
    kept = {k: v for k, v in old["criteria"].items() if k in new["criteria"]}
    changes = {k: new["criteria"][k] - v for k, v in kept.items()}
    change = max((abs(changes[k]) / max(abs(v), 1e-12) for k, v in kept.items()), default=0.0)
    rec["label_free"] = {**old, "criteria": {**old["criteria"], **{k: new["criteria"][k] for k in missing}}}
    rec["rescored"] = {"criteria_added": missing, "changes": changes, "max_relative_change": change,
                       "git_commit": git_commit(), "examples": new["examples"],
                       "predicted_distribution": new["predicted_distribution"]}
    atomic_write_json(path, rec)
    added = ", ".join(f"{k} {new['criteria'][k]:.4g}" for k in missing)
    return f"{path.parent.name}/{path.name}: {added} (the record's other criteria moved by at most {change:.1e})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, required=True, help="a sweep's result folder (method/PAIR.seedN.json)")
    p.add_argument("--data-dir", type=Path, required=True, help="the Amazon folder the runs read")
    p.add_argument("--methods", default=None, help="only these result folders (method[+variant]), comma-separated")
    p.add_argument("--jobs", type=int, default=1, help="evaluations at a time")
    p.add_argument("--work-from", default=None, help="a run-path prefix to replace (runs that moved)")
    p.add_argument("--work-to", default=None, help="what replaces it")
    args = p.parse_args()
    if (args.work_from is None) != (args.work_to is None):
        p.error("--work-from and --work-to go together")
    names = set(args.methods.split(",")) if args.methods else None
    files = [f for f in sorted(args.results.glob("*/*.seed*.json")) if names is None or f.parent.name in names]
    if not files:
        p.error(f"no result files under {args.results}")
    # One source-only model serves three targets and its report.json is rewritten by each evaluation: its
    # targets go one after another, in one worker.
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for f in files:
        rec = json.loads(f.read_text())
        groups.setdefault(rec.get("shared_run") or str(f), []).append((f, rec))
    with ThreadPoolExecutor(args.jobs) as pool:
        for lines in pool.map(lambda group: [rescore(f, rec, args) for f, rec in group], groups.values()):
            for line in lines:
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
