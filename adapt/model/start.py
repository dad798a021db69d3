"""Where a run's classifier starts: a pretrained encoder with a new classifier head (`model.name_or_path`), or the
trained classifier of a finished run (`model.init_from`, its LoRA adapter merged); either one cut to fewer encoder
layers (`model.num_layers`). `model.finetune` then applies to whichever it is."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from adapt.core.errors import AdaptError
from adapt.model.init_run import label_problem, read_init_run
from adapt.model.loading import ResolvedModel, load_classifier, load_encoder, load_tokenizer, resolve_model
from adapt.model.saving import load_saved_model
from adapt.model.shrink import keep_layers, shrink_layers
from adapt.model.weights import checkpoint_files, files_sha256
from adapt.recipe import ModelConfig


@dataclass
class Start:
    model: torch.nn.Module  # the classifier, before `model.finetune`
    tokenizer: object
    resolved: ResolvedModel  # what was loaded, and how the starting point was made from it
    record: dict  # the report's `model` entries for it: `init_from` (the chain of runs), `layers`, `weights_sha256`


def load_start(cfg: ModelConfig, label_names: list[str]) -> Start:
    if cfg.init_from is None:
        resolved = resolve_model(cfg.name_or_path)
        model, record = load_classifier(resolved, label_names, cfg.attention), {}
    else:
        init = read_init_run(cfg.init_from)
        if problem := label_problem(init, label_names):
            raise AdaptError(problem)
        # The report names the chain's pretrained base as the model (model cards and Hub metadata need it).
        resolved = ResolvedModel(init.base, str(init.model_dir), True, init_dir=str(init.model_dir))
        model, record = load_run_classifier(init.model_dir, cfg.attention), {"init_from": init.record()}
    tokenizer = load_tokenizer(resolved)  # an init run's own (saved in its model/)
    # The exact weights the run started from (a local folder's, a Hub model's cached files, an init run's model/).
    if digests := files_sha256(checkpoint_files(resolved.path)):
        record["weights_sha256"] = digests
    if cfg.num_layers is not None:
        record["layers"] = shrink_layers(model, cfg.num_layers, cfg.layer_choice)
        resolved = replace(resolved, layers=tuple(record["layers"]["kept"]))
    return Start(model, tokenizer, resolved, record)


def load_run_classifier(model_dir: Path, attention: str | None = None) -> torch.nn.Module:
    """A finished run's classifier as one plain model: a LoRA adapter is merged into its base weights, so that a new
    run's `model.finetune` (a new LoRA too) applies to the adapted weights."""
    model = load_saved_model(Path(model_dir), attention)
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        raise AdaptError(f"`model.init_from`: {model_dir} holds a prompt-type adapter (virtual tokens before the "
                         "input), which cannot be merged into the weights a new run starts from; start from a run "
                         "trained with lora, dora, ia3, adalora or a full fine-tune")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    # peft loads an adapter for inference, every weight frozen; what trains is `model.finetune`'s to say.
    return model.requires_grad_(True)


def load_start_encoder(resolved: ResolvedModel, attention: str = "auto") -> torch.nn.Module:
    """The encoder (no head) a run started from, for comparing representations before and after training: the
    pretrained one, or the init run's; with the kept layers only."""
    if resolved.init_dir is None:
        encoder = load_encoder(resolved, attention)
    else:
        classifier = load_run_classifier(Path(resolved.init_dir), attention)
        encoder = getattr(classifier, classifier.base_model_prefix)
    if resolved.layers is not None:
        keep_layers(encoder, list(resolved.layers))
    return encoder


def recorded_start(model: dict) -> ResolvedModel:
    """The starting point a finished run's report records (its `model` entry), to load that encoder again
    (`adapt evaluate --diagnostics`)."""
    init, layers = model.get("init_from"), model.get("layers")
    if init:
        model_dir = str(Path(init["run"]) / "model")
        resolved = ResolvedModel(model["name_or_path"], model_dir, True, init_dir=model_dir)
    else:
        resolved = resolve_model(model["name_or_path"])
    return replace(resolved, layers=tuple(layers["kept"])) if layers else resolved
