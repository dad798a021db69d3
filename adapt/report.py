"""Reports: `report.json` (the record) and `report.md` (for people), both pure functions of the run directory.

    python -m adapt.report RUN_DIR                         # rebuild report.md / report.html / report.json
    python -m adapt.report compare RUN_DIR RUN_DIR ...     # compare runs (see adapt.compare)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from adapt.errors import AdaptError, cli_entry
from adapt.metrics import bootstrap_ci, calibration
from adapt.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl

SCHEMA_VERSION = 1


def summarize(splits: dict) -> dict:
    """Source and target metrics from the *test* splits only (mean when a role has several, e.g. added with
    `adapt.evaluate_run --test`); `transfer_gap` = source accuracy - target accuracy."""
    out = {}
    for role in ("source", "target"):
        tests = [s for s in splits.values() if s["role"] == role and s.get("kind", "test") == "test"]
        if tests:
            out[f"{role}_accuracy"] = sum(s["accuracy"] for s in tests) / len(tests)
            out[f"{role}_macro_f1"] = sum(s["macro_f1"] for s in tests) / len(tests)
    if "source_accuracy" in out and "target_accuracy" in out:
        out["transfer_gap"] = out["source_accuracy"] - out["target_accuracy"]
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _split_table(splits: dict) -> list[str]:
    lines = ["| split | role | domain | n | accuracy [95% CI] | macro-F1 [95% CI] | ECE | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for name in split_order(splits):
        s = splits[name]
        ece = f"{s['calibration']['ece']:.3f}" if "calibration" in s else "–"
        lines.append(f"| {name} | {s['role']} | {s['domain']} | {s['n']} | {_with_ci(s, 'accuracy')} | "
                     f"{_with_ci(s, 'macro_f1')} | {ece} | {s.get('note', '')} |")
    return lines


def split_order(splits: dict) -> list[str]:
    """Test splits first, source before target."""
    return sorted(splits, key=lambda n: (splits[n].get("kind") != "test", splits[n]["role"] != "source", n))


def _with_ci(s: dict, metric: str) -> str:
    ci = s.get("ci95", {}).get(metric)
    return _pct(s[metric]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")


def _confusions(splits: dict, labels: list[str]) -> list[str]:
    lines = []
    for name, s in splits.items():
        if s.get("kind") != "test":
            continue
        f1 = ", ".join(f"{k} {_pct(v)}" for k, v in s["per_class_f1"].items())
        lines += [f"**{name}** — per-class F1: {f1}", "", "| true \\ predicted | " + " | ".join(labels) + " |",
                  "|---|" + "---:|" * len(labels)]
        lines += [f"| {labels[i]} | " + " | ".join(str(c) for c in row) + " |" for i, row in enumerate(s["confusion"])]
        lines.append("")
    return lines


def _training(report: dict, log: list[dict]) -> list[str]:
    tr = report.get("training", {})
    lines = []
    if tr:
        sel = tr.get("selection", {})
        lines.append(
            f"{tr.get('optimizer_steps', '?')} optimizer steps over {tr.get('epochs_run', '?')} epoch(s); "
            f"effective batch {tr.get('effective_batch_size', '?')}. Model selection on **{sel.get('split', '–')}** "
            f"({sel.get('metric', '–')}): best {_pct(sel.get('best_value'))} at step {sel.get('best_step', '–')}"
            + ("; stopped early." if tr.get("stopped_early") else ".")
        )
        if sel.get("split", "").startswith("target"):
            lines.append("")
            lines.append("Note: selection used labelled **target** data, so target results are not purely unsupervised.")
    losses = [r for r in log if "loss" in r]
    if losses:
        first, last = losses[0], losses[-1]
        lines += ["", f"Training loss {first['loss']:.4f} (step {first['global_step']}) → {last['loss']:.4f} "
                  f"(step {last['global_step']}); full curve in `train_log.jsonl`."]
    return lines


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _method(report: dict) -> list[str]:
    """The method's own record: per phase, every logged quantity from its first to its last logged value."""
    ms = report.get("method_summary") or {}
    phases = ms.get("phases", [])
    if not phases:
        return []
    lines = ["## Method", "", f"`{report['method']}`, {len(phases)} phase(s); full curves in `train_log.jsonl`.", "",
             "| phase | last step | logged (first → last) | best selection score |", "|---|---:|---|---:|"]
    for p in phases:
        logged = "; ".join(f"{k} {_fmt(p['first'][k])} → {_fmt(v)}" for k, v in p.get("last", {}).items() if k != "lr")
        best = next((f"{k[5:]} {_pct(v)}" for k, v in p.items() if k.startswith("best_") and k.endswith("macro_f1")), "–")
        lines.append(f"| {p.get('name', p['phase'])} | {p.get('last_step', '–')} | {logged} | {best} |")
    lines.append("")
    if "mlm_head" in ms:
        lines += [f"MLM head: {ms['mlm_head']}.", ""]
    for r in ms.get("rounds", []):
        lines.append(f"- round {r['round']}: {r['kept']} pseudo-labels kept of {r['candidates']} (threshold "
                     f"{r['threshold']}; confident per class {r['confident_per_class']}, kept per class "
                     f"{r['kept_per_class']}, predicted per class {r['predicted_per_class']})")
    if ms.get("rounds"):
        lines.append("")
    if "l2sp" in ms:
        lines += [f"L2-SP weight {ms['l2sp']['weight']} on {ms['l2sp']['anchored_tensors']} pretrained tensors.", ""]
    return lines


