"""The evaluation report a person reads: report.html (self-contained, plots load in a real browser), bootstrap
intervals, calibration, domain-shift diagnostics, rebuilding from the run directory alone, comparing runs, and
experiment trackers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from adapt import load_recipe
from adapt.core.errors import RecipeError
from adapt.core.formatting import pct
from adapt.core.rundir import RunDir
from adapt.evaluation.metrics import bootstrap_ci, calibration, paired_bootstrap
from adapt.report import main as report_main
from adapt.reporting.compare import compare_markdown, compare_runs
from adapt.training.run import run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def finished_run(tiny_recipe, tmp_path) -> Path:
    out = tmp_path / "run"
    run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=3", "report.trackers=[tensorboard]"]))
    return out


def test_report_html_intervals_calibration_and_diagnostics(finished_run):
    report = json.loads((finished_run / "report.json").read_text())
    labels = report["labels"]
    for name, split in report["splits"].items():
        rows = read_jsonl(finished_run / "predictions" / f"{name}.jsonl")
        y = np.array([labels.index(r["label"]) for r in rows])
        probs = np.array([r["probs"] for r in rows])
        lo, hi = split["ci95"]["accuracy"]
        assert lo <= split["accuracy"] <= hi and 0 <= lo < hi <= 1
        # ECE by hand: bin-weighted |accuracy - confidence| over 10 equal-width confidence bins.
        conf, correct = probs.max(1), (probs.argmax(1) == y)
        bins = np.clip(np.digitize(conf, np.linspace(0, 1, 11)[1:-1]), 0, 9)
        ece = sum((bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean())
                  for b in range(10) if (bins == b).any())
        assert split["calibration"]["ece"] == pytest.approx(ece)

    diag = json.loads((finished_run / "diagnostics.json").read_text())
    for enc in ("pretrained", "trained"):
        assert 0 <= diag["proxy_a_distance"][enc]["pad"] <= 2
    # The tiny domains share their filler words but not their cue words.
    assert 0 < diag["vocabulary"]["jaccard"] < 1

    page = (finished_run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "Domain shift" in page and "Proxy A-distance" in page
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)  # self-contained
    assert not re.search(r'(src|href)="(https?:|/|\./)', page)
    md = (finished_run / "report.md").read_text()
    assert "accuracy [95% CI]" in md and "## Domain shift" in md


def test_report_rebuilds_from_the_run_directory_alone(finished_run):
    expected = {n: (finished_run / n).read_text() for n in ("report.json", "report.md", "report.html")}
    shutil.rmtree(finished_run / "model")  # no model needed
    for name in ("report.md", "report.html"):
        (finished_run / name).unlink()
    assert report_main([str(finished_run)]) == 0
    for name, text in expected.items():
        assert (finished_run / name).read_text() == text


def test_tensorboard_tracker_logs_offline(finished_run, tiny_recipe):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((finished_run / "trackers").rglob("events.out.tfevents.*"))
    assert events
    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"loss", "ce", "lr", "source_dev_macro_f1"} <= tags
    with pytest.raises(RecipeError, match="unknown tracker"):
        load_recipe(tiny_recipe, ["report.trackers=[tensorbord]"])


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_html_loads_in_a_real_browser(finished_run, tmp_path):
    """Headless Chromium opens report.html; a probe script appended to a copy reports whether every image decoded."""
    browser = _browser()
    if browser is None:
        if os.environ.get("ADAPT_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (ADAPT_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    page = (finished_run / "report.html").read_text()
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
             "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
             "document.body.insertAdjacentHTML('beforeend', `<p id='probe'>IMAGES ${ok}/${imgs.length}</p>`); });"
             "</script></body>")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r"IMAGES (\d+)/(\d+)", done.stdout)
    assert m, done.stderr[-2000:]
    ok, total = int(m.group(1)), int(m.group(2))
    assert total == len(re.findall(r"<img", page)) >= 4 and ok == total
    assert "<h1>" in done.stdout and "Results" in done.stdout


def test_bootstrap_helpers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    a = np.where(rng.random(500) < 0.8, y, 1 - y)
    same = paired_bootstrap(y, a, a, 2)
    assert same["accuracy"]["difference"] == 0 and same["accuracy"]["p_value"] == 1.0
    b = np.where(rng.random(500) < 0.95, y, 1 - y)
    better = paired_bootstrap(y, a, b, 2)
    assert better["accuracy"]["difference"] == pytest.approx((b == y).mean() - (a == y).mean())
    assert better["accuracy"]["ci95"][0] > 0 and better["accuracy"]["p_value"] < 0.01
    ci = bootstrap_ci(y, a, 2)
    assert ci["accuracy"][0] < (a == y).mean() < ci["accuracy"][1]
    perfect = calibration(y, np.eye(2)[y])
    assert perfect["ece"] == 0


def test_compare_shows_how_often_seeds_of_one_setting_agree_on_unlabelled_target_text(finished_run, tiny_recipe,
                                                                                       tmp_path):
    """Each run writes its final predictions on the label-free target sample (no labels there); `adapt compare`
    measures each run's agreement with the other seeds of its setting on the ids they share, and leaves runs of
    another setting out of it."""
    seed2, other = tmp_path / "seed2", tmp_path / "other"
    run(load_recipe(tiny_recipe, [f"output_dir={seed2}", "train.epochs=3", "report.trackers=[tensorboard]", "seed=2"]))
    run(load_recipe(tiny_recipe, [f"output_dir={other}", "train.epochs=1", "seed=2"]))  # another setting: 1 epoch
    rows = {r.root: {row["id"]: row for row in read_jsonl(r.root / "predictions" / "target_unlabeled.jsonl")}
            for r in map(RunDir, (finished_run, seed2, other))}
    first = rows[finished_run]
    report = json.loads((finished_run / "report.json").read_text())
    assert len(first) == report["label_free"]["examples"] and all("label" not in r for r in first.values())
    common = first.keys() & rows[seed2].keys()
    by_hand = np.mean([first[i]["pred"] == rows[seed2][i]["pred"] for i in common])
    result = compare_runs([finished_run, seed2, other])
    agree = [r["seed_agreement"] for r in result["runs"]]
    assert agree[0] == agree[1] == {"agreement": pytest.approx(by_hand), "seeds_compared": 1}
    assert agree[2] is None
    text = compare_markdown(result)
    assert f"| {pct(by_hand)} (1) |" in text and "Seed agreement needs no target labels" in text
    assert "Students distilled" not in text and "Seed agreement on other unlabelled text" not in text

    # Other unlabelled text (`adapt evaluate --unlabeled`): each run writes its predictions there too, and compare
    # measures the seeds' agreement on it, per text name.
    from adapt.evaluate_run import main as evaluate_main

    books = tmp_path / "books.jsonl"
    books.write_text("".join(json.dumps({"id": f"b{i}", "text": f"a book review, number {i}, quite good"}) + "\n"
                             for i in range(30)))
    for rd in (finished_run, seed2):
        assert evaluate_main([str(rd), "--unlabeled", f"books={books}", "--domain", "books"]) == 0
    on = [{row["id"]: row["pred"] for row in read_jsonl(rd / "predictions" / "unlabeled_books.jsonl")}
          for rd in (finished_run, seed2)]
    assert len(on[0]) == 30 and on[0].keys() == on[1].keys()
    books_by_hand = np.mean([on[0][i] == on[1][i] for i in on[0]])
    result = compare_runs([finished_run, seed2, other])
    assert [r.get("seed_agreement_on") for r in result["runs"]] == \
        [{"books": {"agreement": pytest.approx(books_by_hand), "seeds_compared": 1}}] * 2 + [None]
    text = compare_markdown(result)
    assert "Seed agreement on other unlabelled text" in text
    assert f"- {finished_run.name}: `books` {pct(books_by_hand)} (1)" in text


def test_compare_runs_paired_on_shared_examples(finished_run, tiny_recipe, tmp_path, capsys):
    other = tmp_path / "other"
    run(load_recipe(tiny_recipe, [f"output_dir={other}", "train.epochs=1", "seed=3", "eval.diagnostics=false"]))
    out = tmp_path / "cmp"
    assert report_main(["compare", str(finished_run), str(other), "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    vs = result["runs"][1]["vs_first"]["target_test"]
    assert vs["shared_examples"] == 23 and 0 <= vs["accuracy"]["p_value"] <= 1
    a = json.loads((finished_run / "report.json").read_text())["splits"]["target_test"]["accuracy"]
    b = json.loads((other / "report.json").read_text())["splits"]["target_test"]["accuracy"]
    assert vs["accuracy"]["difference"] == pytest.approx(b - a)
    assert "target acc vs first" in (out / "compare.md").read_text() and (out / "compare.html").exists()
    assert report_main(["compare", str(finished_run)]) == 2
    assert "at least two" in capsys.readouterr().err
