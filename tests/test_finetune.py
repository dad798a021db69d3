"""Finetune modes on the tiny model: what trains, what a run changes, and what it saves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

import adapt.training.run
from adapt.core.errors import AdaptError
from adapt.model.finetune import apply_finetune
from adapt.model.loading import load_classifier, load_encoder, resolve_model
from adapt.model.saving import load_saved_model
from adapt.recipe import LoraSection, ModelConfig, load_recipe
from adapt.training.run import run

LABELS = ["negative", "positive"]


def fresh_classifier(model_dir: Path) -> torch.nn.Module:
    return load_classifier(resolve_model(str(model_dir)), LABELS)


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def train_run(tiny_recipe: Path, out: Path, overrides: list[str]) -> dict:
    return run(load_recipe(tiny_recipe, [f"output_dir={out}", *overrides]))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def initial_encoder(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tiny encoder's weights, named as in a saved classifier (`bert.` prefix)."""
    return {f"bert.{k}": v for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def saved(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> dict[str, bool]:
    names = [k for k in before if k.startswith(prefix)]
    assert names, f"no weights under {prefix}"
    return {k: not torch.equal(before[k], after[k]) for k in names}


@pytest.fixture()
def initial_weights(monkeypatch) -> dict[str, torch.Tensor]:
    """Filled by a run with the classifier's weights as built, before any training (the head is random)."""
    captured: dict[str, torch.Tensor] = {}
    real = adapt.training.run.apply_finetune

    def spy(model: torch.nn.Module, cfg: ModelConfig):
        captured.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, cfg)

    monkeypatch.setattr(adapt.training.run, "apply_finetune", spy)
    return captured


# ----------------------------------------------------------------------------------------------------------
# What trains.


def test_head_mode_trains_only_the_classifier(tiny_model_dir):
    model, info = apply_finetune(fresh_classifier(tiny_model_dir), ModelConfig(finetune="head"))
    assert trainable(model) == {"classifier.weight", "classifier.bias"} == set(info["trainable"])


def test_freeze_mode_freezes_embeddings_and_the_lowest_layers(tiny_model_dir):
    model, info = apply_finetune(fresh_classifier(tiny_model_dir), ModelConfig(finetune="freeze"))
    assert info == {"frozen_layers": 1, "total_layers": 2}  # default: half of the layers
    names = trainable(model)
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in names)
    assert {n for n in names if n.startswith("bert.encoder.layer.1.")} == {
        n for n, _ in model.named_parameters() if n.startswith("bert.encoder.layer.1.")}
    assert {"classifier.weight", "bert.pooler.dense.weight"} <= names

    model, _ = apply_finetune(fresh_classifier(tiny_model_dir), ModelConfig(finetune="freeze", freeze_layers=0))
    assert not any(n.startswith("bert.embeddings.") for n in trainable(model))
    assert any(n.startswith("bert.encoder.layer.0.") for n in trainable(model))
    with pytest.raises(AdaptError, match="`model.freeze_layers` is 3 but the encoder has only 2 layers"):
        apply_finetune(fresh_classifier(tiny_model_dir), ModelConfig(finetune="freeze", freeze_layers=3))


def test_lora_mode_trains_adapters_and_the_head(tiny_model_dir):
    model, info = apply_finetune(fresh_classifier(tiny_model_dir), ModelConfig(finetune="lora", lora=LoraSection()))
    names = trainable(model)
    assert all("lora_" in n or ".classifier." in n for n in names), names
    # query and value in 2 layers, an A and a B matrix each; the head as a module to save.
    assert sum("lora_" in n for n in names) == 8
    assert sum(".classifier." in n for n in names) == 2
    assert info["lora"] == {"r": 8, "alpha": 16.0, "target_modules": ["query", "value"]}


def test_lora_target_that_is_not_linear_lists_valid_names(tiny_model_dir):
    cfg = ModelConfig(finetune="lora", lora=LoraSection(target_modules=["query", "LayerNorm"]))
    with pytest.raises(AdaptError) as err:
        apply_finetune(fresh_classifier(tiny_model_dir), cfg)
    message = str(err.value)
    assert "`model.lora.target_modules`" in message and "['LayerNorm']" in message
    for name in ("query", "key", "value", "dense"):
        assert f"'{name}'" in message


# ----------------------------------------------------------------------------------------------------------
# What a run changes.


