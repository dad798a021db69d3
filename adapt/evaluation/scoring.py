"""Evaluation stage: predictions over a split on every process, gathered once per example, and their metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from datasets import Dataset

from adapt.core.errors import AdaptError
from adapt.core.fileio import write_jsonl
from adapt.core.rundir import RunDir
from adapt.data.features import Collator, classifier_inputs, eval_loader
from adapt.data.splits import Split
from adapt.evaluation.label_free import LabelFreeInputs, compute_criteria
from adapt.evaluation.metrics import classification_metrics
from adapt.model.heads import classifier_of
from adapt.recipe import Recipe


def predict_logits(accelerator: Accelerator, model: torch.nn.Module, ds: Dataset, batch_size: int, collate: Collator) -> np.ndarray:
    """Logits for every row of `ds`, in row order, computed on all processes."""
    return predict_outputs(accelerator, model, ds, batch_size, collate)[0]


def predict_outputs(accelerator: Accelerator, model: torch.nn.Module, ds: Dataset, batch_size: int, collate: Collator,
                    features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and, with `features`, the classifier's representation) for every row of `ds`, in row order, on all
    processes.

    The features are the last hidden state at position 0 ([CLS]), what BERT's pooler and DANN's discriminator read;
    taken before the pooler so that they do not depend on whether a model has one.
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
    idx_parts, logit_parts, feature_parts = [], [], []
    with torch.inference_mode():
        for batch in loader:
            if features:
                out = classifier_of(net)(**classifier_inputs(batch), output_hidden_states=True)
                idx, logits, feats = accelerator.gather_for_metrics(
                    (batch["idx"], out.logits.float(), out.hidden_states[-1][:, 0].float()))
                feature_parts.append(feats.cpu())
            else:
                idx, logits = accelerator.gather_for_metrics((batch["idx"], net(**classifier_inputs(batch)).logits.float()))
            idx_parts.append(idx.cpu())
            logit_parts.append(logits.cpu())
    net.train(was_training)
    idx = torch.cat(idx_parts).numpy()
    counts = np.bincount(idx, minlength=len(ds))
    if len(idx) != len(ds) or not (counts == 1).all():
        raise RuntimeError(f"evaluation gathered {len(idx)} predictions for {len(ds)} rows (duplicates or gaps)")
    return _in_row_order(idx, logit_parts), _in_row_order(idx, feature_parts) if features else None


def _in_row_order(idx: np.ndarray, parts: list[torch.Tensor]) -> np.ndarray:
    out = np.empty((len(idx), parts[0].shape[1]), dtype=np.float32)
    out[idx] = torch.cat(parts).numpy()
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


# ----------------------------------------------------------------------------------------------------------
# Label-free criteria (`adapt.evaluation.label_free`) on a fixed sample of the unlabelled target text.


# SND compares each text with the others, and DEV cross-validates a domain classifier with target text in every fold:
# with one text, SND is undefined and DEV's classifier sees a single class (scikit-learn's traceback, mid-training).
MIN_LABEL_FREE_TEXTS = 2


def check_label_free_texts(split: Split, key: str, fix: str) -> None:
    """Refuse unlabelled text too small for the label-free criteria, naming the input and what to do."""
    if (n := len(split.dataset)) < MIN_LABEL_FREE_TEXTS:
        raise AdaptError(f"`{key}` has {n} text(s), but the label-free criteria compare target texts with each other "
                         f"and need at least {MIN_LABEL_FREE_TEXTS}; {fix}")


@dataclass
class LabelFreeProbe:
    """What the label-free criteria are computed on, fixed for the whole run so every evaluation is comparable."""

    target: Dataset  # a seeded sample of tokenised target_unlabeled rows, `idx` renumbered 0..n-1
    source_dev: Dataset  # tokenised labelled source dev (DEV's validation set)
    source_labels: np.ndarray
    source_prior: np.ndarray  # label shares of the source training data
    label_names: list[str]


def label_free_probe(splits: dict[str, Split], tokenized: dict[str, Dataset], label_names: list[str],
                     examples: int, seed: int) -> LabelFreeProbe | None:
    """The probe for a run, or None when it has no unlabelled target text."""
    if "target_unlabeled" not in tokenized:
        return None
    target = tokenized["target_unlabeled"]
    if len(target) > examples:  # a bounded, seeded sample: the criteria then cost the same at every evaluation
        target = target.select(np.sort(np.random.default_rng(seed).choice(len(target), examples, replace=False)))
    target = target.map(lambda b, i: {"idx": i}, batched=True, with_indices=True, keep_in_memory=True,
                        desc="label-free sample")
    counts = np.bincount(np.asarray(splits["source_train"].dataset["label"]), minlength=len(label_names))
    return LabelFreeProbe(target, tokenized["source_dev"], np.asarray(splits["source_dev"].dataset["label"]),
                          counts / counts.sum(), label_names)


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def score_label_free(accelerator: Accelerator, model: torch.nn.Module, probe: LabelFreeProbe, batch_size: int,
                     collate: Collator, domain_acc: Sequence[float] = (), predictions: Path | None = None) -> dict:
    """The criteria for `model`, and the class shares it predicts on the target sample, identical on every process
    (computed from gathered arrays). `predictions`: also write the predicted class per sampled text there (id, pred,
    probs; the text has no label), which `adapt compare` reads to measure how often seeds of a setting agree."""
    t_logits, t_feats = predict_outputs(accelerator, model, probe.target, batch_size, collate, features=True)
    s_logits, s_feats = predict_outputs(accelerator, model, probe.source_dev, batch_size, collate, features=True)
    losses = torch.nn.functional.cross_entropy(torch.from_numpy(s_logits), torch.from_numpy(probe.source_labels),
                                               reduction="none").numpy()
    probs = _softmax(t_logits)
    inputs = LabelFreeInputs(probs, probe.source_prior, s_feats, losses, t_feats, _softmax(s_logits), probe.source_labels)
    shares = np.bincount(probs.argmax(-1), minlength=len(probe.label_names)) / len(probs)
    if predictions is not None and accelerator.is_main_process:
        write_jsonl(predictions, [{"id": i, "pred": probe.label_names[p], "probs": [round(float(x), 6) for x in pr]}
                                  for i, p, pr in zip(probe.target["id"], probs.argmax(-1), probs)])
    return {"examples": len(probs), "criteria": compute_criteria(inputs, domain_acc),
            "predicted_distribution": dict(zip(probe.label_names, shares.tolist())),
            "source_prior": dict(zip(probe.label_names, probe.source_prior.tolist()))}
