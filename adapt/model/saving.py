"""A run's saved model (`<run>/model/`): the full model, or the LoRA adapter + head with the base config beside it;
writing it, and loading it back (an adapter on its base model, found by the Hub id it records)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from adapt.core.errors import AdaptError
from adapt.hub.ids import looks_like_path
from adapt.model.loading import (
    EMBEDDED_NAMES,
    WEIGHTS_DTYPE,
    ResolvedModel,
    effective_attention,
    embedded_model_path,
    quiet_adapter_loading,
    resolve_model,
)


def save_model(model: torch.nn.Module, tokenizer, out_dir: Path, *, merge: bool = False) -> None:
    """`model/`: the full model, or the adapter + head for LoRA; plus the tokenizer. `merge`: a LoRA model is
    saved with its adapter merged (from a copy: the model itself stays as it is), for a run whose starting
    weights no pretrained folder holds, where an adapter alone could not be loaded back."""
    if merge and hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(str(out_dir))
    adapter_cfg = out_dir / "adapter_config.json"
    if adapter_cfg.exists():
        # peft saves only the adapter; the base config beside it carries num_labels and id2label/label2id.
        model.get_base_model().config.save_pretrained(str(out_dir))
        base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        set_adapter_base(adapter_cfg, base_model_id(base))
    tokenizer.save_pretrained(str(out_dir))


def base_model_id(path: str) -> str:
    """What an adapter records as its base model: the Hub id when `path` is the embedded copy of all-MiniLM-L6-v2
    (peft records the directory the base was loaded from, which exists only where the package is installed, and
    `resolve_model` maps the id back to that copy offline); any other path or id unchanged."""
    if not os.path.isdir(path):
        return path
    try:
        embedded = Path(embedded_model_path()).resolve()
    except AdaptError:  # the package is not installed, so `path` cannot be its copy
        return path
    return EMBEDDED_NAMES[-1] if Path(path).resolve() == embedded else path


def set_adapter_base(adapter_cfg: Path, base: str) -> None:
    """Point an `adapter_config.json` at `base` (a Hub id or a directory)."""
    cfg = json.loads(adapter_cfg.read_text())
    if cfg["base_model_name_or_path"] != base:
        cfg["base_model_name_or_path"] = base
        adapter_cfg.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _adapter_base(adapter_cfg: Path) -> tuple[str, ResolvedModel]:
    base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
    if looks_like_path(base) and not os.path.isdir(base):
        # An adapter trained on another machine's local model: resolve_model's message would name a recipe key.
        raise AdaptError(
            f"{adapter_cfg}: the adapter's base model {base!r} is not a directory on this machine; set "
            "`base_model_name_or_path` there to the base model's Hub id or to a local copy of it"
        )
    return base, resolve_model(base)  # a Hub id resolves to the embedded copy when the Hub is unreachable


def load_saved_model(model_dir: Path, attention: str | None = None) -> torch.nn.Module:
    """Load a run's `model/` (full model or LoRA adapter) for evaluation or prediction (`attention`: the attention
    kernel, when not the model's default)."""
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)  # carries num_labels / id2label
    attn = effective_attention(attention, config, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)
    load = {"dtype": WEIGHTS_DTYPE, **({"attn_implementation": attn} if attn else {})}
    adapter_cfg = model_dir / "adapter_config.json"
    if not adapter_cfg.exists():
        return AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True, **load)
    from peft import PeftModel

    base, resolved = _adapter_base(adapter_cfg)
    with quiet_adapter_loading():
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                resolved.path, config=config, local_files_only=resolved.local_only, **load)
        except OSError as err:
            offline = resolved.local_only and not os.path.isdir(resolved.path)  # a local folder's error is its own
            raise AdaptError(
                f"cannot load {base!r}, the base model of the adapter in {model_dir}"
                + (" (the Hugging Face Hub is unreachable and it is not in the local cache)" if offline else "")
                + f": {err}"
            ) from None
        return PeftModel.from_pretrained(model, str(model_dir))
