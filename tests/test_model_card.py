"""`adapt.reporting.model_card`: the card is a pure function of the run directory; here a hand-made one whose recipe names a
Hub dataset, the built-in corpus and a local file (the end-to-end cards are checked in test_hub.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from adapt.core.rundir import portable_paths
from adapt.reporting.model_card import build_model_card, data_card_summary, hub_model_id


def split(role: str, domain: str, kind: str, acc: float, f1: float) -> dict:
    return {"role": role, "domain": domain, "kind": kind, "n": 200, "accuracy": acc, "macro_f1": f1,
            "ci95": {"accuracy": [acc - 0.05, acc + 0.05], "macro_f1": [f1 - 0.05, f1 + 0.05]}}


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    recipe = {
        "name": "b2k",
        "data": {"source": {"train": "hub:someone/reviews?config=books&split=train", "test": "/data/books_test.jsonl",
                            "domain": "books"},
                 "target": {"unlabeled": "builtin:reviews/unlabeled", "test": "builtin:reviews/test", "dev": "/data/k.jsonl",
                            "domain": "kitchen"},
                 "max_length": 128, "truncation": "head_tail", "normalize": "amazon_unlabeled"},
        "model": {"name_or_path": "all-MiniLM-L6-v2", "finetune": "full"},
        "method": {"name": "dann"},
    }
    report = {
        "name": "b2k", "method": "dann", "labels": ["negative", "positive"],
        "model": {"name_or_path": "all-MiniLM-L6-v2", "resolved_path": "/nowhere", "finetune": "full",
                  "params_total": 22_700_000, "params_trainable": 22_700_000},
        "splits": {"source_test": split("source", "books", "test", 0.9, 0.89),
                   "target_test": split("target", "kitchen", "test", 0.8, 0.79),
                   "target_dev": split("target", "kitchen", "dev", 0.81, 0.8)},
        "summary": {"source_accuracy": 0.9, "target_accuracy": 0.8, "transfer_gap": 0.1},
        "training": {"optimizer_steps": 500, "effective_batch_size": 16,
                     "selection": {"split": "target_dev", "metric": "macro_f1", "best_step": 450}},
        "environment": {"git_commit": "abc123", "device": "cpu", "versions": {"torch": "2.13"}},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (tmp_path / "report.json").write_text(json.dumps(report))
    return tmp_path


def test_metadata(run_dir):
    card = ModelCard(str(build_model_card(run_dir, repo_id="me/b2k", adapter=False)))  # through text, as uploaded
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the recipe's short name, canonical
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "text-classification", "apache-2.0")
    assert data.datasets == ["someone/reviews"]  # only Hub datasets are metadata
    assert data.model_name == "b2k" and "dann" in data.tags
    results = {(r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {("books_test", None, "test", "accuracy"): 0.9, ("books_test", None, "test", "f1"): 0.89,
                       ("builtin:reviews", None, "test", "accuracy"): 0.8, ("builtin:reviews", None, "test", "f1"): 0.79}
    assert {r.metric_args.get("average") for r in data.eval_results if r.metric_type == "f1"} == {"macro"}


def test_body(run_dir):
    text = build_model_card(run_dir, repo_id="me/b2k", adapter=True, license="mit").text
    assert "| target_test | target | kitchen | 200 | 80.0 [75.0, 85.0] | 79.0 [74.0, 84.0] |" in text
    assert "[someone/reviews](https://huggingface.co/datasets/someone/reviews) (split `train`, config `books`)" in text
    assert "`books_test.jsonl` (a local file)" in text and "/data/" not in text.split("## Recipe")[0]
    assert "A **synthetic** sentiment corpus" in text  # the built-in corpus's data card summary
    assert "domain-adversarial" in text  # the method
    assert "not purely unsupervised" in text  # selected on target_dev
    assert "`amazon_unlabeled`" in text and "128 tokens (`head_tail` truncation)" in text
    assert 'AutoPeftModelForSequenceClassification.from_pretrained(\n    "me/b2k"' in text
    # The recipe as shared: `/data/books_test.jsonl` is `./books_test.jsonl`, no folder of this machine.
    shared = yaml.safe_dump(portable_paths(yaml.safe_load((run_dir / "recipe.yaml").read_text()), run_dir),
                            sort_keys=False)
    assert "```yaml\n" + shared.rstrip() + "\n```" in text and "/data/" not in text


@pytest.mark.parametrize(("name", "hub_id"), [
    ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    ("bert-base-uncased", "bert-base-uncased"),
    ("/home/me/models/bert", None),
    ("./models/bert", None),
    ("~/bert", None),
    ("a/b/c", None),
])
def test_hub_model_id(name, hub_id):
    assert hub_model_id(name) == hub_id


def test_data_card_summaries():
    assert data_card_summary("amazon:books/train")[0].startswith("`amazon_multidomain`")
    assert data_card_summary("/x/shared/data/uci_sentiment_sentences/yelp.train.jsonl")[0].startswith("`uci_sentiment")
    assert data_card_summary("/data/mine.jsonl") is None
