"""The classifier together with the training-only heads a method puts beside it (an MLM head, a domain
discriminator, ...), run in one forward pass. This module names no method: each method builds its own heads
(`BaseMethod.heads`) and says, per call, which heads run and with what argument.

Everything goes through one `forward` of one module on purpose: DDP synchronises the gradients of the module it
wraps, and a head called from outside that forward would train out of step on each process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HeadsOutput:
    logits: torch.Tensor | None  # classifier logits, every row (None when not asked for)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)  # each head's output, by name


class AdaptModel(nn.Module):
    """The classifier plus the heads a method trains alongside it.

    Called like the classifier it returns the classifier's output, so evaluation and saving need not know about
    the heads. `heads={name: argument}` also runs those heads, each as `head(last_hidden_states, argument)`, and
    returns a `HeadsOutput`. `classify=False` leaves the classifier logits out of the output: DDP
    (find_unused_parameters) takes every returned tensor as part of the loss and would wait for the classifier
    head's gradient during a step that does not train it (an MLM-only step).
    """

    def __init__(self, classifier: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.classifier = classifier
        self.heads = nn.ModuleDict(heads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                heads: dict[str, Any] | None = None, classify: bool = True):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if not heads:
            return self.classifier(**inputs)
        out = self.classifier(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        return HeadsOutput(logits=out.logits if classify else None,
                           heads={name: self.heads[name](hidden, arg) for name, arg in heads.items()})


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
