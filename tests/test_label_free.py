"""Label-free model selection and failure alarms (`adapt.evaluation.label_free`): each criterion on hand-made
predictions with a known answer, the alarm rules on the known bad and healthy cases, the recipe checks, and a
tiny run that selects on a criterion."""

from __future__ import annotations

import json
import math
import typing

import numpy as np
import pytest

from adapt import load_recipe
from adapt.core.errors import RecipeError
from adapt.core.fileio import read_jsonl
from adapt.evaluation.label_free import (
    CRITERIA,
    LABELLED_SELECTION,
    alarms,
    atc,
    balance_alarm,
    class_balance,
    collapse_alarm,
    dev,
    domain_balance,
    entropy,
    im,
    snd,
)
from adapt.recipe.schema import EvalConfig


def one_hot(labels: list[int], k: int) -> np.ndarray:
    return np.eye(k)[labels]


def test_entropy_is_log_k_for_uniform_and_zero_for_certain_predictions():
    assert entropy(np.full((7, 4), 0.25)) == pytest.approx(math.log(4))
    assert entropy(one_hot([0, 1, 2, 1], 3)) == pytest.approx(0, abs=1e-9)


def test_im_is_zero_for_identical_predictions_and_log_k_for_confident_balanced_ones():
    assert im(np.tile([0.7, 0.2, 0.1], (9, 1))) == pytest.approx(0, abs=1e-9)
    assert im(one_hot([0, 1, 2] * 4, 3)) == pytest.approx(math.log(3))
    # Confident but collapsed onto one class: no information about the classes.
    assert im(one_hot([1] * 12, 3)) == pytest.approx(0, abs=1e-9)


