"""Nothing lost, nothing run that was not asked for: a run writes only into a folder that is new, empty or its
own (and one training at a time), and every bad input stops with one clear message and exit code 2, with no
traceback and the folders as they were. Also: files follow the umask, and what a push shares names no folder
of this machine."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import train_tiny

import adapt.evaluation.rerun
import adapt.training.run
import adapt.training.sweep
from adapt import load_recipe
from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_text
from adapt.core.rundir import RunClaim, RunDir, check_output_dir, plan_output_dir, portable_paths
from adapt.evaluate_run import main as evaluate_main
from adapt.hub.__main__ import main as hub_main
from adapt.model.limits import max_input_tokens
from adapt.sweep import main as sweep_main
from adapt.train import main as train_main
from adapt.training.run import run
from adapt.validate import main as validate_main

ROOT = Path(__file__).resolve().parent.parent


def fail(argv: list[str], capsys, main=train_main) -> str:
    """Run a command in-process: exit code 2, one `error:` message, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under `folder`, hidden ones included, with the files' bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def no_data_load(monkeypatch):
    """For checks that must come before any data is read: reading it fails the test."""

    def read_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the check")

    monkeypatch.setattr(adapt.training.run, "load_splits", read_data)


# ----------------------------------------------------------------------------------------------------------
# Whose folder: new, empty, or a run of ours; one training at a time.


def other_tools_files(out: Path) -> None:
    for sub in ("model", "checkpoints/step-00000004", "best", "mlm", "pseudo_labels"):
        (out / sub).mkdir(parents=True)
        (out / sub / "keep.txt").write_text(f"the user's {sub}")
    (out / "checkpoints" / "step-00000004" / "train_state.json").write_text("{}")


def a_run_plus_a_file_of_yours(out: Path) -> None:
    (out / "checkpoints" / "step-00000004").mkdir(parents=True)
    (out / "checkpoints" / "step-00000004" / "train_state.json").write_text("{}")
    (out / "recipe.yaml").write_text("name: tiny\n")
    (out / "notes.txt").write_text("mine")


@pytest.mark.parametrize("fill", [other_tools_files, a_run_plus_a_file_of_yours])
def test_a_folder_that_is_not_a_run_is_refused_before_the_data_loads(tiny_recipe, tmp_path, capsys,
                                                                     no_data_load, fill):
    out = tmp_path / "mine"
    fill(out)
    before = snapshot(out)
    err = fail([str(tiny_recipe), f"output_dir={out}"], capsys)
    assert f"`output_dir` {out} is not empty and is not a run folder of adapt" in err
    assert "choose another `output_dir=...`, or leave it unset" in err
    assert snapshot(out) == before


def test_an_empty_folder_is_written_and_marked_as_a_run(tiny_recipe, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run(load_recipe(tiny_recipe, [f"output_dir={out}", "train.epochs=1", "train.max_steps=2"]))
    assert json.loads((out / ".adapt-run.json").read_text()) == {"format": 1, "name": "tiny"}
    assert (out / "report.json").is_file() and not (out / ".lock").exists()  # the lock goes with the run


def test_run_folders_from_before_the_marker_are_still_ours(tmp_path):
    old = RunDir(tmp_path / "old")
    (old.checkpoints / "step-00000004").mkdir(parents=True)
    (old.checkpoints / "step-00000004" / "train_state.json").write_text("{}")
    old.recipe.write_text("name: x\n")
    old.train_log.write_text("")
    (old.root / ".recipe.yaml.k2j4.tmp").write_text("")  # left by an atomic write that was killed
    check_output_dir(old)
    assert plan_output_dir(old, "auto") == old.checkpoints / "step-00000004"
    (old.checkpoints / "step-00000004" / "train_state.json").unlink()  # no checkpoint: not a run to resume
    with pytest.raises(AdaptError, match="is not a run folder of adapt"):
        check_output_dir(old)


def test_a_second_training_on_the_same_folder_fails_at_once(tiny_recipe, tmp_path, capsys, no_data_load):
    out = tmp_path / "new" / "run"
    first = RunClaim(RunDir(out))
    first.acquire()
    first.write_marker("tiny")
    try:
        before = snapshot(out)
        err = fail([str(tiny_recipe), f"output_dir={out}"], capsys)
        assert f"`output_dir` {out} is being written by another training" in err
        assert snapshot(out) == before
    finally:
        first.release()
    assert not (tmp_path / "new").exists()  # only the marker was written: the claim takes back what it made


@pytest.mark.parametrize("where", ["new", "empty"])
def test_a_run_that_stops_on_bad_data_leaves_the_folder_as_it_was(tiny_recipe, tmp_path, capsys, where):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "gripping .", "label": "positive"}\n\n{"id": "b", "text": oops}\n')
    out = tmp_path / "parent" / "run"
    if where == "empty":
        out.mkdir(parents=True)
    err = fail([str(tiny_recipe), f"output_dir={out}", f"data.source.test={bad}"], capsys)
    assert f"`data.source.test`: {bad} line 3 is not valid JSON (Expecting value at column 21)" in err
    if where == "empty":
        assert snapshot(tmp_path / "parent") == {"run": None}
    else:
        assert not (tmp_path / "parent").exists()
    assert not (out / ".lock").exists()


