"""Every bad input gets one clear message naming the key and the fix, a non-zero exit, no traceback, and leaves
what was already written untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapt.train import main as train_main
from adapt.validate import main as validate_main


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fail(argv: list[str], capsys, main=train_main) -> str:
    """Run a CLI in-process; it must exit non-zero and print one `error:` message without a traceback."""
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


ROW = {"id": "x1", "text": "gripping story .", "label": "positive", "domain": "books"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lr=abc"], "`train.lr` must be float, got 'abc'"),
        (["train.lrr=1"], "did you mean `lr`"),
        (["nonsense"], "override `nonsense` is not `key=value`"),
        (["method.name=dann_typo"], "unknown method `method.name=dann_typo`"),
        (["model.finetune=lora", "model.lora.r=0"], "`model.lora.r` must be > 0, got 0"),
        (["model.lora.r=16"], "set `model.finetune=lora` or remove `model.lora`"),
        (["train.epochs=-1"], "`train.epochs` must be >= 1, got -1"),
        (["data.source.train=does/not/exist.jsonl"], "file not found"),
    ],
)
def test_bad_overrides(tiny_recipe, tmp_path, capsys, overrides, expected):
    out = tmp_path / "run"
    err = fail([str(tiny_recipe), f"output_dir={out}", *overrides], capsys)
    assert expected in err
    assert not out.exists(), "a bad recipe must not create the run directory"


def test_several_problems_reported_together(tiny_recipe, capsys):
    err = fail([str(tiny_recipe), "train.lr=abc", "train.lrr=1", "train.epochs=-1"], capsys, validate_main)
    assert "`train.lr` must be float" in err and "did you mean `lr`" in err


def test_validate_reports_missing_files_together(tiny_recipe, capsys):
    err = fail([str(tiny_recipe), "data.source.test=nope1.jsonl", "data.target.test=nope2/*.jsonl"], capsys,
               validate_main)
    assert "data.source.test" in err and "data.target.test" in err and "2 problem(s)" in err


def test_validate_prints_resolved_recipe(tiny_recipe, capsys):
    assert validate_main([str(tiny_recipe), "train.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.0001" in out and "valid" in out


def test_missing_and_broken_recipe_files(tmp_path, capsys):
    assert "recipe file not found" in fail([str(tmp_path / "nope.yaml")], capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    assert "is not valid YAML" in fail([str(broken)], capsys)


@pytest.mark.parametrize(
    ("rows", "overrides", "expected"),
    [
        ([], [], "is empty"),
        ([{**ROW, "label": None}], [], "has no label"),
        ([{**ROW, "label": "meh"}], ["data.label_names=[negative,positive]"], "not in the label set"),
        ([{**ROW, "text": 42}], [], "not a string"),
        ([ROW], ["data.text_column=body"], "has no column 'body'"),
    ],
    ids=["empty-split", "null-label", "unknown-label", "non-string-text", "wrong-column"],
)
def test_bad_data(tiny_recipe, tmp_path, capsys, rows, overrides, expected):
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "run"
    err = fail([str(tiny_recipe), f"output_dir={out}", f"data.source.test={bad}", *overrides], capsys)
    assert expected in err and ("data.source.test" in err or "data.text_column" in err)
    assert not (out / "report.json").exists()


def test_unknown_model_path(tiny_recipe, tmp_path, capsys):
    err = fail([str(tiny_recipe), f"output_dir={tmp_path / 'run'}", f"model.name_or_path={tmp_path / 'no-model'}"],
               capsys)
    assert "`model.name_or_path`" in err and "not a directory" in err


def test_unknown_hub_model_fails_fast_offline(tiny_recipe, tmp_path, capsys):
    err = fail([str(tiny_recipe), f"output_dir={tmp_path / 'run'}", "model.name_or_path=someone/no-such-model"], capsys)
    assert "Hub is unreachable" in err


def test_hub_dataset_fails_fast_offline(tiny_recipe, tmp_path, capsys):
    err = fail([str(tiny_recipe), f"output_dir={tmp_path / 'run'}", "data.target.test=hub:imdb?split=test"], capsys)
    assert "data.target.test" in err and "Hub" in err


def test_hub_push_offline_fails_before_training(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    err = fail([str(tiny_recipe), f"output_dir={out}", "hub.push=true", "hub.repo_id=user/model"], capsys)
    assert "hub.push" in err and not out.exists()


def test_no_traceback_from_the_command_line(tiny_recipe):
    done = subprocess.run([sys.executable, "-m", "adapt.train", str(tiny_recipe), "train.lr=abc"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
