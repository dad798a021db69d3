"""`self_training`'s training side: choosing class-balanced pseudo-labels and the rounds that train on them.

Each round's pseudo-labels are written to `<run>/pseudo_labels/round<k>.json` before the round trains, so a
resumed run trains on the same ones (the model that chose them is gone by then). The file holds the kept rows, their
hard labels and the probability vectors they were chosen from (`probs`, from which soft or sharpened targets are
rebuilt); files of older runs have no `probs` and read as they always did."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Value, concatenate_datasets

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json
from adapt.data.features import classifier_inputs
from adapt.evaluation.scoring import predict_logits
from adapt.methods.base import BaseMethod, LossOutput, MethodContext, Phase, StepInfo
from adapt.methods.main_process import on_main_process
from adapt.methods.self_training.teacher import EMA_HEAD, EmaTeacher, ddp_ignored_buffers, update_teacher
from adapt.methods.source_only.method import labeled_training_data, supervised_loss
from adapt.model.heads import classifier_of, concat_batches

# ----------------------------------------------------------------------------------------------------------
# Choosing pseudo-labels.


def _candidates(probs: np.ndarray, threshold: float | None, fraction: float | None) -> list[np.ndarray]:
    """Per class, the rows predicted as it that pass the filter, most confident first: top probability >= threshold,
    or (curriculum) the most confident `fraction` of the rows predicted as that class."""
    confidence, pred = probs.max(axis=1), probs.argmax(axis=1)
    per_class = []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero(pred == c)
        rows = rows[np.argsort(-confidence[rows], kind="stable")]
        if fraction is not None:
            # The epsilon: fractions such as 2/3 x 0.6 land a hair below the integer they stand for.
            rows = rows[:math.floor(fraction * len(rows) + 1e-9)]
        else:
            rows = rows[confidence[rows] >= threshold]
        per_class.append(rows)
    return per_class


def select_pseudo_labels(probs: np.ndarray, threshold: float | None, max_per_class: int | None,
                         fraction: float | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows to keep, their labels, and counts: confident (top probability >= threshold, or per class the most confident
    `fraction` of its predictions when given) and class-balanced (the same number per class, most confident first)."""
    confidence, pred = probs.max(axis=1), probs.argmax(axis=1)
    per_class = _candidates(probs, threshold, fraction)
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


