"""`report.html`: the run's report as one self-contained page (plots embedded as PNG data URIs, no server, no
external files), built from report.json, train_log.jsonl and diagnostics.json alone.

Plots: accuracy and macro-F1 per split with 95% intervals and the source->target gap marked; confusion matrices;
every quantity the method logs against the step (losses, learning rate, lambda, dev scores); a reliability
diagram per split with its expected calibration error.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from adapt.reporting.context import report_context, split_order  # noqa: E402
from adapt.reporting.templating import render_template  # noqa: E402


def _png(fig) -> str:
    """The figure as a PNG data URI, for an <img> that needs no file beside the page."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def metrics_plot(report: dict) -> str:
    splits = report["splits"]
    names = split_order(splits)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names) + 2), 3.4))
    width = 0.38
    for k, (metric, color) in enumerate((("accuracy", "#4c72b0"), ("macro_f1", "#dd8452"))):
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        vals = [100 * splits[n][metric] for n in names]
        err = [[100 * (splits[n][metric] - splits[n]["ci95"][metric][0]) for n in names],
               [100 * (splits[n]["ci95"][metric][1] - splits[n][metric]) for n in names]] \
            if all("ci95" in splits[n] for n in names) else None
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=metric.replace("_", "-"), color=color)
    s = report["summary"]
    if "transfer_gap" in s:
        ax.axhline(100 * s["source_accuracy"], color="#4c72b0", ls=":", lw=1)
        ax.axhline(100 * s["target_accuracy"], color="#c44e52", ls=":", lw=1)
        # Above the bars, on a white box: the dotted lines mark source and target test accuracy.
        ax.text(0.99, 0.98, f"source - target gap {100 * s['transfer_gap']:+.1f} pts", transform=ax.transAxes,
                ha="right", va="top", color="#c44e52", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9})
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("%")
    ax.set_ylim(max(0, min(100 * splits[n]["macro_f1"] for n in names) - 15), 104)  # room for the gap label
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Accuracy and macro-F1 per split (95% bootstrap intervals)", fontsize=10)
    return _png(fig)


def confusion_plots(report: dict) -> str | None:
    tests = [n for n in split_order(report["splits"]) if report["splits"][n].get("kind") == "test"]
    if not tests:
        return None
    labels = report["labels"]
    fig, axes = plt.subplots(1, len(tests), figsize=(3.3 * len(tests), 3.1), squeeze=False)
    for ax, name in zip(axes[0], tests):
        m = report["splits"][name]["confusion"]
        ax.imshow(m, cmap="Blues")
        top = max(max(row) for row in m) or 1
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_title(name, fontsize=9)
    axes[0][0].set_ylabel("true")  # once: beside the next panel it would run into the first one's labels
    fig.tight_layout()
    return _png(fig)


def curve_plots(log: list[dict]) -> str | None:
    skip = {"phase", "global_step", "epoch", "best", "pseudo_labels"}
    keys = sorted({k for r in log for k, v in r.items() if k not in skip and isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.5 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["global_step"], r[key]) for r in log if key in r and "global_step" in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None, lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def reliability_plots(report: dict) -> str | None:
    names = [n for n in split_order(report["splits"]) if "calibration" in report["splits"][n]]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.1 * len(names), 3.1), squeeze=False)
    for ax, name in zip(axes[0], names):
        cal = report["splits"][name]["calibration"]
        bins = cal["bins"]
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins],
               width=[b["hi"] - b["lo"] for b in bins], alpha=0.7, edgecolor="black", label="accuracy")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#c44e52", ms=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_title(f"{name}: ECE {cal['ece']:.3f}", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def render_html(report: dict, log: list[dict], diagnostics: dict | None = None) -> str:
    plots = {"metrics": metrics_plot(report), "confusion": confusion_plots(report), "reliability": reliability_plots(report),
             "curves": curve_plots(log)}
    return render_template("report.html.j2", **report_context(report, log, diagnostics), plots=plots)
