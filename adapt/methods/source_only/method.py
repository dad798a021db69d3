"""The supervised loss and data that `source_only` trains on, and that other methods reuse for their
supervised phases."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import concatenate_datasets

from adapt.data.features import classifier_inputs
from adapt.methods.base import BaseMethod, LossOutput, MethodContext, Phase, StepInfo


def supervised_loss(model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
    batch = batches["labeled"]
    logits = model(**classifier_inputs(batch)).logits
    # Cross-entropy in fp32: under bf16 autocast the logits are bf16, and a low-precision log-softmax
    # makes small losses noisy.
    loss = F.cross_entropy(logits.float(), batch["labels"])
    return LossOutput(loss, {"ce": loss.detach()})


def labeled_training_data(ctx: MethodContext):
    """Labelled source training data, plus the labelled target training data when the recipe has it."""
    parts = [ctx.splits["source_train"]] + ([ctx.splits["target_train"]] if "target_train" in ctx.splits else [])
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def supervised_phase(ctx: MethodContext, name: str = "supervised", epochs: int | None = None) -> Phase:
    """Supervised training on `labeled_training_data` for `epochs` (default `train.epochs`)."""
    return Phase(name, {"labeled": labeled_training_data(ctx)}, supervised_loss,
                 epochs=ctx.recipe.train.epochs if epochs is None else epochs)


class SourceOnly(BaseMethod):
    def phases(self, ctx: MethodContext) -> list[Phase]:
        return [supervised_phase(ctx)]
