"""How much of the classifier trains (`model.finetune`): everything, the head only, everything above the lowest
encoder layers, or PEFT adapters plus the head (`adapt.model.peft_setup`); and which parameters are which."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from adapt.core.errors import AdaptError
from adapt.model import families
from adapt.model.loading import NEW_MODULES
from adapt.model.peft_setup import apply_peft
from adapt.recipe import ModelConfig


def head_parameter_names(model: torch.nn.Module) -> list[str]:
    """The classifier head: every parameter outside the base encoder (`classifier.*` for BERT), and those of the
    encoder modules the checkpoint lacked (BERT's pooler in a masked-LM checkpoint), new and random like it."""
    prefix = model.base_model_prefix + "."
    new = tuple(f"{prefix}{m}." for m in getattr(model, NEW_MODULES, ()))
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix) or n.startswith(new)]


def apply_finetune(model: torch.nn.Module, cfg: ModelConfig) -> tuple[torch.nn.Module, dict]:
    """Set what trains; returns the (possibly peft-wrapped) model and a description for the report."""
    if cfg.finetune == "full":
        return model, {}
    if cfg.finetune in ("lora", "peft"):  # adapters through peft (`adapt.model.peft_setup`), the head beside them
        return apply_peft(model, cfg, head_parameter_modules(model))
    model.requires_grad_(False)
    head = set(head_parameter_names(model))
    if cfg.finetune == "head":
        for n, p in model.named_parameters():
            p.requires_grad_(n in head)
        return model, {"trainable": sorted(head)}
    layers = families.encoder_layers(model, "`model.finetune=freeze`")  # after `num_layers`: half of the kept layers
    frozen = len(layers) // 2 if cfg.freeze_layers is None else cfg.freeze_layers
    if frozen > len(layers):
        raise AdaptError(f"`model.freeze_layers` is {frozen} but the encoder has only {len(layers)} layers")
    model.requires_grad_(True)
    # The embeddings and what every layer shares (DeBERTa's relative embeddings, MPNet's position bias): see
    # `adapt.model.families` for each family's list and why.
    for part in families.below_first_layer(model) + (families.with_first_layer(model) if frozen else []):
        part.requires_grad_(False)
    for layer in layers[:frozen]:
        layer.requires_grad_(False)
    return model, {"frozen_layers": frozen, "total_layers": len(layers)}


def pretrained_parameter_names(model: torch.nn.Module, model_path: str | None) -> list[str]:
    """Trainable encoder parameters that come from the checkpoint (for L2-SP): inside the base encoder and, when
    the checkpoint's files can be read, present in them (a pooler missing from the checkpoint starts fresh).
    `model_path` None: every encoder weight is a starting point (a run started from another run's model)."""
    from safetensors import safe_open

    prefix = model.base_model_prefix + "."
    files = sorted(Path(model_path).glob("*.safetensors")) if model_path and os.path.isdir(model_path) else []
    keys: set[str] | None = None
    for f in files:
        with safe_open(str(f), "pt") as sf:
            keys = (keys or set()) | set(sf.keys())
    return [n for n, p in model.named_parameters()
            if p.requires_grad and n.startswith(prefix) and (keys is None or n in keys or n[len(prefix):] in keys)]


def head_parameter_modules(model: torch.nn.Module) -> list[str]:
    """The head's top-level modules (peft's `modules_to_save`: names match as suffixes, `pooler` -> `bert.pooler`)."""
    prefix = model.base_model_prefix + "."
    return sorted({n.removeprefix(prefix).split(".", 1)[0] for n in head_parameter_names(model)})


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
