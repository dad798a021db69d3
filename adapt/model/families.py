"""What `adapt` knows about each encoder family, in one place, by `config.model_type`: where the encoder's layers
are, which parameters sit below the first layer (frozen with the embeddings), the default PEFT target modules,
and which attention kernel a model class supports.

Below the first layer, per family (what `model.finetune: freeze` freezes besides the lowest layers):

| family                          | layers             | below the first layer                                   |
|---------------------------------|--------------------|---------------------------------------------------------|
| bert, roberta, xlm-roberta      | `encoder.layer`    | `embeddings`                                            |
| electra                         | `encoder.layer`    | `embeddings`, `embeddings_project`                      |
| distilbert                      | `transformer.layer`| `embeddings`                                            |
| modernbert                      | `layers`           | `embeddings` (`final_norm` is above the top layer)      |
| deberta, deberta-v2             | `encoder.layer`    | `embeddings`, `encoder.rel_embeddings`, `encoder.LayerNorm` |
| mpnet                           | `encoder.layer`    | `embeddings`, `encoder.relative_attention_bias`         |

ELECTRA's `embeddings_project` is the second factor of its factorised embedding (vocab x 128, then 128 -> 256):
freezing one factor and training the other would still move every token's input vector. DeBERTa's relative
position embeddings (and the LayerNorm applied to them) and MPNet's relative-position bias are read by every
layer, the lowest included; training them would change what the frozen layers compute, so they are frozen with
the embeddings. ModernBERT's `final_norm` normalises the top layer's output, so it trains like the layers above the
frozen ones."""

from __future__ import annotations

import torch

from adapt.core.errors import AdaptError

# Dotted paths, relative to the base encoder (`model.<base_model_prefix>`).
LAYERS: dict[str, str] = {"distilbert": "transformer.layer", "modernbert": "layers"}
DEFAULT_LAYERS = "encoder.layer"  # BERT and its many descendants (roberta, xlm-roberta, electra, deberta, mpnet...)

BELOW_FIRST_LAYER: dict[str, tuple[str, ...]] = {
    "electra": ("embeddings", "embeddings_project"),
    "deberta": ("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm"),
    "deberta-v2": ("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm"),
    "mpnet": ("embeddings", "encoder.relative_attention_bias"),
}
DEFAULT_BELOW = ("embeddings",)

# DeBERTa-v2's optional convolution (`conv_kernel_size` > 0, e.g. deberta-v2-xlarge) mixes the embeddings into the
# first layer's output, once: it is part of layer 0, frozen with it.
WITH_FIRST_LAYER: dict[str, tuple[str, ...]] = {"deberta-v2": ("encoder.conv",)}

# Default PEFT targets where peft 0.21's own mappings (`peft.utils.constants`) have no entry for the family.
# The attention query and value projections, as peft's LoRA defaults for BERT; ModernBERT fuses q, k and v into
# one `Wqkv`, so that whole projection gets the adapter.
OUR_TARGETS: dict[str, list[str]] = {"distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"], "mpnet": ["q", "v"]}
# IA3 rescales keys, values and the feed-forward output (peft's choice for BERT: key, value, output.dense).
OUR_IA3_TARGETS: dict[str, list[str]] = {
    "xlm-roberta": ["key", "value", "output.dense"], "electra": ["key", "value", "output.dense"],
    "distilbert": ["k_lin", "v_lin", "lin2"], "modernbert": ["Wqkv", "mlp.Wo"], "mpnet": ["k", "v", "output.dense"],
}
OUR_IA3_FEEDFORWARD: dict[str, list[str]] = {
    "xlm-roberta": ["output.dense"], "electra": ["output.dense"], "distilbert": ["lin2"], "modernbert": ["mlp.Wo"],
    "mpnet": ["output.dense"],
}


