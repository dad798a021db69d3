"""`entmin`'s training side."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adapt.methods.base import BaseMethod, LossOutput, MethodContext, Phase, StepInfo
from adapt.methods.source_only.method import labeled_training_data
from adapt.model.heads import concat_batches


class Entmin(BaseMethod):
    def phases(self, ctx: MethodContext) -> list[Phase]:
        weight, pad_id = ctx.recipe.method.entmin.weight, ctx.tokenizer.pad_token_id

        def loss(model, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
            src, tgt = batches["labeled"], batches["target"]        # one batch per stream, each step
            logits = model(**concat_batches(src, tgt, pad_id)).logits.float()   # one forward pass for both
            n = src["input_ids"].shape[0]
            ce = F.cross_entropy(logits[:n], src["labels"])
            p = logits[n:].softmax(-1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
            return LossOutput(ce + weight * entropy, {"ce": ce.detach(), "entropy": entropy.detach()})

        streams = {"labeled": labeled_training_data(ctx), "target": ctx.splits["target_unlabeled"]}
        return [Phase("entmin", streams, loss, epochs=ctx.recipe.train.epochs)]
