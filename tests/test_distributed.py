"""Several processes through `accelerate launch` (gloo on CPU): no duplicated or lost examples, same predictions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapt import load_recipe
from adapt.evaluate_run import main as evaluate_main
from adapt.training.run import run


def free_port() -> int:
    with socket.socket() as s:  # a free port, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(port: int, machines: list[str]) -> list[str]:
    """`accelerate launch` of 2 processes in all; `machines` says over how many machines."""
    exe = Path(sys.executable).with_name("accelerate")
    return [str(exe if exe.exists() else "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", *machines,
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]


# ACCELERATE_USE_CPU makes --multi_gpu start gloo ranks on a machine without GPUs.
LAUNCH_ENV = {"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}


def accelerate_launch(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [*launch_command(free_port(), ["--num_machines", "1"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **LAUNCH_ENV}, timeout=600)


def launch_as_two_machines(args: list[str], logs: Path, timeout: float) -> list[tuple[int, str]]:
    """Each process under its own launcher, as on two machines: (exit code, stderr) of each. A launcher stops its
    other processes when one fails, which hides a process left waiting; across machines nothing does, so a process
    left in a collective waits there until the distributed timeout (30 minutes). On timeout the test fails and the
    launchers and their processes are killed."""
    port, procs = free_port(), []
    for rank in (0, 1):
        machine = ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
        with open(logs / f"machine{rank}.err", "w") as err:  # files, not pipes: a full pipe would block a process
            procs.append(subprocess.Popen([*launch_command(port, machine), *args], stdout=subprocess.DEVNULL,
                                          stderr=err, text=True, env={**os.environ, **LAUNCH_ENV},
                                          start_new_session=True))
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s:\n" + (logs / "machine1.err").read_text()[-3000:])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [(code, (logs / f"machine{rank}.err").read_text()) for rank, code in enumerate(codes)]


def preds(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_two_process_evaluation_matches_one_process(tiny_recipe, tiny_data, tmp_path):
    one = tmp_path / "one"
    run(load_recipe(tiny_recipe, [f"output_dir={one}", "train.epochs=2"]))
    two = tmp_path / "two"
    shutil.copytree(one, two)
    odd = tiny_data["target_test"]  # 23 rows: 2 processes do not divide it

    assert evaluate_main([str(one), "--test", f"odd={odd}"]) == 0
    done = accelerate_launch(["-m", "adapt.evaluate_run", str(two), "--test", f"odd={odd}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert sum(line.startswith("odd ") for line in done.stdout.splitlines()) == 1  # printed once, not per process

    report = json.loads((two / "report.json").read_text())
    assert report["splits"]["odd"]["num_processes"] == 2 and report["splits"]["odd"]["n"] == 23
    a, b = preds(one / "predictions" / "odd.jsonl"), preds(two / "predictions" / "odd.jsonl")
    assert len(b) == 23 and a.keys() == b.keys()  # each example exactly once
    assert all(a[i]["pred"] == b[i]["pred"] for i in a)
    assert max(abs(x - y) for i in a for x, y in zip(a[i]["probs"], b[i]["probs"])) < 1e-5


def test_two_process_training_run(tiny_recipe, tmp_path):
    out = tmp_path / "ddp"
    done = accelerate_launch(["-m", "adapt.train", str(tiny_recipe), f"output_dir={out}", "train.epochs=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["num_processes"] == 2
    assert report["training"]["effective_batch_size"] == 16
    assert report["splits"]["target_test"]["n"] == 23
    assert len((out / "predictions" / "target_test.jsonl").read_text().splitlines()) == 23
    assert done.stdout.count("transfer gap") == 1  # the summary is printed once, by the main process


@pytest.mark.parametrize("overrides", [
    ["method.name=dapt", "method.mlm.steps=4", "model.finetune=lora"],  # the classifier head idles in the MLM phase
    ["method.name=dann"],  # a discriminator head and two streams per step
    ["method.name=self_training", "method.self_training.rounds=1", "method.self_training.threshold=0.5"],
], ids=["dapt-lora", "dann", "self_training"])
def test_two_process_adaptation_methods(overrides, tiny_recipe, tmp_path):
    out = tmp_path / "ddp"
    done = accelerate_launch(["-m", "adapt.train", str(tiny_recipe), f"output_dir={out}", "train.epochs=2", *overrides])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["num_processes"] == 2 and report["method"] == overrides[0].split("=")[1]
    assert len((out / "predictions" / "target_test.jsonl").read_text().splitlines()) == 23
    if "self_training" in overrides[0]:
        saved = json.loads((out / "pseudo_labels" / "round1.json").read_text())
        assert saved["candidates"] == 40  # every unlabelled row predicted once over both processes


def test_two_processes_share_the_teachers_predictions_and_write_the_same_teacher_file(tiny_model_dir, tiny_recipe,
                                                                                      tmp_path):
    """Each process predicts every other text with the teachers (rows `rank::2`); the main process puts them back in
    order. The file must be the one a single process writes, and the report's teacher and student texts/s are timed
    on the main process's share, side by side."""
    from safetensors.torch import load_file

    teacher = tmp_path / "teacher"
    run(load_recipe(tiny_recipe, [f"output_dir={teacher}", "train.epochs=2"]))
    common = ["method.name=distill", f"method.distill.teachers=[{teacher}]", "train.epochs=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    run(load_recipe(tiny_recipe, [*common, f"output_dir={one}"]))
    done = accelerate_launch(["-m", "adapt.train", str(tiny_recipe), *common, f"output_dir={two}"])
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (load_file(str(d / "teacher" / "probs.safetensors")) for d in (one, two))
    assert a.keys() == b.keys() == {"distill", "test/source_test", "test/target_test"}
    assert all(a[k].shape == b[k].shape and float((a[k] - b[k]).abs().max()) < 1e-5 for k in a)
    info = json.loads((two / "teacher" / "teacher.json").read_text())
    n = info["n_rows"]  # 40 target + 72 source
    assert info["teachers"][0]["processes"] == 2 and info["teachers"][0]["inference"]["texts"] == (n + 1) // 2
    summary = json.loads((two / "report.json").read_text())["method_summary"]
    assert summary["student"]["inference"]["texts"] == summary["teacher"]["inference"]["texts"] == (n + 1) // 2


def test_a_teacher_that_fails_on_every_process_stops_them_all_at_once(tiny_model_dir, tiny_recipe, tmp_path):
    """A teacher whose weights do not load passes the checks before the run starts (they read config.json only) and
    fails on every process as it predicts its share: each stops with the error, none waits for the distributed
    timeout, and no teacher file is written. Two launchers, as on two machines: one launcher would stop a waiting
    process itself."""
    from transformers import AutoModelForSequenceClassification

    teacher = tmp_path / "teacher"
    labels = {0: "negative", 1: "positive"}
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, id2label=labels).save_pretrained(teacher)
    (teacher / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "ddp"
    args = ["-m", "adapt.train", str(tiny_recipe), f"output_dir={out}", "method.name=distill",
            f"method.distill.teachers=[{teacher}]", "method.distill.texts=[target]"]
    for code, err in launch_as_two_machines(args, tmp_path, timeout=180):
        assert code != 0 and "SafetensorError" in err, err[-3000:]
    assert not (out / "teacher").exists()


class _TwoProcesses:
    num_processes, is_main_process = 2, True


@pytest.mark.parametrize("this, other, expected", [
    (None, None, None),
    (None, "ValueError: out of memory on cuda:1", "process 1 failed while predicting: ValueError: out of memory"),
    ("mine", None, "mine"),
], ids=["both-succeed", "the-other-fails", "this-one-fails"])
def test_work_every_process_shares_stops_all_of_them_when_one_fails(this, other, expected, monkeypatch):
    """`on_every_process`: every process reaches the gather, failed or not, and then all stop. The other process's
    side of the gather is simulated; the collective itself is what the tests above run."""
    import adapt.methods.main_process as shared
    from adapt.core.errors import OtherProcessFailed

    def work():
        if this:
            raise KeyError(this)
        return "rank 0's share"

    sent = []

    def gather(objects):
        sent.extend(objects)
        return [*objects, (other, None if other else "rank 1's share")]

    monkeypatch.setattr(shared, "gather_object", gather)
    if expected is None:
        assert shared.on_every_process(_TwoProcesses(), work, "predicting") == ["rank 0's share", "rank 1's share"]
    elif this:
        with pytest.raises(KeyError, match=expected):  # its own error, after telling the other process
            shared.on_every_process(_TwoProcesses(), work, "predicting")
        assert sent == [("KeyError: 'mine'", None)]
    else:
        with pytest.raises(OtherProcessFailed, match=expected):
            shared.on_every_process(_TwoProcesses(), work, "predicting")


def test_launched_processes_that_do_not_form_one_run_are_refused(monkeypatch):
    """WORLD_SIZE says 2 processes were launched but Accelerate sees 1: each would train its own copy into the
    same directory, so the run stops before touching anything."""
    import pytest

    import adapt.training.run
    from adapt.core.errors import AdaptError

    class LoneAccelerator:
        num_processes = 1

        def __init__(self, **kwargs):
            pass

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(adapt.training.accelerator, "Accelerator", LoneAccelerator)
    recipe = load_recipe(None, ["data.source.train=a.jsonl", "data.source.test=b.jsonl", "data.target.test=c.jsonl"])
    with pytest.raises(AdaptError, match="ACCELERATE_USE_CPU=true accelerate launch --multi_gpu"):
        adapt.training.accelerator.setup_accelerator(recipe)
