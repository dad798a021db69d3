"""Adaptation methods on the tiny model: what makes each one that method (the reversed gradient's sign and scale,
the masking rate, the pseudo-label threshold and balance, the L2-SP pull), and that each runs with every
`model.finetune` and resumes exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import stop_at

import adapt.training.loop
from adapt import load_recipe
from adapt.core.errors import AdaptError, RecipeError, RunInterrupted
from adapt.methods import available_methods
from adapt.methods.dann.method import DomainDiscriminator, dann_lambda, reverse_gradient
from adapt.methods.mlm.head import MlmHead, load_pretrained_mlm_head, mask_tokens
from adapt.methods.self_training.method import select_pseudo_labels
from adapt.model.heads import AdaptModel
from adapt.training.run import run

ROOT = Path(__file__).resolve().parent.parent
MLM_METHODS = ("dapt", "tapt", "udalm")


def fast(method: str) -> list[str]:
    return ["train.epochs=2", *(["method.mlm.steps=4"] if method in MLM_METHODS else [])]


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def tiny_classifier(tiny_model_dir: Path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)


# ----------------------------------------------------------------------------------------------------------
# DANN: gradient reversal and its schedule.


def test_gradient_reversal_flips_sign_and_scales():
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)  # identity forward
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.3 * upstream)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0, 10, 1.0) == 0.0
    assert dann_lambda(1.0, 10, 1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.5, 10, 0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-5)) - 1))
    values = [dann_lambda(p / 10, 10, 1.0) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0


def test_dann_encoder_gets_reversed_scaled_domain_gradient(tiny_model_dir):
    """Through the whole model: the encoder's gradient from the domain loss is -lambda times the plain one, while
    the discriminator's own gradient is not reversed."""
    torch.manual_seed(0)
    model = AdaptModel(tiny_classifier(tiny_model_dir), {"domain": DomainDiscriminator(32, 16, dropout=0.0)}).eval()
    ids = torch.randint(5, 30, (6, 10))
    mask = torch.ones_like(ids)
    domain = torch.tensor([0.0, 0, 0, 1, 1, 1])
    enc = model.classifier.bert.encoder.layer[0].attention.self.query.weight
    disc = model.heads["domain"].net[0].weight

    def grads(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, heads={"domain": scale})
        torch.nn.functional.binary_cross_entropy_with_logits(out.heads["domain"], domain).backward()
        return enc.grad.clone(), disc.grad.clone()

    plain_enc, plain_disc = grads(-1.0)  # reversing with -1 is the ordinary gradient
    rev_enc, rev_disc = grads(0.25)
    assert plain_enc.abs().sum() > 0
    assert torch.allclose(rev_enc, -0.25 * plain_enc, atol=1e-6)
    assert torch.allclose(rev_disc, plain_disc, atol=1e-6)


def test_dann_discriminator_learns_at_its_own_rate(tiny_model_dir, tiny_recipe, tmp_path, monkeypatch):
    """The discriminator's parameters sit in optimizer groups at `method.dann.lr`, the encoder's at `train.lr`,
    and the schedule scales both alike (an adversary at the encoder's rate loses the game by being flipped)."""
    from adapt.methods import method_class
    from adapt.methods.base import MethodContext
    from adapt.training.optim import build_optimizer, build_scheduler

    recipe = load_recipe(tiny_recipe, ["method.name=dann", "method.dann.lr=0.002", "train.lr=0.0001"])
    model = AdaptModel(tiny_classifier(tiny_model_dir), {"domain": DomainDiscriminator(32, 16)})
    tokenizer = type("Tok", (), {"pad_token_id": 0})()
    splits = {"source_train": [], "target_unlabeled": []}
    (phase,) = method_class("dann")().phases(MethodContext(recipe, splits, tokenizer))
    assert phase.head_lr == {"domain": 0.002}
    opt = build_optimizer(model, recipe.train, {0.002: list(model.heads["domain"].parameters())})
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(rate[id(p)] == 0.002 for p in model.heads["domain"].parameters())
    assert all(rate[id(p)] == 0.0001 for p in model.classifier.parameters())
    assert opt.param_groups[0]["lr"] == 0.0001  # the encoder's rate is the one the log reports
    sched = build_scheduler(opt, recipe.train, total_steps=10)
    assert {g["lr"] / g["initial_lr"] for g in opt.param_groups} == {sched.get_last_lr()[0] / 0.0001}
    # And the training loop hands the phase's rates to the optimizer.
    seen = []
    real_build = adapt.training.loop.build_optimizer
    monkeypatch.setattr(adapt.training.loop, "build_optimizer", lambda m, cfg, own=None: seen.append(own) or real_build(m, cfg, own))
    run(load_recipe(tiny_recipe, ["method.name=dann", "method.dann.lr=0.002", "train.max_steps=1",
                                  f"output_dir={tmp_path / 'run'}"]))
    ((lr, params),) = seen[0].items()
    assert lr == 0.002 and len(params) == 4  # the discriminator's two weights and two biases
    off = load_recipe(tiny_recipe, ["method.name=dann", "method.dann.lr=null"])
    assert method_class("dann")().phases(MethodContext(off, splits, tokenizer))[0].head_lr is None


