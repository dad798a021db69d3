"""`model.finetune: peft`: each PEFT type on the tiny BERT trains exactly its own tensors (and the head), moves them,
and saves an adapter that peft's AutoPeftModel and adapt's loader both reload to the run's own predictions; the
recipe refuses unknown and misplaced keys and the combinations a type cannot serve."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import adapt.training.run
from adapt.core.errors import AdaptError, RecipeError
from adapt.model.finetune import apply_finetune
from adapt.model.loading import load_classifier, resolve_model
from adapt.model.peft_setup import ADAPTER_PARAMETERS
from adapt.model.saving import load_saved_model
from adapt.recipe import LoraSection, ModelConfig, PeftSection, load_recipe
from adapt.serving.export import export
from adapt.serving.inference import predict_texts
from adapt.training.run import run

LABELS = ["negative", "positive"]
# A type's settings for the tiny runs: AdaLoRA needs its step budget (here `train.max_steps`), prompt types a few
# virtual tokens (the tiny model has 64 positions for 32 tokens of text).
TYPES = {
    "lora": [], "dora": [], "ia3": [],
    "adalora": ["model.peft.init_r=4", "model.peft.target_r=2"],
    "prompt_tuning": ["model.peft.num_virtual_tokens=4", "model.peft.prompt_init_text=this book is"],
    "p_tuning": ["model.peft.num_virtual_tokens=4", "model.peft.encoder_hidden_size=16"],
}
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def classifier(model_dir: Path) -> torch.nn.Module:
    return load_classifier(resolve_model(str(model_dir)), LABELS)


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def is_head(name: str) -> bool:
    return ".classifier.modules_to_save." in name


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_probs(out: Path, texts_of: list[dict]) -> np.ndarray:
    preds = {p["id"]: p["probs"] for p in read_jsonl(out / "predictions" / "target_test.jsonl")}
    return np.array([preds[r["id"]] for r in texts_of])


def model_probs(model: torch.nn.Module, model_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    return predict_texts(model.eval(), AutoTokenizer.from_pretrained(model_dir), texts, 32, "head", 4)


@pytest.fixture()
def initial(monkeypatch) -> dict[str, torch.Tensor]:
    """Filled by a run with the trainable tensors as the peft type built them, before any step."""
    captured: dict[str, torch.Tensor] = {}
    real = adapt.training.run.apply_finetune

    def spy(model: torch.nn.Module, cfg: ModelConfig):
        model, info = real(model, cfg)
        captured.update(trainable(model))
        return model, info

    monkeypatch.setattr(adapt.training.run, "apply_finetune", spy)
    return captured


def train(tiny_recipe: Path, out: Path, peft_type: str, *overrides: str) -> dict:
    return run(load_recipe(tiny_recipe, [f"output_dir={out}", "model.finetune=peft", f"model.peft.type={peft_type}",
                                         "train.max_steps=2", *TYPES[peft_type], *overrides]))


# ----------------------------------------------------------------------------------------------------------
# What trains: the type's own tensors and the head, nothing else of the encoder.


@pytest.mark.parametrize("peft_type", list(TYPES))
def test_each_type_trains_only_its_own_tensors_and_the_head(tiny_model_dir, peft_type):
    model, info = apply_finetune(classifier(tiny_model_dir), ModelConfig(finetune="peft", peft=PeftSection(
        type=peft_type, total_step=10, num_virtual_tokens=4)))
    names = set(trainable(model))
    own = ADAPTER_PARAMETERS[peft_type]
    assert names == {n for n in names if is_head(n) or any(part in n for part in own)}
    assert {n.split("classifier.")[1] for n in names if is_head(n)} == {"modules_to_save.default.weight",
                                                                         "modules_to_save.default.bias"}
    counts = info["peft"]["trainable_parameters"]
    assert counts["head"] == 2 * 32 + 2 and counts["adapter"] + counts["head"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    adapters = names - {n for n in names if is_head(n)}
    # 2 layers; BERT's defaults from peft's mappings: query/value (LoRA, DoRA, AdaLoRA), key/value/both output.dense (IA3)
    expected = {"lora": 2 * 2 * 2, "dora": 2 * 2 * 3, "ia3": 2 * 4, "adalora": 2 * 2 * 3, "prompt_tuning": 1}
    if peft_type in expected:
        assert len(adapters) == expected[peft_type], sorted(adapters)
    if peft_type == "dora":
        assert sum("lora_magnitude_vector" in n for n in adapters) == 4
    if peft_type == "ia3":
        assert info["peft"]["target_modules"] == ["key", "value", "output.dense"]
        assert info["peft"]["feedforward_modules"] == ["output.dense"] and all(n.endswith("ia3_l.default") for n in adapters)
    if peft_type == "p_tuning":  # the virtual tokens and the MLP that produces them
        assert {n.split(".")[2] for n in adapters} == {"embedding", "mlp_head"}


def test_lora_through_model_lora_keeps_its_report_entry(tiny_model_dir):
    model, info = apply_finetune(classifier(tiny_model_dir), ModelConfig(finetune="lora", lora=LoraSection(r=4)))
    assert info == {"lora": {"r": 4, "alpha": 16.0, "target_modules": ["query", "value"]}}


def test_explicit_targets_are_checked_against_the_model(tiny_model_dir):
    cfg = ModelConfig(finetune="peft", peft=PeftSection(type="ia3", target_modules=["key", "LayerNorm"]))
    with pytest.raises(AdaptError, match=r"`model.peft.target_modules`: \['LayerNorm'\] are not linear modules"):
        apply_finetune(classifier(tiny_model_dir), cfg)
    cfg = ModelConfig(finetune="peft", peft=PeftSection(type="ia3", target_modules=["key"], feedforward_modules=["dense"]))
    with pytest.raises(AdaptError, match=r"`model.peft.feedforward_modules`: \['dense'\] are not in"):
        apply_finetune(classifier(tiny_model_dir), cfg)


# ----------------------------------------------------------------------------------------------------------
# A run: the type's tensors move, the report records them, and the saved adapter reloads to the run's predictions.


@pytest.mark.parametrize("peft_type", list(TYPES))
def test_a_run_moves_the_types_tensors_and_saves_an_adapter_that_reloads(tiny_recipe, tiny_data, tmp_path, initial,
                                                                       peft_type):
    from peft import AutoPeftModelForSequenceClassification

    out = tmp_path / "run"
    report = train(tiny_recipe, out, peft_type)
    entry = report["model"]["peft"]
    assert report["model"]["finetune"] == "peft" and entry["type"] == peft_type
    assert sum(entry["trainable_parameters"].values()) == report["model"]["params_trainable"]
    assert report["training"]["optimizer_steps"] == 2
    counts = entry["trainable_parameters"]
    assert (f"- fine-tuning: `peft` `{peft_type}` (" in (out / "report.md").read_text()
            and f"trainable: adapter {counts['adapter']:,} + head {counts['head']:,};" in (out / "report.md").read_text())

    model_dir = out / "model"
    assert (model_dir / "adapter_config.json").exists() and not (model_dir / "model.safetensors").exists()
    rows = read_jsonl(tiny_data["target_test"])
    texts, expected = [r["text"] for r in rows], run_probs(out, rows)
    for loaded in (AutoPeftModelForSequenceClassification.from_pretrained(model_dir), load_saved_model(model_dir)):
        assert np.abs(model_probs(loaded, model_dir, texts) - expected).max() < 1e-5
        after = {n: p.detach() for n, p in loaded.named_parameters()}
        # Same-shaped tensors only: AdaLoRA saves its pruned ranks; p-tuning saves the virtual tokens its MLP made.
        moved = {n: not torch.equal(v, after[n]) for n, v in initial.items() if n in after and after[n].shape == v.shape}
        assert moved and all(moved.values()), [n for n, m in moved.items() if not m]
    # Without the adapter the model predicts otherwise: the adapter was what loaded. (peft 0.21's `disable_adapter`
    # fails for prompt types on a classifier; their base model alone runs without the virtual tokens.)
    if loaded.active_peft_config.is_prompt_learning:
        assert np.abs(model_probs(loaded.get_base_model(), model_dir, texts) - expected).max() > 1e-3
    else:
        with loaded.disable_adapter():
            assert np.abs(model_probs(loaded, model_dir, texts) - expected).max() > 1e-3


def test_adalora_allocates_ranks_every_step_and_saves_the_pruned_ones(tiny_recipe, tmp_path, monkeypatch):
    from peft import AutoPeftModelForSequenceClassification
    from peft.tuners.adalora import AdaLoraModel

    steps: list[int] = []
    real = AdaLoraModel.update_and_allocate

    def spy(self, global_step: int) -> None:
        steps.append(global_step)
        real(self, global_step)

    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", spy)
    out = tmp_path / "run"
    # 6 steps: 1 of warm-up, pruning from 4 ranks towards an average of 2 until step 4, then fixed.
    report = train(tiny_recipe, out, "adalora", "train.max_steps=6", "model.peft.tinit=1", "model.peft.tfinal=2")
    assert steps == list(range(6)) and report["model"]["peft"]["total_step"] == 6
    saved = json.loads((out / "model" / "adapter_config.json").read_text())
    ranks = saved["rank_pattern"]
    assert len(ranks) == 4 and all(len(mask) == 4 for mask in ranks.values())  # query and value of 2 layers, init_r 4
    kept = sum(sum(mask) for mask in ranks.values())
    assert kept < 4 * 4, ranks  # pruned below the initial 16 ranks
    weights = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert sum(v.shape[0] for k, v in weights.items() if "lora_E" in k) == kept  # saved at the allocated ranks
    AutoPeftModelForSequenceClassification.from_pretrained(out / "model")  # and loads at them


# ----------------------------------------------------------------------------------------------------------
# Export, push, and methods.


@pytest.mark.parametrize("peft_type", ["dora", "ia3", "adalora"])
def test_export_merges_a_weight_adapter_into_a_plain_model(tiny_recipe, tiny_data, tmp_path, peft_type):
    from transformers import AutoModelForSequenceClassification

    rows = read_jsonl(tiny_data["target_test"])
    out, exported = tmp_path / "run", tmp_path / "export"
    train(tiny_recipe, out, peft_type)
    info = export(out, exported)
    assert info["adapter_merged"] == peft_type and info["lora_merged"] is True and not (exported / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(exported)
    assert not any(part in n for n, _ in plain.named_parameters() for part in ADAPTER_PARAMETERS[peft_type])
    assert np.abs(model_probs(plain, exported, [r["text"] for r in rows]) - run_probs(out, rows)).max() < 1e-5


def test_export_of_prompt_tuning_is_refused_naming_the_torch_path(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe, out, "prompt_tuning")
    with pytest.raises(AdaptError, match=r"`prompt_tuning` adapter.*cannot be merged.*`adapt predict"):
        export(out, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_push_dry_run_of_a_dora_run_loads_with_peft(tiny_recipe, tiny_data, tmp_path, monkeypatch):
    import huggingface_hub
    from peft import AutoPeftModelForSequenceClassification

    from adapt.hub.__main__ import main as hub_main

    out = tmp_path / "run"
    train(tiny_recipe, out, "dora")
    monkeypatch.setattr(huggingface_hub, "HfApi", None)  # nothing may be sent
    folder = tmp_path / "dry"
    assert hub_main(["push", str(out), "--repo-id", "someone/tiny", "--dry-run", str(folder)]) == 0
    assert json.loads((folder / "adapter_config.json").read_text())["use_dora"] is True
    rows = read_jsonl(tiny_data["target_test"])
    model = AutoPeftModelForSequenceClassification.from_pretrained(folder)
    assert np.abs(model_probs(model, folder, [r["text"] for r in rows]) - run_probs(out, rows)).max() < 1e-5
    card = (folder / "README.md").read_text()
    assert "- dora" in card and "Fine-tuning `peft` (`dora` on query, value)" in card


@pytest.mark.parametrize("peft_type", ["prompt_tuning", "p_tuning"])
def test_dann_runs_with_a_prompt_type(tiny_recipe, tmp_path, peft_type):
    # The discriminator reads position 0, which with virtual tokens is the first virtual token: what the pooler reads.
    report = train(tiny_recipe, tmp_path / "run", peft_type, "method.name=dann")
    assert report["training"]["optimizer_steps"] == 2 and report["model"]["peft"]["type"] == peft_type


# ----------------------------------------------------------------------------------------------------------
# The recipe.


def problems(tiny_recipe: Path, overrides: list[str]) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny_recipe, overrides)
    return str(err.value)


def test_model_peft_defaults_to_lora_with_the_family_targets(tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["model.finetune=peft"])
    assert recipe.model.peft == PeftSection() and recipe.model.peft.type == "lora"
    assert recipe.model.peft.target_modules is None  # resolved per model family when the model loads


def test_unknown_and_misplaced_peft_keys_are_refused(tiny_recipe):
    text = problems(tiny_recipe, ["model.finetune=peft", "model.peft.type=ia3", "model.peft.rank=4",
                                  "model.peft.init_r=4", "model.peft.num_virtual_tokens=5"])
    assert "unknown key `model.peft.rank`: `model.peft` has no `rank`" in text
    assert ("`model.peft.init_r` is set but `model.peft.type` is `ia3`, which does not use it (it is for adalora); "
            "remove it or change `model.peft.type`") in text
    assert "`model.peft.num_virtual_tokens` is set but `model.peft.type` is `ia3`" in text
    text = problems(tiny_recipe, ["model.finetune=peft", "model.peft.type=lora", "model.peft.r=0"])
    assert "`model.peft.r` must be > 0, got 0" in text


@pytest.mark.parametrize("overrides, message", [
    (["model.peft.type=dora"], "`model.peft` is set but `model.finetune` is `full`; set `model.finetune=peft`"),
    (["model.finetune=lora", "model.peft.type=dora"], "`model.peft` is set but `model.finetune` is `lora`"),
    (["model.finetune=peft", "model.lora.r=4"], "with `model.finetune: peft` write its keys under `model.peft`"),
    (["model.finetune=peft", "model.peft.type=prefix_tuning"], "BERT-style encoders in transformers 5 do not"),
    (["model.finetune=peft", "model.peft.type=adalora"], "needs `model.peft.total_step`"),
    (["model.finetune=peft", "model.peft.type=adalora", "model.peft.total_step=10", "model.peft.tinit=8",
      "model.peft.tfinal=2"], "`model.peft.tinit` (8) must be < total_step - tfinal (10 - 2)"),
    (["model.finetune=peft", "model.peft.type=adalora", "train.max_steps=5", "model.peft.target_r=20"],
     "`model.peft.target_r` must be >= 1 and <= init_r, got 20"),
    (["model.finetune=peft", "model.peft.type=prompt_tuning", "method.name=tapt"],
     "method `tapt`'s masked-LM head needs one per token"),
    (["model.finetune=peft", "model.peft.type=p_tuning", "model.num_layers=1"],
     "`model.num_layers` makes the run save its model merged"),
    (["model.finetune=peft", "train.l2sp=0.1"], "with `model.finetune=peft` none do"),
], ids=["peft-without-finetune", "peft-under-lora", "lora-under-peft", "prefix", "adalora-steps", "adalora-schedule",
        "adalora-ranks", "prompt-mlm", "prompt-stacked", "l2sp"])
def test_combinations_a_type_cannot_serve_are_refused(tiny_recipe, overrides, message):
    assert message in problems(tiny_recipe, overrides)


def test_adalora_total_step_defaults_to_max_steps(tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["model.finetune=peft", "model.peft.type=adalora", "train.max_steps=30"])
    assert recipe.model.peft.total_step == 30


def test_the_resolved_recipe_of_a_peft_run_loads_again(tiny_recipe, tmp_path):
    from adapt.recipe import recipe_to_yaml

    recipe = load_recipe(tiny_recipe, ["model.finetune=peft", "model.peft.type=adalora", "train.max_steps=30"])
    resolved = tmp_path / "recipe.yaml"
    resolved.write_text(recipe_to_yaml(recipe))
    assert load_recipe(resolved) == recipe


def test_virtual_tokens_count_against_the_models_positions(tiny_recipe):
    from adapt.model.limits import start_problems

    recipe = load_recipe(tiny_recipe, ["model.finetune=peft", "model.peft.type=p_tuning",
                                       "model.peft.num_virtual_tokens=40"])  # 32 tokens of text; 64 positions
    assert start_problems(recipe.model, recipe.data.max_length) == [
        f"`model.peft.num_virtual_tokens` (40) + `data.max_length` (32) exceed the 64 positions the model "
        f"{recipe.model.name_or_path} takes; lower one of them to 64 in total"]
    assert start_problems(dataclasses.replace(recipe.model, peft=PeftSection(type="p_tuning", num_virtual_tokens=32)),
                          32) == []
