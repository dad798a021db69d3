"""The packaged templates (`adapt/reporting/templates/`): every document renders from a minimal report with
StrictUndefined, report.md keeps its exact bytes, only HTML is escaped, and Markdown becomes HTML through one
converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jinja2 import UndefinedError

from adapt.reporting.compare import compare_markdown, markdown_to_html, pair_markdown, summarise
from adapt.reporting.context import report_context
from adapt.reporting.html import render_html
from adapt.reporting.markdown import to_html
from adapt.reporting.model_card import build_model_card
from adapt.reporting.report import render_markdown
from adapt.reporting.templating import environment, render_template


def full_report() -> tuple[dict, list[dict], dict]:
    """A report with every section: the gap, intervals, selection on target data, a method record, diagnostics."""
    ci = {"accuracy": [0.75, 0.95], "macro_f1": [0.7, 0.9]}
    bins = [{"lo": 0.5, "hi": 0.75, "accuracy": 0.6, "confidence": 0.65}, {"lo": 0.75, "hi": 1.0, "accuracy": 0.9, "confidence": 0.85}]
    split = {"kind": "test", "n": 40, "accuracy": 0.85, "macro_f1": 0.8, "ci95": ci, "calibration": {"ece": 0.04, "bins": bins},
             "per_class_f1": {"neg": 0.8, "pos": 0.8}, "confusion": [[18, 2], [4, 16]]}
    report = {
        "name": "golden", "method": "self_training", "labels": ["neg", "pos"],
        "splits": {"source_test": {**split, "role": "source", "domain": "books"},
                   "target_test": {**split, "role": "target", "domain": "kitchen", "accuracy": 0.7,
                                   "ci95": {"accuracy": [0.55, 0.85], "macro_f1": [0.7, 0.9]}},
                   "target_dev": {**split, "kind": "dev", "role": "target", "domain": "kitchen", "note": "labelled"}},
        "summary": {"source_accuracy": 0.85, "source_macro_f1": 0.8, "target_accuracy": 0.7, "target_macro_f1": 0.8,
                    "transfer_gap": 0.15},
        "training": {"optimizer_steps": 30, "epochs_run": 3, "effective_batch_size": 8, "stopped_early": True,
                     "selection": {"split": "target_dev", "metric": "macro_f1", "best_value": 0.8, "best_step": 20}},
        "method_summary": {"phases": [{"phase": "source", "last_step": 30, "first": {"loss": 0.69, "lr": 1e-3},
                                       "last": {"loss": 0.2, "lr": 0.0}, "best_target_dev_macro_f1": 0.8}],
                           "rounds": [{"round": 1, "kept": 10, "candidates": 40, "threshold": 0.9,
                                       "confident_per_class": [6, 5], "kept_per_class": [5, 5],
                                       "predicted_per_class": [20, 20]}],
                           "l2sp": {"weight": 0.01, "anchored_tensors": 39}},
        "model": {"name_or_path": "tiny-bert", "resolved_path": "/models/tiny-bert", "finetune": "full",
                  "params_trainable": 21_410, "params_total": 21_410},
        "timing": {"train_seconds": 1.25, "train_samples_per_second": 800.0, "train_tokens_per_second": 12345.6,
                   "train_padding_fraction": 0.25, "eval_samples_per_second": 1500.0},
        "environment": {"num_processes": 1, "device": "cpu", "threads": 2, "mixed_precision": "no",
                        "mixed_precision_source": "recipe", "git_commit": "0123456789abcdef", "versions": {"torch": "2.13"}},
    }
    log = [{"global_step": 1, "loss": 0.69}, {"global_step": 30, "loss": 0.2}]
    diagnostics = {"source_split": "source_test", "target_split": "target_test", "examples_per_domain": 40,
                   "proxy_a_distance": {"pretrained": {"pad": 1.2, "error": 0.2}, "trained": {"pad": 0.8, "error": 0.3}},
                   "vocabulary": {"source": "source_train", "target": "target_unlabeled", "jaccard": 0.5,
                                  "target_token_coverage": 0.9}}
    return report, log, diagnostics


# report.md of `full_report()` as the f-string renderer wrote it before the templates: the template keeps every byte.
GOLDEN_MD = r"""# golden: self_training (full)

Source test accuracy **85.0**, target test accuracy **70.0**: the model loses **15.0 points** when moved to the target domain.

