"""Several processes through `accelerate launch` (gloo on CPU): no duplicated or lost examples, same predictions."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from adapt import load_recipe
from adapt.evaluate_run import main as evaluate_main
from adapt.training.run import run


def accelerate_launch(args: list[str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("accelerate")
    with socket.socket() as s:  # a free port, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # ACCELERATE_USE_CPU makes --multi_gpu start gloo ranks on a machine without GPUs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [str(exe if exe.exists() else "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


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
