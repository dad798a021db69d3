"""`dann`'s training side: the gradient-reversal layer, the domain discriminator head, and the adversarial loss
(the method itself is described in `adapt/methods/dann/__init__.py`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from adapt.methods.base import BaseMethod, LossOutput, MethodContext, Phase, StepInfo
from adapt.methods.source_only.method import labeled_training_data
from adapt.model.heads import concat_batches
from adapt.recipe import Recipe


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by -scale (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    return _ReverseGradient.apply(x, scale)


class DomainDiscriminator(nn.Module):
    """An MLP that tells source (0) from target (1) on the pooled representation, behind the gradient reversal.

    As a head of `AdaptModel` it is called with the last hidden states and the reversal scale lambda."""

    def __init__(self, hidden_size: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, hidden_states: torch.Tensor, scale: float) -> torch.Tensor:
        pooled = hidden_states[:, 0]  # the [CLS] position, which the classifier's pooler reads
        return self.net(reverse_gradient(pooled, scale)).squeeze(-1)


def dann_lambda(progress: float, gamma: float, lambda_max: float) -> float:
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


def make_dann_loss(gamma: float, lambda_max: float, pad_id: int):
    def dann_loss(model: torch.nn.Module, batches: dict[str, dict[str, torch.Tensor]], info: StepInfo) -> LossOutput:
        labeled, target = batches["labeled"], batches["target"]
        scale = dann_lambda(info.progress, gamma, lambda_max)
        out = model(**concat_batches(labeled, target, pad_id), heads={"domain": scale})
        n, m = labeled["input_ids"].shape[0], target["input_ids"].shape[0]
        ce = F.cross_entropy(out.logits[:n].float(), labeled["labels"])
        domain_logits = out.heads["domain"]
        domain_labels = torch.cat([torch.zeros(n), torch.ones(m)]).to(domain_logits.device)
        domain = F.binary_cross_entropy_with_logits(domain_logits.float(), domain_labels)
        domain_acc = ((domain_logits.detach() > 0).float() == domain_labels).float().mean()
        logs = {"ce": ce.detach(), "domain": domain.detach(), "domain_acc": domain_acc,
                "lambda": torch.tensor(scale, device=ce.device)}
        return LossOutput(ce + domain, logs)

    return dann_loss


class Dann(BaseMethod):
    def heads(self, recipe: Recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        return {"domain": DomainDiscriminator(classifier.config.hidden_size, recipe.method.dann.hidden)}

    def phases(self, ctx: MethodContext) -> list[Phase]:
        cfg = ctx.recipe.method.dann
        streams = {"labeled": labeled_training_data(ctx), "target": ctx.splits["target_unlabeled"]}
        loss = make_dann_loss(cfg.gamma, cfg.lambda_max, ctx.tokenizer.pad_token_id)
        return [Phase("adversarial", streams, loss, epochs=ctx.recipe.train.epochs,
                      head_lr={"domain": cfg.lr} if cfg.lr is not None else None)]
