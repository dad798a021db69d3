"""Evaluation stage: predictions over a split on every process, gathered once per example, and their metrics."""

from __future__ import annotations

import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from datasets import Dataset

from adapt.core.fileio import write_jsonl
from adapt.core.rundir import RunDir
from adapt.data.features import Collator, classifier_inputs, eval_loader
from adapt.data.splits import Split
from adapt.evaluation.metrics import classification_metrics
from adapt.recipe import Recipe


def predict_logits(accelerator: Accelerator, model: torch.nn.Module, ds: Dataset, batch_size: int, collate: Collator) -> np.ndarray:
    """Logits for every row of `ds`, in row order, computed on all processes.

    `gather_for_metrics` drops the copies that sharding adds to even out the last batches; the row index travels
    with each prediction, and we check that every row came back exactly once.
    """
    # The module-level `prepare_data_loader`: `Accelerator.prepare_data_loader` would also register the loader
    # for checkpointing, and every evaluation would add one more. Unlike that method it leaves batches where the
    # collator made them unless asked (`put_on_device`): on a GPU they must move there.
    loader = prepare_data_loader(eval_loader(ds, batch_size, collate), device=accelerator.device,
                                 num_processes=accelerator.num_processes, process_index=accelerator.process_index,
                                 put_on_device=True)
    net = accelerator.unwrap_model(model)  # no DDP hooks needed for inference
    was_training = net.training
    net.eval()
    idx_parts, logit_parts = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = net(**classifier_inputs(batch)).logits.float()
            idx, logits = accelerator.gather_for_metrics((batch["idx"], logits))
            idx_parts.append(idx.cpu())
            logit_parts.append(logits.cpu())
    net.train(was_training)
    idx = torch.cat(idx_parts).numpy()
    counts = np.bincount(idx, minlength=len(ds))
    if len(idx) != len(ds) or not (counts == 1).all():
        raise RuntimeError(f"evaluation gathered {len(idx)} predictions for {len(ds)} rows (duplicates or gaps)")
    out = np.empty((len(ds), logit_parts[0].shape[1]), dtype=np.float32)
    out[idx] = torch.cat(logit_parts).numpy()
    return out


def score_split(
    accelerator: Accelerator, model: torch.nn.Module, split: Split, tokenized: Dataset, label_names: list[str],
    batch_size: int, collate: Collator, run: RunDir | None,
) -> tuple[dict, float]:
    """Metrics for one labelled split (and its predictions file when `run` is given); returns (entry, seconds)."""
    start = time.perf_counter()
    logits = predict_logits(accelerator, model, tokenized, batch_size, collate)
    seconds = time.perf_counter() - start
    probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    y_true, y_pred = np.asarray(split.dataset["label"]), probs.argmax(-1)
    entry = {"role": split.role, "domain": split.domain, **classification_metrics(y_true, y_pred, label_names)}
    if split.note:
        entry["note"] = split.note
    if run is not None and accelerator.is_main_process:
        rows = [
            {"id": i, "label": label_names[t], "pred": label_names[p], "probs": [round(float(x), 6) for x in pr]}
            for i, t, p, pr in zip(split.dataset["id"], y_true, y_pred, probs)
        ]
        write_jsonl(run.predictions / f"{split.name}.jsonl", rows)
    return entry, seconds


def evaluate_all(accelerator: Accelerator, model, splits: dict[str, Split], tokenized: dict[str, Dataset],
                 label_names: list[str], recipe: Recipe, run: RunDir, collate: Collator) -> tuple[dict, float]:
    """Metrics for every labelled dev and test split; returns them and evaluation throughput (samples/s)."""
    results, seconds, n = {}, 0.0, 0
    for name, split in splits.items():
        if not split.labeled or not name.endswith(("_dev", "_test")):
            continue
        entry, secs = score_split(accelerator, model, split, tokenized[name], label_names, recipe.eval.batch_size,
                                  collate, run if recipe.report.predictions else None)
        results[name] = {**entry, "kind": "test" if name.endswith("_test") else "dev"}
        seconds, n = seconds + secs, n + entry["n"]
    return results, n / max(seconds, 1e-9)
