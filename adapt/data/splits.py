"""Data stage: read each split the recipe names, check it, and standardise it.

Every split becomes a `datasets.Dataset` with the columns `id` (str), `idx` (row position), `text`, optionally
`text_pair`, and `label` (an index into the label names) for labelled splits. File-backed datasets keep
`datasets`' on-disk cache, so filtering, label mapping and tokenisation (`adapt.tokenize`) run once per input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlparse

import numpy as np
from datasets import Dataset, Features, Value

from adapt.core.errors import AdaptError
from adapt.data import builtin as builtin_data
from adapt.data import carve
from adapt.data.specs import FORMATS, SPLIT_KEYS, builtin_parts, local_files, spec_of
from adapt.hub.reachability import hub_offline_requested, hub_reachable
from adapt.recipe import DataConfig, Recipe


@dataclass
class Split:
    name: str  # source_train, source_dev, source_test, target_train, target_unlabeled, target_dev, target_test
    role: Literal["source", "target"]
    domain: str
    labeled: bool
    dataset: Dataset
    spec: str  # what the recipe said
    sha256: str  # of the input files (or the Hub dataset's fingerprint)
    note: str = ""  # e.g. how a dev split was carved


def cache_dir() -> Path:
    return Path(os.environ.get("ADAPT_CACHE", Path.home() / ".cache" / "adapt"))


# ----------------------------------------------------------------------------------------------------------
# Reading a split spec.


def _files_sha256(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _read_files(files: list[str], key: str) -> Dataset:
    from datasets import load_dataset

    fmt = FORMATS[Path(files[0]).suffix.lower()]
    # datasets logs its own line about a malformed JSON file before raising; the error below names the line.
    json_builder = logging.getLogger("datasets.packaged_modules.json.json")
    level = json_builder.level
    json_builder.setLevel(logging.CRITICAL)
    try:
        return load_dataset(fmt, data_files=files, split="train")
    except Exception as err:  # datasets raises many types for malformed files
        if _holds_no_rows(files, fmt):
            raise AdaptError(f"`{key}` is empty: {', '.join(files)} has no rows; give a file with at least one row") from None
        bad = _bad_json_line(files) if fmt == "json" else None  # only now: good files are not read twice
        if bad:
            raise AdaptError(f"`{key}`: {bad}; fix or remove that line") from None
        raise AdaptError(f"`{key}`: could not read {', '.join(files)} as {fmt}: {err}") from None
    finally:
        json_builder.setLevel(level)


def _bad_json_line(files: list[str]) -> str | None:
    """Where a JSON-lines file first stops being one: the file, the line and what is wrong there. A `.json` file
    that parses as a whole is one JSON document, not JSON lines, and has no bad line."""
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        if Path(f).suffix.lower() == ".json" and _parses(data):
            continue
        for n, raw in enumerate(data.splitlines(), 1):
            if problem := _json_line_problem(raw):
                return f"{f} line {n} {problem}"
    return None


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return True


def _json_line_problem(raw: bytes) -> str | None:
    if not raw.strip():
        return None
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        return f"is not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})"
    except json.JSONDecodeError as err:
        return f"is not valid JSON ({err.msg} at column {err.colno})"
    return None if isinstance(row, dict) else f"is a JSON {type(row).__name__}, not an object with the columns"


def _holds_no_rows(files: list[str], fmt: str) -> bool:
    """Whether the files hold no data rows: `datasets` fails on those with messages that do not say so."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return all(pq.read_metadata(f).num_rows == 0 for f in files)
        except Exception:
            return False
    for f in files:
        with open(f, errors="replace") as fh:
            rows = -1 if fmt == "csv" else 0  # a CSV header is not a row
            for line in fh:
                rows += bool(line.strip())
                if rows > 0:
                    return False
    return True


def _read_hub(spec: str, key: str) -> tuple[Dataset, str]:
    from datasets import load_dataset

    url = urlparse(spec[len("hub:"):])
    name, query = url.path, parse_qs(url.query)
    config, split = query.get("config", [None])[0], query.get("split", ["train"])[0]
    if not hub_offline_requested() and not hub_reachable():
        raise AdaptError(
            f"`{key}`: cannot load the Hub dataset {name!r}: the Hugging Face Hub is unreachable. Point `{key}` at a "
            "local file, or set HF_HUB_OFFLINE=1 to use a copy already in the datasets cache."
        )
    try:
        ds = load_dataset(name, config, split=split)
    except Exception as err:
        raise AdaptError(f"`{key}`: could not load the Hub dataset {name!r} (config={config}, split={split}): {err}") from None
    return ds, ds._fingerprint