def test_full_finetune_lowers_the_loss_and_changes_the_encoder(tiny_recipe, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train_run(tiny_recipe, out, ["model.finetune=full", "train.epochs=4", "train.scheduler=constant"])
    losses = [r["loss"] for r in read_jsonl(out / "train_log.jsonl") if "loss" in r]
    assert len(losses) == 36  # 9 steps per epoch, logged every step
    assert losses[-1] < 0.5 * losses[0]
    after = changed(initial_encoder(tiny_model_dir), saved(out), "bert.")
    matrices = {k: v for k, v in after.items() if k.endswith("weight") and "LayerNorm" not in k}
    assert all(matrices.values()), [k for k, v in matrices.items() if not v]


def test_head_finetune_leaves_the_encoder_untouched(tiny_recipe, tiny_model_dir, tmp_path, initial_weights):
    out = tmp_path / "run"
    report = train_run(tiny_recipe, out, ["model.finetune=head", "train.epochs=2"])
    after = saved(out)
    assert not any(changed(initial_encoder(tiny_model_dir), after, "bert.").values())
    assert all(changed(initial_weights, after, "classifier.").values())
    head_size = sum(v.numel() for k, v in initial_weights.items() if k.startswith("classifier."))
    assert report["model"]["params_trainable"] == head_size == 2 * 32 + 2


def test_freeze_finetune_changes_only_the_upper_layers(tiny_recipe, tiny_model_dir, tmp_path, initial_weights):
    out = tmp_path / "run"
    report = train_run(tiny_recipe, out, ["model.finetune=freeze", "model.freeze_layers=1", "train.epochs=2"])
    before, after = initial_encoder(tiny_model_dir), saved(out)
    assert not any(changed(before, after, "bert.embeddings.").values())
    assert not any(changed(before, after, "bert.encoder.layer.0.").values())
    layer1 = changed(before, after, "bert.encoder.layer.1.")
    assert all(v for k, v in layer1.items() if k.endswith("weight") and "LayerNorm" not in k), layer1
    assert all(changed(initial_weights, after, "classifier.").values())
    assert report["model"]["frozen_layers"] == 1


def test_a_half_precision_checkpoint_trains_in_float32(tiny_recipe, tiny_model_dir, tmp_path):
    # transformers 5 loads the dtype a config records: a bf16 checkpoint would train bf16 weights, whose resolution
    # swallows AdamW's small steps. Weights load as float32; autocast chooses the compute precision.
    def bf16_copy(folder: Path, to: Path) -> Path:
        shutil.copytree(folder, to)
        save_file({k: v.bfloat16() for k, v in load_file(str(to / "model.safetensors")).items()},
                  str(to / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((to / "config.json").read_text())
        (to / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
        return to

    half = bf16_copy(tiny_model_dir, tmp_path / "half")
    assert {p.dtype for p in fresh_classifier(half).parameters()} == {torch.float32}
    assert {p.dtype for p in load_encoder(resolve_model(str(half))).parameters()} == {torch.float32}
    out = tmp_path / "run"
    train_run(tiny_recipe, out, [f"model.name_or_path={half}", "train.max_steps=2"])
    assert {v.dtype for v in saved(out).values()} == {torch.float32}
    # A trained classifier saved in bf16 elsewhere (a teacher, an init run) loads as float32 too.
    trained = bf16_copy(out / "model", tmp_path / "trained_bf16")
    assert {p.dtype for p in load_saved_model(trained).parameters()} == {torch.float32}


# ----------------------------------------------------------------------------------------------------------
# LoRA: the saved adapter reproduces the run's predictions.


def target_test_probs(model: torch.nn.Module, model_dir: Path, texts: list[str]) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(**batch).logits, dim=-1).numpy()


def test_lora_run_saves_a_loadable_adapter(tiny_recipe, tiny_data, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    out = tmp_path / "run"
    report = train_run(tiny_recipe, out, ["model.finetune=lora", "train.epochs=2"])
    model_dir = out / "model"
    assert (model_dir / "adapter_config.json").exists() and not (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert report["model"]["params_trainable"] == 4 * 2 * (8 * 32) + (2 * 32 + 2)  # 4 adapted Linears + head

    rows = read_jsonl(tiny_data["target_test"])
    texts = [r["text"] for r in rows]
    preds = {p["id"]: p for p in read_jsonl(out / "predictions" / "target_test.jsonl")}
    run_probs = np.array([preds[r["id"]]["probs"] for r in rows])

    for model in (AutoPeftModelForSequenceClassification.from_pretrained(model_dir), load_saved_model(model_dir)):
        probs = target_test_probs(model, model_dir, texts)
        assert [LABELS[i] for i in probs.argmax(-1)] == [preds[r["id"]]["pred"] for r in rows]
        assert np.abs(probs - run_probs).max() < 1e-5
        # The trained adapters were loaded: LoRA's B matrices start at zero.
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert len(lora_b) == 4 and all(p.abs().sum() > 0 for p in lora_b)
