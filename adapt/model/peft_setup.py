"""PEFT adapters through peft's own configs (`model.finetune: lora` with `model.lora`, or `model.finetune: peft`
with `model.peft`): the config of each type, its default target modules, what trains, and the call after every
optimizer step that AdaLoRA's rank allocation needs, and the state it keeps between steps (for checkpoints).

The classifier head trains with every type: it is new, and peft saves it beside the adapter (`modules_to_save`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from adapt.core.errors import AdaptError
from adapt.model.families import default_feedforward_modules, default_target_modules, linear_module_names
from adapt.model.loading import quiet_adapter_loading
from adapt.recipe import ModelConfig, PeftSection
from adapt.recipe.schema import PEFT_KEYS

# Where a type's trainable tensors live (parameter-name fragments), besides the head: what the type trains.
ADAPTER_PARAMETERS = {
    "lora": ("lora_A", "lora_B"), "dora": ("lora_A", "lora_B", "lora_magnitude_vector"), "ia3": ("ia3_l",),
    "adalora": ("lora_A", "lora_B", "lora_E"), "prompt_tuning": ("prompt_encoder",), "p_tuning": ("prompt_encoder",),
}


def apply_peft(model: torch.nn.Module, cfg: ModelConfig, modules_to_save: list[str]) -> tuple[torch.nn.Module, dict]:
    """Wrap `model` in peft's adapter of the recipe's type (the head modules `modules_to_save` train and are saved
    too); returns the peft model and the report's entry: `lora` for `finetune: lora`, else `peft` with the type, the
    settings peft was given and the trainable parameters of the adapter and of the head."""
    from peft import get_peft_model

    section, key = peft_section(cfg)
    peft_cfg, settings = build_config(model, section, key, modules_to_save)
    with quiet_adapter_loading():
        peft_model = get_peft_model(model, peft_cfg)
    if cfg.finetune == "lora":  # the report entry runs have had since `finetune: lora` came
        return peft_model, {"lora": {k: settings[k] for k in ("r", "alpha", "target_modules")}}
    return peft_model, {"peft": {"type": section.type, **settings,
                                 "trainable_parameters": trainable_by_kind(peft_model, section.type)}}


def peft_section(cfg: ModelConfig) -> tuple[PeftSection, str]:
    """The settings as a `model.peft` section, and the recipe key they came from (for messages)."""
    if cfg.finetune == "lora":
        lora = cfg.lora
        targets = None if lora.target_modules is None else list(lora.target_modules)  # null: the family's default
        return PeftSection(type="lora", r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                           target_modules=targets), "model.lora"
    return cfg.peft or PeftSection(), "model.peft"


def build_config(model: torch.nn.Module, c: PeftSection, key: str,
                 modules_to_save: list[str]) -> tuple[object, dict]:
    """peft's config for type `c.type` (task SEQ_CLS) and the settings it was given, as the report records them."""
    import peft
    from peft import TaskType

    common = {"task_type": TaskType.SEQ_CLS, "modules_to_save": list(modules_to_save)}
    settings = {k: getattr(c, k) for k, types_ in PEFT_KEYS.items() if c.type in types_}
    if "target_modules" in settings:
        settings["target_modules"] = target_modules(model, c, key)
    if c.type in ("lora", "dora"):
        return peft.LoraConfig(**common, r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, use_dora=c.type == "dora",
                               target_modules=settings["target_modules"]), settings
    if c.type == "ia3":
        settings["feedforward_modules"] = feedforward_modules(model, c, settings["target_modules"], key)
        return peft.IA3Config(**common, target_modules=settings["target_modules"],
                              feedforward_modules=settings["feedforward_modules"]), settings
    if c.type == "adalora":
        # `total_step` null became `train.max_steps` when the recipe was parsed.
        return peft.AdaLoraConfig(**common, init_r=c.init_r, target_r=c.target_r, tinit=c.tinit, tfinal=c.tfinal,
                                  deltaT=c.deltaT, total_step=c.total_step, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                  target_modules=settings["target_modules"]), settings
    if c.type == "prompt_tuning":
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": c.prompt_init_text,
                "tokenizer_name_or_path": model.name_or_path} if c.prompt_init_text else {}
        return peft.PromptTuningConfig(**common, num_virtual_tokens=c.num_virtual_tokens, **init), settings
    if c.type == "p_tuning":
        hidden = c.encoder_hidden_size or model.config.hidden_size
        settings["encoder_hidden_size"] = hidden
        return peft.PromptEncoderConfig(**common, num_virtual_tokens=c.num_virtual_tokens,
                                        encoder_hidden_size=hidden), settings
    raise AdaptError(f"`{key}.type: {c.type}` is not supported with this model (the recipe check refuses it)")


