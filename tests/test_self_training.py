"""Self-training's options, each checked for what makes it that option: sharpened and soft targets, the mean teacher
(its average, that it chooses the pseudo-labels, its exact resume), R-Drop consistency, the per-class curriculum,
rounds without the source, and defaults that keep the method as it was."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import stop_at
from datasets import Dataset
from safetensors.torch import load_file

import adapt.methods.self_training.method as st
from adapt import load_recipe
from adapt.core.errors import AdaptError, RunInterrupted
from adapt.methods.self_training import SelfTrainingOptions, report_lines
from adapt.methods.self_training.method import (
    RoundLoss,
    SelfTraining,
    curriculum_fraction,
    pseudo_targets,
    round_data,
    select_pseudo_labels,
    sharpen,
    symmetric_kl,
)
from adapt.methods.self_training.teacher import EMA_HEAD, EmaTeacher
from adapt.model.heads import AdaptModel, classifier_of
from adapt.training.run import run

ST = ["method.name=self_training", "train.epochs=1"]


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


class FixedLogits(torch.nn.Module):
    """A stand-in classifier whose logits are given, row by row."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.fixed = logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> SimpleNamespace:
        return SimpleNamespace(logits=self.fixed[: input_ids.shape[0]])


def batch_of(labels: list[int], idx: list[int]) -> dict[str, torch.Tensor]:
    n = len(labels)
    return {"input_ids": torch.ones(n, 4, dtype=torch.long), "attention_mask": torch.ones(n, 4, dtype=torch.long),
            "labels": torch.tensor(labels), "idx": torch.tensor(idx)}


def tiny_classifier(model_dir: Path, dropout: float = 0.0):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


# ----------------------------------------------------------------------------------------------------------
# Defaults: the method as it was.


def _old_select(probs: np.ndarray, threshold: float, max_per_class: int | None) -> tuple[list[int], list[int]]:
    """The selection before these options, verbatim in effect: confident, then balanced, most confident first."""
    confidence, pred = probs.max(axis=1), probs.argmax(axis=1)
    per_class = []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero((pred == c) & (confidence >= threshold))
        per_class.append(rows[np.argsort(-confidence[rows], kind="stable")])
    n = min([len(r) for r in per_class] + ([max_per_class] if max_per_class is not None else []))
    keep = np.concatenate([r[:n] for r in per_class]).astype(np.int64)
    return keep.tolist(), pred[keep].tolist()


def test_defaults_keep_the_method_as_it_was():
    cfg = SelfTrainingOptions()
    assert (cfg.labels, cfg.ema_decay, cfg.consistency, cfg.curriculum, cfg.keep_source) == ("hard", None, 0.0, False, True)
    recipe = SimpleNamespace(method=SimpleNamespace(self_training=cfg))
    assert SelfTraining().heads(recipe, torch.nn.Linear(2, 2), "") == {}  # no teacher: the model is the classifier
    rng = np.random.default_rng(0)
    for _ in range(50):
        probs = rng.dirichlet([0.3, 0.3, 0.3], size=int(rng.integers(1, 40)))
        for threshold, cap in ((0.5, None), (0.8, 3), (0.95, None)):
            keep, labels, _ = select_pseudo_labels(probs, threshold, cap)
            assert (keep.tolist(), labels.tolist()) == _old_select(probs, threshold, cap)


def test_hard_round_loss_is_the_plain_cross_entropy_split_into_source_and_pseudo_shares():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [1.0, -1.0]])
    batch = batch_of([0, 1, 1], idx=[0, 5, 1])  # rows 0 and 1 of the round data are source, row 5 pseudo-labelled
    loss = RoundLoss(consistency=0.0, pad_id=0)
    loss.n_labeled = 2
    out = loss(FixedLogits(logits), {"labeled": batch}, None)
    assert torch.equal(out.loss, F.cross_entropy(logits, batch["labels"]))  # computed exactly as before
    rows = F.cross_entropy(logits, batch["labels"], reduction="none")
    assert torch.allclose(out.logs["ce"], (rows[0] + rows[2]) / 3) and torch.allclose(out.logs["pseudo"], rows[1] / 3)
    assert set(out.logs) == {"ce", "pseudo"}


# ----------------------------------------------------------------------------------------------------------
# Soft and sharpened labels.