# ----------------------------------------------------------------------------------------------------------
# Masked LM.


def test_masking_rate_and_80_10_10_split():
    torch.manual_seed(0)
    special = torch.tensor([0, 1, 2, 3, 4])  # pad, unk, cls, sep, mask
    ids = torch.randint(5, 1000, (400, 128))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[:, 100:] = 0  # padding
    ids[:, 100:] = 0
    masked, labels = mask_tokens(ids, mask, special, mask_id=4, vocab_size=1000, probability=0.15)
    selected = labels != -100
    candidates = mask.bool() & ~torch.isin(ids, special)
    assert not (selected & ~candidates).any(), "special tokens and padding are never selected"
    assert selected.sum() / candidates.sum() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(labels[selected], ids[selected])
    as_mask = (masked[selected] == 4).float().mean()
    unchanged = (masked[selected] == ids[selected]).float().mean()
    assert as_mask == pytest.approx(0.8, abs=0.01)
    assert unchanged == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)  # kept, plus random draws of the same id
    assert torch.equal(masked[~selected], ids[~selected])


def test_mlm_head_fresh_without_checkpoint_head_and_loaded_with_one(tiny_model_dir, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    clf = tiny_classifier(tiny_model_dir)
    head = MlmHead(clf.get_input_embeddings(), 32)
    assert not load_pretrained_mlm_head(head, str(tiny_model_dir))  # a BertModel checkpoint has no MLM head

    mlm = BertForMaskedLM(BertConfig.from_pretrained(tiny_model_dir))
    mlm.save_pretrained(tmp_path / "mlm")
    assert load_pretrained_mlm_head(head, str(tmp_path / "mlm"))
    assert torch.equal(head.dense.weight, mlm.cls.predictions.transform.dense.weight)
    assert torch.equal(head.bias, mlm.cls.predictions.bias)
    # The decoder is the word embedding matrix itself (tied), not a copy.
    assert head._embeddings.weight is clf.get_input_embeddings().weight
    assert not any(p is clf.get_input_embeddings().weight for p in head.parameters())


# ----------------------------------------------------------------------------------------------------------
# Entropy minimisation: the worked example of docs/architecture.md.


def test_entmin_is_the_worked_example_of_the_architecture_doc():
    """The doc's two code blocks are the method's files, byte for byte: the example is real and runs."""
    import re

    doc = (ROOT / "docs" / "architecture.md").read_text()
    blocks = dict(re.findall(r"`(adapt/methods/entmin/[\w.]+)`:\n\n```python\n(.*?)```", doc, flags=re.S))
    assert sorted(blocks) == ["adapt/methods/entmin/__init__.py", "adapt/methods/entmin/method.py"]
    for path, code in blocks.items():
        assert (ROOT / path).read_text() == code, f"{path} differs from its block in docs/architecture.md"
    assert sorted(p.name for p in (ROOT / "adapt" / "methods" / "entmin").glob("*.py")) == ["__init__.py", "method.py"]


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_entmin_objective_is_ce_plus_weight_entropy(weight, tiny_recipe, tmp_path):
    out = tmp_path / "entmin"
    run(load_recipe(tiny_recipe, ["method.name=entmin", f"method.entmin.weight={weight}", "train.epochs=1",
                                  f"output_dir={out}"]))
    rows = [r for r in log_rows(out) if "loss" in r]
    assert rows and all(r["loss"] == pytest.approx(r["ce"] + weight * r["entropy"], rel=1e-5) for r in rows)
    assert all(0 <= r["entropy"] <= math.log(2) + 1e-6 for r in rows)  # two classes: at most ln 2


def test_entmin_gradient_makes_target_predictions_more_confident(tiny_model_dir, tiny_recipe):
    """The entropy term's own gradient (weight 1 minus weight 0) lowers the target entropy when followed."""
    from adapt.methods import method_class
    from adapt.methods.base import MethodContext, StepInfo

    torch.manual_seed(0)
    model = tiny_classifier(tiny_model_dir).eval()
    tokenizer = type("Tok", (), {"pad_token_id": 0})()
    src = {"input_ids": torch.randint(5, 30, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long),
           "labels": torch.tensor([0, 1, 0, 1])}
    tgt = {"input_ids": torch.randint(5, 30, (6, 8)), "attention_mask": torch.ones(6, 8, dtype=torch.long)}
    splits = {"source_train": [], "target_unlabeled": []}

    def step(weight: float):
        recipe = load_recipe(tiny_recipe, ["method.name=entmin", f"method.entmin.weight={weight}"])
        (phase,) = method_class("entmin")().phases(MethodContext(recipe, splits, tokenizer))
        model.zero_grad()
        out = phase.loss(model, {"labeled": src, "target": tgt}, StepInfo(0, 1))
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters()]

    before, with_entropy = step(1.0)
    _, without = step(0.0)
    with torch.no_grad():
        for p, g1, g0 in zip(model.parameters(), with_entropy, without):
            p -= 0.5 * (g1 - g0)
    after, _ = step(1.0)
    assert after.logs["entropy"] < before.logs["entropy"]