# ----------------------------------------------------------------------------------------------------------
# Bad inputs: one clear message, exit code 2, nothing written.


@pytest.mark.parametrize("target", ["/proc/adapt-run", "file/run"])
def test_an_output_dir_that_cannot_be_created_fails_before_anything_loads(tiny_recipe, tmp_path, capsys,
                                                                         no_data_load, target):
    (tmp_path / "file").write_text("a file")
    out = target if target.startswith("/") else str(tmp_path / target)
    before = snapshot(tmp_path)
    err = fail([str(tiny_recipe), f"output_dir={out}"], capsys)
    assert f"`output_dir` {out}: cannot create the folder" in err and "choose a folder you can write" in err
    assert snapshot(tmp_path) == before and not Path(out).exists()


def test_an_output_dir_that_is_a_file_is_refused(tiny_recipe, tmp_path, capsys, no_data_load):
    out = tmp_path / "taken"
    out.write_text("mine")
    err = fail([str(tiny_recipe), f"output_dir={out}"], capsys)
    assert f"`output_dir` {out} is a file, not a folder; choose another `output_dir=...`" in err
    assert out.read_text() == "mine"


@pytest.mark.parametrize("value", ["-1", "1"])
def test_sgd_momentum_must_be_in_0_1(tiny_recipe, tmp_path, capsys, value):
    out = tmp_path / "run"
    argv = [str(tiny_recipe), f"output_dir={out}", "train.optimizer=sgd", f"train.momentum={value}"]
    err = fail(argv, capsys)
    assert f"`train.momentum` must be in [0, 1), got {float(value)}" in err and not out.exists()
    assert "`train.momentum` must be in [0, 1)" in fail([str(tiny_recipe), f"train.momentum={value}"], capsys,
                                                        validate_main)


def test_max_length_beyond_the_model_is_refused_before_the_data_loads(tiny_recipe, tiny_model_dir, tmp_path,
                                                                     capsys, no_data_load):
    out = tmp_path / "run"
    expected = (f"`data.max_length` is 100000, but the model {tiny_model_dir} takes at most 64 tokens per "
                "example (max_position_embeddings 64); set `data.max_length` to 64 or less")
    assert expected in fail([str(tiny_recipe), f"output_dir={out}", "data.max_length=100000"], capsys)
    assert not out.exists()
    assert expected in fail([str(tiny_recipe), "data.max_length=100000"], capsys, validate_main)
    assert validate_main([str(tiny_recipe), "data.max_length=64"]) == 0


