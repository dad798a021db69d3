"""`source_only`: supervised training on labelled source data, plus labelled target data when the recipe has it.

The baseline every adaptation method is measured against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import concatenate_datasets

from adapt.methods import LossOutput, MethodContext, Phase, StepInfo, classifier_inputs, register_method


def supervised_loss(model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
    batch = batches["labeled"]
    logits = model(**classifier_inputs(batch)).logits
    # Cross-entropy in fp32: under bf16 autocast the logits are bf16, and a low-precision log-softmax
    # makes small losses noisy.
    loss = F.cross_entropy(logits.float(), batch["labels"])
    return LossOutput(loss, {"ce": loss.detach()})


@register_method("source_only")
class SourceOnly:
    def phases(self, ctx: MethodContext) -> list[Phase]:
        labeled = [ctx.splits["source_train"]]
        if "target_train" in ctx.splits:
            labeled.append(ctx.splits["target_train"])
        train = labeled[0] if len(labeled) == 1 else concatenate_datasets(labeled)
        return [Phase("supervised", {"labeled": train}, supervised_loss, epochs=ctx.recipe.train.epochs)]