def test_sharpening_is_power_one_over_t_renormalised():
    p = np.array([[0.6, 0.3, 0.1], [0.25, 0.25, 0.5]])
    expected = np.array([[0.36, 0.09, 0.01], [0.0625, 0.0625, 0.25]])
    assert np.allclose(sharpen(p, 0.5), expected / expected.sum(axis=1, keepdims=True))
    assert np.allclose(sharpen(p, 1.0), p)
    assert sharpen(np.array([[0.7, 0.3]]), 1e-3).tolist() == [[1.0, 0.0]]  # T -> 0: the argmax, no 0/0
    p = p[:, :2] / p[:, :2].sum(axis=1, keepdims=True)
    saved = {"rows": [3, 8], "probs": p.tolist(), "predicted_per_class": [5, 5]}
    assert pseudo_targets(saved, "hard", 0.5) is None
    assert np.allclose(pseudo_targets(saved, "soft", 0.5), p)
    assert np.allclose(pseudo_targets(saved, "sharpened", 0.5), sharpen(p, 0.5))
    assert pseudo_targets({"rows": [], "probs": [], "predicted_per_class": [5, 5]}, "soft", 0.5).shape == (0, 2)


def test_soft_loss_is_cross_entropy_against_the_target_distribution():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    loss = RoundLoss(consistency=0.0, pad_id=0)
    loss.n_labeled = 1
    loss.targets = torch.tensor([[1.0, 0.0], [0.3, 0.7]])  # a source row (one-hot), a pseudo-labelled one
    out = loss(FixedLogits(logits), {"labeled": batch_of([0, 1], idx=[0, 1])}, None)
    source = math.log(1 + math.exp(-2.0))  # -log softmax([2, 0])[0]
    pseudo = -(0.3 * math.log(1 / (1 + math.e)) + 0.7 * math.log(math.e / (1 + math.e)))
    assert out.loss.item() == pytest.approx((source + pseudo) / 2, rel=1e-6)
    assert out.logs["ce"].item() == pytest.approx(source / 2, rel=1e-6)
    assert out.logs["pseudo"].item() == pytest.approx(pseudo / 2, rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Curriculum and keep_source.


def test_curriculum_keeps_the_top_fraction_per_class_then_balances():
    # Class 0 is predicted for rows 0-4 (confidence 0.95, 0.9, 0.85, 0.8, 0.75), class 1 for rows 5-7 (0.9, 0.7, 0.6).
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.85, 0.15], [0.8, 0.2], [0.75, 0.25],
                      [0.1, 0.9], [0.3, 0.7], [0.4, 0.6]])
    assert curriculum_fraction(1, 2, 0.8) == pytest.approx(0.4) and curriculum_fraction(2, 2, 0.8) == pytest.approx(0.8)
    keep, labels, stats = select_pseudo_labels(probs, None, None, fraction=0.4)  # round 1 of 2
    assert stats["confident_per_class"] == [2, 1]  # floor(0.4 * 5), floor(0.4 * 3)
    assert sorted(keep.tolist()) == [0, 5] and stats["kept_per_class"] == [1, 1]
    keep, labels, stats = select_pseudo_labels(probs, None, None, fraction=0.8)  # round 2 of 2
    assert stats["confident_per_class"] == [4, 2]
    assert sorted(keep.tolist()) == [0, 1, 5, 6] and sorted(labels.tolist()) == [0, 0, 1, 1]
    # The threshold plays no part: 0.6 would be cut by the default 0.9, and is kept at the full fraction.
    keep, _, stats = select_pseudo_labels(probs, None, None, fraction=1.0)
    assert stats["confident_per_class"] == [5, 3] and 7 in keep.tolist()


def _tiny_round_data():
    source = Dataset.from_dict({"input_ids": [[1, 2], [1, 3], [1, 4]], "length": [2, 2, 2], "idx": [0, 1, 2],
                                "label": [0, 1, 0]})
    target = Dataset.from_dict({"input_ids": [[5, 6], [5, 7], [5, 8], [5, 9]], "length": [2] * 4, "idx": [0, 1, 2, 3],
                                "id": ["t0", "t1", "t2", "t3"]})
    return source, target, {"round": 1, "rows": [3, 1], "labels": [1, 0]}