def test_validate_checks_the_embedded_model_without_torch(tiny_recipe):
    code = ("import json, sys\nfrom adapt.cli import main\n"
            f"rc = main(['validate', {str(tiny_recipe)!r}, 'model.name_or_path=all-MiniLM-L6-v2', "
            "'data.max_length=100000'])\n"
            "print(json.dumps([rc, [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert json.loads(done.stdout.splitlines()[-1]) == [2, []]
    assert "takes at most 512 tokens per example" in done.stderr and "Traceback" not in done.stderr


def test_positions_a_model_takes():
    assert max_input_tokens({"model_type": "bert", "max_position_embeddings": 512}) == 512
    # RoBERTa numbers positions from padding_idx + 1: two of its 514 embeddings take no token.
    roberta = {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert max_input_tokens(roberta) == 512
    assert max_input_tokens({"model_type": "deberta-v2", "max_position_embeddings": 512,
                             "position_biased_input": False}) is None


def test_a_hub_model_not_on_this_machine_is_checked_when_it_loads(tiny_recipe, tmp_path, capsys, monkeypatch):
    hub_model = ["model.name_or_path=someone/no-such-model", "data.max_length=100000"]
    assert validate_main([str(tiny_recipe), *hub_model]) == 0
    # What a model known only once it loads meets: the early check finds no config on this machine.
    monkeypatch.setattr(adapt.training.run, "start_problems", lambda *args: [])
    out = tmp_path / "run"
    err = fail([str(tiny_recipe), f"output_dir={out}", "data.max_length=100000"], capsys)
    assert "takes at most 64 tokens per example" in err and not out.exists()


def test_a_key_given_twice_names_both_lines(tiny_recipe, tmp_path, capsys):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text(tiny_recipe.read_text() + "train:\n  epochs: 1\n  epochs: 2\n")
    lines = tiny_recipe.read_text().splitlines()
    first, last = next(i for i, line in enumerate(lines, 1) if line.startswith("train:")), len(lines) + 1
    out = tmp_path / "run"
    err = fail([str(recipe), f"output_dir={out}"], capsys)
    assert f"`train` is given twice (lines {first} and {last})" in err and not out.exists()
    assert f"`train.epochs` is given twice (lines {last + 1} and {last + 2})" in err
    assert "merge them into one" in fail([str(recipe)], capsys, validate_main)


def test_a_model_folder_with_a_broken_config_says_so(tiny_recipe, tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "config.json").write_text('{"model_type": "bert",')
    out = tmp_path / "run"
    for main, argv in ((train_main, [f"output_dir={out}"]), (validate_main, [])):
        err = fail([str(tiny_recipe), f"model.name_or_path={model}", *argv], capsys, main)
        assert f"`model.name_or_path`: {model / 'config.json'} is not valid JSON: " in err
        assert "Hub is unreachable" not in err
    assert not out.exists()


@pytest.mark.parametrize("content", ["random", "one_bad_line"])
def test_a_broken_jsonl_names_the_file_and_the_line(tiny_recipe, tmp_path, capsys, content):
    bad = tmp_path / "bad.jsonl"
    if content == "random":
        bad.write_bytes(b"\xff" + random.Random(0).randbytes(2000))
        expected = f"`data.target.test`: {bad} line 1 is not UTF-8 text (byte 0xff at column 1)"
    else:
        good = [json.dumps({"id": str(i), "text": "sturdy pan .", "label": "positive"}) for i in range(3)]
        bad.write_text("\n".join([*good, "[1, 2]", *good]) + "\n")
        expected = f"`data.target.test`: {bad} line 4 is a JSON list, not an object with the columns"
    out = tmp_path / "run"
    err = fail([str(tiny_recipe), f"output_dir={out}", f"data.target.test={bad}"], capsys)
    assert expected in err and "fix or remove that line" in err and not out.exists()


def test_a_run_name_is_one_file_name(tiny_recipe, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    for main in (train_main, validate_main):
        err = fail([str(tiny_recipe), "name=../../../x"], capsys, main)
        assert "`name` '../../../x' must be one file name: letters, digits, `_`, `-` and `.`" in err
    assert snapshot(tmp_path) == before
    spaced = tmp_path / "my recipe.yaml"  # a name the user did not write is made a valid one
    shutil.copy(tiny_recipe, spaced)
    assert validate_main([str(spaced)]) == 0 and "name: my-recipe\n" in capsys.readouterr().out


def test_a_test_split_name_is_one_file_name(tmp_path, tiny_data, capsys):
    (tmp_path / "run").mkdir()
    before = snapshot(tmp_path)
    argv = [str(tmp_path / "run"), "--test", f"../../x={tiny_data['target_test']}"]
    err = fail(argv, capsys, evaluate_main)
    assert "--test name '../../x' must be one file name" in err
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------
# Sweeps: one result per combination, whatever its name reads like.


def fake_training(trained: list):
    def train(recipe, overrides, run_dir, launcher=None, env=None, log=None) -> dict:
        trained.append((overrides[-1], run_dir.name))
        return {"method": "source_only", "recipe": {"output_dir": str(run_dir)}, "splits": {},
                "summary": {"source_accuracy": 0.9, "target_accuracy": 0.8},
                "timing": {"train_seconds": 1.0, "wall_seconds": 1.0}, "training": {"optimizer_steps": 1},
                "environment": {"device": "cpu", "git_commit": "x"}}

    return train


def test_sweep_combinations_never_share_a_result(tiny_recipe, tmp_path, monkeypatch, capsys):
    trained: list = []
    monkeypatch.setattr(adapt.training.sweep, "run_training", fake_training(trained))
    out = tmp_path / "sweep"
    key = "data.target.domain"
    assert sweep_main([str(tiny_recipe), "--grid", f"{key}=a-b", "--out", str(out)]) == 0
    # `a/b` reads as the earlier `a-b`, and two long values as one another once cut: each still trains, once.
    long_a, long_b = "k" * 250 + "a", "k" * 250 + "b"
    grid = f"{key}=a-b,a/b,{long_a},{long_b}"
    assert sweep_main([str(tiny_recipe), "--grid", grid, "--out", str(out), "--resume"]) == 0
    assert [t[0] for t in trained] == [f"{key}={v}" for v in ("a-b", "a/b", long_a, long_b)]
    names = [t[1] for t in trained]
    assert len(set(names)) == 4 and max(map(len, names)) <= 200
    results = [json.loads(p.read_text())["overrides"] for p in (out / "results").glob("*.json")]
    assert sorted(results) == sorted([[f"{key}={v}"] for v in ("a-b", "a/b", long_a, long_b)])
    assert "has a result already" in capsys.readouterr().out
    assert sweep_main([str(tiny_recipe), "--grid", grid, "--out", str(out), "--resume"]) == 0
    assert len(trained) == 4  # matched on the overrides each result records


# ----------------------------------------------------------------------------------------------------------
# Files: the umask; mlm.json whole or absent; evaluate's lines printed once.


def test_atomic_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    atomic_write_text(tmp_path / "usual.txt", "x")
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "usual.txt").stat().st_mode) == 0o666 & ~old


def test_mlm_json_is_written_atomically(tiny_recipe, tmp_path, monkeypatch):
    import torch

    from adapt.methods.mlm.head import HeadSpec
    from adapt.methods.mlm.method import save_mlm_phase

    accelerator = SimpleNamespace(is_main_process=True, num_processes=1, unwrap_model=lambda m: m,
                                  wait_for_everyone=lambda: None)
    model = torch.nn.Module()  # an encoder and an MLM head whose shape mlm.json records
    model.encoder, model.heads = torch.nn.Linear(2, 2), torch.nn.ModuleDict({"mlm": torch.nn.Linear(2, 2)})
    model.heads["mlm"].spec = HeadSpec()
    ctx = SimpleNamespace(accelerator=accelerator, model=model, run=RunDir(tmp_path), state=SimpleNamespace(step=3))
    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(Path(dst).name), real(src, dst))[1])
    save_mlm_phase(ctx, load_recipe(tiny_recipe, ["method.name=dapt"]), ["target_unlabeled"])
    assert "mlm.json" in replaced  # written beside and renamed into place
    info = json.loads((tmp_path / "mlm" / "mlm.json").read_text())
    assert info["steps"] == 3 and info["method"] == "dapt"
    assert sorted(p.name for p in (tmp_path / "mlm").iterdir()) == ["mlm.json", "model.safetensors"]


