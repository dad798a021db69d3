"""Compare runs: one table of every run's setup and results, and a paired bootstrap test on the test examples the
runs share (matched by example id) that says whether each run differs from the first.

    python -m adapt.report compare RUN_DIR RUN_DIR ... [--out DIR]
    python -m adapt.report compare SWEEP_DIR [--out DIR]      # a benchmark sweep: per-pair table + heatmap

A sweep directory is the layout `benchmarks/amazon_pairs.py` writes (`<method>/<S>-<T>.seed<k>.json`, one result
per method, pair and seed): it is rendered as the per-pair table (rows: methods; columns: the 12 source->target
pairs and the average; mean +- std over seeds) and a source x target heatmap per method.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from adapt.errors import AdaptError
from adapt.metrics import paired_bootstrap
from adapt.report import _pct, load_report
from adapt.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl

# ----------------------------------------------------------------------------------------------------------
# Runs.


def _predictions(run: RunDir, split: str) -> dict[str, dict]:
    path = run.predictions / f"{split}.jsonl"
    return {str(r["id"]): r for r in read_jsonl(path)} if path.exists() else {}


def run_row(run: RunDir) -> dict:
    r = load_report(run)
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


def compare_runs(paths: list[Path]) -> dict:
    runs = [RunDir(p) for p in paths]
    rows = [run_row(r) for r in runs]
    base = rows[0]
    for run, row in zip(runs[1:], rows[1:]):
        if row["labels"] != base["labels"]:
            raise AdaptError(f"{run.root} has labels {row['labels']}, the first run {base['labels']}: not comparable")
        shared = [s for s in row["test_splits"] if s in base["test_splits"]]
        row["vs_first"] = paired_tests(runs[0], run, base["labels"], shared)
    return {"runs": rows}


def _diff(t: dict | None, metric: str) -> str:
    if not t:
        return "–"
    d = t[metric]
    return (f"{100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}], "
            f"p={d['p_value']:.3f}")


def compare_markdown(result: dict) -> str:
    head = ["run", "method", "model", "finetune", "trainable", "source acc", "source F1", "target acc", "target F1",
            "train s", "target acc vs first (95% CI, p)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(result["runs"]):
        vs = "(first)" if i == 0 else _diff(r.get("vs_first", {}).get("target_test"), "accuracy")
        lines.append(f"| {Path(r['run']).name} | {r['method']} | {r['model']} | {r['finetune']} | "
                     f"{r['params_trainable']:,} | {_pct(r['source_accuracy'])} | {_pct(r['source_macro_f1'])} | "
                     f"{_pct(r['target_accuracy'])} | {_pct(r['target_macro_f1'])} | {r['train_seconds']:.0f} | {vs} |")
    lines.append("")
    for r in result["runs"][1:]:
        for split, t in r.get("vs_first", {}).items():
            lines.append(f"- {Path(r['run']).name} − first, {split} ({t['shared_examples']} shared "
                         f"examples): accuracy {_diff(t, 'accuracy')}; macro-F1 {_diff(t, 'macro_f1')}")
    lines += ["", "Paired bootstrap over the shared examples (2,000 resamples); a 95% interval that excludes 0 "
              "(p < 0.05) means the difference is unlikely to be resampling noise on this test set."]
    return "\n".join(lines) + "\n"


def markdown_to_html(text: str, title: str, images: list[str] = ()) -> str:
    """A small, self-contained page from our Markdown tables and bullets."""
    body, rows = [], []

    def flush():
        if rows:
            th = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><tr>{th}</tr>{trs}</table>")
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-:"):
                rows.append(cells)
            continue
        flush()
        if line.strip():
            body.append(f"<p>{html.escape(line.lstrip('- '))}</p>")
    flush()
    body += images
    from adapt.report_html import STYLE

    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


# ----------------------------------------------------------------------------------------------------------
# Benchmark sweeps (source x target pairs).

DOMAINS = {"B": "books", "D": "dvd", "E": "electronics", "K": "kitchen"}
ALL_PAIRS = [f"{s}:{t}" for s in DOMAINS for t in DOMAINS if s != t]


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*/*.seed*.json"))


def collect(out: Path) -> dict[str, dict[str, list[float]]]:
    """{method(+variant): {pair: [target accuracy per seed]}} from every result file under `out`."""
    table: dict[str, dict[str, list[float]]] = {}
    for path in sorted(out.glob("*/*.seed*.json")):
        rec = json.loads(path.read_text())
        name = rec["method"] + (f"+{rec['variant']}" if rec.get("variant") else "")
        table.setdefault(name, {}).setdefault(rec["pair"], []).append(rec["target_accuracy"])
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
    head = ["method", *[p.replace(":", "→") for p in ALL_PAIRS], "avg (12)", "avg (run pairs)", "vs source_only"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for method, row in rows.items():
        cells = []
        for p in ALL_PAIRS:
            c = row["pairs"].get(p)
            cells.append("" if c is None else f"{100 * c['mean']:.1f}" + (f" ± {100 * c['std']:.1f}" if c["seeds"] > 1 else ""))
        vs = row.get("vs_source_only")
        vs_text = (f"{vs['mean_gain_points']:+.2f} pts, better on {vs['better']}/{vs['pairs']}" if vs and vs["pairs"] else "")
        avg = f"{100 * row['average']:.1f}" if row["average"] is not None else "–"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {avg} | {100 * row['average_over_run_pairs']:.1f} | {vs_text} |")
    seeds = sorted({c["seeds"] for row in rows.values() for c in row["pairs"].values()})
    lines.append(f"\nTarget test accuracy (%), mean ± std over seeds ({'/'.join(map(str, seeds))} seed(s) per cell).")
    return "\n".join(lines) + "\n"


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
    tmp = path.with_name(path.stem + ".tmp.png")
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
        import base64

        text = write_pair_table(paths[0], out)
        png = (out or paths[0]) / "heatmap.png"
        if png.exists():
            img = f'<img alt="heatmap" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
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
