"""BERT's masked-LM head and masking, for the MLM methods."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class MlmHead(nn.Module):
    """BERT's masked-LM head (dense, GELU, LayerNorm, then the word embeddings transposed as the decoder).

    The decoder is tied to the encoder's input embeddings, as in BERT pretraining: the head adds only ~0.2M
    parameters and starts from a meaningful output space even when the checkpoint has no MLM head. The embedding
    module is held outside the module tree so its weight is not saved (or optimised) twice.

    As a head of `AdaptModel` it is called with the last hidden states and the MLM labels (-100 where nothing is
    predicted), and projects only the predicted positions (~15% of the tokens) onto the vocabulary.
    """

    def __init__(self, embeddings: nn.Embedding, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))
        object.__setattr__(self, "_embeddings", embeddings)
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(hidden_states[labels != -100])))
        return F.linear(h, self._embeddings.weight, self.bias)


def load_pretrained_mlm_head(head: MlmHead, model_path: str) -> bool:
    """Copy a BERT checkpoint's own MLM head (`cls.predictions.*`) into `head` when the checkpoint has one.

    Returns False (the head stays fresh) for checkpoints without it, such as sentence-embedding fine-tunes.
    """
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