# ----------------------------------------------------------------------------------------------------------
# Self-training.


def test_pseudo_labels_thresholded_and_class_balanced():
    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.92, 0.08], [0.85, 0.15],  # class 0: 3 above 0.9
                      [0.05, 0.95], [0.3, 0.7]])  # class 1: 1 above 0.9
    keep, labels, stats = select_pseudo_labels(probs, threshold=0.9, max_per_class=None)
    assert sorted(keep.tolist()) == [0, 4]  # one per class: the most confident of class 0, the only one of class 1
    assert labels.tolist() == [0, 1]
    assert stats["confident_per_class"] == [3, 1] and stats["kept_per_class"] == [1, 1]

    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.91, 0.09], [0.02, 0.98], [0.04, 0.96], [0.06, 0.94]])
    keep, labels, _ = select_pseudo_labels(probs, threshold=0.9, max_per_class=2)
    assert sorted(keep.tolist()) == [0, 1, 3, 4] and sorted(labels.tolist()) == [0, 0, 1, 1]
    keep, _, stats = select_pseudo_labels(probs, threshold=0.999, max_per_class=None)
    assert len(keep) == 0 and stats["kept"] == 0


def test_self_training_rounds_use_saved_pseudo_labels(tiny_recipe, tiny_data, tmp_path):
    out = tmp_path / "st"
    # Unlabelled text the source model can be confident about both ways (the tiny target's cue words are unseen).
    report = run(load_recipe(tiny_recipe, ["method.name=self_training", "method.self_training.rounds=2",
                                           f"data.target.unlabeled={tiny_data['source_test']}",
                                           "data.domain_column=no_such_column",
                                           "method.self_training.threshold=0.55", f"output_dir={out}"]))
    rounds = report["method_summary"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        saved = json.loads((out / "pseudo_labels" / f"round{r['round']}.json").read_text())
        assert len(saved["rows"]) == sum(saved["kept_per_class"]) == r["kept"]
        assert len(set(saved["kept_per_class"])) == 1  # balanced
        assert np.bincount(saved["labels"], minlength=2).tolist() == saved["kept_per_class"]
    assert rounds[-1]["kept"] > 0
    phases = [p["name"] for p in report["method_summary"]["phases"]]
    assert phases == ["source", "round1", "round2"]
    assert all("best_source_dev_macro_f1" in p for p in report["method_summary"]["phases"])  # each round scored


# ----------------------------------------------------------------------------------------------------------
# L2-SP.


def test_l2sp_anchors_encoder_only_and_pulls_towards_start(tiny_recipe, tmp_path):
    from safetensors.torch import load_file

    a = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'free'}", "train.epochs=2"]))
    b = run(load_recipe(tiny_recipe, [f"output_dir={tmp_path / 'l2sp'}", "train.epochs=2", "train.l2sp=1.0"]))
    assert "l2sp" not in a["method_summary"]
    assert b["method_summary"]["l2sp"]["anchored_tensors"] > 0
    start = load_file(str(Path(load_recipe(tiny_recipe).model.name_or_path) / "model.safetensors"))

    def distance(run_dir: Path) -> float:
        w = load_file(str(run_dir / "model" / "model.safetensors"))
        return sum(float((w[f"bert.{k}"] - v).pow(2).sum()) for k, v in start.items() if f"bert.{k}" in w)

    assert distance(tmp_path / "l2sp") < 0.5 * distance(tmp_path / "free")
    logged = [r["l2sp_distance"] for r in log_rows(tmp_path / "l2sp") if "l2sp_distance" in r]
    assert logged[0] == pytest.approx(0.0, abs=1e-3)