def read_spec(spec: str, key: str) -> tuple[Dataset, str]:
    """The raw dataset a split spec names and a content hash."""
    if spec.startswith("hub:"):
        return _read_hub(spec, key)
    if spec.startswith("builtin:"):
        files = [str(builtin_data.materialize(*builtin_parts(spec, key), cache_dir()))]
    elif spec.startswith("amazon:"):
        files = [str(carve.spec_path(spec, key, cache_dir()))]
    else:
        files = local_files(spec, key)
    return _read_files(files, key), _files_sha256(files)


# ----------------------------------------------------------------------------------------------------------
# Checking and standardising.


def _filter_domain(ds: Dataset, cfg: DataConfig, domain: str | None, key: str) -> Dataset:
    if domain is None or cfg.domain_column not in ds.column_names:
        return ds
    col = cfg.domain_column
    out = ds.filter(lambda b: [d == domain for d in b[col]], batched=True, desc=f"domain={domain}")
    if len(out) == 0:
        found = sorted(Counter(ds[col]).keys())[:20]
        raise AdaptError(f"`{key}`: no rows have {col}={domain!r}; the file's domains are {found}. Fix the domain name.")
    return out


def _row(ds: Dataset, cfg: DataConfig, i: int) -> str:
    """Row `i` for a message. Positions count the rows left after domain filtering, across globbed files, so
    the example id, when the file has one, is what finds the row in the file."""
    if cfg.id_column in ds.column_names:
        return f"row {i} (id {ds[i][cfg.id_column]!r})"
    return f"row {i}"


def _check_columns(ds: Dataset, cfg: DataConfig, labeled: bool, key: str) -> None:
    needed = [("data.text_column", cfg.text_column)]
    if cfg.text_pair_column:
        needed.append(("data.text_pair_column", cfg.text_pair_column))
    if labeled:
        needed.append(("data.label_column", cfg.label_column))
    for what, col in needed:
        if col not in ds.column_names:
            raise AdaptError(
                f"`{key}` has no column {col!r} (`{what}`); its columns are {ds.column_names}. Set `{what}` to one of them."
            )
    for col in [c for _, c in needed[:2] if c != cfg.label_column]:
        for i, text in enumerate(ds[col]):
            if not isinstance(text, str):
                raise AdaptError(f"`{key}`: {_row(ds, cfg, i)} has a {type(text).__name__} in text column {col!r}, not a string: {text!r}")
    if len(ds) == 0:
        raise AdaptError(f"`{key}` is empty: give a file with at least one row")


def _label_values(ds: Dataset, cfg: DataConfig, key: str) -> list:
    values = list(ds[cfg.label_column])
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise AdaptError(
                f"`{key}`: {_row(ds, cfg, i)} has no label (null in {cfg.label_column!r}); labelled splits need a label on every "
                "row. Fix the data, or use the file as `data.target.unlabeled`."
            )
        if isinstance(v, bool) or not isinstance(v, (int, str, float)):
            raise AdaptError(f"`{key}`: {_row(ds, cfg, i)} has label {v!r}; labels must be integers or strings")
    return values


def infer_label_names(cfg: DataConfig, source_train_values: list) -> list[str]:
    """The label names: the recipe's, or the sorted distinct labels of the source training data."""
    if cfg.label_names is not None:
        return list(cfg.label_names)
    kinds = {type(v) for v in source_train_values}
    if len(kinds) > 1:
        raise AdaptError("`data.source.train` mixes label types (numbers and strings); make them one type")
    distinct = sorted(set(source_train_values))
    if len(distinct) < 2:
        raise AdaptError(f"`data.source.train` has only one label ({distinct}); a classifier needs at least two")
    return [str(int(v)) if isinstance(v, float) else str(v) for v in distinct]


