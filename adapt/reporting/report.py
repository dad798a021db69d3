"""Reports: `report.json` (the record), `report.md` and `report.html` (for people, from the templates
`report.md.j2` and `report.html.j2`), all pure functions of the run directory, so `adapt report RUN_DIR` rebuilds
them without retraining."""

from __future__ import annotations

import json

import numpy as np

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json, atomic_write_text, read_jsonl
from adapt.core.rundir import RunDir
from adapt.evaluation.label_free import alarms
from adapt.evaluation.metrics import bootstrap_ci, calibration
from adapt.reporting.context import report_context
from adapt.reporting.templating import render_template

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


def render_markdown(report: dict, log: list[dict], diagnostics: dict | None = None) -> str:
    return render_template("report.md.j2", **report_context(report, log, diagnostics))


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


def _log_and_diagnostics(run: RunDir) -> tuple[list[dict], dict | None]:
    log = read_jsonl(run.train_log) if run.train_log.exists() else []
    return log, json.loads(run.diagnostics.read_text()) if run.diagnostics.exists() else None


def render_run_markdown(run: RunDir, report: dict) -> str:
    """report.md of `run` for `report` (e.g. the report with its paths made portable, for the Hub)."""
    return render_markdown(report, *_log_and_diagnostics(run))


def write_reports(run: RunDir, report: dict) -> dict:
    """report.md and report.html first, report.json last: report.json marks a finished run.

    Returns the report as written (with the bootstrap intervals and calibration added from the predictions)."""
    from adapt.reporting.html import render_html  # matplotlib is imported only when a report is written

    log, diagnostics = _log_and_diagnostics(run)
    # Alarms from report.json's label-free record and the log alone, so a rebuilt report raises the same ones.
    report = add_uncertainty(run, {**report, "summary": summarize(report["splits"]),
                                   "alarms": alarms(report.get("label_free"), log,
                                                   report.get("label_free_on"))})
    atomic_write_text(run.report_md, render_markdown(report, log, diagnostics))
    atomic_write_text(run.report_html, render_html(report, log, diagnostics))
    atomic_write_json(run.report_json, report)
    return report


def load_report(run: RunDir) -> dict:
    if not run.report_json.exists():
        raise AdaptError(f"{run.root} has no report.json: it is not a finished run directory")
    return json.loads(run.report_json.read_text())
