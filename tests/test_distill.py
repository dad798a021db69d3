"""`distill` on the tiny model: what makes it distillation. The loss is CE + alpha * T^2 * KL(teacher || student) and
its gradient moves the student towards the teacher; an ensemble averages its members; the teachers' probabilities
are computed once, before training, and a resumed run reads them back; a distilled student agrees with its teacher
more than a source-only one; a missing or mismatched teacher stops the run with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import stop_at, train_tiny

import adapt.methods.distill.method as distill
from adapt import load_recipe
from adapt.core.errors import AdaptError, RecipeError, RunInterrupted
from adapt.methods.base import StepInfo
from adapt.methods.source_only.method import supervised_loss
from adapt.serving.inference import load_for_inference, predict_texts
from adapt.train import main as train_main
from adapt.training.run import run

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    """A finished run that also saw labelled target data, so it knows the target's cue words (the source-trained
    students below never see them): what it passes on through the unlabelled target texts is visible."""
    return train_tiny(tmp_path_factory.mktemp("teacher"), tiny_model_dir, tiny_data,
                      [f"data.target.train={tiny_data['target_train']}"])


def model_folder(tiny_model_dir: Path, out: Path, labels: list[str], seed: int) -> Path:
    """A bare classifier folder (config.json + weights + tokenizer), untrained, with these label names."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def texts_of(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------
# The loss.


