"""Every encoder family in every fine-tuning mode: a tiny random model of each (`tests/families.py`) trains two
steps under `full`, `head`, `freeze` and `lora` with the defaults; what trains is exactly what the mode says for
that family's layout, the saved model predicts what the run predicted, and its fp32 export reloads. The same
families with `dann` and `self_training` (dapt: tests/test_mlm_families.py). Plus the
attention rule (`model.attention: auto`), layer cutting per family, and the errors for what `adapt` cannot know."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from families import FAMILIES

import adapt.training.run
from adapt import load_recipe
from adapt.core.errors import AdaptError
from adapt.export import main as export_main
from adapt.model import families as model_families  # not tests/families.py, the model builder
from adapt.model.loading import load_classifier, resolve_model
from adapt.predict import main as predict_main
from adapt.training.run import run
from adapt.validate import main as validate_main

LABELS = ["negative", "positive"]

# What `model.finetune: freeze` (half of the 2 layers) freezes, per family, as parameter-name prefixes of the
# classifier: the embeddings, the position parameters every layer shares, and layer 0 (docs in
# `adapt.model.families`).
FROZEN = {
    "bert": ["bert.embeddings.", "bert.encoder.layer.0."],
    "roberta": ["roberta.embeddings.", "roberta.encoder.layer.0."],
    "xlm-roberta": ["roberta.embeddings.", "roberta.encoder.layer.0."],
    "electra": ["electra.embeddings.", "electra.embeddings_project.", "electra.encoder.layer.0."],
    "distilbert": ["distilbert.embeddings.", "distilbert.transformer.layer.0."],
    "modernbert": ["model.embeddings.", "model.layers.0."],
    "deberta-v2": ["deberta.embeddings.", "deberta.encoder.rel_embeddings.", "deberta.encoder.LayerNorm.",
                   "deberta.encoder.layer.0."],
    "mpnet": ["mpnet.embeddings.", "mpnet.encoder.relative_attention_bias.", "mpnet.encoder.layer.0."],
}
# The classifier head: everything outside the encoder (DeBERTa's pooler and ModernBERT's head are part of it),
# and what the checkpoint lacked: a masked-LM BERT checkpoint has no pooler, so it starts random like the head.
HEAD = {"bert": ["bert.pooler.", "classifier."], "roberta": ["classifier."], "xlm-roberta": ["classifier."],
        "electra": ["classifier."], "distilbert": ["pre_classifier.", "classifier."],
        "modernbert": ["head.", "classifier."], "deberta-v2": ["pooler.", "classifier."], "mpnet": ["classifier."]}
LORA_TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
                "electra": ["query", "value"], "distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"],
                "deberta-v2": ["query_proj", "value_proj"], "mpnet": ["q", "v"]}
NO_SDPA = {"deberta-v2", "mpnet"}  # transformers 5.24 has no SDPA attention for these
LORA_R = 8  # `model.lora.r`'s default


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fresh_classifier(model_dir: Path) -> torch.nn.Module:
    return load_classifier(resolve_model(str(model_dir)), LABELS)


def numel(model: torch.nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


def expected_trainable(family: str, mode: str, model: torch.nn.Module) -> int:
    """The trainable-parameter count `mode` must give, from this test's own per-family tables."""
    names = {n for n, _ in model.named_parameters()}
    head = {n for n in names if n.startswith(tuple(HEAD[family]))}
    if mode == "full":
        return numel(model, names)
    if mode == "head":
        return numel(model, head)
    if mode == "freeze":
        return numel(model, {n for n in names if not n.startswith(tuple(FROZEN[family]))})
    # LoRA: A (r x in) and B (out x r) on each target linear, plus the head (peft trains a copy of it).
    linears = [m for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in LORA_TARGETS[family]]
    assert len(linears) >= 2
    return sum(LORA_R * (m.in_features + m.out_features) for m in linears) + numel(model, head)


@pytest.fixture(autouse=True)
def _no_html_plots(monkeypatch):
    # report.html's plots take ~8 s of a ~12 s tiny run on 2 cores; this file checks models (report.md and
    # report.json are still written), tests/test_report.py the page.
    monkeypatch.setattr("adapt.reporting.html.render_html", lambda *args, **kwargs: "<html></html>")


