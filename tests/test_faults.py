"""Faults a run must survive: kill -9 anywhere, SIGTERM, a full disk, a lost process. Resumed, it ends with the
result of the uninterrupted run, bit for bit: on CPU with one thread every operation here is deterministic, so
any difference (a weight 5e-6 off, another pseudo-label) is state the checkpoint failed to keep."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kill_points
import pytest
import yaml

import adapt.training.checkpoint
from adapt import load_recipe
from adapt.train import main as train_main
from adapt.training.run import run

# The killed runs are forked from a server that imported the library once: each is a real process that a real
# SIGKILL ends (no `finally`, no atexit), without paying the ~5 s import of torch and transformers every time.
FORK = multiprocessing.get_context("forkserver")
FORK.set_forkserver_preload(["adapt.train", "adapt.training.run", "kill_points"])

# Evaluations every 4 steps and checkpoints every 3: kills land between the two, and the best weights change
# between checkpoints. The source phase is 2 epochs of 9 steps.
BASE = ["train.epochs=2", "train.eval_every_steps=4", "train.checkpoint_every_steps=3", "train.keep_checkpoints=2"]
METHODS = {
    "source_only": [],
    "dann": ["method.name=dann"],
    "dapt": ["method.name=dapt", "method.mlm.steps=5"],
    "self_training": ["method.name=self_training", "method.self_training.rounds=1",
                      "method.self_training.threshold=0.5"],
}
# Per method: inside an epoch, right after an evaluation, between phases (after training, for one-phase methods).
POINTS = {
    "source_only": ["step:0:7", "eval:0:3", "end:0:1"],
    "dann": ["step:0:7", "eval:0:3", "end:0:1"],
    "dapt": ["step:0:4", "eval:1:2", "start:1:1"],  # in the MLM phase; in the supervised one; mlm/ just written
    "self_training": ["step:1:5", "eval:1:1", "start:1:1"],  # all in round 1; round1.json just written
}
UNSTABLE = {"timing", "environment"}  # seconds and the machine, not results


@pytest.fixture(scope="module")
def recipe_file(tiny_model_dir, tiny_data, tmp_path_factory) -> Path:
    recipe = {
        "seed": 0,
        "data": {"source": {"train": str(tiny_data["source_train"]), "test": str(tiny_data["source_test"]),
                            "domain": "books"},
                 "target": {"test": str(tiny_data["target_test"]), "unlabeled": str(tiny_data["target_unlabeled"]),
                            "domain": "kitchen"},
                 "max_length": 32, "dev_fraction": 0.25},
        "model": {"name_or_path": str(tiny_model_dir)},
        "train": {"batch_size": 8, "lr": 5e-3, "warmup_ratio": 0.0, "mixed_precision": "no"},
        "eval": {"batch_size": 4},
        "report": {"log_every_steps": 1},
    }
    path = tmp_path_factory.mktemp("faults") / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def uninterrupted(recipe_file, tmp_path_factory):
    """The uninterrupted run of a method (trained on first use, then shared by the module's tests)."""
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            out = tmp_path_factory.mktemp(f"full-{method}") / "run"
            run(load_recipe(recipe_file, [*BASE, *METHODS[method], f"output_dir={out}"]))
            done[method] = out
        return done[method]

    return get


def killed_run(argv: list[str], point: str, sig: int, log: Path) -> int:
    """`adapt train argv` in a forked process that signals itself at `point`; its exit code (-9: SIGKILL)."""
    proc = FORK.Process(target=kill_points.run_child, args=(argv, dict(os.environ), point, sig, str(log)))
    proc.start()
    proc.join(180)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"the run did not stop at {point}: {log.read_text()[-2000:]}")
    return proc.exitcode


