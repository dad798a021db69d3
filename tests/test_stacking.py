"""Stacking runs (`model.init_from`) and smaller students (`model.num_layers`, `model.layer_choice`): a run starts
from exactly the weights it names (an init run's, a LoRA adapter merged; the chosen layers), refuses what it cannot
start from before reading data or writing anything, records the chain of runs, and saves a model that reloads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tokenizer, stop_at, train_tiny
from safetensors.torch import load_file

import adapt.training.loop
import adapt.training.run
from adapt import load_recipe
from adapt.core.errors import RunInterrupted
from adapt.export import main as export_main
from adapt.model.finetune import apply_finetune, count_parameters
from adapt.model.loading import load_classifier, resolve_model
from adapt.model.saving import load_saved_model
from adapt.model.shrink import kept_layers
from adapt.model.start import load_run_classifier, load_start, load_start_encoder, recorded_start
from adapt.reporting.model_card import build_model_card
from adapt.serving.inference import load_for_inference, predict_texts
from adapt.train import main as train_main
from adapt.training.run import l2sp_anchors, run
from adapt.validate import main as validate_main

LABELS = ["negative", "positive"]
QUICK = ["train.max_steps=3", "eval.diagnostics=false"]


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def stack(tmp: Path, name: str, recipe: Path, *overrides: str) -> Path:
    out = tmp / name
    run(load_recipe(recipe, [f"output_dir={out}", f"name={name}", *overrides]))
    return out


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    return train_tiny(tmp_path_factory.mktemp("first"), tiny_model_dir, tiny_data, ["train.epochs=3", "name=first"])


@pytest.fixture(scope="module")
def lora_first(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    # A high rate, so that the adapter's delta is far from zero and a merge that dropped it would show.
    return train_tiny(tmp_path_factory.mktemp("lora-first"), tiny_model_dir, tiny_data,
                      ["model.finetune=lora", "train.epochs=3", "train.lr=3e-2", "name=lora-first"])


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory) -> Path:
    """A random 6-layer tiny BERT, for choosing 3 of 6 layers."""
    from conftest import vocab
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("six-layers")
    cfg = BertConfig(vocab_size=len(vocab()), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    BertModel(cfg).save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------------------
# Starting from a finished run.


def test_a_run_starts_from_the_init_runs_weights_not_the_pretrained_ones(first, tiny_recipe, tiny_model_dir):
    start = load_start(load_recipe(tiny_recipe, [f"model.init_from={first}"]).model, LABELS)
    trained = state(load_saved_model(first / "model"))
    assert_same(state(start.model), trained)  # encoder and classifier head, bit for bit
    pretrained = state(load_classifier(resolve_model(str(tiny_model_dir)), LABELS))
    assert any(not torch.equal(pretrained[k], trained[k]) for k in trained if k.startswith("bert.encoder"))
    assert start.resolved.name_or_path == str(tiny_model_dir)  # the chain's base is recorded as the model
    assert start.record["init_from"]["base"] == str(tiny_model_dir)
    # The weights recorded as its start are the init run's, not the pretrained ones.
    own = hashlib.sha256((first / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert start.record["weights_sha256"] == {"model.safetensors": own}
    # The "pretrained" side of the diagnostics is where this run started: the init run's encoder.
    encoder = state(load_start_encoder(start.resolved))
    assert_same(encoder, {k[len("bert."):]: v for k, v in trained.items() if k.startswith("bert.")})


def test_a_lora_init_run_is_merged_into_its_base_weights(lora_first, tiny_model_dir):
    merged = state(load_run_classifier(lora_first / "model"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    adapter = load_file(str(lora_first / "model" / "adapter_model.safetensors"))
    cfg = json.loads((lora_first / "model" / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    deltas = 0
    for name, weight in base.items():
        stem = f"base_model.model.bert.{name[:-len('.weight')]}"
        if f"{stem}.lora_A.weight" in adapter:  # query and value: W + (alpha / r) B A
            delta = scale * adapter[f"{stem}.lora_B.weight"] @ adapter[f"{stem}.lora_A.weight"]
            assert delta.abs().max() > 1e-3
            torch.testing.assert_close(merged[f"bert.{name}"], weight + delta, rtol=0, atol=1e-6)
            deltas += 1
        else:
            assert torch.equal(merged[f"bert.{name}"], weight), name
    assert deltas == 2 * 2  # query and value of both layers
    assert torch.equal(merged["classifier.weight"], adapter["base_model.model.classifier.weight"])  # trained head
    assert not any("lora" in k for k in merged)


def test_l2sp_anchors_on_the_init_runs_weights(lora_first, tiny_recipe):
    recipe = load_recipe(tiny_recipe, [f"model.init_from={lora_first}", "train.l2sp=0.1"])
    start = load_start(recipe.model, LABELS)
    start_weights = state(start.model)
    model, _ = apply_finetune(start.model, recipe.model)
    anchors = l2sp_anchors(recipe, model, start.resolved)
    names = {id(p): n for n, p in model.named_parameters()}
    anchored = {names[id(p)] for p, _ in anchors}
    # Every encoder weight, though none of them is in the adapter file's keys; the head is not anchored.
    assert anchored == {n for n in start_weights if n.startswith("bert.")}
    assert all(torch.equal(value, start_weights[names[id(p)]]) for p, value in anchors)


def test_a_lora_run_on_a_lora_init_run_saves_a_full_model_that_reloads(lora_first, tiny_recipe, tmp_path):
    out = stack(tmp_path, "lora-on-lora", tiny_recipe, f"model.init_from={lora_first}", "model.finetune=lora",
                *QUICK)
    assert not (out / "model" / "adapter_config.json").exists()  # its base exists in no model folder
    report = read(out)
    assert report["model"]["lora"]["r"] == 8 and report["model"]["init_from"]["name"] == "lora-first"
    assert_reloads_with_the_runs_predictions(out)


def assert_reloads_with_the_runs_predictions(out: Path, folder: Path | None = None) -> None:
    """`adapt predict`'s loader, on the run or on `folder` (an export), gives the probabilities the run wrote."""
    rows = [json.loads(line) for line in (out / "predictions" / "target_test.jsonl").read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in open(read(out)["recipe"]["data"]["target"]["test"])]
    m = load_for_inference(folder or out)
    if layers := read(out)["model"].get("layers"):
        assert m.model.config.num_hidden_layers == len(layers["kept"])
    probs = predict_texts(m.model, m.tokenizer, texts, 32, "head", 4)
    assert np.abs(probs - np.array([r["probs"] for r in rows])).max() < 1e-5


