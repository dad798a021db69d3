"""How much of the classifier trains (`model.finetune`): everything, the head only, everything above the lowest
encoder layers, or LoRA adapters plus the head; and which parameters are which."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from adapt.core.errors import AdaptError
from adapt.model.loading import quiet_adapter_loading
from adapt.recipe import ModelConfig


def encoder_layers(model: torch.nn.Module, key: str = "`model.num_layers`") -> torch.nn.ModuleList:
    """The encoder's layers (`<base>.encoder.layer`, BERT-style); `key` is the recipe key that needs them."""
    base = getattr(model, model.base_model_prefix, model)  # a classifier's encoder, or the bare encoder itself
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise AdaptError(f"{key} needs a BERT-style encoder (`encoder.layer`); {type(model).__name__} has none")
    return layers


def head_parameter_names(model: torch.nn.Module) -> list[str]:
    """The classifier head: every parameter outside the base encoder (`classifier.*` for BERT)."""
    prefix = model.base_model_prefix + "."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]


def apply_finetune(model: torch.nn.Module, cfg: ModelConfig) -> tuple[torch.nn.Module, dict]:
    """Set what trains; returns the (possibly peft-wrapped) model and a description for the report."""
    if cfg.finetune == "full":
        return model, {}
    if cfg.finetune == "lora":
        return _apply_lora(model, cfg)
    model.requires_grad_(False)
    head = set(head_parameter_names(model))
    if cfg.finetune == "head":
        for n, p in model.named_parameters():
            p.requires_grad_(n in head)
        return model, {"trainable": sorted(head)}
    layers = encoder_layers(model, "`model.finetune=freeze`")  # after `num_layers`: half of the kept layers
    frozen = len(layers) // 2 if cfg.freeze_layers is None else cfg.freeze_layers
    if frozen > len(layers):
        raise AdaptError(f"`model.freeze_layers` is {frozen} but the encoder has only {len(layers)} layers")
    model.requires_grad_(True)
    getattr(model, model.base_model_prefix).embeddings.requires_grad_(False)
    for layer in layers[:frozen]:
        layer.requires_grad_(False)
    return model, {"frozen_layers": frozen, "total_layers": len(layers)}


def _apply_lora(model: torch.nn.Module, cfg: ModelConfig) -> tuple[torch.nn.Module, dict]:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = cfg.lora
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        raise AdaptError(
            f"`model.lora.target_modules`: {missing} are not linear modules of this model; choose from {sorted(names)}"
        )
    # TaskType.SEQ_CLS makes peft train and save the classifier head (modules_to_save) next to the adapters.
    peft_cfg = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), modules_to_save=head_parameter_modules(model),
    )
    with quiet_adapter_loading():
        peft_model = get_peft_model(model, peft_cfg)
    return peft_model, {"lora": {"r": lora.r, "alpha": lora.alpha, "target_modules": list(lora.target_modules)}}


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
    return sorted({n.split(".", 1)[0] for n in head_parameter_names(model)})


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
