"""Training-only heads that adaptation methods put on the encoder: a masked-LM head and a domain discriminator
behind a gradient-reversal layer, and the wrapper that runs them in the same forward pass as the classifier.

Everything goes through one `forward` of one module on purpose: DDP synchronises the gradients of the module it
wraps, and a head called from outside that forward would train out of step on each process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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
    """An MLP that tells source (0) from target (1) on the pooled representation."""

    def __init__(self, hidden_size: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled).squeeze(-1)


class MlmHead(nn.Module):
    """BERT's masked-LM head (dense, GELU, LayerNorm, then the word embeddings transposed as the decoder).

    The decoder is tied to the encoder's input embeddings, as in BERT pretraining: the head adds only ~0.2M
    parameters and starts from a meaningful output space even when the checkpoint has no MLM head. The embedding
    module is held outside the module tree so its weight is not saved (or optimised) twice.
    """

    def __init__(self, embeddings: nn.Embedding, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))
        object.__setattr__(self, "_embeddings", embeddings)
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(h, self._embeddings.weight, self.bias)


def load_pretrained_mlm_head(head: MlmHead, model_path: str) -> bool:
    """Copy a BERT checkpoint's own MLM head (`cls.predictions.*`) into `head` when the checkpoint has one.

    Returns False (the head stays fresh) for checkpoints without it, such as sentence-embedding fine-tunes.
    """
    from pathlib import Path

    from safetensors import safe_open

    files = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    names = {"cls.predictions.transform.dense.weight": head.dense.weight,
             "cls.predictions.transform.dense.bias": head.dense.bias,
             "cls.predictions.transform.LayerNorm.weight": head.norm.weight,
             "cls.predictions.transform.LayerNorm.bias": head.norm.bias,
             "cls.predictions.bias": head.bias}
    found: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), "pt") as sf:
            found.update({k: sf.get_tensor(k) for k in names if k in sf.keys()})
    if len(found) != len(names) or any(found[k].shape != p.shape for k, p in names.items()):
        return False
    with torch.no_grad():
        for k, p in names.items():
            p.copy_(found[k])
    return True


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor, mask_id: int,
                vocab_size: int, probability: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: select `probability` of the real (non-special, non-padding) tokens; of those 80% become
    [MASK], 10% a random token, 10% stay. Returns (masked ids, labels with -100 where nothing is predicted).

    Drawn from torch's RNG on the batch's device, which checkpoints save and restore, so a resumed run masks the
    same way."""
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    draw = torch.rand(input_ids.shape, device=input_ids.device)
    selected = candidates & (draw < probability)
    # Reuse the draw for the 80/10/10 split: conditioned on selection it is uniform on [0, probability).
    kind = draw / probability
    ids = input_ids.clone()
    ids[selected & (kind < 0.8)] = mask_id
    random_pos = selected & (kind >= 0.8) & (kind < 0.9)
    ids[random_pos] = torch.randint(vocab_size, (int(random_pos.sum()),), device=ids.device)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return ids, labels


@dataclass
class HeadsOutput:
    logits: torch.Tensor | None  # classifier logits, every row (None when not asked for)
    mlm_logits: torch.Tensor | None = None  # vocabulary logits at the predicted positions only
    domain_logits: torch.Tensor | None = None  # one logit per row (target = 1)


class AdaptModel(nn.Module):
    """The classifier plus the heads a method trains alongside it.

    Called like the classifier it returns the classifier's output, so evaluation and saving need not know
    about the heads. `mlm_labels` (with -100 where nothing is predicted) adds MLM logits at the labelled positions;
    `domain_scale` adds domain logits computed through the gradient reversal with that scale. `classify=False`
    leaves the classifier logits out of the output: DDP (find_unused_parameters) takes every returned tensor as
    part of the loss and would wait for the classifier head's gradient during an MLM-only step.
    """

    def __init__(self, classifier: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.classifier = classifier
        self.heads = nn.ModuleDict(heads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                mlm_labels: torch.Tensor | None = None, domain_scale: float | None = None, classify: bool = True):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if mlm_labels is None and domain_scale is None:
            return self.classifier(**inputs)
        out = self.classifier(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        result = HeadsOutput(logits=out.logits if classify else None)
        if mlm_labels is not None:
            # Only the predicted positions go through the vocabulary projection (~15% of the tokens).
            result.mlm_logits = self.heads["mlm"](hidden[mlm_labels != -100])
        if domain_scale is not None:
            pooled = hidden[:, 0]  # the [CLS] position, which the classifier's pooler reads
            result.domain_logits = self.heads["domain"](reverse_gradient(pooled, domain_scale))
        return result


def classifier_of(model: nn.Module) -> nn.Module:
    """The classifier inside an (unwrapped) model, with or without heads."""
    return model.classifier if isinstance(model, AdaptModel) else model


def concat_batches(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """Two collated batches as one (right-padded to the longer), so both go through a single forward pass."""
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    out = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key not in a or key not in b:
            continue
        fill = pad_id if key == "input_ids" else 0
        out[key] = torch.cat([F.pad(x[key], (0, width - x[key].shape[1]), value=fill) for x in (a, b)])
    return out