def test_three_stages_record_the_whole_chain(first, tiny_recipe, tiny_model_dir, tmp_path):
    second = stack(tmp_path, "second", tiny_recipe, f"model.init_from={first}", "method.name=dann", *QUICK)
    third = stack(tmp_path, "third", tiny_recipe, f"model.init_from={second}", "model.finetune=head",
                  "train.max_steps=2")  # diagnostics on: the "pretrained" encoder is second's
    chain = read(third)["model"]["init_from"]
    assert [(r["name"], r["method"]) for r in chain["chain"]] == [("first", "source_only"), ("second", "dann")]
    assert chain["run"] == str(second) and chain["base"] == str(tiny_model_dir)
    assert read(third)["model"]["name_or_path"] == str(tiny_model_dir)
    line = f"Started from run `second` (dann) ← `first` (source_only) ← {tiny_model_dir.name}"
    assert line in (third / "report.md").read_text()
    assert "second" in (third / "report.html").read_text()
    card = build_model_card(third, repo_id="me/third", adapter=False).text
    assert line in card and str(tmp_path) not in card
    # The head trained, the encoder did not: it is still second's.
    a, b = state(load_saved_model(second / "model")), state(load_saved_model(third / "model"))
    assert_same({k: v for k, v in a.items() if k.startswith("bert.")}, {k: v for k, v in b.items() if k.startswith("bert.")})
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
    assert "trained" in json.loads((third / "diagnostics.json").read_text())["proxy_a_distance"]
    assert recorded_start(read(third)["model"]).init_dir == str(second / "model")  # for `adapt evaluate --diagnostics`


def test_self_training_without_a_source_phase_pseudo_labels_with_the_init_runs_model(first, tiny_recipe, tiny_data,
                                                                                       tmp_path):
    # The unlabelled text is books text (filed as kitchen), on which the init run's predictions vary: it calls all
    # tiny kitchen texts positive, so that round 1 would keep none, balanced, and show nothing.
    unlabeled = tmp_path / "unlabeled.jsonl"
    rows = [json.loads(line) for line in tiny_data["source_test"].read_text().splitlines()]
    unlabeled.write_text("".join(json.dumps({**r, "domain": "kitchen", "label": None}) + "\n" for r in rows))
    out = stack(tmp_path, "rounds-only", tiny_recipe, f"model.init_from={first}", "method.name=self_training",
                "method.self_training.source_epochs=0", "method.self_training.rounds=1",
                "method.self_training.threshold=0.5", f"data.target.unlabeled={unlabeled}", "eval.diagnostics=false")
    logged = {json.loads(line).get("phase_name") for line in (out / "train_log.jsonl").read_text().splitlines()}
    assert "round1" in logged and "source" not in logged
    # Round 1 chose from the init run's probabilities on the unlabelled target, row for row: no training came first.
    saved = json.loads((out / "pseudo_labels" / "round1.json").read_text())
    texts = [json.loads(line)["text"] for line in unlabeled.read_text().splitlines()]
    m = load_for_inference(first)
    probs = predict_texts(m.model, m.tokenizer, texts, 32, "head", 4)
    assert saved["kept"] > 0
    assert np.abs(probs[saved["rows"]] - np.array(saved["probs"])).max() < 1e-5
    assert saved["predicted_per_class"] == np.bincount(probs.argmax(axis=1), minlength=2).tolist()