def diagnostics_lines(d: dict) -> list[str]:
    """The domain-shift diagnostics with a sentence on how to read them."""
    lines = []
    pad = d.get("proxy_a_distance", {})
    if pad:
        parts = ", ".join(f"{k} encoder {v['pad']:.2f} (domain classifier error {100 * v['error']:.1f}%)"
                          for k, v in pad.items())
        lines += [f"- **Proxy A-distance** between {d['source_split']} and {d['target_split']} "
                  f"({d['examples_per_domain']} texts each, [CLS] representations): {parts}. It runs from 0 (a linear "
                  "classifier cannot tell the domains apart) to 2 (it always can); adaptation aims to lower it for the "
                  "trained encoder without losing source accuracy."]
    vocab = d.get("vocabulary")
    if vocab:
        lines += [f"- **Vocabulary overlap** (word types, {vocab['source']} vs {vocab['target']}): Jaccard "
                  f"{vocab['jaccard']:.3f}; {100 * vocab['target_token_coverage']:.1f}% of the target's running words "
                  "occur in the source texts. Lower overlap means more target words the source never taught the model."]
    return lines


def gap_sentence(s: dict) -> str:
    """The summary's lead sentence (Markdown), the source-to-target gap read as a change: a target that scores
    higher is a gain, not a negative loss."""
    gap = s["transfer_gap"]
    return (f"Source test accuracy **{_pct(s['source_accuracy'])}**, target test accuracy **{_pct(s['target_accuracy'])}**: "
            f"the model {'loses' if gap >= 0 else 'gains'} **{abs(100 * gap):.1f} points** when moved to the target domain.")


