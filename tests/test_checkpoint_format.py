"""Checkpoints hold only JSON and safetensors and are read without pickle: a crafted file, given as
`train.resume=PATH` or left in a shared `output_dir` for `train.resume=auto`, is refused, never run."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import adapt.training.loop
from adapt import load_recipe
from adapt.core.errors import RunInterrupted
from adapt.train import main as train_main
from adapt.training.run import run

# Self-training stopped in round 1 (global step 23) after an evaluation (step 22): the checkpoint has every part,
# the round's pseudo-labels and the round's best weights included.
OVERRIDES = ["train.epochs=2", "train.eval_every_steps=4", "train.checkpoint_every_steps=100",
             "method.name=self_training", "method.self_training.rounds=1", "method.self_training.threshold=0.5"]
STEP = "step-00000023"
FILES = ["checkpoint.json", "train_state.json", "model.safetensors", "optimizer.safetensors", "optimizer.json",
         "scheduler.json", "rng/rank0.safetensors", "rng/rank0.json", "best.safetensors",
         "run_files/pseudo_labels/round1.json"]


class Payload:
    """Unpickled, it creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def interrupt(recipe: Path, out: Path, step: int, overrides: list[str]) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(adapt.training.loop, "_stop_agreed", lambda ctx: ctx.state.global_step == step)
        with pytest.raises(RunInterrupted):
            run(load_recipe(recipe, [*overrides, f"output_dir={out}"]))
    return out


