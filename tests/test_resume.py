"""Checkpoints and resuming: an interrupted run, continued, matches an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import stop_at
from safetensors.torch import load_file

from adapt import load_recipe
from adapt.core.errors import RunInterrupted
from adapt.training.run import run

BASE = ["train.epochs=2", "train.checkpoint_every_steps=4", "train.keep_checkpoints=2"]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["global_step"]: r["loss"] for r in rows if "loss" in r}


def predictions(run_dir: Path, split: str = "target_test") -> dict[str, dict]:
    rows = [json.loads(line) for line in (run_dir / "predictions" / f"{split}.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def test_resumed_run_matches_uninterrupted(tiny_recipe, tmp_path, monkeypatch):
    full = tmp_path / "full"
    run(load_recipe(tiny_recipe, [*BASE, f"output_dir={full}"]))

    part = tmp_path / "part"
    # Ask for a stop mid-epoch (9 steps per epoch), as SIGTERM would.
    with stop_at(monkeypatch, 6), pytest.raises(RunInterrupted, match="interrupted at step 6"):
        run(load_recipe(tiny_recipe, [*BASE, f"output_dir={part}"]))
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert not (part / "report.json").exists()

    run(load_recipe(tiny_recipe, [*BASE, f"output_dir={part}"]))  # train.resume=auto continues step 6
    a, b = losses(full), losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 19))  # no step lost or logged twice
    assert max(abs(a[s] - b[s]) for s in a) < 1e-5
    pa, pb = predictions(full), predictions(part)
    assert pa.keys() == pb.keys()
    assert all(pa[i]["pred"] == pb[i]["pred"] for i in pa)
    assert max(abs(x - y) for i in pa for x, y in zip(pa[i]["probs"], pb[i]["probs"])) < 1e-5
    assert not (part / "checkpoints").exists(), "checkpoints are removed after a successful run"


def test_sigterm_writes_checkpoint_then_resume_finishes(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "adapt.train", str(tiny_recipe), f"output_dir={out}", "train.epochs=200",
           "train.max_steps=60"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    ckpts = list((out / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "train_state.json").exists()
    stopped_at = json.loads((ckpts[0] / "train_state.json").read_text())["global_step"]
    assert 0 < stopped_at < 60

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["optimizer_steps"] == 60
    assert sorted(losses(out)) == list(range(1, 61))


def test_finished_run_is_refused_and_left_intact(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    run(load_recipe(tiny_recipe, ["train.epochs=1", f"output_dir={out}"]))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from adapt.train import main

    assert main([str(tiny_recipe), "train.epochs=1", f"output_dir={out}"]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resuming_with_a_different_recipe_is_refused(tiny_recipe, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with stop_at(monkeypatch, 3), pytest.raises(RunInterrupted):
        run(load_recipe(tiny_recipe, [*BASE, f"output_dir={out}"]))
    from adapt.core.errors import AdaptError

    with pytest.raises(AdaptError, match=r"different recipe \(train.lr: 0.005 -> 0.001\)"):
        run(load_recipe(tiny_recipe, [*BASE, f"output_dir={out}", "train.lr=1e-3"]))
    # A key adapt gained after the run started (absent from its saved recipe) is no change at its default, but is
    # one at another value.
    import yaml

    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    del saved["eval"]["label_free_examples"]
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(AdaptError, match=r"different recipe \(eval.label_free_examples: 1000 -> 50\)"):
        run(load_recipe(tiny_recipe, [*BASE, f"output_dir={out}", "eval.label_free_examples=50"]))
    # Changing only how long it runs is a continuation, not another experiment.
    report = run(load_recipe(tiny_recipe, [*BASE, f"output_dir={out}", "train.max_steps=10"]))
    assert report["training"]["optimizer_steps"] == 10


# Pruned to rank 0, the query adapters are saved as (0, 32) tensors, which peft flags as possibly unsharded.
@pytest.mark.filterwarnings("ignore:Adapter 'default'.*invalid shape:UserWarning")
def test_resumed_adalora_run_allocates_the_same_ranks(tiny_recipe, tmp_path, monkeypatch):
    """AdaLoRA's rank allocator keeps importance estimates across steps and its latest allocation; both are in the
    checkpoint, so stopping during pruning and again after the final allocation changes no rank and no weight."""
    # 9 steps (one epoch, so no evaluation before the end picks earlier weights), peft counting from 0: warm-up at
    # steps 0-1, pruning from 8 ranks per weight towards 2 at steps 2-6, the final allocation at step 7
    # (total_step - tfinal), the pruned ranks masked at step 8. The stops count the steps done. (Without the
    # estimates a resumed run prunes other ranks here; without the allocation, step 8 has no ranks to mask.)
    overrides = ["model.finetune=peft", "model.peft.type=adalora", "model.peft.init_r=8", "model.peft.target_r=2",
                 "model.peft.tinit=1", "model.peft.tfinal=2", "train.max_steps=9"]
    full, part = tmp_path / "full", tmp_path / "part"
    run(load_recipe(tiny_recipe, [*overrides, f"output_dir={full}"]))
    for step in (4, 8):  # after two pruning steps; after the final allocation
        with stop_at(monkeypatch, step), pytest.raises(RunInterrupted, match=f"interrupted at step {step}"):
            run(load_recipe(tiny_recipe, [*overrides, f"output_dir={part}"]))
    run(load_recipe(tiny_recipe, [*overrides, f"output_dir={part}"]))

    ranks = [json.loads((d / "model" / "adapter_config.json").read_text())["rank_pattern"] for d in (full, part)]
    assert ranks[0] == ranks[1]
    assert sum(map(sum, ranks[0].values())) < 4 * 8  # pruned: query and value of 2 layers had 8 ranks each
    a, b = (load_file(str(d / "model" / "adapter_model.safetensors")) for d in (full, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full) == losses(part)