@pytest.fixture()
def trained_names(monkeypatch) -> dict[str, set[str]]:
    """Filled by a run: the names of the parameters that train, right after `model.finetune` applied."""
    captured: dict[str, set[str]] = {}
    real = adapt.training.run.apply_finetune

    def spy(model, cfg):
        out, info = real(model, cfg)
        captured["names"] = {n for n, p in out.named_parameters() if p.requires_grad}
        return out, info

    monkeypatch.setattr(adapt.training.run, "apply_finetune", spy)
    return captured


def train(tiny_recipe: Path, model_dir: Path, out: Path, overrides: list[str]) -> dict:
    return run(load_recipe(tiny_recipe, [f"output_dir={out}", f"model.name_or_path={model_dir}",
                                         "train.max_steps=2", *overrides]))


def run_probs(run_dir: Path, rows: list[dict]) -> np.ndarray:
    by_id = {p["id"]: p for split in ("source_test", "target_test")
             for p in read_jsonl(run_dir / "predictions" / f"{split}.jsonl")}
    return np.array([by_id[r["id"]]["probs"] for r in rows])


def predicted_probs(model_or_run: Path, rows: list[dict], tmp: Path) -> np.ndarray:
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    out = tmp / "pred.jsonl"
    assert predict_main([str(model_or_run), "--input", str(src), "--output", str(out)]) == 0
    return np.array([[o["probs"][label] for label in LABELS] for o in read_jsonl(out)])


