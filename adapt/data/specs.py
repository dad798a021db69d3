"""Split specs, checked without reading any data: which recipe key names which split, what forms a spec takes
(a local file or glob, `builtin:`, `amazon:`, `hub:`), and whether each one can be found. Imports no `datasets`,
so `adapt validate` can check every data path in milliseconds."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.data import builtin as builtin_data
from adapt.data import carve
from adapt.recipe import Recipe

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

SPLIT_KEYS = [  # (split name, recipe key, role, labelled)
    ("source_train", "data.source.train", "source", True),
    ("source_dev", "data.source.dev", "source", True),
    ("source_test", "data.source.test", "source", True),
    ("target_train", "data.target.train", "target", True),
    ("target_unlabeled", "data.target.unlabeled", "target", False),
    ("target_dev", "data.target.dev", "target", True),
    ("target_test", "data.target.test", "target", True),
]


def spec_of(recipe: Recipe, key: str) -> str | None:
    section = getattr(recipe.data, key.split(".")[1])
    return getattr(section, key.split(".")[2])


def local_files(spec: str, key: str) -> list[str]:
    files = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        what = "no file matches the glob" if glob.has_magic(spec) else "file not found"
        raise AdaptError(f"`{key}`: {what}: {spec} (fix the path: relative paths resolve against the recipe file's folder, or the working directory for command-line overrides)")
    exts = {Path(f).suffix.lower() for f in files}
    if not exts <= set(FORMATS) or len({FORMATS[e] for e in exts}) != 1:
        raise AdaptError(f"`{key}`: {spec} must be .jsonl, .json, .csv or .parquet files of one format; got {sorted(exts)}")
    return files


def builtin_parts(spec: str, key: str) -> tuple[str, str]:
    """(corpus, split) of a `builtin:<corpus>/<split>` spec, or an error listing the available ones."""
    corpus, _, split = spec[len("builtin:"):].partition("/")
    if corpus not in builtin_data.CORPORA or split not in builtin_data.splits(corpus):
        corpora = ", ".join(f"builtin:{c}/{s}" for c in builtin_data.CORPORA for s in builtin_data.splits(c))
        raise AdaptError(f"`{key}`: unknown built-in data {spec!r}; available: {corpora}")
    return corpus, split


def spec_problems(recipe: Recipe) -> list[str]:
    """Every data path that cannot be found, checked without reading any data (for `adapt.validate`)."""
    problems = []
    for _, key, _, _ in SPLIT_KEYS:
        spec = spec_of(recipe, key)
        if not spec or spec.startswith("hub:"):
            continue
        if spec.startswith("amazon:"):
            if problem := carve.spec_problem(spec, key):
                problems.append(problem)
            continue
        try:
            builtin_parts(spec, key) if spec.startswith("builtin:") else local_files(spec, key)
        except AdaptError as err:
            problems.append(str(err))
    return problems