def test_l2sp_gradient_is_two_lambda_delta():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    anchor = torch.tensor([0.5, 0.0])
    (0.3 * adapt.training.loop.l2sp_penalty([(p, anchor)])).backward()
    assert torch.allclose(p.grad, 2 * 0.3 * (p.detach() - anchor))


# ----------------------------------------------------------------------------------------------------------
# Every method: valid alone, runs with every finetune mode, logs its own losses.

LOSSES = {"source_only": {"ce"}, "sequential": {"ce"}, "dapt": {"mlm", "ce"}, "tapt": {"mlm", "ce"},
          "udalm": {"mlm", "ce"}, "dann": {"ce", "domain", "lambda", "domain_acc"}, "self_training": {"ce"},
          "entmin": {"ce", "entropy"}}


def test_registry_has_the_methods():
    # `distill` needs a finished teacher run, so its runs are in tests/test_distill.py rather than in LOSSES.
    assert set(available_methods()) == set(LOSSES) | {"distill"}


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_method_name_alone_is_a_valid_default_recipe(method):
    overrides = [f"method.name={method}"]
    if method == "sequential":  # few-shot target: the one method that needs labelled target data
        with pytest.raises(RecipeError, match="needs `data.target.train`"):
            load_recipe(ROOT / "recipes" / "sentiment.yaml", overrides)
        overrides.append("data.target.train=builtin:reviews/train")
    assert load_recipe(ROOT / "recipes" / "sentiment.yaml", overrides).method.name == method


@pytest.mark.parametrize("finetune", ["full", "head", "freeze", "lora"])
@pytest.mark.parametrize("method", sorted(LOSSES))
def test_method_runs_with_each_finetune_mode(method, finetune, tiny_recipe, tiny_data, tmp_path):
    out = tmp_path / "run"
    extra = ["data.target.train=" + str(tiny_data["target_train"])] if method == "sequential" else []
    report = run(load_recipe(tiny_recipe, [f"method.name={method}", f"model.finetune={finetune}", *fast(method), *extra,
                                           f"output_dir={out}", *(["method.self_training.rounds=1"] if method == "self_training" else [])]))
    logged = set().union(*(r.keys() for r in log_rows(out)))
    assert LOSSES[method] <= logged
    assert report["method"] == method and 0 <= report["summary"]["target_accuracy"] <= 1
    # The saved model is the classifier alone: training-only heads are not part of it.
    from adapt.serving.inference import load_for_inference

    loaded = load_for_inference(out)
    assert not any(n.startswith("heads.") for n, _ in loaded.model.named_parameters())


def test_method_keys_of_another_method_are_refused(tiny_recipe):
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny_recipe, ["method.name=dann", "method.udalm.lambda=0.5", "method.mlm.probability=1.5",
                                  "train.l2sp=0.1", "model.finetune=lora"])
    text = str(err.value)
    assert "`method.udalm` is set but method `dann` does not use it" in text
    assert "`method.mlm` is set" in text
    assert "`train.l2sp`" in text and "model.finetune=lora" in text


def test_methods_that_need_unlabeled_target_say_so(tiny_recipe):
    for method in ("dapt", "udalm", "dann", "self_training"):
        with pytest.raises(RecipeError, match="needs `data.target.unlabeled`"):
            load_recipe(tiny_recipe, [f"method.name={method}", "~data.target.unlabeled"])