def test_class_balance_is_zero_at_the_prior_and_grows_with_the_drift():
    prior = np.array([0.5, 0.5])
    assert class_balance(one_hot([0, 1] * 5, 2), prior) == pytest.approx(0, abs=1e-9)
    skew = class_balance(one_hot([1] * 9 + [0], 2), prior)
    assert skew == pytest.approx(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
    assert class_balance(one_hot([1] * 7 + [0] * 3, 2), prior) < skew


def test_snd_is_higher_for_clustered_than_for_scattered_predictions():
    rng = np.random.default_rng(0)
    # Two tight clusters of confident predictions vs. a cloud spread over the whole simplex.
    clustered = np.clip(one_hot([0, 1] * 50, 2) + rng.normal(0, 0.01, (100, 2)), 1e-3, None)
    clustered /= clustered.sum(1, keepdims=True)
    scattered = rng.dirichlet([1, 1], 100)
    assert snd(clustered) > snd(scattered)
    # Identical rows: every neighbour equally close, the row softmax uniform over the n - 1 others.
    assert snd(np.tile([0.6, 0.4], (11, 1))) == pytest.approx(math.log(10))
    assert snd(scattered, max_rows=20) == snd(scattered, max_rows=20)  # the sample is seeded


def test_dev_is_the_plain_mean_loss_without_shift_and_weights_the_target_like_examples_under_shift():
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(0, 1, (400, 4)), rng.normal(0, 1, (400, 4))
    losses = rng.exponential(1.0, 400)
    assert dev(xs, losses, xt) == pytest.approx(losses.mean(), rel=0.1)
    # Source examples far along the first feature are the ones that look like the target, and the model does
    # badly on them: DEV must be well above the plain mean loss.
    shifted = rng.normal(0, 1, (400, 4)) + np.array([1.5, 0, 0, 0])
    bad_where_target = (xs[:, 0] > 0.5).astype(float) * 2 + 0.1
    assert dev(xs, bad_where_target, shifted) > 1.5 * bad_where_target.mean()


def binary(p_positive: list[float]) -> np.ndarray:
    p = np.asarray(p_positive, dtype=np.float64)
    return np.stack([1 - p, p], axis=1)


def test_atc_counts_target_examples_above_the_source_calibrated_confidence_threshold():
    # Source dev: 10 examples, the two least confident (0.55, 0.6) wrong, so 80% right and the threshold sits at the
    # second least confident score; the target shares above it are the estimate.
    source = binary([0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.999])
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    assert atc(source, labels, binary([0.58, 0.65, 0.9, 0.99])) == pytest.approx(0.75)  # 0.58 is below 0.6
    assert atc(source, labels, binary([0.42, 0.35, 0.1, 0.01])) == pytest.approx(0.75)  # confidence either way
    assert atc(source, labels, binary([0.5, 0.52, 0.56, 0.6])) == 0.0  # all at or below the threshold
    assert atc(source, np.ones(10, dtype=int), binary([0.5, 0.51])) == 1.0  # no source error: nothing to set it on


def test_atc_recovers_the_accuracy_on_a_target_drawn_like_the_source_and_ignores_a_temperature():
    rng = np.random.default_rng(0)
    # A calibrated binary model: confidence c, right with probability c. On a target drawn the same way ATC must
    # come close to the model's accuracy there; on a harder target (lower confidences) it must fall. (Not to the
    # exact accuracy: ATC assumes the errors sit below one confidence line, which a calibrated model's do not.)
    def sample(n, a, b):
        c = rng.beta(a, b, n) * 0.5 + 0.5
        right = rng.random(n) < c
        return binary(np.where(right, c, 1 - c)), np.ones(n, dtype=int), right.mean()

    s_probs, s_labels, _ = sample(4000, 5, 1)
    t_probs, _, t_acc = sample(4000, 5, 1)
    hard_probs, _, hard_acc = sample(4000, 1, 2)
    assert atc(s_probs, s_labels, t_probs) == pytest.approx(t_acc, abs=0.02)
    assert hard_acc < t_acc - 0.15 and atc(s_probs, s_labels, hard_probs) < atc(s_probs, s_labels, t_probs) - 0.15
    # Temperature scaling (what the paper calibrates with) changes no binary example's rank: the same estimate.
    def scaled(p, t):
        logits = np.log(p) / t
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    assert atc(scaled(s_probs, 2.0), s_labels, scaled(t_probs, 2.0)) == atc(s_probs, s_labels, t_probs)


def test_domain_balance_is_the_distance_from_chance():
    assert domain_balance([0.5, 0.5]) == 0
    assert domain_balance([0.9, 1.0]) == pytest.approx(0.45)
    assert domain_balance([0.0, 0.1]) == pytest.approx(0.45)


def test_every_criterion_is_a_recipe_choice_and_says_which_way_is_better():
    choices = typing.get_args(typing.get_type_hints(EvalConfig)["select_on"])
    assert set(choices) == set(CRITERIA) | set(LABELLED_SELECTION)
    assert {k for k, c in CRITERIA.items() if c.higher_is_better} == {"im", "snd", "atc"}


def test_collapse_alarm_flags_the_dann_failure_but_not_a_healthy_run():
    prior = {"negative": 0.5, "positive": 0.5}
    # 82 of 100 negative reviews and ~all positive ones called positive: 91% predicted positive.
    alarm = collapse_alarm({"negative": 0.09, "positive": 0.91}, prior)
    assert alarm is not None and "`positive`" in alarm and "91%" in alarm
    assert collapse_alarm({"negative": 0.45, "positive": 0.55}, prior) is None
    assert collapse_alarm({"negative": 0.55, "positive": 0.45}, prior) is None


def test_balance_alarm_reads_the_last_quarter_of_the_logged_domain_accuracy():
    assert balance_alarm([0.5] * 30 + [0.97] * 10) is not None  # the adversary lost: still separable
    assert balance_alarm([0.9] * 30 + [0.02] * 10) is not None  # the encoder flipped the domains
    assert balance_alarm([0.95] * 30 + [0.55, 0.45] * 5) is None  # balanced by the end
    assert balance_alarm([]) is None


def test_alarms_from_the_report_record_and_the_log():
    lf = {"predicted_distribution": {"neg": 0.09, "pos": 0.91}, "source_prior": {"neg": 0.5, "pos": 0.5}}
    log = [{"global_step": s, "phase": 0, "domain_acc": 0.99} for s in range(1, 9)]
    assert len(alarms(lf, log)) == 2
    assert alarms(None, [{"global_step": 1, "loss": 0.3}]) == []  # an old report.json and a non-adversarial log


def test_recipe_refuses_domain_balance_without_dann_and_criteria_without_unlabelled_text(tiny_recipe):
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny_recipe, ["eval.select_on=domain_balance"])
    assert any("`eval.select_on: domain_balance`" in p and "`method.name=source_only`" in p and "dann" in p
               for p in err.value.problems)
    load_recipe(tiny_recipe, ["eval.select_on=domain_balance", "method.name=dann"])  # fine with dann
    with pytest.raises(RecipeError) as err:
        load_recipe(tiny_recipe, ["eval.select_on=im", "~data.target.unlabeled"])
    assert any("`eval.select_on: im`" in p and "`data.target.unlabeled`" in p for p in err.value.problems)
    with pytest.raises(RecipeError, match="eval.label_free_examples"):
        load_recipe(tiny_recipe, ["eval.label_free_examples=1"])


