"""Parsing a recipe: YAML plus `key=value` / `~key` overrides into the typed, frozen `Recipe`.

Parsing collects *every* problem (unknown keys with a "did you mean", values of the wrong type, cross-field
conflicts, each method's own checks) and raises them together in one `RecipeError`, before any data or model is
touched.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from adapt.core.errors import RecipeError
from adapt.core.rundir import name_problem, safe_name
from adapt.methods import available_methods, method_spec, registered_options
from adapt.recipe.schema import (
    NON_PATH_SCHEMES,
    PEFT_KEYS,
    LoraSection,
    MethodConfig,
    ModelConfig,
    PeftSection,
    Recipe,
)


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
        hint = ""
        if isinstance(value, bool) and any(isinstance(c, str) for c in choices):  # `precision: no` in a YAML file
            hint = "; YAML reads yes/no/on/off as booleans: quote the value, e.g. 'no'"
        problems.append(f"`{key}` must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")
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


def _is_path_spec(value: str) -> bool:
    """A local path, not one of the schemes (`builtin:`, `hub:`, `amazon:`) that name data elsewhere."""
    return not value.startswith(NON_PATH_SCHEMES)


def _absolute(value: Any, base: Path, *, model: bool = False) -> Any:
    """Make a path value absolute against `base`. A model name is only a path if it exists or looks like one."""
    if isinstance(value, list):  # a list of paths (`method.distill.teachers`)
        return [_absolute(v, base, model=model) for v in value]
    if not isinstance(value, str) or not value or not _is_path_spec(value):
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
            out[key] = _absolute(value, base, model=(cls is ModelConfig and key == "name_or_path")
                                                 or f.metadata.get("hub_id", False))
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
        if isinstance(value, (str, list)) and f.metadata.get("path") and value not in f.metadata["keywords"]:
            value = _absolute(value, cwd, model=key == "model.name_or_path" or f.metadata.get("hub_id", False))
        _set_dotted(raw, key, value, remove)
    return raw


def _parse_cli_value(text: str, hint: Any) -> Any:
    """YAML-parse a command-line value, except for plain strings: YAML would turn `domain=no` into False."""
    inner, optional = _unwrap_optional(hint)
    if inner is str:
        return None if optional and text.strip() in ("null", "~") else text
    if typing.get_origin(inner) is Literal and text.strip() in typing.get_args(inner):
        return text.strip()  # `train.mixed_precision=no` is the choice "no", not YAML's False
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
    if problem := name_problem(recipe.name, "`name`"):  # the run folder is runs/<name>-<time>
        p.append(problem)
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
    if m.lora is not None and m.finetune == "peft":
        p.append("`model.lora` is the short form for `model.finetune: lora`; with `model.finetune: peft` write its keys "
                 "under `model.peft` (`model.peft.type: lora`, `model.peft.r`, ...)")
    elif m.lora is not None and m.finetune != "lora":
        p.append(f"`model.lora` is set but `model.finetune` is `{m.finetune}`; set `model.finetune=lora` or remove `model.lora`")
    if m.freeze_layers is not None and m.finetune != "freeze":
        p.append(f"`model.freeze_layers` is set but `model.finetune` is `{m.finetune}`; set `model.finetune=freeze` or remove it")
    if m.freeze_layers is not None and m.freeze_layers < 0:
        p.append(f"`model.freeze_layers` must be >= 0, got {m.freeze_layers}")
    if m.num_layers is not None and m.num_layers < 1:
        p.append(f"`model.num_layers` must be >= 1, got {m.num_layers}")
    if m.layer_choice != "lower" and m.num_layers is None:
        p.append(f"`model.layer_choice` is `{m.layer_choice}` but `model.num_layers` is not set; set "
                 "`model.num_layers` (how many layers to keep) or remove `model.layer_choice`")
    if m.lora is not None:
        if m.lora.r <= 0:
            p.append(f"`model.lora.r` must be > 0, got {m.lora.r}")
        if m.lora.alpha <= 0:
            p.append(f"`model.lora.alpha` must be > 0, got {m.lora.alpha}")
        if not 0 <= m.lora.dropout < 1:
            p.append(f"`model.lora.dropout` must be in [0, 1), got {m.lora.dropout}")
        if m.lora.target_modules is not None and not m.lora.target_modules:
            p.append("`model.lora.target_modules` must name at least one module, e.g. [query, value], or be null "
                     "for the model family's default")
    p += _check_peft(recipe)
    for key, value, low in (
        ("train.epochs", t.epochs, 1), ("train.batch_size", t.batch_size, 1), ("train.grad_accum", t.grad_accum, 1),
        ("train.checkpoint_every_steps", t.checkpoint_every_steps, 1), ("train.keep_checkpoints", t.keep_checkpoints, 1),
        ("train.num_workers", t.num_workers, 0), ("eval.batch_size", e.batch_size, 1),
        ("eval.diagnostics_examples", e.diagnostics_examples, 10), ("eval.label_free_examples", e.label_free_examples, 10),
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
    if not 0 <= t.momentum < 1:
        p.append(f"`train.momentum` must be in [0, 1), got {t.momentum}")
    if t.max_grad_norm is not None and t.max_grad_norm <= 0:
        p.append(f"`train.max_grad_norm` must be > 0 or null, got {t.max_grad_norm}")
    if e.select_on == "target_dev" and not (d.target.dev or d.target.train):
        p.append("`eval.select_on: target_dev` needs labelled target data: set `data.target.dev` or `data.target.train`")
    p += _check_label_free_selection(recipe)
    if recipe.hub.push and not recipe.hub.repo_id:
        p.append("`hub.push` is true but `hub.repo_id` is not set; give `hub.repo_id=USER/NAME`")
    if recipe.hub.repo_id is not None and recipe.hub.repo_id.count("/") != 1:
        p.append(f"`hub.repo_id` must look like `user/name`, got {recipe.hub.repo_id!r}")
    p += _check_method(recipe)
    unknown = [t for t in recipe.report.trackers if t not in TRACKERS]
    if unknown:
        p.append(f"`report.trackers`: unknown tracker(s) {unknown}; choose from {', '.join(TRACKERS)}")
    return p


# PEFT types whose virtual tokens lengthen the sequence the encoder returns, and the methods whose heads read every
# token position of the input (a masked-LM head matches its outputs to the input tokens one to one).
PROMPT_TYPES = ("prompt_tuning", "p_tuning")
TOKEN_HEAD_METHODS = ("dapt", "tapt", "udalm")


def _check_peft(recipe: Recipe) -> list[str]:
    """`model.peft`: only with `finetune: peft`; only the keys its type reads; values in range; the combinations
    with methods and stacked starts that a type cannot serve, refused before anything loads."""
    m, c = recipe.model, recipe.model.peft
    if c is None:
        return []
    if m.finetune != "peft":
        return [f"`model.peft` is set but `model.finetune` is `{m.finetune}`; set `model.finetune=peft` or remove "
                "`model.peft`"]
    defaults, p = PeftSection(), []
    for key, types_ in PEFT_KEYS.items():
        if c.type not in types_ and getattr(c, key) != getattr(defaults, key):
            p.append(f"`model.peft.{key}` is set but `model.peft.type` is `{c.type}`, which does not use it (it is for "
                     f"{', '.join(types_)}); remove it or change `model.peft.type`")
    if c.type == "prefix_tuning":
        p.append("`model.peft.type: prefix_tuning` needs an encoder that takes past key values, and BERT-style encoders "
                 "in transformers 5 do not; use `prompt_tuning` or `p_tuning` (virtual tokens at the input) instead")
    p += _peft_ranges(c, recipe.train.max_steps)
    if c.type in PROMPT_TYPES and recipe.method.name in TOKEN_HEAD_METHODS:
        p.append(f"`model.peft.type: {c.type}` puts virtual tokens before the input, so the encoder returns more "
                 f"positions than there are input tokens, and method `{recipe.method.name}`'s masked-LM head needs one "
                 "per token; use a weight-adapter type (lora, dora, ia3, adalora) or another method")
    if c.type in PROMPT_TYPES and (m.init_from is not None or m.num_layers is not None):
        key = "model.init_from" if m.init_from is not None else "model.num_layers"
        p.append(f"`{key}` makes the run save its model merged (its starting weights are in no other folder), and "
                 f"`model.peft.type: {c.type}` cannot be merged into weights; use lora, dora, ia3 or adalora")
    return p


def _peft_ranges(c: PeftSection, max_steps: int | None) -> list[str]:
    rules = [("r", c.r > 0, "> 0"), ("alpha", c.alpha > 0, "> 0"), ("dropout", 0 <= c.dropout < 1, "in [0, 1)"),
             ("target_modules", c.target_modules is None or len(c.target_modules) > 0, "null or a non-empty list"),
             ("init_r", c.init_r >= 1, ">= 1"), ("target_r", 1 <= c.target_r <= c.init_r, ">= 1 and <= init_r"),
             ("tinit", c.tinit >= 0, ">= 0"), ("tfinal", c.tfinal >= 0, ">= 0"), ("deltaT", c.deltaT >= 1, ">= 1"),
             ("total_step", c.total_step is None or c.total_step >= 1, ">= 1 or null"),
             ("num_virtual_tokens", c.num_virtual_tokens >= 1, ">= 1"),
             ("encoder_hidden_size", c.encoder_hidden_size is None or c.encoder_hidden_size >= 1, ">= 1 or null")]
    used = {k for k, types_ in PEFT_KEYS.items() if c.type in types_}
    p = [f"`model.peft.{k}` must be {rule}, got {getattr(c, k)}" for k, ok, rule in rules if k in used and not ok]
    if c.type == "adalora" and not p:
        total = c.total_step or max_steps
        if total is None:
            p.append("`model.peft.type: adalora` needs `model.peft.total_step`, the optimizer steps its rank schedule "
                     "spans (over all phases; e.g. 3 epochs x 68 steps = 204), or `train.max_steps`")
        elif c.tinit >= total - c.tfinal:
            p.append(f"`model.peft.tinit` ({c.tinit}) must be < total_step - tfinal ({total} - {c.tfinal}): AdaLoRA "
                     "prunes ranks between the two; lower `tinit`/`tfinal` or raise `model.peft.total_step`")
    return p


# Label-free selection criteria (`adapt.evaluation.label_free.CRITERIA`) that read a quantity only some methods
# log: criterion -> the methods that log it.
LOGGED_CRITERIA = {"domain_balance": ("dann",)}


def _check_label_free_selection(recipe: Recipe) -> list[str]:
    """A label-free `eval.select_on` needs the unlabelled target text it reads (and, for a criterion taken from the
    training log, a method that logs it)."""
    e, p = recipe.eval, []
    if e.select_on in ("source_dev", "target_dev"):
        return p
    if not recipe.data.target.unlabeled:
        p.append(f"`eval.select_on: {e.select_on}` is a label-free criterion on the unlabelled target text and needs "
                 f"`data.target.unlabeled`; set it (e.g. `data.target.unlabeled=path/to/file.jsonl`) or select on "
                 "`source_dev`")
    methods = LOGGED_CRITERIA.get(e.select_on)
    if methods and recipe.method.name not in methods:
        p.append(f"`eval.select_on: {e.select_on}` reads the domain discriminator's logged accuracy, which only method "
                 f"{', '.join(f'`{m}`' for m in methods)} logs, not `method.name={recipe.method.name}`; choose another "
                 "criterion (e.g. `eval.select_on=im`) or `method.name=dann`")
    return p


# Tracker name -> the package it needs (Accelerate's integrations).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def _check_method(recipe: Recipe) -> list[str]:
    """The method exists; its options are its own; the data it needs is there; every option set's own checks."""
    m, t = recipe.method, recipe.train
    if m.name not in available_methods():
        return [f"unknown method `method.name={m.name}`{_suggest(m.name, available_methods(), 'available')}"]
    spec = method_spec(m.name)
    p: list[str] = []
    defaults = MethodConfig()
    for f in dataclasses.fields(MethodConfig):
        key = recipe_key(f)
        if f.name != "name" and key not in spec.options and getattr(m, f.name) != getattr(defaults, f.name):
            users = [n for n in available_methods() if key in method_spec(n).options]
            p.append(f"`method.{key}` is set but method `{m.name}` does not use it (it is for "
                     f"{', '.join(users)}); remove it or change `method.name`")
    for key in spec.requires:
        role, split = key.split(".")[1:]
        if not getattr(getattr(recipe.data, role), split):
            p.append(f"method `{m.name}` needs `{key}`; set it (e.g. `{key}=path/to/file.jsonl`) or choose another method")
    if spec.checks is not None:
        p += spec.checks(recipe)
    for opts in registered_options():
        if opts.section is not None:
            p += getattr(m, opts.section).problems()
        else:
            p += opts.cls(**{f.name: getattr(m, f.name) for f in dataclasses.fields(opts.cls)}).problems()
    if t.l2sp < 0:
        p.append(f"`train.l2sp` must be >= 0, got {t.l2sp}")
    if t.l2sp > 0 and recipe.model.finetune in ("lora", "peft", "head"):
        p.append(f"`train.l2sp` regularises the pretrained encoder weights that train, and with `model.finetune="
                 f"{recipe.model.finetune}` none do; use `full` or `freeze`, or set `train.l2sp=0`")
    return p