def curriculum_fraction(round_: int, rounds: int, most: float) -> float:
    """Curriculum Labeling's schedule (Cascante-Bermudez et al. 2021): round r of R keeps the top r/R x `most`."""
    return round_ / rounds * most


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised per row (MixMatch): T < 1 moves mass towards the top class, T -> 0 is the argmax."""
    # In log space: p^(1/T) underflows to 0/0 for small p and T.
    logp = np.log(np.clip(probs.astype(np.float64), 1e-300, None)) / temperature
    sharp = np.exp(logp - logp.max(axis=1, keepdims=True))
    return sharp / sharp.sum(axis=1, keepdims=True)


def pseudo_targets(saved: dict, mode: str, temperature: float) -> np.ndarray | None:
    """The distribution each kept row trains towards (None for hard labels, which train on `labels`)."""
    if mode == "hard":
        return None
    shape = len(saved["rows"]), len(saved["predicted_per_class"])  # (a round may keep none)
    probs = np.asarray(saved["probs"], dtype=np.float64).reshape(shape)
    return sharpen(probs, temperature) if mode == "sharpened" else probs


# ----------------------------------------------------------------------------------------------------------
# A round's data and loss.


def round_data(labeled: Dataset | None, unlabeled: Dataset, saved: dict) -> tuple[Dataset, int]:
    """The round's one training stream and how many of its rows are labelled: those rows first (none when the source
    is not kept), then the pseudo-labelled target rows, with `idx` renumbered as each row's position. One stream, as
    before, keeps the default round exactly what it was (mixed batches, epochs over both parts); the position tells the
    loss which rows are pseudo-labelled and where their soft target is, since batches carry only inputs, labels, idx.
    """
    keep, labels = saved["rows"], saved["labels"]
    parts = [] if labeled is None else [labeled]
    if keep:
        like = unlabeled if labeled is None else labeled
        cols = [c for c in like.column_names if c in unlabeled.column_names and c != "label"]
        pseudo = unlabeled.select(keep).select_columns(cols).add_column("label", labels)
        parts.append(pseudo.cast_column("label", Value("int64")))
        if labeled is not None:
            parts[0] = labeled.select_columns(cols + ["label"])
    if not parts:
        raise AdaptError(f"round {saved['round']} kept no pseudo-labels and `method.self_training.keep_source` is "
                         "false: it has nothing to train on. Lower `threshold`, raise `curriculum_max`, or keep the "
                         "source")
    data = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    data = data.remove_columns("idx").add_column("idx", np.arange(len(data), dtype=np.int64))
    return data, 0 if labeled is None else len(labeled)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """(KL(p||q) + KL(q||p)) / 2 between the rows' predicted distributions, averaged over rows (R-Drop's term). The two
    KLs sum to sum_c (p_c - q_c)(log p_c - log q_c): exactly 0 for identical passes, and never negative."""
    log_p, log_q = F.log_softmax(logits_a.float(), dim=-1), F.log_softmax(logits_b.float(), dim=-1)
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1).mean()


class RoundLoss:
    """Loss of one round: CE on the labelled rows + the pseudo-label loss (hard CE, or CE against the soft target) +
    `consistency` x symmetric KL between two dropout passes on a target batch. The first two share one mean over
    the batch, as one CE over mixed rows did before; they are logged apart as `ce` and `pseudo` (their shares of
    that mean, so `ce + pseudo` is the supervised part), the KL as `consistency` (unweighted)."""

    def __init__(self, consistency: float, pad_id: int):
        self.consistency, self.pad_id = consistency, pad_id
        self.n_labeled = 0  # rows of the round's data before the pseudo-labelled ones (set when the round starts)
        self.targets: torch.Tensor | None = None  # per row of the round's data, for soft and sharpened labels

    def __call__(self, model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
        batch, target = batches["labeled"], batches.get("consistency")
        n = batch["input_ids"].shape[0]
        if target is None:
            logits = model(**classifier_inputs(batch)).logits
        else:  # one forward pass (DDP syncs the gradients of one), the target batch twice: two dropout draws
            both = concat_batches(batch, concat_batches(target, target, self.pad_id), self.pad_id)
            logits = model(**both).logits
            logits, twice = logits[:n], logits[n:]
        loss, per_row = self._supervised(logits.float(), batch)
        pseudo = (batch["idx"] >= self.n_labeled).float()
        logs = {"ce": (per_row * (1 - pseudo)).sum() / n, "pseudo": (per_row * pseudo).sum() / n}
        if target is not None:
            kl = symmetric_kl(*twice.chunk(2))
            loss = loss + self.consistency * kl
            logs["consistency"] = kl.detach()
        return LossOutput(loss, logs)

    def _supervised(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The supervised loss and its detached per-row values."""
        if self.targets is None:  # hard labels: the CE of today's rounds, computed the same way
            per_row = F.cross_entropy(logits, batch["labels"], reduction="none").detach()
            return F.cross_entropy(logits, batch["labels"]), per_row
        if self.targets.device != logits.device:  # moved once, not every step
            self.targets = self.targets.to(logits.device)
        targets = self.targets[batch["idx"]]
        rows = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)  # CE against a distribution (one-hot: plain CE)
        return rows.mean(), rows.detach()