def label_index(values: list, names: list[str], key: str, explicit: bool, row: Callable[[int], str] = "row {}".format) -> list[int]:
    """Map raw label values (indices or names) to indices into `names`; `row` names a row in messages."""
    by_name = {n: i for i, n in enumerate(names)}
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str) and v in by_name:
            out.append(by_name[v])
        elif isinstance(v, (int, float)) and explicit and float(v).is_integer() and 0 <= int(v) < len(names):
            out.append(int(v))  # an index into `data.label_names`
        elif isinstance(v, (int, float)) and not explicit and str(int(v)) in by_name:
            out.append(by_name[str(int(v))])
        else:
            raise AdaptError(
                f"`{key}`: {row(i)} has label {v!r}, which is not in the label set {names}. Fix the data or "
                "`data.label_names` (labels may be names or 0-based indices into it)."
            )
    return out


_CLITIC = re.compile(r"(n't|'s|'ve|'m|'re|'d|'ll)\b")
_KEEP_TOKEN = re.compile(r"[a-z]+|\d+|!|''|n't|'[a-z]+")


def amazon_unlabeled_style(text: str) -> str:
    """Rewrite raw review text the way the Amazon `*.unlabeled.jsonl` files were preprocessed (lower-cased,
    `do n't`, `''` for double quotes, `!` kept, other punctuation and tokens with symbols dropped), so that all
    splits share one style. Close to, not byte-identical with, the original (unpublished) preprocessing."""
    t = text.lower().replace('"', " '' ").replace("!", " ! ")
    t = _CLITIC.sub(r" \1", t)
    out = []
    for token in t.split():
        token = token.strip(".,;:?()[]{}<>*/-_&#~`")
        if _KEEP_TOKEN.fullmatch(token):
            out.append(token)
    return " ".join(out)


NORMALIZERS = {"none": None, "amazon_unlabeled": amazon_unlabeled_style}


def _standardise(ds: Dataset, cfg: DataConfig, name: str, labels: list[int] | None, key: str) -> Dataset:
    has_ids = cfg.id_column in ds.column_names
    text_col, pair_col, id_col = cfg.text_column, cfg.text_pair_column, cfg.id_column
    norm = NORMALIZERS[cfg.normalize] or (lambda text: text)

    def fn(batch: dict, indices: list[int]) -> dict:
        out = {
            "id": [str(v) for v in batch[id_col]] if has_ids else [f"{name}-{i}" for i in indices],
            "idx": indices,
            "text": [norm(t) for t in batch[text_col]],
        }
        if pair_col:
            out["text_pair"] = [norm(t) for t in batch[pair_col]]
        if labels is not None:
            out["label"] = [labels[i] for i in indices]
        return out

    # Explicit features: `datasets` otherwise keeps the input's type for a column name it sees again, so the
    # label indices of a CSV (whose strings load as large_string) would stay strings.
    features = {"id": Value("string"), "idx": Value("int64"), "text": Value("string")}
    if pair_col:
        features["text_pair"] = Value("string")
    if labels is not None:
        features["label"] = Value("int64")
    out = ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names, features=Features(features),
                 desc=f"standardise {name}")
    counts = Counter(out["id"])
    dup = next((i for i, c in counts.items() if c > 1), None)
    if dup is not None:
        raise AdaptError(f"`{key}`: example id {dup!r} appears {counts[dup]} times in column {id_col!r}; ids must be unique")
    return out