# ----------------------------------------------------------------------------------------------------------
# Reading the file: YAML lets a later key silently replace an earlier one (`train:` twice drops the first section).


class _DuplicateKeys(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping, naming it and both lines (all at once)."""

    def construct_document(self, node):
        problems: list[str] = []
        _find_duplicates(node, "", problems, set())
        if problems:
            raise _DuplicateKeys(problems)
        return super().construct_document(node)


def _find_duplicates(node: yaml.Node, prefix: str, problems: list[str], visited: set[int]) -> None:
    if id(node) in visited:  # an alias: its node was checked where its anchor is (and may contain itself)
        return
    visited.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _find_duplicates(item, f"{prefix.rstrip('.')}[{i}].", problems, visited)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue  # `<<: *defaults` merges keys on purpose
        key, line = f"{prefix}{key_node.value}", key_node.start_mark.line + 1
        if key in seen:
            problems.append(f"`{key}` is given twice (lines {seen[key]} and {line}), and YAML would silently keep only "
                            "the last; merge them into one")
        seen.setdefault(key, line)
        _find_duplicates(value_node, f"{key}.", problems, visited)


# ----------------------------------------------------------------------------------------------------------
# Public entry points.


def read_recipe_file(path: str | os.PathLike) -> dict:
    """Read a recipe's YAML mapping, turning I/O and syntax errors into one clear message."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError([f"recipe file not found: {path} (give the path to a .yaml recipe, e.g. recipes/sentiment.yaml)"])
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKeys as dup:
        raise RecipeError([f"{path}: {problem}" for problem in dup.problems]) from None
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
    if recipe.model.finetune == "peft" and recipe.model.peft is None:
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, peft=PeftSection()))
    peft = recipe.model.peft
    if peft is not None and peft.type == "adalora" and peft.total_step is None and recipe.train.max_steps:
        peft = dataclasses.replace(peft, total_step=recipe.train.max_steps)  # the documented default
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, peft=peft))
    if recipe.name is None:  # the recipe file's name, made a valid run name: the user did not write it
        recipe = dataclasses.replace(recipe, name=safe_name(default_name or "run"))
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