def model_type(model: torch.nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", "") or type(model).__name__


def base_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """A classifier's encoder, or the bare encoder itself."""
    return getattr(model, model.base_model_prefix, model)


def _get(module: torch.nn.Module, dotted: str) -> object | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _layers_path(model: torch.nn.Module) -> str:
    return LAYERS.get(model_type(model), DEFAULT_LAYERS)


def encoder_layers(model: torch.nn.Module, key: str = "`model.num_layers`") -> torch.nn.ModuleList:
    """The encoder's layers, bottom to top; `key` is the recipe key that needs them (named in the error)."""
    layers = _get(base_encoder(model), _layers_path(model))
    if not isinstance(layers, torch.nn.ModuleList):
        raise AdaptError(
            f"{key} needs the encoder's layers, and `adapt` does not know where {type(model).__name__} (model_type "
            f"{model_type(model)!r}) keeps them (BERT-style `encoder.layer`, DistilBERT `transformer.layer`, "
            "ModernBERT `layers`). Use `model.finetune: full` or `head`, or `lora` with explicit "
            "`model.lora.target_modules`, and leave `model.num_layers` unset"
        )
    return layers


def set_encoder_layers(model: torch.nn.Module, layers: torch.nn.ModuleList) -> None:
    """Replace the encoder's layer list (see `encoder_layers`) with `layers`."""
    encoder_layers(model)  # the same error when the layers cannot be found
    parent, _, name = _layers_path(model).rpartition(".")
    setattr(_get(base_encoder(model), parent) if parent else base_encoder(model), name, layers)


def below_first_layer(model: torch.nn.Module) -> list[torch.nn.Module | torch.nn.Parameter]:
    """What is frozen with the embeddings: every module (or bare parameter) that feeds or is shared by all layers,
    per `BELOW_FIRST_LAYER`; paths a particular checkpoint lacks (DeBERTa without relative attention) are skipped."""
    base = base_encoder(model)
    found = [_get(base, path) for path in BELOW_FIRST_LAYER.get(model_type(model), DEFAULT_BELOW)]
    return [m for m in found if m is not None]


def with_first_layer(model: torch.nn.Module) -> list[torch.nn.Module]:
    base = base_encoder(model)
    found = [_get(base, path) for path in WITH_FIRST_LAYER.get(model_type(model), ())]
    return [m for m in found if m is not None]


def embedding_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names (in `model`) of the parameters below the first layer."""
    ids = {id(p) for m in below_first_layer(model) for p in (m.parameters() if isinstance(m, torch.nn.Module) else [m])}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _peft_mapping(peft_type: str, suffix: str = "TARGET_MODULES") -> dict[str, list[str]]:
    from peft.utils import constants

    return getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type.upper()}_{suffix}_MAPPING", {})


def _peft_name(peft_type: str) -> str:
    # DoRA is LoRA with a magnitude vector (peft's `use_dora`): the same modules.
    name = peft_type.lower().replace("-", "_").replace("³", "3")
    return "lora" if name == "dora" else name


def default_target_modules(model: torch.nn.Module, peft_type: str = "lora") -> list[str]:
    """The family's default PEFT target modules for `peft_type` (peft's name: lora, ia3, adalora, loha, ...):
    peft's own mapping where it has the family, else ours (IA3's table for ia3, the attention query/value
    projections for every other adapter type)."""
    kind, family = _peft_name(peft_type), model_type(model)
    if kind == "ia3":
        targets = _peft_mapping("ia3").get(family) or OUR_IA3_TARGETS.get(family)
    else:
        targets = (_peft_mapping(kind).get(family) or _peft_mapping("lora").get(family) or OUR_TARGETS.get(family)
                   or _bert_style_targets(model))
    if not targets:
        raise AdaptError(
            f"no default {kind} targets for model_type {family!r}: list its linear modules to adapt in "
            f"`model.lora.target_modules` (`model.peft.target_modules` with `model.finetune: peft`), from "
            f"{linear_module_names(model)}"
        )
    return list(targets)


def _bert_style_targets(model: torch.nn.Module) -> list[str] | None:
    # A BERT descendant no table names (camembert, data2vec-text...): its `query` and `value`, as for BERT.
    return ["query", "value"] if {"query", "value"} <= set(linear_module_names(model)) else None


def default_feedforward_modules(model: torch.nn.Module) -> list[str]:
    """IA3's feed-forward modules (rescaled on their input rather than output) among its default targets."""
    family = model_type(model)
    modules = _peft_mapping("ia3", "FEEDFORWARD_MODULES").get(family) or OUR_IA3_FEEDFORWARD.get(family)
    if modules is None:
        raise AdaptError(f"no default IA3 feed-forward modules for model_type {family!r}; set the target modules "
                         "explicitly")
    return list(modules)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The last name of every linear module of `model` (what `target_modules` entries match)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def attention_for(requested: str, model_class: type) -> str:
    """The attention implementation to load `model_class` with: `auto` is PyTorch's fused SDPA where the class
    supports it, else eager; an explicit `sdpa` the class does not support is an error (transformers refuses it)."""
    supports_sdpa = bool(getattr(model_class, "_supports_sdpa", False))
    if requested == "auto":
        return "sdpa" if supports_sdpa else "eager"
    if requested == "sdpa" and not supports_sdpa:
        family = getattr(getattr(model_class, "config_class", None), "model_type", "") or "?"
        raise AdaptError(
            f"`model.attention` is 'sdpa', but transformers has no SDPA attention for {model_class.__name__} "
            f"(model_type {family!r}); set `model.attention: auto` (SDPA where supported, else eager) or `eager`"
        )
    return requested


def attention_for_config(requested: str, config_class: type, auto_mapping) -> str | None:
    """`attention_for` the model class `auto_mapping` (e.g. `MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING`) has for
    `config_class`. An architecture transformers does not map gets no verdict here: None for `auto` (transformers'
    default), the request itself otherwise, and transformers' own load error names what is unknown."""
    try:
        model_class = auto_mapping[config_class]
    except KeyError:
        return None if requested == "auto" else requested
    return attention_for(requested, model_class)