def carve_dev(train: Dataset, fraction: float, seed: int, key: str) -> tuple[Dataset, Dataset]:
    """A stratified, seeded dev split carved out of a labelled training split."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(train["label"])
    counts = Counter(labels.tolist())
    if min(counts.values()) < 2 or round(len(labels) * fraction) < len(counts):
        raise AdaptError(
            f"`{key}` is too small to carve a stratified dev split of {fraction:.0%} ({dict(counts)} per label); "
            "give a dev split explicitly or more data"
        )
    keep, dev = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
    # `idx` is a row's position in its own split: evaluation gathers predictions back by it.
    renumber = lambda b, i: {"idx": i}  # noqa: E731
    return tuple(
        train.select(np.sort(part)).map(renumber, batched=True, with_indices=True, desc="carve dev")
        for part in (keep, dev)
    )


# ----------------------------------------------------------------------------------------------------------
# The stage.


def _domain_of(recipe: Recipe, role: str) -> str:
    return getattr(recipe.data, role).domain or role


def read_raw_split(spec: str, key: str, cfg: DataConfig, domain: str | None, labeled: bool) -> tuple[Dataset, str, list | None]:
    """Read, filter and check one split; return it with its hash and raw label values (labelled splits)."""
    ds, sha = read_spec(spec, key)
    ds = _filter_domain(ds, cfg, domain, key)
    _check_columns(ds, cfg, labeled, key)
    return ds, sha, _label_values(ds, cfg, key) if labeled else None


def load_splits(recipe: Recipe) -> tuple[dict[str, Split], list[str]]:
    """Every split the recipe names, checked and standardised, and the label names in index order."""
    cfg = recipe.data
    raw: dict[str, tuple] = {}
    for name, key, role, labeled in SPLIT_KEYS:
        spec = spec_of(recipe, key)
        if spec:
            domain = getattr(cfg, role).domain
            raw[name] = (key, role, labeled, spec, *read_raw_split(spec, key, cfg, domain, labeled))
    label_names = infer_label_names(cfg, raw["source_train"][6])
    explicit = cfg.label_names is not None
    source_ds, source_values = raw["source_train"][4], raw["source_train"][6]
    seen_in_source = set(label_index(source_values, label_names, "data.source.train", explicit, partial(_row, source_ds, cfg)))
    splits: dict[str, Split] = {}
    for name, (key, role, labeled, spec, ds, sha, values) in raw.items():
        labels = label_index(values, label_names, key, explicit, partial(_row, ds, cfg)) if labeled else None
        unseen = sorted({label_names[i] for i in labels or []} - {label_names[i] for i in seen_in_source})
        if unseen:
            raise AdaptError(
                f"`{key}` has label(s) {unseen} that never occur in `data.source.train`; a source-trained classifier "
                "cannot predict them. Fix the data or the label names."
            )
        std = _standardise(ds, cfg, name, labels, key)
        splits[name] = Split(name, role, _domain_of(recipe, role), labeled, std, spec, sha)
    _carve_dev_splits(recipe, splits)
    return splits, label_names


def _carve_dev_splits(recipe: Recipe, splits: dict[str, Split]) -> None:
    cfg = recipe.data
    if "source_dev" not in splits:
        src = splits["source_train"]
        keep, dev = carve_dev(src.dataset, cfg.dev_fraction, recipe.seed, "data.source.train")
        note = f"carved from data.source.train ({cfg.dev_fraction:.0%}, stratified, seed {recipe.seed})"
        splits["source_train"] = Split(src.name, "source", src.domain, True, keep, src.spec, src.sha256, note)
        splits["source_dev"] = Split("source_dev", "source", src.domain, True, dev, src.spec, src.sha256, note)
    if recipe.eval.select_on == "target_dev" and "target_dev" not in splits:
        tgt = splits["target_train"]
        keep, dev = carve_dev(tgt.dataset, cfg.dev_fraction, recipe.seed, "data.target.train")
        note = f"carved from data.target.train ({cfg.dev_fraction:.0%}, stratified, seed {recipe.seed})"
        splits["target_train"] = Split(tgt.name, "target", tgt.domain, True, keep, tgt.spec, tgt.sha256, note)
        splits["target_dev"] = Split("target_dev", "target", tgt.domain, True, dev, tgt.spec, tgt.sha256, note)


def load_extra_split(
    spec: str, name: str, role: Literal["source", "target"], domain: str | None, cfg: DataConfig, label_names: list[str]
) -> Split:
    """A labelled test split added after training (`adapt.evaluate_run --test NAME=PATH`)."""
    key = f"--test {name}"
    ds, sha, values = read_raw_split(spec, key, cfg, domain, labeled=True)
    labels = label_index(values, label_names, key, cfg.label_names is not None, partial(_row, ds, cfg))
    return Split(name, role, domain or name, True, _standardise(ds, cfg, name, labels, key), spec, sha)


def load_unlabeled_split(spec: str, name: str, domain: str | None, cfg: DataConfig) -> Split:
    """Unlabelled text added after training (`adapt.evaluate_run --unlabeled NAME=PATH`), for the label-free
    criteria of a finished model on it."""
    key = f"--unlabeled {name}"
    ds, sha, _ = read_raw_split(spec, key, cfg, domain, labeled=False)
    return Split(name, "target", domain or name, False, _standardise(ds, cfg, name, None, key), spec, sha)
