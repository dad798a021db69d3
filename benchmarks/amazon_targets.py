#!/usr/bin/env python3
"""Does an `amazon_pairs.py` sweep meet issue 12's bars? Each bar becomes a line with what it needs, what the
result files show and a verdict: met, not met, or not measured (too few pairs or seeds to judge).

    python benchmarks/amazon_targets.py --results benchmarks/results/amazon_pairs_v2 --recommended self_training \
        [--baseline source_only] [--work /tmp/adapt-amazon-pairs] [--student distill] [--half-student distill+half] \
        [--candidates source_only,self_training,dapt] [--out FILE.json]

The bars, from the issue ("Done when", carved Amazon split):
1. the recommended setting (`--recommended`, a result folder name `method[+variant]`; 5 seeds on all 12 pairs)
   beats source-only (`--baseline`, default `source_only`; 3 or more seeds per pair) by >= 3.5 points on the 12-pair
   mean of per-pair means. A setting that trains another model is judged against that model's source-only
   (`--baseline source_only+mpnet`): a bigger encoder's head start is not adaptation;
2. ... is better on >= 10 of the 12 pairs;
3. ... the paired bootstrap interval on the pooled target test predictions is above 0 (needs `--work`, the run
   folders that hold the predictions; `amazon_significance.py` pairs equal seeds);
4. ... no single (pair, seed) run falls more than 3 points below that pair's source-only mean;
5. the distilled student (`--student`, 3 or more seeds per pair: `--student-seeds`) is within 0.5 points of its
   teacher's 12-pair mean (the teacher's target test accuracy is recorded in each distill result, an ensemble's
   included); the half-layer student is reported beside it (its speed comes from `benchmarks/inference.py`, not
   from the result files);
6. some label-free criterion reaches Spearman >= 0.6 with target test accuracy over the sweep's runs, and
7. selecting by it among `--candidates` is not worse on average than selecting on the source dev split
   (`amazon_label_free.py`; target labels judge the criteria here, they never select).

`--choose A,B,C [--choose-by source_dev|<criterion>]` picks the recommended setting without target labels, before
it is judged: the candidate with the best mean source dev macro-F1 (or label-free criterion) over its first 3 seeds
on the 12 pairs, any candidate with an alarm in a run excluded. Its 4th and 5th seeds are then fresh runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts below are not a package
import amazon_label_free  # noqa: E402
import amazon_significance  # noqa: E402

from adapt.core.fileio import atomic_write_json  # noqa: E402
from adapt.reporting.compare import ALL_PAIRS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MET, NOT_MET, UNMEASURED = "met", "not met", "not measured"


def load(results: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """{result folder name: {pair: {seed: record}}}, the folder name being `method[+variant]`."""
    runs: dict = defaultdict(lambda: defaultdict(dict))
    for path in sorted(results.glob("*/*.seed*.json")):
        rec = json.loads(path.read_text())
        runs[path.parent.name][rec["pair"]][rec["seed"]] = rec
    return runs


def pair_means(by_pair: dict[str, dict[int, dict]], min_seeds: int) -> dict[str, float]:
    """Mean target accuracy per pair over its seeds, for the pairs with at least `min_seeds` seeds."""
    return {p: float(np.mean([r["target_accuracy"] for r in seeds.values()]))
            for p, seeds in by_pair.items() if len(seeds) >= min_seeds}


def reaches(value: float, threshold: float) -> bool:
    """`value >= threshold` for figures built from accuracies: a run's accuracy is a multiple of 1/200, and means and
    differences of those carry float error (a run exactly 3 points below its pair's mean computes as -3.0000000000000027),
    so a figure that equals its bar to 1e-9 meets it."""
    return value >= threshold - 1e-9


def bar(name: str, needed: str, measured: str, verdict: str, **figures) -> dict:
    return {"bar": name, "needed": needed, "measured": measured, "verdict": verdict, **figures}


def recommended_bars(runs: dict, name: str, results: Path, work: Path | None, seeds: int = 5,
                     baseline_seeds: int = 3, baseline: str = "source_only") -> list[dict]:
    """Bars 1-4: the recommended setting against `baseline` (a source-only folder), pair by pair. A verdict needs all
    12 pairs; with fewer the figures are shown and the verdict is "not measured"."""
    base = pair_means(runs.get(baseline, {}), baseline_seeds)
    mine = pair_means(runs.get(name, {}), seeds)
    pairs = [p for p in ALL_PAIRS if p in base and p in mine]
    have = f"{len(pairs)} of 12 pairs with >= {seeds} seeds of {name} and >= {baseline_seeds} of {baseline}"
    complete = len(pairs) == len(ALL_PAIRS)

    def verdict(ok: bool) -> str:
        return (MET if ok else NOT_MET) if complete else UNMEASURED

    if not pairs:
        return [bar(f"mean gain over {baseline}", ">= +3.5 points on the 12-pair mean", have, UNMEASURED)]
    gains = {p: 100 * (mine[p] - base[p]) for p in pairs}
    mean_gain = float(np.mean(list(gains.values())))
    better = sum(g > 0 for g in gains.values())
    worst_pair, worst_seed, worst = min(
        ((p, s, 100 * (r["target_accuracy"] - base[p])) for p in pairs for s, r in runs[name][p].items()),
        key=lambda t: t[2])
    return [
        bar(f"mean gain over {baseline}", ">= +3.5 points on the 12-pair mean", f"{mean_gain:+.2f} points ({have})",
            verdict(reaches(mean_gain, 3.5)), gain_points=mean_gain, gains=gains),
        bar(f"pairs better than {baseline}", ">= 10 of 12", f"{better} of {len(pairs)}", verdict(better >= 10),
            pairs_better=better),
        bar("paired bootstrap", "95% interval above 0", *bootstrap(results, work, name, verdict, baseline)),
        bar("worst single run", "no (pair, seed) more than 3 points below the pair's source-only mean",
            f"{worst:+.2f} points ({worst_pair} seed {worst_seed})", verdict(reaches(worst, -3.0)), worst_points=worst),
    ]


def bootstrap(results: Path, work: Path | None, name: str, verdict, baseline: str = "source_only") -> tuple[str, str]:
    """(measured, verdict) of the pooled paired bootstrap against `baseline` on equal seeds."""
    if work is None:
        return "needs --work (the run folders hold the predictions)", UNMEASURED
    pooled = amazon_significance.pooled(work, results, name, baseline)
    if pooled is None:
        return f"no pair of run folders with predictions under {work}", UNMEASURED
    test = pooled["paired_bootstrap"]["accuracy"]
    lo, hi = (100 * v for v in test["ci95"])
    return (f"{100 * test['difference']:+.2f} points [{lo:+.2f}, {hi:+.2f}] over {len(pooled['runs'])} runs",
            verdict(lo > 0))


def student_bars(runs: dict, student: str, half: str | None, seeds: int = 3) -> list[dict]:
    """Bar 5: the student's 12-pair mean against its teacher's, both from the distill results (each records its
    teacher's target test accuracy), judged with `seeds` or more per pair; the half-layer student's loss is
    reported, it has no bar of its own."""
    out = []
    for name in [student] + ([half] if half else []):
        by_pair = runs.get(name, {})
        recs = [r for per_seed in by_pair.values() for r in per_seed.values()]
        pairs = {r["pair"] for r in recs}
        needed = "within 0.5 points of the teacher's 12-pair mean" if name == student else "measured"
        if not recs:
            out.append(bar(f"student {name} vs teacher", needed, "no result", UNMEASURED))
            continue
        s_mean = 100 * float(np.mean([r["target_accuracy"] for r in recs]))
        t_mean = 100 * float(np.mean([r["method_summary"]["teacher"]["accuracy"]["target_test"] for r in recs]))
        gap = s_mean - t_mean
        fewest = min(len(per_seed) for per_seed in by_pair.values())
        complete = pairs == set(ALL_PAIRS) and fewest >= seeds
        ok = reaches(gap, -0.5) if name == student else None
        verdict = UNMEASURED if not complete else ("reported" if ok is None else MET if ok else NOT_MET)
        summary = recs[0]["method_summary"]  # an ensemble teacher's parameters are its members' sum
        params = (f"{summary['student']['params_total'] / 1e6:.1f} M parameters against the teacher's "
                  f"{summary['teacher']['params_total'] / 1e6:.1f} M")
        timed = [r["method_summary"] for r in recs if "inference" in r["method_summary"]["student"]]
        faster = (f"; {np.mean([m['student']['inference']['texts_per_second'] / m['teacher']['inference']['texts_per_second'] for m in timed]):.2f}× "
                  f"the teacher's texts/s (mean over {len(timed)} runs, timed side by side in each)") if timed else ""
        out.append(bar(f"student {name} vs teacher", needed,
                       f"student {s_mean:.2f}, teacher {t_mean:.2f}: {gap:+.2f} points over {len(recs)} runs on "
                       f"{len(pairs)} of 12 pairs ({fewest} or more seeds each; {seeds} needed); {params}{faster}",
                       verdict, gap_points=gap))
    return out


def criterion_bars(results: Path, candidates: list[str] | None) -> list[dict]:
    """Bars 6 and 7: the best criterion's Spearman over all runs, and selection by it against source dev. A
    verdict needs runs on all 12 pairs: a correlation over one pair's handful of runs says nothing of the benchmark."""
    runs = amazon_label_free.load_runs(results, None)
    complete = {r["pair"] for r in runs} == set(ALL_PAIRS)

    def verdict(ok: bool) -> str:
        return (MET if ok else NOT_MET) if complete else UNMEASURED

    if len(runs) < 3:
        return [bar("label-free criterion", "Spearman >= 0.6 with target accuracy", f"{len(runs)} runs", UNMEASURED)]
    corr = amazon_label_free.correlations(runs)
    ranked = sorted(((c["spearman"], n) for n, c in corr.items() if c["spearman"] is not None), reverse=True)
    if not ranked:
        return [bar("label-free criterion", "Spearman >= 0.6 with target accuracy", "no criterion ranks", UNMEASURED)]
    rho, best = ranked[0]
    out = [bar("label-free criterion", "Spearman >= 0.6 with target accuracy over the runs",
               f"{best}: {rho:+.2f} over {corr[best]['runs']} runs", verdict(rho >= 0.6),
               criterion=best, spearman=rho)]
    sel = amazon_label_free.selection([r for r in runs if candidates is None or r["name"] in candidates])
    if not sel.get("cells") or best not in sel:
        out.append(bar(f"selecting by {best}", "not worse than the source dev split on average",
                       "no (pair, seed) cell with every candidate", UNMEASURED))
        return out
    by, dev = 100 * sel[best]["mean_target_accuracy"], 100 * sel["source_dev"]["mean_target_accuracy"]
    out.append(bar(f"selecting by {best}", "not worse than the source dev split on average",
                   f"{by:.2f} against {dev:.2f} (oracle {100 * sel['oracle']['mean_target_accuracy']:.2f}) over "
                   f"{sel['cells']} cells of {', '.join(sel['candidates'])}", verdict(by >= dev)))
    return out


def choose(runs: dict, candidates: list[str], by: str, seeds: int = 3) -> dict:
    """The recommended setting, chosen without target labels: among candidate settings with `seeds` seeds on all 12
    pairs, the best mean of `by` over their runs (`source_dev`: source dev macro-F1; or a label-free criterion,
    signed so that higher is better). A candidate with a collapse or adversary alarm in any run is out: the
    recommended recipe must not fail on a pair, and the alarms see failure without target labels."""
    table = {}
    for name in candidates:
        recs = [r for p in ALL_PAIRS for r in list(runs.get(name, {}).get(p, {}).values())[:seeds]]
        complete = all(len(runs.get(name, {}).get(p, {})) >= seeds for p in ALL_PAIRS)
        values = [amazon_label_free.source_dev_score(r)[0] if by == "source_dev" else amazon_label_free.score(r, by)
                  if r.get("label_free") else None for r in recs]
        alarmed = sum(bool(r.get("alarms")) for r in recs)
        usable = complete and all(v is not None for v in values)
        table[name] = {"runs": len(recs), "complete": complete, "alarmed_runs": alarmed,
                       "mean": float(np.mean(values)) if usable else None}
    measured = all(t["mean"] is not None for t in table.values())  # no choice before every candidate is in
    eligible = {n: t["mean"] for n, t in table.items() if t["mean"] is not None and not t["alarmed_runs"]}
    return {"by": by, "seeds": seeds, "candidates": table,
            "chosen": max(eligible, key=eligible.get) if measured and eligible else None}


def render(bars: list[dict]) -> str:
    lines = ["| bar | needed | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {b['bar']} | {b['needed']} | {b['measured']} | **{b['verdict']}** |" for b in bars]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "amazon_pairs_v2")
    p.add_argument("--recommended", help="result folder of the recommended setting, method[+variant]")
    p.add_argument("--choose", help="instead: choose the recommended setting among these result folders "
                   "(comma-separated), by --choose-by, from their first 3 seeds on the 12 pairs")
    p.add_argument("--choose-by", default="source_dev", choices=["source_dev", *amazon_label_free.CRITERIA],
                   help="source dev macro-F1 or a label-free criterion (never target labels)")
    p.add_argument("--work", type=Path, help="the sweep's run folders, for the paired bootstrap")
    p.add_argument("--student", default="distill", help="result folder of the same-size student")
    p.add_argument("--half-student", help="result folder of the smaller student, e.g. distill+half")
    p.add_argument("--student-seeds", type=int, default=3, help="seeds the student needs per pair")
    p.add_argument("--candidates", help="result folders a criterion selects among (default: all), comma-separated")
    p.add_argument("--seeds", type=int, default=5, help="seeds the recommended setting needs per pair")
    p.add_argument("--baseline", default="source_only", help="the source-only result folder the recommended setting "
                   "is judged against: the same model's (source_only+mpnet for a setting that trains MPNet)")
    p.add_argument("--baseline-seeds", type=int, default=3, help="seeds the baseline needs per pair")
    p.add_argument("--out", type=Path, help="write the bars as JSON here")
    args = p.parse_args(argv)
    runs = load(args.results)
    if not runs:
        print(f"no result files under {args.results} (expected <method>/<S>-<T>.seed<k>.json)", file=sys.stderr)
        return 1
    if args.choose:
        choice = choose(runs, args.choose.split(","), args.choose_by)
        print("| candidate | runs | alarmed runs | mean " + args.choose_by + " |\n|---|---:|---:|---:|")
        for name, t in choice["candidates"].items():
            mean = "incomplete" if t["mean"] is None else f"{t['mean']:.4f}"
            print(f"| {name} | {t['runs']} | {t['alarmed_runs']} | {mean} |")
        print(f"chosen: {choice['chosen'] or 'none (every candidate needs 3 seeds on all 12 pairs; one needs no alarm)'}")
        if args.out:
            atomic_write_json(args.out, choice)
        return 0 if choice["chosen"] else 1
    if not args.recommended:
        p.error("give --recommended (judge a setting) or --choose (choose one)")
    bars = (recommended_bars(runs, args.recommended, args.results, args.work, args.seeds, args.baseline_seeds,
                             args.baseline)
            + student_bars(runs, args.student, args.half_student, args.student_seeds)
            + criterion_bars(args.results, args.candidates.split(",") if args.candidates else None))
    print(render(bars))
    if args.out:
        atomic_write_json(args.out, {"results": str(args.results), "recommended": args.recommended, "bars": bars})
    return 0


if __name__ == "__main__":
    sys.exit(main())