def test_without_keep_source_the_round_holds_only_pseudo_labelled_rows():
    source, target, saved = _tiny_round_data()
    data, n_labeled = round_data(None, target, saved)
    assert n_labeled == 0 and data["input_ids"] == [[5, 9], [5, 7]] and data["label"] == [1, 0]
    assert data["idx"] == [0, 1]
    loss = RoundLoss(0.0, 0)  # n_labeled 0: every row is a pseudo-label, nothing is logged as source CE
    out = loss(FixedLogits(torch.tensor([[1.0, 0.0], [0.0, 1.0]])), {"labeled": batch_of([1, 0], [0, 1])}, None)
    assert out.logs["ce"].item() == 0 and out.logs["pseudo"].item() == pytest.approx(out.loss.item())

    data, n_labeled = round_data(source, target, saved)  # kept: source first, then the pseudo-labelled rows
    assert n_labeled == 3 and data["input_ids"] == [[1, 2], [1, 3], [1, 4], [5, 9], [5, 7]]
    assert data["label"] == [0, 1, 0, 1, 0] and data["idx"] == [0, 1, 2, 3, 4]
    with pytest.raises(AdaptError, match="keep_source"):
        round_data(None, target, {**saved, "rows": [], "labels": []})


# ----------------------------------------------------------------------------------------------------------
# Consistency (R-Drop).


def test_symmetric_kl_zero_when_equal_and_hand_value():
    a = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.0, 0.0]])
    assert symmetric_kl(a, a).item() == 0.0
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert symmetric_kl(p.log(), q.log()).item() == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-6)


def test_consistency_term_positive_with_dropout_in_train_mode(tiny_model_dir):
    model = tiny_classifier(tiny_model_dir, dropout=0.1)
    with torch.no_grad():  # a freshly initialised head's logits are ~0 whatever the dropout; make them count
        model.classifier.weight.mul_(50)
    batch = batch_of([0, 1], [0, 1]) | {"input_ids": torch.tensor([[2, 5, 6, 3], [2, 7, 8, 3]])}
    target = {k: batch[k] for k in ("input_ids", "attention_mask")}
    loss = RoundLoss(consistency=2.0, pad_id=0)
    loss.n_labeled = 2
    model.eval()  # no dropout: both passes alike, only the supervised loss is left
    out = loss(model, {"labeled": batch, "consistency": target}, None)
    assert out.logs["consistency"].item() == pytest.approx(0.0, abs=1e-6)
    model.train()
    torch.manual_seed(1)
    out = loss(model, {"labeled": batch, "consistency": target}, None)
    assert out.logs["consistency"].item() > 1e-4
    assert out.loss.item() == pytest.approx((out.logs["ce"] + out.logs["pseudo"] + 2.0 * out.logs["consistency"]).item(),
                                            rel=1e-5)


@pytest.fixture(scope="module")
def dropout_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with BERT's usual dropout (the shared one has none, so that tests learn fast)."""
    from transformers import AutoTokenizer, BertModel

    out = tmp_path_factory.mktemp("tiny-bert-dropout")
    torch.manual_seed(0)
    BertModel.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_consistency_rounds_log_the_term_and_need_dropout(tiny_recipe, dropout_model_dir, tmp_path):
    out = tmp_path / "run"
    run(load_recipe(tiny_recipe, [*ST, "method.self_training.rounds=1", "method.self_training.threshold=0.5",
                                  "method.self_training.consistency=1.0", f"model.name_or_path={dropout_model_dir}",
                                  f"output_dir={out}"]))
    rounds = [r for r in log_rows(out) if r.get("phase_name") == "round1"]
    assert rounds and all(r["consistency"] > 0 for r in rounds)
    assert not any("consistency" in r for r in log_rows(out) if r.get("phase_name") == "source")
    with pytest.raises(AdaptError, match="no dropout"):  # the shared tiny model has dropout 0: the term would be 0
        run(load_recipe(tiny_recipe, [*ST, "method.self_training.consistency=1.0", f"output_dir={tmp_path / 'no'}"]))


# ----------------------------------------------------------------------------------------------------------
# The mean teacher.


def test_ema_is_the_decay_weighted_average_of_the_student_trajectory():
    student = torch.nn.Linear(3, 2)
    student.bias.requires_grad_(False)  # frozen: not averaged
    d = 0.6
    teacher = EmaTeacher(student, d)
    assert teacher.names == ["weight"]
    trajectory = []
    for t in range(6):  # six "optimizer steps"
        with torch.no_grad():
            student.weight.copy_(torch.randn(2, 3))
        trajectory.append(student.weight.detach().clone())
        assert teacher.started == (t > 0)
        teacher.update(student)
    # Warm-up d_t = min(d, t/(t+1)): 0 (a copy of the first weights), 0.5, then d (2/3 > 0.6); in closed form
    # ema = d^4 (θ1 + θ2)/2 + (1-d) sum_{i=3..6} d^(6-i) θi.
    expected = d ** 4 * (trajectory[0] + trajectory[1]) / 2
    expected += sum((1 - d) * d ** (5 - i) * trajectory[i] for i in range(2, 6))
    assert torch.allclose(teacher.averaged()[0], expected, atol=1e-6)
    assert [teacher.decay_at(t) for t in range(4)] == [0.0, 0.5, 0.6, 0.6] and int(teacher.updates) == 6


