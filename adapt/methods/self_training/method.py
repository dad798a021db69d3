"""`self_training`'s training side: choosing class-balanced pseudo-labels and the rounds that train on them.

Each round's pseudo-labels are written to `<run>/pseudo_labels/round<k>.json` before the round trains, so a
resumed run trains on the same ones (the model that chose them is gone by then)."""

from __future__ import annotations

import json

import numpy as np
import torch
from datasets import Dataset, Value, concatenate_datasets

from adapt.core.fileio import atomic_write_json
from adapt.evaluation.scoring import predict_logits
from adapt.methods.base import BaseMethod, MethodContext, Phase
from adapt.methods.source_only.method import labeled_training_data, supervised_loss


def select_pseudo_labels(probs: np.ndarray, threshold: float, max_per_class: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows to keep, their labels, and counts: confident (top probability >= threshold) and class-balanced."""
    confidence, pred = probs.max(axis=1), probs.argmax(axis=1)
    per_class = []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero((pred == c) & (confidence >= threshold))
        per_class.append(rows[np.argsort(-confidence[rows], kind="stable")])  # most confident first
    n = min(len(rows) for rows in per_class)
    if max_per_class is not None:
        n = min(n, max_per_class)
    keep = np.concatenate([rows[:n] for rows in per_class]).astype(np.int64)
    labels = pred[keep]
    stats = {"candidates": int(len(probs)), "confident_per_class": [int(len(r)) for r in per_class],
             "kept_per_class": [n] * probs.shape[1], "kept": int(len(keep)),
             "mean_confidence_kept": float(confidence[keep].mean()) if len(keep) else None,
             "predicted_per_class": np.bincount(pred, minlength=probs.shape[1]).tolist()}
    return keep, labels, stats


def _with_pseudo_labels(labeled: Dataset, unlabeled: Dataset, keep: list[int], labels: list[int]) -> Dataset:
    if not keep:
        return labeled
    cols = [c for c in labeled.column_names if c in unlabeled.column_names]
    pseudo = unlabeled.select(keep).select_columns(cols).add_column("label", labels)
    pseudo = pseudo.cast_column("label", Value("int64"))
    return concatenate_datasets([labeled.select_columns(cols + ["label"]), pseudo])


class _PseudoLabelled:
    """The data of one round, built when the round starts (it needs the model the previous rounds trained)."""

    def __init__(self, ctx: MethodContext, round_: int):
        self.ctx, self.round = ctx, round_

    def __call__(self, loop) -> dict[str, Dataset]:
        path = self.ctx.run.root / "pseudo_labels" / f"round{self.round}.json"
        if not path.exists():  # present when a run resumes inside this round (its checkpoint holds the file)
            self._choose(loop, path)
        saved = json.loads(path.read_text())
        ctx = self.ctx
        data = _with_pseudo_labels(labeled_training_data(ctx), ctx.splits["target_unlabeled"], saved["rows"], saved["labels"])
        return {"labeled": data}

    def _choose(self, loop, path) -> None:
        """Predict the unlabelled target with the model as it is now and write the round's pseudo-labels (and their
        log line, once: a resumed run that reads the file back has the line in its log already)."""
        ctx, acc = self.ctx, loop.accelerator
        unlabeled = ctx.splits["target_unlabeled"]
        logits = predict_logits(acc, loop.model, unlabeled, ctx.recipe.eval.batch_size, loop.collate)
        probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        cfg = ctx.recipe.method.self_training
        keep, labels, stats = select_pseudo_labels(probs, cfg.threshold, cfg.max_per_class)
        if acc.is_main_process:
            atomic_write_json(path, {"round": self.round, "threshold": cfg.threshold, **stats,
                                     "rows": keep.tolist(), "labels": labels.tolist()})
            loop.run.append_log({"phase": loop.state.phase, "global_step": loop.state.global_step,
                                 "pseudo_labels": stats["kept"], "pseudo_labels_per_class": stats["kept_per_class"]})
        acc.wait_for_everyone()


class SelfTraining(BaseMethod):
    # A round's pseudo-labels are chosen when it starts, by the model of that moment: a file a killed run wrote
    # after the checkpoint it resumes from would train the round on labels chosen by another model.
    run_dirs = ("pseudo_labels",)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.recipe.method.self_training
        first = Phase("source", {"labeled": labeled_training_data(ctx)}, supervised_loss, epochs=ctx.recipe.train.epochs)
        return [first] + [Phase(f"round{r}", _PseudoLabelled(ctx, r), supervised_loss, epochs=cfg.epochs)
                          for r in range(1, cfg.rounds + 1)]

    def summary(self, ctx: MethodContext) -> dict:
        rounds = []
        for path in sorted((ctx.run.root / "pseudo_labels").glob("round*.json"), key=lambda p: int(p.stem[5:])):
            saved = json.loads(path.read_text())
            rounds.append({k: v for k, v in saved.items() if k not in ("rows", "labels")})
        return {"rounds": rounds}