def render_markdown(report: dict, log: list[dict], diagnostics: dict | None = None) -> str:
    m, s, t, env = report["model"], report["summary"], report["timing"], report["environment"]
    lines = [f"# {report.get('name', 'run')}: {report['method']} ({m['finetune']})", ""]
    if "transfer_gap" in s:
        lines += [gap_sentence(s), ""]
    lines += ["| | accuracy | macro-F1 |", "|---|---:|---:|",
              f"| source (test) | {_pct(s.get('source_accuracy'))} | {_pct(s.get('source_macro_f1'))} |",
              f"| target (test) | {_pct(s.get('target_accuracy'))} | {_pct(s.get('target_macro_f1'))} |", ""]
    lines += ["## Splits", "", *_split_table(report["splits"]), "", "## Confusion matrices", "",
              *_confusions(report["splits"], report["labels"]), "## Training", "", *_training(report, log), "",
              *_method(report)]
    if diagnostics:
        lines += ["## Domain shift", "", *diagnostics_lines(diagnostics), ""]
    lines += [
        "## Model", "",
        f"- encoder: `{m['name_or_path']}` (loaded from `{m['resolved_path']}`)",
        f"- fine-tuning: `{m['finetune']}`; trainable parameters {m['params_trainable']:,} of {m['params_total']:,} "
        f"({100 * m['params_trainable'] / max(1, m['params_total']):.2f}%)", "",
        "## Timing and environment", "",
        f"- training: {t['train_seconds']:.1f} s, {t['train_samples_per_second']:.1f} samples/s, "
        f"{t.get('train_tokens_per_second', 0):,.0f} real tokens/s, {100 * t.get('train_padding_fraction', 0):.1f}% padding; "
        f"evaluation {t['eval_samples_per_second']:.1f} samples/s",
        f"- {env['num_processes']} process(es) on {env['device']}, {env['threads']} threads, precision "
        f"`{env['mixed_precision']}` ({env.get('mixed_precision_source', '')})",
        f"- git commit `{env['git_commit']}`; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), "",
    ]
    return "\n".join(lines)


def add_uncertainty(run: RunDir, report: dict) -> dict:
    """Bootstrap 95% intervals and calibration (ECE, reliability bins) for every split whose predictions file is in
    the run directory: computed from the files alone, so `python -m adapt.report` can add them to any run."""
    labels = {name: i for i, name in enumerate(report["labels"])}
    splits = {}
    for name, entry in report["splits"].items():
        path = run.predictions / f"{name}.jsonl"
        if path.exists():
            rows = read_jsonl(path)
            y = np.array([labels[r["label"]] for r in rows])
            pred = np.array([labels[r["pred"]] for r in rows])
            probs = np.array([r["probs"] for r in rows])
            entry = {**entry, "ci95": bootstrap_ci(y, pred, len(labels)), "calibration": calibration(y, probs)}
        splits[name] = entry
    return {**report, "splits": splits}


def write_reports(run: RunDir, report: dict) -> dict:
    """report.md and report.html first, report.json last: report.json marks a finished run.

    Returns the report as written (with the bootstrap intervals and calibration added from the predictions)."""
    from adapt.report_html import render_html  # matplotlib is imported only when a report is written

    report = add_uncertainty(run, {**report, "summary": summarize(report["splits"])})
    log = read_jsonl(run.train_log) if run.train_log.exists() else []
    diagnostics = json.loads(run.diagnostics.read_text()) if run.diagnostics.exists() else None
    atomic_write_text(run.report_md, render_markdown(report, log, diagnostics))
    atomic_write_text(run.report_html, render_html(report, log, diagnostics))
    atomic_write_json(run.report_json, report)
    return report


def load_report(run: RunDir) -> dict:
    if not run.report_json.exists():
        raise AdaptError(f"{run.root} has no report.json: it is not a finished run directory")
    return json.loads(run.report_json.read_text())


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adapt.report",
        description="Rebuild report.md, report.html and report.json of a run directory from its files alone; or "
                    "`compare RUN_DIR RUN_DIR ... [--out DIR]` (a paired bootstrap against the first run), or "
                    "`compare SWEEP_DIR` (a benchmark sweep's per-pair table and heatmap).")
    p.add_argument("run_dir", type=Path)
    return p


def make_compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapt.report compare", description=__doc__)
    p.add_argument("runs", type=Path, nargs="+", help="run directories (the first is the baseline), or a sweep directory")
    p.add_argument("--out", type=Path, help="write compare.md / compare.html / compare.json (or the sweep table) here")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        from adapt.compare import compare_main

        args = make_compare_parser().parse_args(argv[1:])
        print(compare_main(args.runs, args.out))
        return 0
    args = make_parser().parse_args(argv)
    run = RunDir(args.run_dir)
    write_reports(run, load_report(run))
    print(run.report_md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