def test_run_selects_on_im_and_records_the_criteria(tiny_recipe, tmp_path):
    from adapt.training.run import run

    out = tmp_path / "r"
    report = run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=3", "eval.select_on=im"]))
    lf = report["label_free"]
    assert set(lf["criteria"]) == {"entropy", "im", "class_balance", "snd", "dev", "atc"}  # no discriminator
    assert lf["examples"] == 40 and sum(lf["predicted_distribution"].values()) == pytest.approx(1)
    assert lf["source_prior"] == pytest.approx({"negative": 0.5, "positive": 0.5})
    evals = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if "best" in json.loads(line)]
    assert len(evals) == 3 and all({f"label_free_{k}" for k in lf["criteria"]} <= r.keys() for r in evals)
    assert all(0 <= r["source_dev_macro_f1"] <= 1 for r in evals)  # source dev is still scored and logged
    sel = report["training"]["selection"]
    best = max(evals, key=lambda r: r["label_free_im"])  # the evaluation with the highest IM is the one kept
    assert sel["metric"] == "im" and sel["split"] == "target_unlabeled" and sel["best_step"] == best["global_step"]
    assert sel["best_value"] == pytest.approx(best["label_free_im"])
    # The kept weights are the best evaluation's: the final model's IM is that evaluation's IM.
    assert lf["criteria"]["im"] == pytest.approx(best["label_free_im"], abs=1e-5)
    md = (out / "report.md").read_text()
    assert "## Label-free criteria" in md and "| im |" in md
    # The tiny books model calls nearly every kitchen text positive: exactly what the collapse alarm is for.
    collapsed = max(lf["predicted_distribution"].values()) > 0.75
    assert len(report["alarms"]) == collapsed and ("**Warnings**" in md) == collapsed


def test_dann_run_logs_domain_balance(tiny_recipe, tmp_path):
    from adapt.training.run import run

    out = tmp_path / "d"
    report = run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=2", "method.name=dann",
                                           "eval.select_on=domain_balance"]))
    evals = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if "best" in json.loads(line)]
    assert all(0 <= r["label_free_domain_balance"] <= 0.5 for r in evals)
    assert report["training"]["selection"]["metric"] == "domain_balance"
    assert 0 <= report["label_free"]["criteria"]["domain_balance"] <= 0.5


def test_warnings_render_at_the_top_and_old_reports_still_render():
    from test_templates import full_report

    from adapt.reporting.html import render_html
    from adapt.reporting.report import render_markdown

    report, log, diagnostics = full_report()
    old = render_markdown(report, log, diagnostics)
    assert "Warnings" not in old and "Label-free" not in old
    lf = {"examples": 100, "criteria": {"entropy": 0.12, "im": 0.3},
          "predicted_distribution": {"neg": 0.09, "pos": 0.91}, "source_prior": {"neg": 0.5, "pos": 0.5}}
    new = {**report, "label_free": lf, "alarms": alarms(lf, log)}
    md = render_markdown(new, log, diagnostics)
    assert md.index("**Warnings**") < md.index("| source (test) |")  # above the results
    assert "collapse towards `pos`" in md and "| entropy | 0.12 | lower |" in md
    assert "pos 91.0% (50.0%)" in md
    html = render_html(new, log, diagnostics)
    assert html.index("Warnings") < html.index("<h2>Results</h2>") and "Label-free criteria" in html