def test_distillation_term_is_t_squared_kl_by_hand():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    teacher = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    T = 2.0
    expected = 0.0
    for z, p in zip(logits.tolist(), teacher.tolist()):
        q = np.exp(np.array(z) / T) / np.exp(np.array(z) / T).sum()
        expected += sum(pi * np.log(pi / qi) for pi, qi in zip(p, q)) / 2  # KL(p || q), batch mean
    assert distill.distillation_term(logits, teacher, T).item() == pytest.approx(T**2 * expected, rel=1e-6)
    assert distill.distillation_term(logits, F.softmax(logits / T, -1), T).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_pulls_the_student_towards_the_teacher():
    """d(T^2 KL)/dz = T (q - p) / batch: the student's tempered distribution moves towards the teacher's."""
    T = 3.0
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.1, 0.3, 0.6], [0.5, 0.25, 0.25]])
    distill.distillation_term(logits, teacher, T).backward()
    q = F.softmax(logits.detach() / T, -1)
    assert torch.allclose(logits.grad, T * (q - teacher) / 2, atol=1e-6)
    stepped = logits.detach() - 0.5 * logits.grad
    gap = lambda z: (F.softmax(z / T, -1) - teacher).abs().sum()  # noqa: E731
    assert gap(stepped) < gap(logits.detach())


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_phase_loss_is_ce_plus_alpha_t2_kl(alpha, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()
    src = {"input_ids": torch.randint(5, 30, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long),
           "labels": torch.tensor([0, 1, 0, 1])}
    dis = {"input_ids": torch.randint(5, 30, (3, 6)), "attention_mask": torch.ones(3, 6, dtype=torch.long),
           "idx": torch.tensor([4, 0, 2])}
    targets = distill.TeacherTargets()
    targets.probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7], [0.6, 0.4]])
    out = distill.distill_loss(alpha, 2.0, 0, targets)(model, {"labeled": src, "distill": dis}, StepInfo(0, 1))
    ce = supervised_loss(model, {"labeled": src}, StepInfo(0, 1)).loss
    with torch.no_grad():
        kd = distill.distillation_term(model(input_ids=dis["input_ids"], attention_mask=dis["attention_mask"]).logits,
                                       targets.probs[dis["idx"]], 2.0)  # the rows the batch's idx name
    assert out.logs["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert out.logs["kl"].item() * 4 == pytest.approx(kd.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(ce.item() + alpha * kd.item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Teachers.


def test_an_ensemble_averages_its_members_at_the_temperature(teacher, tiny_model_dir, tiny_data, tmp_path):
    other = model_folder(tiny_model_dir, tmp_path / "other", LABELS, seed=1)
    texts = {"distill": texts_of(tiny_data["target_unlabeled"])}
    a, _ = distill.predict_member("a", teacher / "model", texts, 4, torch.device("cpu"))
    b, _ = distill.predict_member("b", other, texts, 4, torch.device("cpu"))
    assert not np.allclose(a["distill"], b["distill"], atol=1e-3)  # two different teachers
    loaded = load_for_inference(teacher)  # the teacher's own tokenisation settings, from its run
    alone = predict_texts(loaded.model, loaded.tokenizer, texts["distill"], loaded.data_cfg.max_length,
                          loaded.data_cfg.truncation, 7)
    assert np.allclose(a["distill"], alone, atol=1e-6)
    both = distill.ensemble([a["distill"], b["distill"]], 2.0).numpy()
    soft = lambda p: np.exp(np.log(p) / 2) / np.exp(np.log(p) / 2).sum(-1, keepdims=True)  # noqa: E731
    assert np.allclose(both, (soft(a["distill"]) + soft(b["distill"])) / 2, atol=1e-6)
    assert np.allclose(distill.ensemble([a["distill"], b["distill"]], 1.0).numpy(), (a["distill"] + b["distill"]) / 2,
                       atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# End to end.


def agreement(student: Path, teacher: Path, texts: list[str]) -> float:
    """How often the two models predict the same class for `texts`."""
    preds = []
    for folder in (student, teacher):
        m = load_for_inference(folder)
        probs = predict_texts(m.model, m.tokenizer, texts, m.data_cfg.max_length, m.data_cfg.truncation, 8)
        preds.append(probs.argmax(-1))
    return float((preds[0] == preds[1]).mean())


def test_distilled_student_learns_the_teacher(teacher, tiny_recipe, tiny_data, tmp_path):
    common = ["train.epochs=12", "train.lr=2e-3"]  # as long as the teacher trained
    out = tmp_path / "distill"
    report = run(load_recipe(tiny_recipe, ["method.name=distill", f"method.distill.teachers=[{teacher}]",
                                           "method.distill.alpha=5", *common, f"output_dir={out}"]))
    # The teacher file: one row per distillation text (target unlabelled, then the source training texts).
    info = json.loads((out / "teacher" / "teacher.json").read_text())
    n_target, n_source = 40, 72  # 96 source rows less the 25% dev carve
    assert info["rows"] == {"target": n_target, "source": n_source}
    from safetensors.torch import load_file

    probs = load_file(str(out / "teacher" / "probs.safetensors"))
    assert probs["distill"].shape == (n_target + n_source, 2)
    assert info["teachers"][0]["labels"] == LABELS and info["teachers"][0]["weights_sha256"]
    # Its first rows are the teacher's own predictions on the target texts, at T=2.
    m = load_for_inference(teacher)
    own = predict_texts(m.model, m.tokenizer, texts_of(tiny_data["target_unlabeled"]), m.data_cfg.max_length,
                        m.data_cfg.truncation, 8)
    assert torch.allclose(probs["distill"][:n_target], distill.tempered(own, 2.0).float(), atol=1e-5)
    rows = [r for r in log_rows(out) if "loss" in r]
    assert rows and all(r["loss"] == pytest.approx(r["ce"] + 5 * 4 * r["kl"], rel=1e-4) for r in rows)

    summary = report["method_summary"]
    t, s = summary["teacher"], summary["student"]
    assert t["params_total"] == s["params_total"] > 0  # the same tiny architecture
    assert s["weights_bytes_measured"] and s["weights_bytes"] == (out / "model" / "model.safetensors").stat().st_size
    assert t["weights_bytes"] == (teacher / "model" / "model.safetensors").stat().st_size
    assert set(t["accuracy"]) == {"source_test", "target_test"}
    assert s["accuracy"]["target_test"] == pytest.approx(report["splits"]["target_test"]["accuracy"])
    assert t["inference"]["texts"] == n_target + n_source and t["inference"]["texts_per_second"] > 0
    # The student is timed as the teacher was: the same texts, batch size and device, side by side in the report.
    assert {k: s["inference"][k] for k in ("texts", "batch_size", "device")} == \
        {k: t["inference"][k] for k in ("texts", "batch_size", "device")}
    assert s["inference"]["texts_per_second"] > 0
    text = (out / "report.md").read_text()
    assert "| parameters |" in text and "target_test accuracy" in text and "× the teacher) |" in text

    # What the teacher knows about the target reaches the student through the unlabelled target texts alone: a
    # source-only student trained the same way agrees with it (and the target labels) less. Over seeds 0-5 the
    # margin was +0.10 to +0.33 on 40 texts (one at +0.10), so 0.05 leaves room for another seed or another
    # device's arithmetic; without the KL term the two runs are the same training and the margin is 0.
    baseline = tmp_path / "source_only"
    plain = run(load_recipe(tiny_recipe, [*common, f"output_dir={baseline}"]))
    target = texts_of(tiny_data["target_unlabeled"])
    assert agreement(out, teacher, target) >= agreement(baseline, teacher, target) + 0.05
    assert report["summary"]["target_accuracy"] > plain["summary"]["target_accuracy"]


def test_resumed_run_reads_the_teacher_file_back(teacher, tiny_recipe, tmp_path, monkeypatch):
    base = ["method.name=distill", f"method.distill.teachers=[{teacher}]", "method.distill.texts=[target]",
            "train.epochs=2", "train.checkpoint_every_steps=4"]
    full = tmp_path / "full"
    run(load_recipe(tiny_recipe, [*base, f"output_dir={full}"]))
    part = tmp_path / "part"
    with stop_at(monkeypatch, 6), pytest.raises(RunInterrupted):
        run(load_recipe(tiny_recipe, [*base, f"output_dir={part}"]))
    written = (part / "teacher" / "probs.safetensors").read_bytes()

    def no_teacher(*args, **kwargs):
        raise AssertionError("the resumed run predicted with the teacher again")

    monkeypatch.setattr(distill, "predict_member", no_teacher)
    monkeypatch.setattr(distill, "resolve_teachers", no_teacher)  # nor needs the teacher at all
    run(load_recipe(tiny_recipe, [*base, f"output_dir={part}"]))
    assert (part / "teacher" / "probs.safetensors").read_bytes() == written
    a = {r["global_step"]: r for r in log_rows(full) if "loss" in r}
    b = {r["global_step"]: r for r in log_rows(part) if "loss" in r}
    assert sorted(a) == sorted(b) and max(abs(a[k]["kl"] - b[k]["kl"]) for k in a) < 1e-5


def test_teachers_read_the_texts_as_given_not_as_the_student_rewrites_them(teacher, tiny_recipe, tiny_data, tmp_path,
                                                                           monkeypatch):
    """Each teacher applies its own `data.normalize`; the student's (here `amazon_unlabeled`, which drops the
    tiny reviews' final " .") must not rewrite the texts first."""
    from adapt.data.splits import NORMALIZERS

    seen = []

    def recording(given, model_dir, texts, *args):
        seen.append(list(texts["distill"]))
        return predict_member(given, model_dir, texts, *args)

    predict_member = distill.predict_member
    monkeypatch.setattr(distill, "predict_member", recording)
    out = tmp_path / "normalized"
    run(load_recipe(tiny_recipe, ["method.name=distill", f"method.distill.teachers=[{teacher}]",
                                  "method.distill.texts=[target]", "data.normalize=amazon_unlabeled",
                                  "train.epochs=1", f"output_dir={out}"]))
    given = texts_of(tiny_data["target_unlabeled"])
    assert seen == [given]
    assert all(NORMALIZERS["amazon_unlabeled"](t) != t for t in given)  # the student's rewriting would show
    m = load_for_inference(teacher)
    own = predict_texts(m.model, m.tokenizer, given, m.data_cfg.max_length, m.data_cfg.truncation, 8)
    from safetensors.torch import load_file

    probs = load_file(str(out / "teacher" / "probs.safetensors"))
    assert torch.allclose(probs["distill"], distill.tempered(own, 2.0).float(), atol=1e-5)

# ----------------------------------------------------------------------------------------------------------
# Errors.


def test_recipe_without_teachers_or_target_texts_is_refused(tiny_recipe):
    with pytest.raises(RecipeError, match=r"needs `method.distill.teachers`"):
        load_recipe(tiny_recipe, ["method.name=distill"])
    with pytest.raises(RecipeError, match=r"`method.distill.texts` includes `target`, which needs `data.target.unlabeled`"):
        load_recipe(tiny_recipe, ["method.name=distill", "method.distill.teachers=[x/y]", "~data.target.unlabeled"])
    recipe = load_recipe(tiny_recipe, ["method.name=distill", "method.distill.teachers=[x/y]", "~data.target.unlabeled",
                                       "method.distill.texts=[source]"])
    assert recipe.method.distill.teachers == ["x/y"]  # a Hub id stays one
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny_recipe, ["method.name=distill", "method.distill.teachers=[x/y]", "method.distill.temperature=0",
                                  "method.distill.alpha=-1", "method.distill.texts=[target, target]"])
    assert len(err.value.problems) == 3


def test_teacher_paths_are_relative_to_the_recipe_file(tiny_recipe, tmp_path, monkeypatch):
    import yaml

    (tmp_path / "runs" / "t").mkdir(parents=True)
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["method"] = {"name": "distill", "distill": {"teachers": ["runs/t", "../elsewhere/t2", "user/model"]}}
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    teachers = load_recipe(path).method.distill.teachers
    # Not under sub/: a Hub id as far as the file knows; `..` is a path; a Hub id stays one.
    assert teachers == ["runs/t", str(tmp_path / "elsewhere" / "t2"), "user/model"]
    on_command_line = load_recipe(path, ["method.distill.teachers=[runs/t]"]).method.distill.teachers
    assert on_command_line == [str(tmp_path / "runs" / "t")]  # relative to the working directory, which has it


def fail(argv: list[str], capsys) -> str:
    assert train_main(argv) == 2
    err = capsys.readouterr().err  # after the student model's load report, which transformers prints
    assert "Traceback" not in err and err.count("error: ") == 1
    return err[err.index("error: "):]


def test_teacher_with_other_labels_stops_before_anything_is_written(tiny_model_dir, tiny_recipe, tmp_path, capsys):
    other = model_folder(tiny_model_dir, tmp_path / "swapped", ["positive", "negative"], seed=0)
    out = tmp_path / "run"
    err = fail([str(tiny_recipe), "method.name=distill", f"method.distill.teachers=[{other}]", f"output_dir={out}"],
               capsys)
    assert f"`method.distill.teachers[0]` = {other}" in err
    assert "['positive', 'negative']" in err and "['negative', 'positive']" in err and "data.label_names" in err
    assert not out.exists()


def test_missing_teacher_stops_before_anything_is_written(tiny_recipe, tmp_path, capsys):
    out, missing = tmp_path / "run", tmp_path / "no-such-run"
    err = fail([str(tiny_recipe), "method.name=distill", f"method.distill.teachers=[{missing}]", f"output_dir={out}"],
               capsys)
    assert f"`method.distill.teachers[0]` = {missing}" in err and "does not exist" in err
    assert not out.exists()


def test_an_onnx_export_is_refused_as_a_teacher_naming_its_run(teacher, tmp_path):
    pytest.importorskip("onnxruntime")
    from adapt.serving.export import export

    export(teacher, tmp_path / "onnx", onnx=True)
    with pytest.raises(AdaptError, match=r"teachers\[0\]`.*is an ONNX export; give the run directory"):
        distill.resolve_teachers([str(tmp_path / "onnx")], ["negative", "positive"])


def test_an_int8_export_is_refused_as_a_teacher_naming_its_run(teacher, tmp_path):
    """torch.ao's int8 kernels run on CPUs only: such a teacher would fail on the first GPU batch."""
    from adapt.serving.export import export

    export(teacher, tmp_path / "int8", int8=True)
    with pytest.raises(AdaptError, match=r"teachers\[0\]`.*is an int8 export.*give the run directory"):
        distill.resolve_teachers([str(tmp_path / "int8")], ["negative", "positive"])