def test_evaluate_prints_its_results_once(monkeypatch, tmp_path, capsys):
    split = {"role": "target", "domain": "kitchen", "n": 23, "accuracy": 0.5, "macro_f1": 0.4}
    report = {"splits": {"target_test": split}}
    monkeypatch.setattr(adapt.evaluation.rerun, "evaluate_run", lambda *args: report)
    for rank, lines in (("1", 0), ("0", 1)):  # every process of `accelerate launch` runs main; one prints
        monkeypatch.setenv("RANK", rank)
        assert evaluate_main([str(tmp_path)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == lines


# ----------------------------------------------------------------------------------------------------------
# What a push shares names no folder of this machine.


def test_portable_paths():
    root = "/home/me/runs/b2k"
    recorded = {"output_dir": root, "model": "/home/me/models/tiny",
                "hub": "sentence-transformers/all-MiniLM-L6-v2", "short": "all-MiniLM-L6-v2",
                "data": ["/home/me/data/books.jsonl", "builtin:reviews/test", "hub:x/y"],
                "mlm": "/home/me/runs/dapt-1/mlm", "pred": f"{root}/predictions/odd.jsonl", "resume": "auto",
                "n": 3}
    assert portable_paths(recorded, root) == {
        "output_dir": "<run>", "model": "./tiny", "hub": "sentence-transformers/all-MiniLM-L6-v2",
        "short": "all-MiniLM-L6-v2", "data": ["./books.jsonl", "builtin:reviews/test", "hub:x/y"],
        "mlm": "./dapt-1/mlm", "pred": "<run>/predictions/odd.jsonl", "resume": "auto", "n": 3}


def test_a_pushed_run_names_no_folder_of_this_machine(tiny_model_dir, tiny_data, tmp_path, tmp_path_factory):
    run_dir = train_tiny(tmp_path, tiny_model_dir, tiny_data, ["train.epochs=1"])
    dry = tmp_path / "dry"
    assert hub_main(["push", str(run_dir), "--repo-id", "u/n", "--dry-run", str(dry)]) == 0
    machine = {str(tmp_path_factory.getbasetemp()), str(Path.home()), sys.prefix, sys.base_prefix,
               tempfile.gettempdir() + os.sep}
    texts = {}
    for f in sorted(p for p in dry.rglob("*") if p.is_file()):
        try:
            texts[f.name] = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # the weights
    assert {"README.md", "report.json", "report.md", "recipe.yaml", "config.json"} <= texts.keys()
    for name, text in texts.items():
        assert not [m for m in machine if m in text], name
    shared = json.loads(texts["report.json"])
    assert shared["recipe"]["output_dir"] == "<run>"
    assert shared["recipe"]["data"]["source"]["train"] == "./books_train.jsonl"
    assert shared["model"]["name_or_path"] == shared["model"]["resolved_path"] == f"./{tiny_model_dir.name}"
    assert yaml.safe_load(texts["recipe.yaml"]) == shared["recipe"]
    assert "`books_train.jsonl` (a local file)" in texts["README.md"]
    assert f"a local model (`{tiny_model_dir.name}`)" in texts["README.md"]
    # The run folder keeps its own absolute paths.
    assert json.loads((run_dir / "report.json").read_text())["recipe"]["output_dir"] == str(run_dir)


def test_replacing_a_folder_never_leaves_neither(tmp_path, monkeypatch):
    """The finished model replaces an older `model/`: the old one is moved aside first, so a failure at the rename
    leaves it (beside) rather than nothing, and a successful swap leaves only the new one."""
    import os

    from adapt.core.fileio import replace_dir

    old, new = tmp_path / "model", tmp_path / ".model.tmp"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "w").write_text(text)
    real, calls = os.replace, []

    def failing_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(OSError):
        replace_dir(new, old)
    kept = [p for p in tmp_path.iterdir() if (p / "w").exists() and (p / "w").read_text() == "old"]
    assert kept and (new / "w").read_text() == "new"  # the old model survives (moved aside), the new one too
    monkeypatch.setattr(os, "replace", real)
    for p in kept:
        real(p, old)
    replace_dir(new, old)
    assert (old / "w").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_finished_run_is_never_trained_over(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "done"
    assert train_main([str(tiny_recipe), f"output_dir={out}", "train.max_steps=1", "eval.diagnostics=false"]) == 0
    capsys.readouterr()
    before = snapshot(out)
    for resume in ("auto", "never"):
        err = fail([str(tiny_recipe), f"output_dir={out}", "train.max_steps=1", f"train.resume={resume}"], capsys)
        assert "already holds a finished run" in err
    assert snapshot(out) == before
