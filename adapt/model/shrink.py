"""Smaller students (`model.num_layers`, `model.layer_choice`): keep N of a loaded encoder's L layers, the lowest
N or N spread from bottom to top, as DistilBERT was initialised from every other layer of BERT (Sanh et al. 2019).
The config's `num_hidden_layers` becomes N, so the saved model reloads with the same shape."""

from __future__ import annotations

import torch

from adapt.core.errors import AdaptError
from adapt.model.families import encoder_layers, set_encoder_layers


def kept_layers(total: int, n: int, choice: str) -> list[int]:
    """Indices of the layers kept. `spread`: layer floor(i * L / N) for i = 0..N-1, so N = L/2 keeps every other
    layer starting at the bottom ([0, 2, 4] of 6; DistilBERT's [0, 2, ..., 10] of 12), N = L keeps all, N = 1 the
    lowest. The bottom layer is always kept: it is the one the embeddings feed."""
    if not 1 <= n <= total:
        raise AdaptError(f"`model.num_layers` is {n}, but the model has {total} encoder layers; set "
                         f"`model.num_layers` between 1 and {total}")
    return list(range(n)) if choice == "lower" else [i * total // n for i in range(n)]


def keep_layers(model: torch.nn.Module, kept: list[int]) -> None:
    """Keep only the encoder layers `kept` of `model` (a classifier or a bare encoder), in place."""
    layers = encoder_layers(model)
    total = len(layers)
    set_encoder_layers(model, torch.nn.ModuleList(layers[i] for i in kept))
    for position, layer in enumerate(encoder_layers(model)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # only a decoder's key/value cache reads it; kept consistent anyway
                module.layer_idx = position
    # What the saved config.json tells a reload to build (DistilBERT's `n_layers` is the same field by its
    # attribute map). Per-layer settings go with their layers: ModernBERT alternates global and sliding-window
    # attention (`layer_types`), and each kept layer keeps its own kind.
    model.config.num_hidden_layers = len(kept)
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        model.config.layer_types = [layer_types[i] for i in kept]


def shrink_layers(model: torch.nn.Module, n: int, choice: str) -> dict:
    """Keep `n` encoder layers of `model` chosen by `choice`; returns the report's record of what was kept."""
    total = len(encoder_layers(model))
    kept = kept_layers(total, n, choice)
    before = sum(p.numel() for p in model.parameters())
    keep_layers(model, kept)
    after = sum(p.numel() for p in model.parameters())
    return {"kept": kept, "of": total, "choice": choice, "params_before": before, "params_after": after}