def target_modules(model: torch.nn.Module, c: PeftSection, key: str) -> list[str]:
    """The recipe's target modules, each the name (or dotted name suffix) of a linear layer of `model`; or, when
    null, the model family's default for the type."""
    if c.target_modules is None:
        return default_target_modules(model, c.type)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    missing = [t for t in c.target_modules if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        raise AdaptError(f"`{key}.target_modules`: {missing} are not linear modules of this model; choose from "
                         f"{linear_module_names(model)}")
    return list(c.target_modules)


def feedforward_modules(model: torch.nn.Module, c: PeftSection, targets: list[str], key: str) -> list[str]:
    """IA3's feed-forward modules (their input is rescaled, not their output): the recipe's, or peft's default for
    the model family among the target modules. They must be target modules too."""
    if c.feedforward_modules is not None:
        outside = [f for f in c.feedforward_modules if f not in targets]
        if outside:
            raise AdaptError(f"`{key}.feedforward_modules`: {outside} are not in `{key}.target_modules` {targets}; "
                             "IA3 rescales only target modules, so name them there too")
        return list(c.feedforward_modules)
    return [f for f in default_feedforward_modules(model) if f in targets]


def trainable_by_kind(model: torch.nn.Module, peft_type: str) -> dict[str, int]:
    """Trainable parameters of the adapter (the type's own tensors) and of everything else (the head)."""
    own = ADAPTER_PARAMETERS[peft_type]
    counts = {"adapter": 0, "head": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts["adapter" if any(part in name for part in own) else "head"] += p.numel()
    return counts


def per_step_calls(model: torch.nn.Module) -> list[Callable[[int], None]]:
    """What the model asks to be called after every optimizer step, with the global step, while the gradients are
    still there: AdaLoRA's rank allocation (`update_and_allocate` reads the gradients to score each rank's
    importance, prunes towards `target_r` between `tinit` and `total_step - tfinal`, then keeps masking the pruned
    ranks). Other types ask for nothing."""
    # peft's AdaLoraModel (the model under the PeftModel) is the module that has it.
    return [m.update_and_allocate for m in model.modules() if hasattr(type(m), "update_and_allocate")]


def checkpointed_state(model: torch.nn.Module) -> dict[str, AdaLoraAllocatorState]:
    """The state, by name, that the per-step calls keep outside the model's parameters and that checkpoints must
    hold for a resumed run to continue exactly (`adapt.training.checkpoint.ExtraState`): AdaLoRA's rank allocator.
    Other types keep none."""
    # Only a trainable AdaLoraModel has a rank allocator; a PeftModel holds at most one (its base model).
    adalora = next((m for m in model.modules() if hasattr(m, "rankallocator")), None)
    return {} if adalora is None else {"adalora_rank_allocator": AdaLoraAllocatorState(adalora)}


class AdaLoraAllocatorState:
    """AdaLoRA's rank allocation between steps: peft's `RankAllocator` keeps, per adapter weight, its latest
    importance (`ipt`) and smoothed importance and uncertainty (`exp_avg_ipt`, `exp_avg_unc`), which decide the
    ranks pruned at each allocation; the adapter's config keeps the latest allocation (`rank_pattern`), which masks
    the pruned ranks after `total_step - tfinal` and sizes the saved adapter. Everything else the allocator holds
    (budgets, names) comes from the config and the model. Started afresh, a resumed run would prune other ranks.

    Under DDP the state is the same on every process: it is computed from the weights and the gradients after their
    all-reduce, both identical on all processes, so the checkpoint's copy (the main process's) fits all of them."""

    IMPORTANCE = ("ipt", "exp_avg_ipt", "exp_avg_unc")

    def __init__(self, adalora: torch.nn.Module):
        self.adalora = adalora

    def _config(self) -> object:
        return self.adalora.peft_config[self.adalora.trainable_adapter_name]

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        allocator = self.adalora.rankallocator
        tensors = {f"{kind}/{name}": t.detach().cpu().contiguous()
                   for kind in self.IMPORTANCE for name, t in getattr(allocator, kind).items()}
        return tensors, {"rank_pattern": self._config().rank_pattern}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], rest: dict) -> None:
        """Raises ValueError, before changing anything, when the state does not fit this model's adapter."""
        params = dict(self.adalora.model.named_parameters())  # the names the allocator keys its estimates by
        estimates: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in self.IMPORTANCE}
        for key, t in tensors.items():
            kind, _, name = key.partition("/")
            if kind not in estimates or name not in params or t.shape != params[name].shape:
                raise ValueError(f"AdaLoRA's saved importance `{key}` {tuple(t.shape)} is not of an adapter weight "
                                 "of this model")
            estimates[kind][name] = t.to(params[name].device)
        pattern = rest.get("rank_pattern")
        if pattern is not None and not (isinstance(pattern, dict) and all(
                isinstance(mask, list) and all(isinstance(b, bool) for b in mask) for mask in pattern.values())):
            raise ValueError("AdaLoRA's saved `rank_pattern` is not a mapping of weight names to lists of booleans")
        for kind, values in estimates.items():
            setattr(self.adalora.rankallocator, kind, values)
        self._config().rank_pattern = pattern