| | accuracy | macro-F1 |
|---|---:|---:|
| source (test) | 85.0 | 80.0 |
| target (test) | 70.0 | 80.0 |

## Splits

| split | role | domain | n | accuracy [95% CI] | macro-F1 [95% CI] | ECE | note |
|---|---|---|---:|---:|---:|---:|---|
| source_test | source | books | 40 | 85.0 [75.0, 95.0] | 80.0 [70.0, 90.0] | 0.040 |  |
| target_test | target | kitchen | 40 | 70.0 [55.0, 85.0] | 80.0 [70.0, 90.0] | 0.040 |  |
| target_dev | target | kitchen | 40 | 85.0 [75.0, 95.0] | 80.0 [70.0, 90.0] | 0.040 | labelled |

## Confusion matrices

**source_test** — per-class F1: neg 80.0, pos 80.0

| true \ predicted | neg | pos |
|---|---:|---:|
| neg | 18 | 2 |
| pos | 4 | 16 |

**target_test** — per-class F1: neg 80.0, pos 80.0

| true \ predicted | neg | pos |
|---|---:|---:|
| neg | 18 | 2 |
| pos | 4 | 16 |

## Training

30 optimizer steps over 3 epoch(s); effective batch 8. Model selection on **target_dev** (macro_f1): best 80.0 at step 20; stopped early.

Note: selection used labelled **target** data, so target results are not purely unsupervised.

Training loss 0.6900 (step 1) → 0.2000 (step 30); full curve in `train_log.jsonl`.

## Method

`self_training`, 1 phase(s); full curves in `train_log.jsonl`.

| phase | last step | logged (first → last) | best selection score |
|---|---:|---|---:|
| source | 30 | loss 0.69 → 0.2 | target_dev_macro_f1 80.0 |

- round 1: 10 pseudo-labels kept of 40 (threshold 0.9; confident per class [6, 5], kept per class [5, 5], predicted per class [20, 20])

L2-SP weight 0.01 on 39 pretrained tensors.

## Domain shift

- **Proxy A-distance** between source_test and target_test (40 texts each, [CLS] representations): pretrained encoder 1.20 (domain classifier error 20.0%), trained encoder 0.80 (domain classifier error 30.0%). It runs from 0 (a linear classifier cannot tell the domains apart) to 2 (it always can); adaptation aims to lower it for the trained encoder without losing source accuracy.
- **Vocabulary overlap** (word types, source_train vs target_unlabeled): Jaccard 0.500; 90.0% of the target's running words occur in the source texts. Lower overlap means more target words the source never taught the model.

## Model

- encoder: `tiny-bert` (loaded from `/models/tiny-bert`)
- fine-tuning: `full`; trainable parameters 21,410 of 21,410 (100.00%)

## Timing and environment