@pytest.fixture(scope="module")
def stopped(tiny_model_dir, tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, run directory) of a self-training run stopped at step 23, to copy and tamper with."""
    import yaml

    tmp = tmp_path_factory.mktemp("stopped")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "seed": 0,
        "data": {"source": {"train": str(tiny_data["source_train"]), "test": str(tiny_data["source_test"])},
                 "target": {"test": str(tiny_data["target_test"]), "unlabeled": str(tiny_data["target_unlabeled"])},
                 "max_length": 32, "dev_fraction": 0.25},
        "model": {"name_or_path": str(tiny_model_dir)},
        "train": {"batch_size": 8, "lr": 5e-3, "warmup_ratio": 0.0, "mixed_precision": "no"},
        "eval": {"batch_size": 4},
    }))
    with pytest.MonkeyPatch.context() as mp:  # `_isolated_cache` is per test
        mp.setenv("ADAPT_CACHE", str(tmp_path_factory.getbasetemp() / "adapt-cache"))
        return recipe, interrupt(recipe, tmp / "run", 23, OVERRIDES)


def copy_of(stopped: tuple[Path, Path], tmp_path: Path) -> tuple[list[str], Path]:
    recipe, original = stopped
    out = tmp_path / "run"
    shutil.copytree(original, out)
    resolved = out / "recipe.yaml"  # names its run directory, which a continuation must not change
    resolved.write_text(resolved.read_text().replace(str(original), str(out)))
    return [str(recipe), *OVERRIDES, f"output_dir={out}"], out / "checkpoints" / STEP


def plant(path: Path, marker: Path) -> None:
    torch.save({"state": Payload(marker)}, path)
    with open(path, "rb") as fh:  # (a file object: torch.load reads a `.safetensors` path as safetensors)
        torch.load(fh, weights_only=False)  # the payload is live: loading it the old way runs it
    assert marker.exists()
    marker.unlink()


def test_a_checkpoint_is_json_and_safetensors_only(stopped):
    ckpt = stopped[1] / "checkpoints" / STEP
    files = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())
    assert files == sorted(FILES)
    for name in files:
        if name.endswith(".json"):
            json.loads((ckpt / name).read_text())
        else:
            with safe_open(str(ckpt / name), framework="pt") as fh:
                assert list(fh.keys())
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    assert manifest["best"] and manifest["run_files"] == ["pseudo_labels"] and manifest["num_processes"] == 1
    assert json.loads((ckpt / "train_state.json").read_text())["best_step"] == 22  # round 1's own best


def test_dann_checkpoint_holds_the_discriminator_and_its_optimizer_state(tiny_recipe, tmp_path):
    out = interrupt(tiny_recipe, tmp_path / "run", 5, ["method.name=dann", "train.epochs=1"])
    ckpt = out / "checkpoints" / "step-00000005"
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as fh:
        heads = [k for k in fh.keys() if k.startswith("heads.domain.")]
    assert len(heads) == 4  # the discriminator's two weights and two biases
    groups = json.loads((ckpt / "optimizer.json").read_text())["param_groups"]
    n_params = sum(len(g["params"]) for g in groups)
    with safe_open(str(ckpt / "optimizer.safetensors"), framework="pt") as fh:
        moments = {k.split(".")[0] for k in fh.keys() if k.endswith(".exp_avg")}
    assert len(moments) == n_params  # Adam's moments for every parameter, the discriminator's included


def test_resuming_unpickles_nothing(stopped, tmp_path, monkeypatch):
    argv, _ = copy_of(stopped, tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a resume must not unpickle anything")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    assert train_main(argv) == 0


@pytest.mark.parametrize("name", FILES)
def test_a_pickle_planted_in_a_checkpoint_file_is_refused_not_run(name, stopped, tmp_path, capsys):
    argv, ckpt = copy_of(stopped, tmp_path)
    marker = tmp_path / "pwned"
    plant(ckpt / name, marker)
    assert train_main(argv) == 2  # train.resume=auto: the latest checkpoint of a shared output_dir
    err = capsys.readouterr().err
    assert f"error: checkpoint {ckpt}: {name} is not a readable" in err and "is not loaded" in err
    assert "Traceback" not in err
    assert not marker.exists()


def test_a_crafted_checkpoint_given_as_resume_path_is_refused(stopped, tmp_path, capsys):
    argv, ckpt = copy_of(stopped, tmp_path)
    marker = tmp_path / "pwned"
    plant(ckpt / "optimizer.safetensors", marker)
    argv = [*argv[:-1], f"output_dir={tmp_path / 'elsewhere'}", f"train.resume={ckpt}"]
    assert train_main(argv) == 2
    assert "optimizer.safetensors is not a readable safetensors file" in capsys.readouterr().err
    assert not marker.exists()


def test_pickle_files_beside_a_checkpoint_are_never_read(stopped, tmp_path):
    argv, ckpt = copy_of(stopped, tmp_path)
    marker = tmp_path / "pwned"
    # What Accelerate's save_state writes, and loads with pickle (custom states with weights_only=False).
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin",
                 "scheduler.bin", "pytorch_model.bin"):
        plant(ckpt / name, marker)
    assert train_main(argv) == 0
    assert not marker.exists()


def test_a_checkpoint_in_the_old_pickle_format_is_refused(stopped, tmp_path, capsys):
    argv, ckpt = copy_of(stopped, tmp_path)
    marker = tmp_path / "pwned"
    (ckpt / "checkpoint.json").unlink()  # as written by Accelerate's save_state: train_state.json, then pickles
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        plant(ckpt / name, marker)
    assert train_main(argv) == 2
    assert "written by an older adapt in Accelerate's pickle format, which is not loaded" in capsys.readouterr().err
    assert not marker.exists()


def test_a_checkpoint_of_another_process_count_is_refused(stopped, tmp_path, capsys):
    argv, ckpt = copy_of(stopped, tmp_path)
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    (ckpt / "checkpoint.json").write_text(json.dumps({**manifest, "num_processes": 2}))
    assert train_main(argv) == 2
    assert "was written by 2 processes, this run has 1" in capsys.readouterr().err


def test_a_train_state_with_unknown_fields_is_refused(stopped, tmp_path, capsys):
    argv, ckpt = copy_of(stopped, tmp_path)
    state = json.loads((ckpt / "train_state.json").read_text())
    (ckpt / "train_state.json").write_text(json.dumps({**state, "__class__": "os.system"}))
    assert train_main(argv) == 2
    assert "train_state.json must have the fields" in capsys.readouterr().err
