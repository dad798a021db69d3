"""`dann`: domain-adversarial training (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks").

A domain discriminator (an MLP on the pooled [CLS] representation) learns to tell source from target, while a
gradient-reversal layer between it and the encoder pushes the encoder the other way: towards features the
discriminator cannot separate, on which the source-trained classifier transfers. Each step draws a labelled
source batch and an unlabelled target batch, runs them through the encoder together, and minimises

    L = CE(source) + BCE(domain)     with the encoder receiving -lambda(p) * dBCE/dfeatures,
    lambda(p) = lambda_max * (2 / (1 + exp(-gamma * p)) - 1),  p = training progress in [0, 1]

so the adversary is switched on gradually while the classifier is still unreliable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adapt.heads import DomainDiscriminator, concat_batches
from adapt.methods import BaseMethod, LossOutput, MethodContext, Phase, StepInfo, register_method
from adapt.methods.source_only import labeled_training_data
from adapt.recipe import Recipe


def dann_lambda(progress: float, gamma: float, lambda_max: float) -> float:
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


def make_dann_loss(gamma: float, lambda_max: float, pad_id: int):
    def dann_loss(model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
        labeled, target = batches["labeled"], batches["target"]
        scale = dann_lambda(info.progress, gamma, lambda_max)
        out = model(**concat_batches(labeled, target, pad_id), domain_scale=scale)
        n, m = labeled["input_ids"].shape[0], target["input_ids"].shape[0]
        ce = F.cross_entropy(out.logits[:n].float(), labeled["labels"])
        domain_labels = torch.cat([torch.zeros(n), torch.ones(m)]).to(out.domain_logits.device)
        domain = F.binary_cross_entropy_with_logits(out.domain_logits.float(), domain_labels)
        domain_acc = ((out.domain_logits.detach() > 0).float() == domain_labels).float().mean()
        logs = {"ce": ce.detach(), "domain": domain.detach(), "domain_acc": domain_acc,
                "lambda": torch.tensor(scale, device=ce.device)}
        return LossOutput(ce + domain, logs)

    return dann_loss


@register_method("dann")
class Dann(BaseMethod):
    uses = ("dann",)
    requires = ("data.target.unlabeled",)

    def heads(self, recipe: Recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        return {"domain": DomainDiscriminator(classifier.config.hidden_size, recipe.method.dann.hidden)}

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.recipe.method.dann
        streams = {"labeled": labeled_training_data(ctx), "target": ctx.splits["target_unlabeled"]}
        loss = make_dann_loss(cfg.gamma, cfg.lambda_max, ctx.tokenizer.pad_token_id)
        return [Phase("adversarial", streams, loss, epochs=ctx.recipe.train.epochs,
                      head_lr={"domain": cfg.lr} if cfg.lr is not None else None)]
