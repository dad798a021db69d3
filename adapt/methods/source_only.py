"""Supervised methods: `source_only` (the baseline every adaptation method is measured against) and `sequential`
(source first, then the labelled target data: the few-shot target setting)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import concatenate_datasets

from adapt.methods import (
    BaseMethod,
    LossOutput,
    MethodContext,
    Phase,
    StepInfo,
    classifier_inputs,
    register_method,
)


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


@register_method("source_only")
class SourceOnly(BaseMethod):
    def phases(self, ctx: MethodContext) -> list[Phase]:
        return [Phase("supervised", {"labeled": labeled_training_data(ctx)}, supervised_loss, epochs=ctx.recipe.train.epochs)]


@register_method("sequential")
class Sequential(BaseMethod):
    uses = ("target_epochs",)
    requires = ("data.target.train",)

    def phases(self, ctx: MethodContext) -> list[Phase]:
        return [
            Phase("source", {"labeled": ctx.splits["source_train"]}, supervised_loss, epochs=ctx.recipe.train.epochs),
            Phase("target", {"labeled": ctx.splits["target_train"]}, supervised_loss,
                  epochs=ctx.recipe.method.target_epochs),
        ]