def test_ema_weights_in_predicts_with_the_average_and_puts_the_student_back(tiny_model_dir):
    student = tiny_classifier(tiny_model_dir).eval()
    teacher = EmaTeacher(student, 0.9)
    with torch.no_grad():
        for avg in teacher.averaged():
            avg.add_(0.05 * torch.randn_like(avg))  # a teacher that differs from the student
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    x = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    own = student(**x).logits
    with teacher.weights_in(student):
        taught = student(**x).logits
        assert all(torch.equal(dict(student.named_parameters())[n], a) for n, a in zip(teacher.names, teacher.averaged()))
    assert not torch.allclose(own, taught)
    assert all(torch.equal(p, before[n]) for n, p in student.named_parameters())  # bit for bit


def test_ema_buffers_are_in_the_checkpointed_state_and_ignored_by_ddp():
    model = AdaptModel(torch.nn.Linear(3, 2), {EMA_HEAD: EmaTeacher(torch.nn.Linear(3, 2), 0.9)})
    SelfTraining().prepare_model(model, None)
    assert {"heads.ema.weight", "heads.ema.bias", "heads.ema.updates"} <= set(model.state_dict())  # saved by `save_model`
    assert model._ddp_params_and_buffers_to_ignore == ["heads.ema.weight", "heads.ema.bias", "heads.ema.updates"]
    assert not list(model.heads.parameters())  # nothing for the optimizer or for DDP's gradient sync


def test_teacher_averages_the_trainable_weights_only(tiny_model_dir, tiny_recipe):
    from adapt.model.finetune import apply_finetune

    lora, _ = apply_finetune(tiny_classifier(tiny_model_dir), load_recipe(tiny_recipe, ["model.finetune=lora"]).model)
    teacher = EmaTeacher(lora, 0.9)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert teacher.names == trainable and any("lora_" in n for n in trainable)
    averaged = sum(b.numel() for b in teacher.averaged())
    assert averaged == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert averaged < sum(p.numel() for p in lora.parameters()) / 5


@pytest.fixture()
def teacher_spy(monkeypatch):
    """Each prediction that chooses pseudo-labels: whether the classifier held the teacher's weights then, and whether
    those differed from the student's; and after every optimizer step, the teacher's buffers."""
    seen: dict = {"choices": [], "ema": {}, "student": None}
    real_predict, real_update, real_weights_in = st.predict_logits, st.update_teacher, EmaTeacher.weights_in

    @contextmanager
    def weights_in(self, classifier):
        seen["student"] = [p.detach().clone() for p in self._student(classifier)]
        with real_weights_in(self, classifier):
            yield

    def predict(acc, model, ds, batch_size, collate):
        net = acc.unwrap_model(model)
        clf, ema = classifier_of(net), net.heads[EMA_HEAD]
        params = dict(clf.named_parameters())
        logits = real_predict(acc, model, ds, batch_size, collate)
        seen["choices"].append({"teacher": all(torch.equal(params[n], a) for n, a in zip(ema.names, ema.averaged())),
                                "not_student": seen["student"] is not None
                                and not all(map(torch.equal, ema.averaged(), seen["student"])), "logits": logits})
        seen["student"] = None
        return logits

    def update(loop):
        real_update(loop)
        net = loop.accelerator.unwrap_model(loop.model)
        seen["ema"][loop.state.global_step + 1] = {n: b.clone() for n, b in net.heads[EMA_HEAD].named_buffers()}

    monkeypatch.setattr(st, "predict_logits", predict)
    monkeypatch.setattr(st, "update_teacher", update)
    monkeypatch.setattr(EmaTeacher, "weights_in", weights_in)
    return seen