@pytest.mark.parametrize("mode", ["full", "head", "freeze", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_in_every_mode(family, mode, family_model_dir, tiny_recipe, tiny_data, trained_names,
                                           tmp_path):
    model_dir = family_model_dir(family)
    report = train(tiny_recipe, model_dir, tmp_path / "run", [f"model.finetune={mode}"])

    fresh = fresh_classifier(model_dir)
    assert report["model"]["params_trainable"] == expected_trainable(family, mode, fresh)
    names = trained_names["names"]
    if mode == "freeze":  # the exact set, not only the count
        assert names == {n for n, _ in fresh.named_parameters() if not n.startswith(tuple(FROZEN[family]))}
        assert report["model"]["frozen_layers"] == 1 and report["model"]["total_layers"] == 2
    if mode == "lora":
        assert all(".lora_A." in n or ".lora_B." in n or ".modules_to_save." in n for n in names)
        assert report["model"]["lora"]["target_modules"] == LORA_TARGETS[family]
    attention = "eager" if family in NO_SDPA else "sdpa"  # `model.attention: auto`, the default
    assert report["model"]["attention"] == attention
    assert f"attention `{attention}`" in (tmp_path / "run" / "report.md").read_text()

    # The saved model (full, or adapter + head) predicts what the run predicted; the fp32 export reloads and agrees.
    rows = read_jsonl(tiny_data["source_test"]) + read_jsonl(tiny_data["target_test"])
    expected = run_probs(tmp_path / "run", rows)
    # Two steps move a random model little, but the rows still differ by more than the tolerance, so rows swapped
    # or mis-tokenised would show (the predictions files keep 6 decimals).
    assert np.ptp(expected[:, 1]) > 1e-5
    assert np.abs(predicted_probs(tmp_path / "run", rows, tmp_path) - expected).max() < 2e-6
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    assert np.abs(predicted_probs(tmp_path / "export", rows, tmp_path) - expected).max() < 2e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_cutting_layers_keeps_each_familys_model_loadable(family, family_model_dir, tiny_recipe, tiny_data, tmp_path):
    """`model.num_layers` on every family: the config written says 1 layer (DistilBERT's `n_layers`, ModernBERT's
    per-layer attention kinds follow their layers) and the saved model predicts what the run did."""
    report = train(tiny_recipe, family_model_dir(family), tmp_path / "run",
                   ["model.num_layers=1", "model.layer_choice=spread", "model.finetune=freeze"])
    assert report["model"]["layers"]["kept"] == [0]
    assert report["model"]["frozen_layers"] == 0  # half of the one kept layer
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config.get("num_hidden_layers", config.get("n_layers")) == 1
    if family == "modernbert":
        assert config["layer_types"] == ["full_attention"]
    rows = read_jsonl(tiny_data["source_test"])
    assert np.abs(predicted_probs(tmp_path / "run", rows, tmp_path) - run_probs(tmp_path / "run", rows)).max() < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_validate_knows_each_familys_layer_count(family, family_model_dir):
    from adapt.model.limits import start_problems
    from adapt.recipe import ModelConfig

    cfg = ModelConfig(name_or_path=str(family_model_dir(family)), num_layers=3)
    assert any("has only 2 encoder layers" in p for p in start_problems(cfg, 32))


@pytest.mark.parametrize("family", sorted(NO_SDPA))
def test_explicit_sdpa_on_a_model_without_it_names_the_key_and_the_fix(family, family_model_dir):
    with pytest.raises(AdaptError) as err:
        load_classifier(resolve_model(str(family_model_dir(family))), LABELS, "sdpa")
    message = str(err.value)
    assert "`model.attention`" in message and "auto" in message and "eager" in message
    assert "not a local directory" not in message and "Hub" not in message
    assert load_classifier(resolve_model(str(family_model_dir(family))), LABELS, "eager").config._attn_implementation \
        == "eager"


def validate_error(argv: list[str], capsys) -> str:
    assert validate_main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("family", sorted(NO_SDPA))
def test_validate_refuses_sdpa_where_the_family_has_none(family, family_model_dir, tiny_recipe, capsys):
    """The error the load raises (previous test), said by `adapt validate` from the folder's config.json."""
    model = f"model.name_or_path={family_model_dir(family)}"
    message = validate_error([str(tiny_recipe), model, "model.attention=sdpa"], capsys)
    assert "`model.attention` is 'sdpa'" in message and f"(model_type {family!r})" in message
    assert "`model.attention: auto`" in message and "`eager`" in message
    for kernel in ("auto", "eager"):
        assert validate_main([str(tiny_recipe), model, f"model.attention={kernel}"]) == 0
    capsys.readouterr()


def test_validate_accepts_sdpa_where_the_family_has_it(family_model_dir, tiny_recipe):
    assert validate_main([str(tiny_recipe), f"model.name_or_path={family_model_dir('bert')}",
                          "model.attention=sdpa"]) == 0


def test_validate_checks_attention_of_a_cached_hub_model_and_never_downloads(family_model_dir, tiny_recipe,
                                                                              tmp_path, monkeypatch, capsys):
    # A Hub cache laid out as huggingface_hub writes it, holding only config.json of one model.
    snapshot = tmp_path / "hub" / "models--someone--tiny-deberta" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes((family_model_dir("deberta-v2") / "config.json").read_bytes())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = validate_error([str(tiny_recipe), "model.name_or_path=someone/tiny-deberta", "model.attention=sdpa"],
                             capsys)
    assert "(model_type 'deberta-v2')" in message
    # Not on this machine: the run checks the kernel once the model loads; validate neither fails nor downloads.
    assert validate_main([str(tiny_recipe), "model.name_or_path=someone/not-cached", "model.attention=sdpa"]) == 0
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["models--someone--tiny-deberta"]


def test_a_local_folder_that_fails_to_load_shows_the_real_error(family_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in family_model_dir("bert").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AdaptError) as err:
        load_classifier(resolve_model(str(broken)), LABELS)
    message = str(err.value)
    assert str(broken) in message and "not a local directory" not in message and "unreachable" not in message


class Mystery(torch.nn.Module):
    """An encoder `adapt` has no table for, with no BERT-style `encoder.layer`."""

    base_model_prefix = "body"

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"model_type": "mystery"})()
        self.body = torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([torch.nn.Linear(4, 4)])})
        self.classifier = torch.nn.Linear(4, 2)


def test_unknown_architecture_errors_name_the_keys_to_set():
    with pytest.raises(AdaptError, match=r"`model.finetune=freeze`.*`model.finetune: full`.*`model.lora.target_modules`"):
        model_families.encoder_layers(Mystery(), "`model.finetune=freeze`")
    with pytest.raises(AdaptError, match=r"'mystery'.*`model.lora.target_modules`.*'classifier'"):
        model_families.default_target_modules(Mystery())