- training: 1.2 s, 800.0 samples/s, 12,346 real tokens/s, 25.0% padding; evaluation 1500.0 samples/s
- 1 process(es) on cpu, 2 threads, precision `no` (recipe)
- git commit `0123456789abcdef`; torch 2.13
"""


def minimal_report() -> dict:
    """Only what every report has: no gap, intervals, calibration, training record, method record or diagnostics."""
    split = {"kind": "test", "n": 10, "accuracy": 0.6, "macro_f1": 0.5, "per_class_f1": {"neg": 0.5, "pos": 0.5},
             "confusion": [[3, 2], [2, 3]]}
    return {
        "method": "source_only", "labels": ["neg", "pos"],
        "splits": {"source_test": {**split, "role": "source", "domain": "books"}},
        "summary": {"source_accuracy": 0.6, "source_macro_f1": 0.5},
        "model": {"name_or_path": "/models/tiny", "resolved_path": "/models/tiny", "finetune": "full",
                  "params_trainable": 10, "params_total": 10},
        "timing": {"train_seconds": 1.0, "train_samples_per_second": 1.0, "eval_samples_per_second": 1.0},
        "environment": {"num_processes": 1, "device": "cpu", "threads": 1, "mixed_precision": "no", "git_commit": "abc",
                        "versions": {}},
    }


def test_report_md_is_byte_identical_to_the_pre_template_renderer():
    assert render_markdown(*full_report()) == GOLDEN_MD


def test_every_template_renders_a_minimal_report(tmp_path):
    report = minimal_report()
    recipe = {"data": {"source": {"train": "/d/books.jsonl", "test": "/d/books_test.jsonl"}, "target": {},
                       "max_length": 32, "truncation": "head"},
              "model": {"name_or_path": "/models/tiny"}, "method": {"name": "source_only"}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    rendered = {
        "report.md.j2": render_markdown(report, []),
        "report.html.j2": render_html(report, []),
        "model_card.md.j2": build_model_card(tmp_path, repo_id="me/tiny", adapter=False, license="mit").content,
        "document.html.j2": markdown_to_html("| a | b |\n|---|---|\n| 1 | 2 |\n", "Run comparison"),
        "compare.md.j2": compare_markdown({"runs": [
            {"run": "/runs/a", "method": "source_only", "model": "tiny", "finetune": "full", "params_trainable": 10,
             "source_accuracy": 0.6, "source_macro_f1": 0.5, "target_accuracy": None, "target_macro_f1": None,
             "train_seconds": 1.0}]}),
        "table.md.j2": pair_markdown(summarise({"source_only": {"B:D": [0.8]}})),
    }
    documents = {name for name in environment().list_templates() if not name.startswith("_") and name != "page.html.j2"}
    assert documents == set(rendered)  # a new document template gets a minimal render here
    assert "## Method" not in rendered["report.md.j2"] and "## Domain shift" not in rendered["report.md.j2"]
    assert "| source (test) | 60.0 | 50.0 |" in rendered["report.md.j2"]
    assert "<h2>Method</h2>" not in rendered["report.html.j2"] and rendered["report.html.j2"].count("<img") == 2  # metrics, confusion
    assert "(a gap of" not in rendered["model_card.md.j2"] and "| source_test | source | books | 10 | 60.0 | 50.0 |" \
        in rendered["model_card.md.j2"]
    assert "<table>" in rendered["document.html.j2"] and "<h1>Run comparison</h1>" in rendered["document.html.j2"]
    assert "| a | source_only | tiny | full | 10 | 60.0 | 50.0 | – | – | 1 | (first) | – |\n\n\nPaired" in rendered["compare.md.j2"]
    assert "Seed agreement" not in rendered["compare.md.j2"]  # explained only when a run has it
    assert "| source_only | 80.0 |" + "  |" * 11 + " – | 80.0 |  |\n\nTarget" in rendered["table.md.j2"]


def test_a_missing_context_value_is_an_error():
    context = report_context(*full_report())
    del context["loss"]
    with pytest.raises(UndefinedError, match="loss"):
        render_template("report.md.j2", **context)


def test_only_html_templates_escape():
    report, log, diagnostics = full_report()
    report["splits"]["target_test"]["domain"] = "<i>kitchen</i> & co"
    diagnostics["vocabulary"]["target"] = "<b>target</b>"
    md, page = render_markdown(report, log, diagnostics), render_html(report, log, diagnostics)
    assert "| target_test | target | <i>kitchen</i> & co |" in md and "vs <b>target</b>)" in md
    assert "<i>" not in page and "<b>target" not in page
    assert "&lt;i&gt;kitchen&lt;/i&gt; &amp; co" in page and "vs &lt;b&gt;target&lt;/b&gt;)" in page


def test_report_html_sections_from_markdown():
    page = render_html(*full_report())
    assert '<div class="lead"><p>Source test accuracy <strong>85.0</strong>' in page
    assert "<li><strong>Proxy A-distance</strong> between source_test" in page
    method = page.split("<h2>Method</h2>")[1].split("<h2>")[0]
    assert "<th>phase</th>" in method and "<td>loss 0.69 → 0.2</td>" in method
    assert "<li>round 1: 10 pseudo-labels kept of 40" in method and "<p>L2-SP weight 0.01 on 39" in method


def test_markdown_to_html():
    html = to_html("Gap **5.0** in `x`\n\n| split | acc |\n|---|---:|\n| a <b> | 1 |\n\n- one\n- two\n")
    assert "<p>Gap <strong>5.0</strong> in <code>x</code></p>" in html
    assert "<th>split</th>" in html and '<td style="text-align:right">1</td>' in html
    assert "<td>a &lt;b&gt;</td>" in html  # raw HTML is text
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html


def test_templates_ship_with_the_package():
    """pyproject's package-data must list every template, or a non-editable install lacks them."""
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\n"adapt.reporting" = ["templates/*.j2"]' in pyproject
    assert all(name.endswith(".j2") for name in environment().list_templates())