def test_teacher_chooses_sharpened_curriculum_pseudo_labels(tiny_recipe, tiny_data, tmp_path, teacher_spy):
    out = tmp_path / "run"
    # Unlabelled text the source model can predict both ways (the tiny target's cue words are unseen).
    report = run(load_recipe(tiny_recipe, [*ST, "method.self_training.rounds=2", "method.self_training.ema_decay=0.9",
                                           "method.self_training.labels=sharpened", "method.self_training.curriculum=true",
                                           f"data.target.unlabeled={tiny_data['source_test']}", "train.epochs=4",
                                           "data.domain_column=no_such_column", f"output_dir={out}"]))
    steps = max(r["global_step"] for r in log_rows(out))
    source_steps = min(r["global_step"] for r in log_rows(out) if "pseudo_labels" in r)  # logged as round 1 starts
    assert sorted(teacher_spy["ema"]) == list(range(source_steps + 1, steps + 1))  # every step of the rounds, only
    # Round 1 is chosen by the source-trained student (the average starts with the rounds), round 2 by the average.
    first, second = teacher_spy["choices"]
    assert not first["teacher"] and second["teacher"] and second["not_student"]
    rounds = report["method_summary"]["rounds"]
    for r, choice in zip(rounds, teacher_spy["choices"]):
        saved = json.loads((out / "pseudo_labels" / f"round{r['round']}.json").read_text())
        probs = torch.softmax(torch.from_numpy(choice["logits"]), dim=-1).numpy()
        kept = np.asarray(saved["probs"], dtype=np.float32).reshape(-1, 2)
        assert np.array_equal(kept, probs[saved["rows"]])  # the teacher's probabilities
        assert np.array_equal(np.argmax(kept, axis=1), saved["labels"])
        fraction = curriculum_fraction(r["round"], 2, 0.8)
        assert r["curriculum_fraction"] == fraction and "threshold" not in r and "probs" not in r
        assert r["confident_per_class"] == [math.floor(fraction * n + 1e-9) for n in r["predicted_per_class"]]
        teacher = ("ema", 0.9) if r["round"] > 1 else ("student", None)
        assert (r["label_mode"], r["sharpen_temperature"], r["teacher"], r.get("ema_decay")) == ("sharpened", 0.5, *teacher)
    assert rounds[-1]["kept"] > 0
    lines = report_lines(report["method_summary"])
    assert "curriculum: the top 40% per class; sharpened labels (T=0.5) chosen by the student" in lines[0]
    assert "sharpened labels (T=0.5) chosen by the EMA teacher (decay 0.9)" in lines[1]
    # Old summaries (no settings saved) render as they did.
    old = {"round": 1, "kept": 10, "candidates": 40, "threshold": 0.9, "confident_per_class": [6, 5],
           "kept_per_class": [5, 5], "predicted_per_class": [20, 20]}
    assert report_lines({"rounds": [old]})[0] == ("- round 1: 10 pseudo-labels kept of 40 (threshold 0.9; confident per "
                                                  "class [6, 5], kept per class [5, 5], predicted per class [20, 20])")
    # A round that kept nothing because one class had no confident prediction says why, and what keeps some.
    empty = {**old, "round": 2, "kept": 0, "confident_per_class": [0, 7], "kept_per_class": [0, 0]}
    lines = report_lines({"rounds": [old, empty]})
    assert len(lines) == 4 and lines[1].startswith("- round 2: 0 pseudo-labels kept of 40") and lines[3] == ""
    assert "Round 2 kept none: no text predicted as class 0" in lines[2] and "curriculum: true" in lines[2]


def test_teacher_resumes_bit_for_bit(tiny_recipe, tiny_data, tmp_path, monkeypatch, teacher_spy):
    args = [*ST, "method.self_training.rounds=1", "method.self_training.threshold=0.5", "method.self_training.ema_decay=0.8",
            "method.self_training.labels=soft", "train.checkpoint_every_steps=4", "train.epochs=4",
            f"data.target.unlabeled={tiny_data['source_test']}", "data.domain_column=no_such_column"]
    full, part = tmp_path / "full", tmp_path / "part"
    run(load_recipe(tiny_recipe, [*args, f"output_dir={full}"]))
    ema_full = dict(teacher_spy["ema"])
    teacher_spy["ema"].clear()

    with stop_at(monkeypatch, 39), pytest.raises(RunInterrupted, match="interrupted at step 39"):  # in round 1 (the source phase is 36 steps)
        run(load_recipe(tiny_recipe, [*args, f"output_dir={part}"]))
    run(load_recipe(tiny_recipe, [*args, f"output_dir={part}"]))

    last = max(ema_full)  # the rounds' steps: 37 to the end (the source phase is 36 steps)
    assert last > 39 and sorted(ema_full) == list(range(37, last + 1))
    assert sorted(teacher_spy["ema"]) == list(range(37, last + 1))  # the interrupted run and its resumption
    assert all(torch.equal(ema_full[last][n], b) for n, b in teacher_spy["ema"][last].items())
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (full, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = (full / "pseudo_labels" / "round1.json").read_text()
    assert json.loads(saved)["kept"] > 0 and saved == (part / "pseudo_labels" / "round1.json").read_text()