def result_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a finished run but the reports, whose timings differ (report.json is compared apart)."""
    skip = {"report.json", "report.md", "report.html", "recipe.yaml"}
    files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
             if p.is_file() and p.name not in skip}
    # A fast tokenizer saves the truncation it last applied, which a run whose tokenised splits came from the
    # datasets cache never applied: a property of the cache, not of resuming (`model.saving`).
    tokenizer = json.loads(files.pop("model/tokenizer.json"))
    files["model/tokenizer.json"] = json.dumps({k: v for k, v in tokenizer.items() if k != "truncation"}).encode()
    return files


def assert_same_result(full: Path, resumed: Path) -> None:
    a, b = result_files(full), result_files(resumed)
    assert sorted(a) == sorted(b)
    assert "model/model.safetensors" in a and any(k.startswith("predictions/") for k in a)
    different = [name for name in a if a[name] != b[name]]
    assert not different, f"differ from the uninterrupted run: {different}"
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (full, resumed))
    for report in (ra, rb):
        report["recipe"].pop("output_dir")
        for key in UNSTABLE:
            report.pop(key)
    assert ra == rb  # metrics, confusion matrices, calibration, selection, per-phase losses, pseudo-label rounds


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))


# ----------------------------------------------------------------------------------------------------------
# kill -9 at three points per method, then resume.


@pytest.mark.parametrize(("method", "point"), [(m, p) for m, ps in POINTS.items() for p in ps])
def test_killed_anywhere_resumes_to_the_uninterrupted_result(method, point, recipe_file, uninterrupted, tmp_path):
    out = tmp_path / "run"
    argv = [str(recipe_file), *BASE, *METHODS[method], f"output_dir={out}"]
    log = tmp_path / "killed.log"
    assert killed_run(argv, point, signal.SIGKILL, log) == -signal.SIGKILL, log.read_text()[-3000:]
    assert checkpoints(out) and not (out / "report.json").exists()

    assert train_main(argv) == 0  # train.resume=auto: from the latest checkpoint
    assert_same_result(uninterrupted(method), out)


def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(recipe_file, uninterrupted, tmp_path):
    out = tmp_path / "run"
    argv = [str(recipe_file), *BASE, f"output_dir={out}"]
    log = tmp_path / "killed.log"
    # Tensor files: step 3's optimizer and random states, then step 6's optimizer (its model file is written too).
    assert killed_run(argv, "write:0:3", signal.SIGKILL, log) == -signal.SIGKILL, log.read_text()[-3000:]
    half = out / "checkpoints" / ".tmp-step-00000006"
    assert (half / "optimizer.safetensors").exists() and not (half / "checkpoint.json").exists()
    assert checkpoints(out) == ["step-00000003"]  # the half-written one is not a checkpoint

    assert train_main(argv) == 0
    assert_same_result(uninterrupted("source_only"), out)


# ----------------------------------------------------------------------------------------------------------
# SIGTERM (a scheduler's notice before preemption): checkpoint, say how to resume, exit 130.


@pytest.mark.parametrize(("method", "point", "step"), [("dann", "step:0:7", 7), ("self_training", "step:1:5", 23)])
def test_sigterm_checkpoints_and_resumes_to_the_uninterrupted_result(method, point, step, recipe_file, uninterrupted,
                                                                     tmp_path):
    out = tmp_path / "run"
    argv = [str(recipe_file), *BASE, *METHODS[method], f"output_dir={out}"]
    log = tmp_path / "terminated.log"
    assert killed_run(argv, point, signal.SIGTERM, log) == 130
    said = log.read_text()
    assert f"interrupted at step {step}; checkpoint saved in {out / 'checkpoints' / f'step-{step:08d}'}" in said
    assert f"Continue with the same command and `output_dir={out}` (train.resume=auto)" in said
    assert "Traceback" not in said
    assert checkpoints(out)[-1] == f"step-{step:08d}"

    assert train_main(argv) == 0
    assert_same_result(uninterrupted(method), out)


# ----------------------------------------------------------------------------------------------------------
# A full disk while a checkpoint is written.


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(recipe_file, uninterrupted, tmp_path, monkeypatch,
                                                             capsys):
    out = tmp_path / "run"
    argv = [str(recipe_file), *BASE, f"output_dir={out}"]
    real = adapt.training.checkpoint.save_file

    def disk_full_at_step_6(tensors, path, *args, **kwargs):
        if ".tmp-step-00000006" in path:  # the model file of that checkpoint is written by then: midway
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(adapt.training.checkpoint, "save_file", disk_full_at_step_6)
    assert train_main(argv) == 2
    said = capsys.readouterr().err
    assert f"could not write checkpoint {out / 'checkpoints' / 'step-00000006'}: No space left on device" in said
    assert "the disk (or your quota) is full" in said and "Traceback" not in said
    assert checkpoints(out) == ["step-00000003"]
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the half-written one is gone

    monkeypatch.undo()
    assert train_main(argv) == 0
    assert_same_result(uninterrupted("source_only"), out)


def test_safetensors_io_errors_are_described_like_os_errors():
    from safetensors import SafetensorError

    from adapt.training.checkpoint import describe_os_error

    err = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert describe_os_error(err) == "No space left on device: the disk (or your quota) is full"


# ----------------------------------------------------------------------------------------------------------
# Two processes: one is killed.


def accelerate_launch(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("accelerate")
    with socket.socket() as s:  # a free port, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **(env or {})}
    cmd = [str(exe if exe.exists() else "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running after {timeout} s: {err[-3000:]}")
    return proc.returncode, err


def test_a_killed_process_ends_a_two_process_run_which_then_resumes(recipe_file, tmp_path):
    args = [str(recipe_file), *BASE, *METHODS["dann"]]
    full, out = tmp_path / "full", tmp_path / "run"
    code, err = finish(accelerate_launch(["-m", "adapt.train", *args, f"output_dir={full}"]))
    assert code == 0, err[-3000:]

    stamp = tmp_path / "killed_at"
    killer = {"ADAPT_TEST_KILL": "step:0:5", "ADAPT_TEST_KILL_RANK": "1", "ADAPT_TEST_KILL_STAMP": str(stamp)}
    code, err = finish(accelerate_launch([kill_points.__file__, *args, f"output_dir={out}"], killer), timeout=180)
    ended = time.time()
    assert code != 0 and stamp.exists(), err[-3000:]
    assert ended - float(stamp.read_text()) < 60
    assert "Signal 9 (SIGKILL)" in err  # the launcher names the process that died
    # The launcher also stops the survivor (SIGTERM): if it was quicker to see its peer gone, it says so in one line.
    assert "[rank0]: Traceback" not in err
    assert "error:" not in err or "error: lost another process of this 2-process run" in err
    assert checkpoints(out) == ["step-00000003"]

    code, err = finish(accelerate_launch(["-m", "adapt.train", *args, f"output_dir={out}"]))
    assert code == 0, err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["num_processes"] == 2
    assert_same_result(full, out)


def test_every_training_step_runs_in_train_mode(tiny_recipe, tmp_path, monkeypatch):
    """`from_pretrained` returns a model in eval mode; evaluations put back the mode they found. The loop sets train
    mode itself, so dropout does not depend on whether this process evaluated yet (a resumed one has not)."""
    import adapt.methods.source_only.method as source_only

    modes = []
    real = source_only.supervised_loss

    def loss(model, batches, info):
        modes.append(model.training and all(m.training for m in model.modules()))
        return real(model, batches, info)

    monkeypatch.setattr(source_only, "supervised_loss", loss)
    run(load_recipe(tiny_recipe, ["train.epochs=1", "train.eval_every_steps=4", f"output_dir={tmp_path / 'run'}"]))
    assert len(modes) == 9 and all(modes)