class _Round:
    """The data of one round, built when the round starts (it needs the model the previous rounds trained)."""

    def __init__(self, ctx: MethodContext, round_: int, loss: RoundLoss):
        self.ctx, self.round, self.loss = ctx, round_, loss

    def __call__(self, loop) -> dict[str, Dataset]:
        ctx, cfg = self.ctx, self.ctx.recipe.method.self_training
        path = ctx.run.root / "pseudo_labels" / f"round{self.round}.json"
        if not path.exists():  # present when a run resumes inside this round (its checkpoint holds the file)
            self._choose(loop, path)
        saved = json.loads(path.read_text())
        labeled = labeled_training_data(ctx) if cfg.keep_source else None
        data, self.loss.n_labeled = round_data(labeled, ctx.splits["target_unlabeled"], saved)
        self.loss.targets = self._targets(saved)
        streams = {"labeled": data}
        if cfg.consistency > 0:
            streams["consistency"] = ctx.splits["target_unlabeled"]
        return streams

    def _targets(self, saved: dict) -> torch.Tensor | None:
        """One-hot rows for the labelled part, the pseudo-targets after them (None for hard labels)."""
        cfg = self.ctx.recipe.method.self_training
        pseudo = pseudo_targets(saved, cfg.labels, cfg.sharpen_temperature)
        if pseudo is None:
            return None
        classes = len(saved["predicted_per_class"])
        labeled = np.asarray(labeled_training_data(self.ctx)["label"]) if self.loss.n_labeled else np.zeros(0, int)
        return torch.from_numpy(np.concatenate([np.eye(classes)[labeled], pseudo])).float()

    def _choose(self, loop, path) -> None:
        """Predict the unlabelled target with the teacher (the EMA of the student, or the student as it is now) and
        write the round's pseudo-labels (and their log line, once: a resumed run that reads the file back has the line
        in its log already)."""
        ctx, acc, cfg = self.ctx, loop.accelerator, self.ctx.recipe.method.self_training
        unlabeled = ctx.splits["target_unlabeled"]
        net = acc.unwrap_model(loop.model, keep_torch_compile=False)
        # Round 1's teacher is the source-trained student: the average starts with the rounds (`teacher.py`).
        ema = cfg.ema_decay is not None and net.heads[EMA_HEAD].started
        teacher = net.heads[EMA_HEAD].weights_in(classifier_of(net)) if ema else nullcontext()
        with teacher:
            logits = predict_logits(acc, loop.model, unlabeled, ctx.recipe.eval.batch_size, loop.collate)
        probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        fraction = curriculum_fraction(self.round, cfg.rounds, cfg.curriculum_max) if cfg.curriculum else None
        keep, labels, stats = select_pseudo_labels(probs, None if cfg.curriculum else cfg.threshold, cfg.max_per_class,
                                                   fraction)

        def write() -> None:
            atomic_write_json(path, {"round": self.round, **self._settings(fraction, ema), **stats, "rows": keep.tolist(),
                                     "labels": labels.tolist(), "probs": probs[keep].tolist()})
            loop.run.append_log({"phase": loop.state.phase, "global_step": loop.state.global_step,
                                 "pseudo_labels": stats["kept"], "pseudo_labels_per_class": stats["kept_per_class"]})

        on_main_process(acc, write, "writing the round's pseudo-labels")

    def _settings(self, fraction: float | None, ema: bool) -> dict:
        """How this round chose and trains on its pseudo-labels, for the report."""
        cfg = self.ctx.recipe.method.self_training
        chosen = {"curriculum_fraction": fraction} if fraction is not None else {"threshold": cfg.threshold}
        mode = {"label_mode": cfg.labels, **({"sharpen_temperature": cfg.sharpen_temperature}
                                            if cfg.labels == "sharpened" else {})}
        teacher = {"teacher": "ema", "ema_decay": cfg.ema_decay} if ema else {"teacher": "student"}
        return {**chosen, **mode, **teacher}


def _has_dropout(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


class SelfTraining(BaseMethod):
    # A round's pseudo-labels are chosen when it starts, by the model of that moment: a file a killed run wrote
    # after the checkpoint it resumes from would train the round on labels chosen by another model.
    run_dirs = ("pseudo_labels",)

    def heads(self, recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        decay = recipe.method.self_training.ema_decay
        return {} if decay is None else {EMA_HEAD: EmaTeacher(classifier, decay)}

    def prepare_model(self, model: torch.nn.Module, recipe) -> None:
        if EMA_HEAD in model.heads:  # read by DistributedDataParallel when it wraps the model
            model._ddp_params_and_buffers_to_ignore = ddp_ignored_buffers(model)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.recipe.method.self_training
        if cfg.consistency > 0 and not _has_dropout(classifier_of(ctx.model)):
            raise AdaptError("`method.self_training.consistency` compares two dropout passes, but this model has no "
                             "dropout: the term would be 0. Use a model with dropout, or set consistency to 0")
        on_step = update_teacher if cfg.ema_decay is not None else None  # the rounds only (`teacher.py`)
        epochs = ctx.recipe.train.epochs if cfg.source_epochs is None else cfg.source_epochs
        source = Phase("source", {"labeled": labeled_training_data(ctx)}, supervised_loss, epochs=epochs)
        first = [source] if epochs else []
        rounds = []
        for r in range(1, cfg.rounds + 1):
            loss = RoundLoss(cfg.consistency, ctx.tokenizer.pad_token_id if ctx.tokenizer is not None else 0)
            rounds.append(Phase(f"round{r}", _Round(ctx, r, loss), loss, epochs=cfg.epochs, on_step=on_step))
        return [*first, *rounds]

    def summary(self, ctx: MethodContext) -> dict:
        rounds = []
        for path in sorted((ctx.run.root / "pseudo_labels").glob("round*.json"), key=lambda p: int(p.stem[5:])):
            saved = json.loads(path.read_text())
            rounds.append({k: v for k, v in saved.items() if k not in ("rows", "labels", "probs")})
        return {"rounds": rounds}
