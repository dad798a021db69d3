"""`report.html`: the run's report as one self-contained page (plots embedded as PNG data URIs, no server, no
external files), built from report.json, train_log.jsonl and diagnostics.json alone.

Plots: accuracy and macro-F1 per split with 95% intervals and the source->target gap marked; confusion matrices;
every quantity the method logs against the step (losses, learning rate, lambda, dev scores); a reliability
diagram per split with its expected calibration error.
"""

from __future__ import annotations

import base64
import html
import io
import re

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from adapt.report import _method, _pct, diagnostics_lines, gap_sentence, split_order  # noqa: E402

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f8fa; }
.lead { font-size: 1.15em; } .muted { color: #656d76; font-size: .9em; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; margin: .4em 0; }
code { background: #f6f8fa; padding: .1em .3em; border-radius: 4px; }
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


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


def confusion_plots(report: dict) -> str:
    tests = [n for n in split_order(report["splits"]) if report["splits"][n].get("kind") == "test"]
    if not tests:
        return ""
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


def curve_plots(log: list[dict]) -> str:
    skip = {"phase", "global_step", "epoch", "best", "pseudo_labels"}
    keys = sorted({k for r in log for k, v in r.items() if k not in skip and isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    if not keys:
        return ""
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


def reliability_plots(report: dict) -> str:
    names = [n for n in split_order(report["splits"]) if "calibration" in report["splits"][n]]
    if not names:
        return ""
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


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _ci(s: dict, metric: str) -> str:
    ci = s.get("ci95", {}).get(metric)
    return _pct(s[metric]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` and **bold** spans as HTML."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _markdown_table(lines: list[str]) -> str:
    """The Method section's Markdown table and bullets, as HTML."""
    out, rows = [], []
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-:"):
                rows.append(cells)
            continue
        if rows:
            out.append(_table(rows[0], rows[1:]))
            rows = []
        if line.startswith("## ") or not line:
            continue
        out.append(f"<p>{_inline(line.lstrip('- '))}</p>")
    if rows:
        out.append(_table(rows[0], rows[1:]))
    return "\n".join(out)


def render_html(report: dict, log: list[dict], diagnostics: dict | None = None) -> str:
    m, s, t, env = report["model"], report["summary"], report["timing"], report["environment"]
    title = f"{report.get('name', 'run')}: {report['method']} ({m['finetune']})"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if "transfer_gap" in s:
        parts.append(f"<p class='lead'>{_inline(gap_sentence(s))}</p>")
    splits = report["splits"]
    parts += ["<h2>Results</h2>", _table(
        ["split", "role", "domain", "n", "accuracy [95% CI]", "macro-F1 [95% CI]", "ECE"],
        [[n, splits[n]["role"], splits[n]["domain"], splits[n]["n"], _ci(splits[n], "accuracy"),
          _ci(splits[n], "macro_f1"), f"{splits[n]['calibration']['ece']:.3f}" if "calibration" in splits[n] else "–"]
         for n in split_order(splits)]), metrics_plot(report),
        "<p class='muted'>Intervals: 1,000 bootstrap resamples of each split's examples.</p>",
        "<h2>Confusion matrices</h2>", confusion_plots(report),
        "<h2>Calibration</h2>", reliability_plots(report),
        "<p class='muted'>Bars: accuracy of the predictions in each confidence bin; the diagonal is perfect "
        "calibration; ECE is the bin-weighted mean gap.</p>"]
    if diagnostics:
        items = "".join(f"<li>{_inline(line[2:])}</li>" for line in diagnostics_lines(diagnostics))
        parts += ["<h2>Domain shift</h2>", f"<ul>{items}</ul>"]
    parts += ["<h2>Training</h2>", curve_plots(log)]
    method = _method(report)
    if method:
        parts += ["<h2>Method</h2>", _markdown_table(method)]
    parts += ["<h2>Model and environment</h2>", "<ul>",
              f"<li>encoder <code>{html.escape(m['name_or_path'])}</code>, fine-tuning <code>{m['finetune']}</code>, "
              f"{m['params_trainable']:,} of {m['params_total']:,} parameters trained</li>",
              f"<li>training {t['train_seconds']:.1f} s ({t['train_samples_per_second']:.1f} samples/s); evaluation "
              f"{t['eval_samples_per_second']:.1f} samples/s</li>",
              f"<li>{env['num_processes']} process(es) on {html.escape(env['device'])}, precision "
              f"<code>{env['mixed_precision']}</code>; git <code>{env['git_commit'][:12]}</code></li>", "</ul>"]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")