def test_rounds_without_a_source_phase_need_a_trained_start(tiny_recipe, capsys):
    assert validate_main([str(tiny_recipe), "method.name=self_training", "method.self_training.source_epochs=0"]) != 0
    err = capsys.readouterr()
    assert "source_epochs: 0" in err.out + err.err and "model.init_from" in err.out + err.err


def test_an_interrupted_stacked_run_resumes_as_if_uninterrupted(lora_first, tiny_recipe, tmp_path, monkeypatch):
    args = [f"model.init_from={lora_first}", "model.finetune=lora", "train.epochs=1", "train.checkpoint_every_steps=2",
            "eval.diagnostics=false"]
    full = stack(tmp_path, "full", tiny_recipe, *args)
    with stop_at(monkeypatch, 3), pytest.raises(RunInterrupted):
        stack(tmp_path, "part", tiny_recipe, *args)
    assert (tmp_path / "part" / "checkpoints" / "step-00000003").is_dir() and not (tmp_path / "part" / "report.json").exists()
    part = stack(tmp_path, "part", tiny_recipe, *args)
    a, b = state(load_saved_model(full / "model")), state(load_saved_model(part / "model"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


# ----------------------------------------------------------------------------------------------------------
# What a run cannot start from: one clear message, before the data loads, nothing written.


@pytest.fixture()
def unfinished(tmp_path) -> Path:
    out = tmp_path / "unfinished"
    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "checkpoints" / "step-00000002" / "train_state.json").write_text("{}")
    (out / "recipe.yaml").write_text("seed: 0\n")
    return out


@pytest.mark.parametrize("init, extra, expected", [
    ("missing", [], "does not exist"),
    ("unfinished", [], "is an unfinished run"),
    ("empty", [], "is not a run folder"),
    ("first", ["data.label_names=[positive,negative]"],
     "labels ['negative', 'positive'], but this run's labels are ['positive', 'negative']"),
    ("first", ["model.name_or_path=bert-base-uncased"], "whose model was trained from"),
    ("first", ["model.num_layers=3"], "has only 2 encoder layers"),
    ("first", ["data.max_length=100"], "takes at most 64 tokens"),
])
def test_what_a_run_cannot_start_from_stops_it_before_anything(init, extra, expected, first, unfinished, tiny_recipe,
                                                              tmp_path, capsys, monkeypatch):
    folders = {"missing": tmp_path / "nowhere", "unfinished": unfinished, "first": first, "empty": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    before = {p: sorted(p.rglob("*")) for p in folders.values() if p.exists()}

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the check")

    monkeypatch.setattr(adapt.training.run, "load_splits", no_data)
    out = tmp_path / "out"
    argv = [str(tiny_recipe), f"output_dir={out}", f"model.init_from={folders[init]}", *extra]
    for main in (validate_main, train_main):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not out.exists()
    assert before == {p: sorted(p.rglob("*")) for p in folders.values() if p.exists()}


def test_a_finished_run_with_the_same_labels_validates(first, tiny_recipe, capsys):
    assert validate_main([str(tiny_recipe), f"model.init_from={first}", "data.label_names=[negative,positive]"]) == 0
    assert f"init_from: {first}" in capsys.readouterr().out


def test_labels_in_another_order_found_in_the_data_stop_the_run_before_it_writes(first, tiny_data, tiny_recipe,
                                                                                 tmp_path, capsys):
    renamed = []  # the same texts, labelled "bad"/"good": other names, found only once the data is read
    for split in ("source_train", "source_test", "target_test"):
        rows = [json.loads(line) for line in tiny_data[split].read_text().splitlines()]
        (tmp_path / f"{split}.jsonl").write_text("".join(
            json.dumps({**r, "label": {"negative": "bad", "positive": "good"}[r["label"]]}) + "\n" for r in rows))
        renamed.append(f"data.{split.replace('_', '.')}={tmp_path / f'{split}.jsonl'}")
    out = tmp_path / "out"
    assert train_main([str(tiny_recipe), f"output_dir={out}", f"model.init_from={first}", *renamed]) == 2
    err = capsys.readouterr().err
    assert "['bad', 'good']" in err and "same names in the same order" in err and not out.exists()


# ----------------------------------------------------------------------------------------------------------
# Smaller students.


@pytest.mark.parametrize("total, n, choice, kept", [
    (6, 3, "spread", [0, 2, 4]), (12, 6, "spread", [0, 2, 4, 6, 8, 10]), (6, 4, "spread", [0, 1, 3, 4]),
    (6, 6, "spread", [0, 1, 2, 3, 4, 5]), (6, 1, "spread", [0]), (6, 3, "lower", [0, 1, 2]),
])
def test_which_layers_are_kept(total, n, choice, kept):
    assert kept_layers(total, n, choice) == kept


@pytest.mark.parametrize("choice, kept", [("lower", [0, 1, 2]), ("spread", [0, 2, 4])])
def test_kept_layers_are_the_chosen_layers_of_the_loaded_model(choice, kept, six_layers, tiny_recipe):
    recipe = load_recipe(tiny_recipe, [f"model.name_or_path={six_layers}", "model.num_layers=3",
                                       f"model.layer_choice={choice}"])
    start = load_start(recipe.model, LABELS)
    full = load_classifier(resolve_model(str(six_layers)), LABELS)
    layers, originals = start.model.bert.encoder.layer, full.bert.encoder.layer
    assert len(layers) == start.model.config.num_hidden_layers == 3
    for i, j in enumerate(kept):
        assert_same(state(layers[i]), state(originals[j]))
    assert start.record["layers"]["kept"] == kept and start.record["layers"]["of"] == 6
    assert start.record["layers"]["params_after"] < start.record["layers"]["params_before"] == count_parameters(full)[0]
    assert len(load_start_encoder(start.resolved).encoder.layer) == 3  # the diagnostics' starting encoder too


def test_a_shrunk_student_trains_with_half_of_its_layers_frozen_and_reloads(six_layers, tiny_recipe, tmp_path):
    out = stack(tmp_path, "student", tiny_recipe, f"model.name_or_path={six_layers}", "model.num_layers=3",
                "model.layer_choice=spread", "model.finetune=freeze", "train.max_steps=3")
    m = read(out)["model"]
    assert m["frozen_layers"] == 1 and m["total_layers"] == 3  # the default half counts the kept layers
    assert m["layers"]["kept"] == [0, 2, 4] and m["params_total"] == m["layers"]["params_after"]
    assert recorded_start(m).layers == (0, 2, 4) and recorded_start(m).path == str(six_layers)
    full, _ = apply_finetune(load_classifier(resolve_model(str(six_layers)), LABELS),
                             load_recipe(tiny_recipe, ["model.finetune=freeze"]).model)
    assert m["params_trainable"] < count_parameters(full)[1]
    assert load_saved_model(out / "model").config.num_hidden_layers == 3
    assert_reloads_with_the_runs_predictions(out)
    assert export_main([str(out), "--out", str(tmp_path / "export")]) == 0  # a plain 3-layer transformers model
    assert_reloads_with_the_runs_predictions(out, tmp_path / "export")
    assert "3 of 6 encoder layers kept (spread: 0, 2, 4)" in (out / "report.md").read_text()


def test_a_student_shrunk_from_a_teacher_run_with_lora(first, tiny_recipe, tmp_path):
    out = stack(tmp_path, "student", tiny_recipe, f"model.init_from={first}", "model.num_layers=1",
                "model.layer_choice=spread", "model.finetune=lora", *QUICK)
    m = read(out)["model"]
    assert m["layers"]["kept"] == [0] and m["init_from"]["name"] == "first"
    saved = load_saved_model(out / "model")
    assert saved.config.num_hidden_layers == 1 and not (out / "model" / "adapter_config.json").exists()
    assert_reloads_with_the_runs_predictions(out)


def test_num_layers_below_one_is_a_recipe_problem(tiny_recipe, capsys):
    assert validate_main([str(tiny_recipe), "model.num_layers=0", "model.layer_choice=spread"]) == 2
    assert "`model.num_layers` must be >= 1, got 0" in capsys.readouterr().err
    assert validate_main([str(tiny_recipe), "model.layer_choice=spread"]) == 2
    assert "`model.layer_choice` is `spread` but `model.num_layers` is not set" in capsys.readouterr().err


def test_a_run_from_a_pretrained_model_records_no_start(first):
    report = read(first)
    assert "init_from" not in report["model"] and "layers" not in report["model"]
    assert "Started from" not in (first / "report.md").read_text()