# ----------------------------------------------------------------------------------------------------------
# MLM phase reuse and resuming.


def test_mlm_phase_saved_and_reused(tiny_recipe, tmp_path):
    from safetensors.torch import load_file

    first = tmp_path / "dapt"
    run(load_recipe(tiny_recipe, ["method.name=dapt", *fast("dapt"), f"output_dir={first}"]))
    saved = first / "mlm"
    assert json.loads((saved / "mlm.json").read_text())["streams"] == ["target_unlabeled"]
    weights = load_file(str(saved / "model.safetensors"))
    assert any(k.startswith("heads.mlm.") for k in weights)
    assert any(k.startswith("classifier.bert.encoder.") for k in weights)

    second = tmp_path / "reuse"
    report = run(load_recipe(tiny_recipe, ["method.name=udalm", f"method.mlm.checkpoint={saved}", "train.epochs=2",
                                           f"output_dir={second}"]))
    assert [p["name"] for p in report["method_summary"]["phases"]] == ["mixed"]  # no MLM phase of its own
    assert report["method_summary"]["mlm_phase"]["steps"] == 4

    with pytest.raises(AdaptError, match="another model setup"):
        run(load_recipe(tiny_recipe, ["method.name=dapt", f"method.mlm.checkpoint={saved}", "model.finetune=lora",
                                      f"output_dir={tmp_path / 'bad'}"]))


@pytest.mark.parametrize("method", ["dann", "udalm"])
def test_two_stream_method_resumes_exactly(method, tiny_recipe, tmp_path, monkeypatch):
    """The auxiliary (target) stream's position is checkpointed: a resumed run draws the same target batches."""
    base = [f"method.name={method}", *fast(method), "train.checkpoint_every_steps=4"]
    full = tmp_path / "full"
    run(load_recipe(tiny_recipe, [*base, f"output_dir={full}"]))
    part = tmp_path / "part"
    with stop_at(monkeypatch, 9), pytest.raises(RunInterrupted):
        run(load_recipe(tiny_recipe, [*base, f"output_dir={part}"]))
    run(load_recipe(tiny_recipe, [*base, f"output_dir={part}"]))
    a = {r["global_step"]: r for r in log_rows(full) if "loss" in r}
    b = {r["global_step"]: r for r in log_rows(part) if "loss" in r}
    assert sorted(a) == sorted(b)
    key = "domain" if method == "dann" else "mlm"
    assert max(abs(a[s][key] - b[s][key]) for s in a) < 1e-5


@pytest.mark.parametrize("weight", [0.0, 2.5])
def test_udalm_mixed_objective_is_ce_plus_lambda_mlm(weight, tiny_recipe, tmp_path):
    out = tmp_path / "udalm"
    run(load_recipe(tiny_recipe, ["method.name=udalm", *fast("udalm"), f"method.udalm.lambda={weight}",
                                  f"output_dir={out}"]))
    mixed = [r for r in log_rows(out) if r.get("phase_name") == "mixed"]
    assert mixed and all(r["loss"] == pytest.approx(r["ce"] + weight * r["mlm"], rel=1e-5) for r in mixed)
    mlm_phase = [r for r in log_rows(out) if r.get("phase_name") == "mlm"]
    assert len(mlm_phase) == 4 and all("ce" not in r for r in mlm_phase)  # MLM only, 4 steps


def test_tapt_masks_the_task_texts_and_sequential_trains_target_last(tiny_recipe, tiny_data, tmp_path):
    run(load_recipe(tiny_recipe, ["method.name=tapt", *fast("tapt"), f"output_dir={tmp_path / 'tapt'}"]))
    assert json.loads((tmp_path / "tapt" / "mlm" / "mlm.json").read_text())["streams"] == ["source_train"]
    report = run(load_recipe(tiny_recipe, ["method.name=sequential", "method.target_epochs=2", "train.epochs=1",
                                           f"data.target.train={tiny_data['target_train']}",
                                           f"output_dir={tmp_path / 'seq'}"]))
    phases = report["method_summary"]["phases"]
    assert [p["name"] for p in phases] == ["source", "target"]
    assert phases[1]["last_step"] - phases[0]["last_step"] == 2 * 4  # 2 epochs over 32 target rows, batch 8
