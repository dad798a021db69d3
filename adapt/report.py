"""Reports: `report.json` (the record) and `report.md` (for people), both pure functions of the run directory.

    python -m adapt.report RUN_DIR      # rebuild report.md from report.json and train_log.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapt.errors import AdaptError, cli_entry
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
    lines = ["| split | role | domain | n | accuracy | macro-F1 | note |", "|---|---|---|---:|---:|---:|---|"]
    order = sorted(splits, key=lambda n: (splits[n].get("kind") != "test", splits[n]["role"] != "source", n))
    for name in order:
        s = splits[name]
        lines.append(
            f"| {name} | {s['role']} | {s['domain']} | {s['n']} | {_pct(s['accuracy'])} | {_pct(s['macro_f1'])} | {s.get('note', '')} |"
        )
    return lines


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


def render_markdown(report: dict, log: list[dict]) -> str:
    m, s, t, env = report["model"], report["summary"], report["timing"], report["environment"]
    lines = [f"# {report.get('name', 'run')}: {report['method']} ({m['finetune']})", ""]
    if "transfer_gap" in s:
        lines += [
            f"Source test accuracy **{_pct(s['source_accuracy'])}**, target test accuracy **{_pct(s['target_accuracy'])}**: "
            f"the model loses **{100 * s['transfer_gap']:.1f} points** when moved to the target domain.", ""]
    lines += ["| | accuracy | macro-F1 |", "|---|---:|---:|",
              f"| source (test) | {_pct(s.get('source_accuracy'))} | {_pct(s.get('source_macro_f1'))} |",
              f"| target (test) | {_pct(s.get('target_accuracy'))} | {_pct(s.get('target_macro_f1'))} |", ""]
    lines += ["## Splits", "", *_split_table(report["splits"]), "", "## Confusion matrices", "",
              *_confusions(report["splits"], report["labels"]), "## Training", "", *_training(report, log), "",
              *_method(report)]
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


def write_reports(run: RunDir, report: dict) -> None:
    """report.md first, report.json last: report.json marks a finished run."""
    report = {**report, "summary": summarize(report["splits"])}
    atomic_write_text(run.report_md, render_markdown(report, read_jsonl(run.train_log)))
    atomic_write_json(run.report_json, report)


def load_report(run: RunDir) -> dict:
    if not run.report_json.exists():
        raise AdaptError(f"{run.root} has no report.json: it is not a finished run directory")
    return json.loads(run.report_json.read_text())


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapt.report", description="Rebuild report.md from a run directory.")
    p.add_argument("run_dir", type=Path)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    run = RunDir(args.run_dir)
    write_reports(run, load_report(run))
    print(run.report_md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