def test_freeze_counts_debertas_convolution_with_the_first_layer():
    """deberta-v2-xlarge's convolution (`conv_kernel_size`) mixes the embeddings into layer 0's output: frozen with
    layer 0, trained when no layer is frozen."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from adapt.model.finetune import apply_finetune
    from adapt.recipe import ModelConfig

    config = DebertaV2Config(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, relative_attention=True, position_buckets=8, conv_kernel_size=3,
                             pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", type_vocab_size=0)
    for frozen, conv_trains in ((1, False), (0, True)):
        model, _ = apply_finetune(DebertaV2ForSequenceClassification(config),
                                  ModelConfig(finetune="freeze", freeze_layers=frozen))
        conv = [p.requires_grad for n, p in model.named_parameters() if n.startswith("deberta.encoder.conv.")]
        assert conv and all(t == conv_trains for t in conv)
        assert not model.deberta.encoder.rel_embeddings.weight.requires_grad


def test_peft_defaults_come_from_peft_where_it_has_the_family(family_model_dir):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_LORA

    for family in FAMILIES:
        model = fresh_classifier(family_model_dir(family))
        assert model_families.default_target_modules(model) == LORA_TARGETS[family]
        if family in PEFT_LORA:
            assert model_families.default_target_modules(model) == PEFT_LORA[family]
        # The IA3 defaults name linear modules of the model, and its feed-forward ones are among them.
        ia3 = model_families.default_target_modules(model, "ia3")
        feedforward = model_families.default_feedforward_modules(model)
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        assert all(any(n == t or n.endswith("." + t) for n in linear) for t in ia3), (family, ia3)
        assert set(feedforward) <= set(ia3)


def test_a_run_saved_under_the_former_defaults_resumes(tiny_recipe, tmp_path):
    """Before `auto` and per-family LoRA targets the defaults were `sdpa` and [query, value]: an unfinished run
    saved then continues under the new defaults (the same computation), but not under a different value."""
    import yaml

    from adapt.core.rundir import RunDir
    from adapt.recipe import recipe_to_dict
    from adapt.training.run import check_same_recipe

    recipe = load_recipe(tiny_recipe, ["model.finetune=lora"])
    saved = recipe_to_dict(recipe)
    saved["model"]["attention"], saved["model"]["lora"]["target_modules"] = "sdpa", ["query", "value"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(saved))
    check_same_recipe(recipe, RunDir(tmp_path))
    with pytest.raises(AdaptError, match=r"different recipe \(model.attention: 'sdpa' -> 'eager'\)"):
        check_same_recipe(load_recipe(tiny_recipe, ["model.finetune=lora", "model.attention=eager"]), RunDir(tmp_path))


@pytest.mark.parametrize("method", ["dann", "self_training"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_adapts_with_dann_and_self_training(family, method, family_model_dir, tiny_recipe, tiny_data,
                                                         tmp_path):
    """The target-side methods on every family: DANN's discriminator reads each family's last hidden states and its
    reversed gradient reaches the encoder; a self-training round chooses pseudo-labels with the family's classifier
    and trains on them. The saved model then predicts what the run predicted."""
    model_dir = family_model_dir(family)
    extra = (["train.max_steps=4"] if method == "dann" else
             ["train.epochs=4", "method.self_training.rounds=1", "method.self_training.threshold=0.5"])
    report = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'run'}", f"model.name_or_path={model_dir}",
                                           f"method.name={method}", *extra]))
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    if method == "dann":
        assert any("domain_acc" in r and "domain" in r for r in log)  # the adversary's loss was computed and logged
        encoder_before = fresh_classifier(model_dir).base_model.state_dict()
        from adapt.model.saving import load_saved_model

        after = load_saved_model(tmp_path / "run" / "model").base_model.state_dict()
        assert any(not torch.equal(encoder_before[k], after[k]) for k in encoder_before if k in after)
    else:
        # The round predicted every unlabelled target text with the family's classifier and kept a class-balanced
        # set (empty when a tiny model calls all 40 one class, as ELECTRA's and DistilBERT's do here), then trained.
        (round1,) = report["method_summary"]["rounds"]
        assert round1["candidates"] == 40 and sum(round1["predicted_per_class"]) == 40
        assert len(set(round1["kept_per_class"])) == 1 and round1["kept"] == sum(round1["kept_per_class"])
        assert [p["name"] for p in report["method_summary"]["phases"]] == ["source", "round1"]
    rows = read_jsonl(tiny_data["target_test"])
    by_id = {p["id"]: p["probs"] for p in read_jsonl(tmp_path / "run" / "predictions" / "target_test.jsonl")}
    expected = np.array([by_id[r["id"]] for r in rows])
    assert np.abs(predicted_probs(tmp_path / "run", rows, tmp_path) - expected).max() < 2e-6
