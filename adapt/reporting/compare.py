"""Compare runs: one table of every run's setup and results, and a paired bootstrap test on the test examples the
runs share (matched by example id) that says whether each run differs from the first.

    python -m adapt.report compare RUN_DIR RUN_DIR ... [--out DIR]
    python -m adapt.report compare SWEEP_DIR [--out DIR]      # a benchmark sweep: per-pair table + heatmap

A sweep directory is the layout `benchmarks/amazon_pairs.py` writes (`<method>/<S>-<T>.seed<k>.json`, one result
per method, pair and seed): it is rendered as the per-pair table (rows: methods; columns: the 12 source->target
pairs and the average; mean +- std over seeds) and a source x target heatmap per method.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json, atomic_write_text, read_jsonl
from adapt.core.formatting import pct, signed_points
from adapt.core.rundir import RunDir
from adapt.evaluation.agreement import agreement_with_others, setting_key, unlabeled_predictions
from adapt.evaluation.metrics import paired_bootstrap
from adapt.reporting.report import load_report
from adapt.reporting.templating import render_template

# ----------------------------------------------------------------------------------------------------------
# Runs.


def _predictions(run: RunDir, split: str) -> dict[str, dict]:
    path = run.predictions / f"{split}.jsonl"
    return {str(r["id"]): r for r in read_jsonl(path)} if path.exists() else {}


def run_row(run: RunDir, r: dict) -> dict:
    s, m = r["summary"], r["model"]
    return {"run": str(run.root), "name": r.get("name"), "method": r["method"], "model": m["name_or_path"],
            "finetune": m["finetune"], "params_trainable": m["params_trainable"],
            **{k: s.get(k) for k in ("source_accuracy", "source_macro_f1", "target_accuracy", "target_macro_f1")},
            "train_seconds": r["timing"]["train_seconds"], "labels": r["labels"],
            "test_splits": [n for n, v in r["splits"].items() if v.get("kind", "test") == "test"]}


def paired_tests(base: RunDir, other: RunDir, labels: list[str], splits: list[str]) -> dict:
    """Per test split both runs have: the paired bootstrap of other - base on the shared example ids."""
    out = {}
    index = {name: i for i, name in enumerate(labels)}
    for split in splits:
        a, b = _predictions(base, split), _predictions(other, split)
        ids = sorted(a.keys() & b.keys())
        if not ids:
            continue
        if any(a[i]["label"] != b[i]["label"] for i in ids):
            raise AdaptError(f"{split}: runs {base.root} and {other.root} give different gold labels to the same "
                             "example ids, so they were not scored on the same data")
        y = np.array([index[a[i]["label"]] for i in ids])
        pa = np.array([index[a[i]["pred"]] for i in ids])
        pb = np.array([index[b[i]["pred"]] for i in ids])
        out[split] = {"shared_examples": len(ids), **paired_bootstrap(y, pa, pb, len(labels))}
    return out


def seed_agreement(runs: list[RunDir], reports: list[dict], name: str | None = None) -> list[dict | None]:
    """Per run: how often it predicts the class its other seeds predict on the target's unlabelled sample, or on the
    unlabelled text `name` that `adapt evaluate --unlabeled` scored (`adapt.evaluation.agreement`), with how many
    seeds it was compared with; None without another seed of its setting among `runs`, or without the predictions
    file (runs from before it was written, `report.predictions` off)."""
    groups: dict[str, dict[int, dict[str, str]]] = {}
    for i, (run, report) in enumerate(zip(runs, reports)):
        preds = {k: r["pred"] for k, r in _predictions(run, unlabeled_predictions(name)).items()}
        if preds:
            groups.setdefault(setting_key(report["recipe"]), {})[i] = preds
    out: list[dict | None] = [None] * len(runs)
    for members in groups.values():
        for i, value in agreement_with_others(members).items():
            if value is not None:
                out[i] = {"agreement": value, "seeds_compared": len(members) - 1}
    return out


def compare_runs(paths: list[Path]) -> dict:
    runs = [RunDir(p) for p in paths]
    reports = [load_report(r) for r in runs]
    rows = [run_row(r, report) for r, report in zip(runs, reports)]
    base = rows[0]
    for run, row in zip(runs[1:], rows[1:]):
        if row["labels"] != base["labels"]:
            raise AdaptError(f"{run.root} has labels {row['labels']}, the first run {base['labels']}: not comparable")
        shared = [s for s in row["test_splits"] if s in base["test_splits"]]
        row["vs_first"] = paired_tests(runs[0], run, base["labels"], shared)
    for row, agree in zip(rows, seed_agreement(runs, reports)):
        row["seed_agreement"] = agree
    for name in sorted({n for report in reports for n in report.get("label_free_on", {})}):
        for row, agree in zip(rows, seed_agreement(runs, reports, name)):
            if agree is not None:
                row.setdefault("seed_agreement_on", {})[name] = agree
    return {"runs": rows}


def _diff(t: dict | None, metric: str) -> str:
    if not t:
        return "–"
    d = t[metric]
    return f"{signed_points(d['difference'], d['ci95'])}, p={d['p_value']:.3f}"


def compare_markdown(result: dict) -> str:
    runs = result["runs"]
    rows = [{"name": Path(r["run"]).name, "method": r["method"], "model": r["model"], "finetune": r["finetune"],
             "params_trainable": f"{r['params_trainable']:,}",
             **{k: pct(r[k]) for k in ("source_accuracy", "source_macro_f1", "target_accuracy", "target_macro_f1")},
             "train_seconds": f"{r['train_seconds']:.0f}",
             "vs_first": "(first)" if i == 0 else _diff(r.get("vs_first", {}).get("target_test"), "accuracy"),
             "seed_agreement": (f"{pct(r['seed_agreement']['agreement'])} ({r['seed_agreement']['seeds_compared']})"
                                if r.get("seed_agreement") else "–"),
             "student": r["method"] == "distill",
             "agreement_on": ", ".join(f"`{n}` {pct(a['agreement'])} ({a['seeds_compared']})"
                                       for n, a in r.get("seed_agreement_on", {}).items())}
            for i, r in enumerate(runs)]
    tests = [{"name": Path(r["run"]).name, "split": split, "shared_examples": t["shared_examples"],
              "accuracy": _diff(t, "accuracy"), "macro_f1": _diff(t, "macro_f1")}
             for r in runs[1:] for split, t in r.get("vs_first", {}).items()]
    return render_template("compare.md.j2", runs=rows, tests=tests)


def markdown_to_html(text: str, title: str, images: Sequence[tuple[str, str]] = ()) -> str:
    """A self-contained page: the Markdown document `text`, then `images`, (alt text, PNG data URI) pairs."""
    return render_template("document.html.j2", title=title, markdown=text, images=list(images))


# ----------------------------------------------------------------------------------------------------------
# Benchmark sweeps (source x target pairs).

DOMAINS = {"B": "books", "D": "dvd", "E": "electronics", "K": "kitchen"}
ALL_PAIRS = [f"{s}:{t}" for s in DOMAINS for t in DOMAINS if s != t]


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/*.seed*.json"))


def collect(out: Path) -> dict[str, dict[str, list[float]]]:
    """{method(+variant): {pair: [target accuracy per seed]}} from every result file under `out`, named by the folder
    the runner filed it in: a stack's record names only its last method (`dapt-then-self_training/` holds
    `self_training` records started from a dapt run)."""
    table: dict[str, dict[str, list[float]]] = {}
    for path in sorted(out.glob("*/*.seed*.json")):
        rec = json.loads(path.read_text())
        table.setdefault(path.parent.name, {}).setdefault(rec["pair"], []).append(rec["target_accuracy"])
    return table


def summarise(table: dict[str, dict[str, list[float]]]) -> dict:
    """Per method: mean/std/seeds per pair, the 12-pair average (when complete), and against source_only: on how
    many shared pairs it is strictly better and its mean gain."""
    rows = {}
    for method, pairs in sorted(table.items(), key=lambda kv: (kv[0] != "source_only", kv[0])):
        cells = {p: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)} for p, v in pairs.items()}
        complete = all(p in cells for p in ALL_PAIRS)
        rows[method] = {"pairs": cells, "average": float(np.mean([cells[p]["mean"] for p in ALL_PAIRS])) if complete else None,
                        "average_over_run_pairs": float(np.mean([c["mean"] for c in cells.values()]))}
    base = rows.get("source_only")
    for method, row in rows.items():
        if base is None or method == "source_only":
            continue
        shared = [p for p in row["pairs"] if p in base["pairs"]]
        row["vs_source_only"] = {
            "pairs": len(shared),
            "better": sum(row["pairs"][p]["mean"] > base["pairs"][p]["mean"] for p in shared),
            "mean_gain_points": 100 * float(np.mean([row["pairs"][p]["mean"] - base["pairs"][p]["mean"] for p in shared]))
            if shared else None,
        }
    return rows


def pair_markdown(rows: dict) -> str:
    table = []
    for method, row in rows.items():
        cells = [_mean_std(row["pairs"].get(p)) for p in ALL_PAIRS]
        vs = row.get("vs_source_only")
        table.append({
            "method": method, "cells": cells,
            "average": pct(row["average"]),
            "average_over_run_pairs": pct(row["average_over_run_pairs"]),
            "vs_source_only": f"{vs['mean_gain_points']:+.2f} pts, better on {vs['better']}/{vs['pairs']}"
            if vs and vs["pairs"] else "",
        })
    seeds = sorted({c["seeds"] for row in rows.values() for c in row["pairs"].values()})
    return render_template("table.md.j2", pairs=[p.replace(":", "→") for p in ALL_PAIRS], rows=table,
                           seeds="/".join(map(str, seeds)))


def _mean_std(cell: dict | None) -> str:
    """Target accuracy of one pair in percent, "84.1 ± 0.8" over seeds (the mean alone for one seed)."""
    if cell is None:
        return ""
    return pct(cell["mean"]) + (f" ± {pct(cell['std'])}" if cell["seeds"] > 1 else "")


def heatmap(rows: dict, path: Path) -> None:
    """Source x target target-accuracy grids, one per method (blank where not run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(DOMAINS)
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, (method, row) in zip(axes[0], rows.items()):
        grid = np.full((4, 4), np.nan)
        for p, c in row["pairs"].items():
            s, t = p.split(":")
            grid[names.index(s), names.index(t)] = 100 * c["mean"]
        ax.imshow(grid, vmin=60, vmax=95, cmap="viridis")
        for i in range(4):
            for j in range(4):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                            color="black" if grid[i, j] > 85 else "white")
        ax.set_xticks(range(4), names)
        ax.set_yticks(range(4), names)
        ax.set_xlabel("target")
        ax.set_ylabel("source")
        ax.set_title(method, fontsize=9)
    fig.tight_layout()
    # One name per process: two sweeps writing the same table at once each replace the figure whole.
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_pair_table(sweep: Path, out: Path | None = None) -> str:
    """table.md, table.json and heatmap.png for a sweep directory (into `out`, default the sweep itself)."""
    out = out or sweep
    rows = summarise(collect(sweep))
    if not rows:
        return "no results yet\n"
    text = pair_markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", text)
    atomic_write_json(out / "table.json", rows)
    heatmap(rows, out / "heatmap.png")
    return text


def compare_main(paths: list[Path], out: Path | None) -> str:
    if len(paths) == 1 and is_sweep_dir(paths[0]):
        text = write_pair_table(paths[0], out)
        png = (out or paths[0]) / "heatmap.png"
        if png.exists():
            img = ("target accuracy per source and target domain",
                   f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}")
            atomic_write_text((out or paths[0]) / "table.html", markdown_to_html(text, "Benchmark sweep", [img]))
        return text
    missing = [str(p) for p in paths if not (p / "report.json").exists()]
    if missing:
        raise AdaptError(f"not finished run directories (no report.json): {', '.join(missing)}; give run directories, "
                         "or one benchmark sweep directory")
    if len(paths) < 2:
        raise AdaptError("compare needs at least two run directories (the first is the baseline)")
    result = compare_runs(paths)
    text = compare_markdown(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.md", text)
        atomic_write_text(out / "compare.html", markdown_to_html(text, "Run comparison"))
        atomic_write_json(out / "compare.json", result)
    return text