def test_two_processes_select_on_criteria_from_gathered_predictions(tiny_recipe, tmp_path):
    from test_distributed import accelerate_launch

    out = tmp_path / "ddp"
    done = accelerate_launch(["-m", "adapt.train", str(tiny_recipe), f"output_dir={out}", "train.epochs=2",
                              "method.name=dann", "eval.select_on=domain_balance"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["num_processes"] == 2 and report["label_free"]["examples"] == 40  # each row once
    evals = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if "best" in json.loads(line)]
    best = min(evals, key=lambda r: r["label_free_domain_balance"])
    assert report["training"]["selection"]["best_step"] == best["global_step"]
    assert {"dev", "snd", "im"} <= report["label_free"]["criteria"].keys()


def test_evaluate_on_unlabelled_text_reproduces_the_runs_own_criteria_and_scores_new_text(tiny_recipe, tiny_data,
                                                                                          tmp_path, capsys):
    from adapt.evaluate_run import main as evaluate_main
    from adapt.training.run import run

    out = tmp_path / "r"
    report = run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=2"]))
    books = tmp_path / "books_unlabeled.jsonl"  # text the model was trained on the like of: not kitchen's criteria
    rows = [json.loads(line) for line in tiny_data["source_test"].read_text().splitlines()]
    books.write_text("".join(json.dumps({**r, "label": None}) + "\n" for r in rows))
    assert evaluate_main([str(out), "--unlabeled", f"kitchen={tiny_data['target_unlabeled']}", "--domain", "kitchen",
                          "--unlabeled", f"books={books}", "--domain", "books"]) == 0
    after = json.loads((out / "report.json").read_text())
    on = after["label_free_on"]
    # The run's own unlabelled target, given again: the run's own record (same sample, source dev and prior).
    assert on["kitchen"]["examples"] == report["label_free"]["examples"] == 40
    assert on["kitchen"]["criteria"] == pytest.approx(report["label_free"]["criteria"], rel=1e-4, abs=1e-6)
    assert on["kitchen"]["predicted_distribution"] == report["label_free"]["predicted_distribution"]
    assert on["books"]["examples"] == 21 and on["books"]["domain"] == "books" and on["books"]["source"] == str(books)
    assert on["books"]["criteria"]["entropy"] != pytest.approx(on["kitchen"]["criteria"]["entropy"])
    assert after["splits"] == report["splits"]  # only the criteria were asked for: no split scored again
    # The collapse alarm reads each text's predicted shares (the tiny books model calls most kitchen texts positive).
    collapsed = max(on["kitchen"]["predicted_distribution"].values()) > 0.75
    assert any(a.startswith("On `kitchen`: Target predictions collapse") for a in after["alarms"]) == collapsed
    md = (out / "report.md").read_text()
    assert "## Label-free criteria on `books`" in md and str(books) in md
    assert "label-free on books (21 texts): entropy" in capsys.readouterr().out
    # Each text's predicted classes are kept for `adapt compare`'s seed agreement; a name that is not a plain file
    # name is refused before anything is scored or written.
    assert len(read_jsonl(out / "predictions" / "unlabeled_books.jsonl")) == 21
    assert evaluate_main([str(out), "--unlabeled", f"../x={books}"]) == 2
    assert "--unlabeled name" in capsys.readouterr().err and not (out / "x.jsonl").exists()


def test_a_single_unlabelled_text_is_refused_before_training_and_before_evaluate_writes(tiny_recipe, tiny_data,
                                                                                        tmp_path, capsys):
    """SND and DEV compare target texts with each other: one text used to end the first evaluation in a scikit-learn
    traceback. Training stops before it starts; `adapt evaluate --unlabeled` leaves the report as it was."""
    from adapt.evaluate_run import main as evaluate_main
    from adapt.train import main as train_main

    one = tmp_path / "one.jsonl"
    one.write_text(tiny_data["target_unlabeled"].read_text().splitlines()[0] + "\n")
    out = tmp_path / "r"
    assert train_main([str(tiny_recipe), f"output_dir={out}", f"data.target.unlabeled={one}"]) == 2
    err = capsys.readouterr().err
    assert "`data.target.unlabeled` has 1 text(s)" in err and "at least 2" in err and "eval.label_free=false" in err
    assert not (out / "model").exists() and not (out / "train_log.jsonl").exists()
    # Without the criteria, one unlabelled text is a valid (if small) recipe.
    assert train_main([str(tiny_recipe), f"output_dir={out}", f"data.target.unlabeled={one}", "eval.label_free=false",
                       "train.epochs=1"]) == 0
    before = (out / "report.json").read_bytes()
    capsys.readouterr()
    assert evaluate_main([str(out), "--unlabeled", f"one={one}"]) == 2
    assert "`--unlabeled one` has 1 text(s)" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == before

def test_evaluate_refuses_a_role_for_unlabelled_text(tmp_path, capsys):
    from adapt.evaluate_run import make_parser

    with pytest.raises(SystemExit):
        make_parser().parse_args([str(tmp_path), "--unlabeled", "x=a.jsonl", "--role", "source"])
    assert "--role applies to a --test split" in capsys.readouterr().err
    args = make_parser().parse_args([str(tmp_path), "--test", "t=b.jsonl", "--unlabeled", "u=a.jsonl", "--domain", "d"])
    assert args.tests == [{"name": "t", "path": "b.jsonl", "domain": None, "role": "target"}]
    assert args.unlabeled == [{"name": "u", "path": "a.jsonl", "domain": "d"}]
