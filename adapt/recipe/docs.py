"""The recipe reference (every key, type, default and meaning), rendered from the schema into docs/recipe.md."""

from __future__ import annotations

import dataclasses
import typing

from adapt.recipe.parse import _is_dataclass_type, _unwrap_optional, schema_fields, type_name
from adapt.recipe.schema import Recipe

HEADER = """# Recipe reference

Generated from the recipe schema (`adapt/recipe/`, and each method's options in `adapt/methods/`) by `python -m adapt.recipe_docs`; do not edit by hand.

A recipe is a YAML file with the sections below. Any key can be overridden on the command line as
`section.key=value` (values are coerced to the key's type) or removed with `~section.key` (back to its
default). Unknown keys are errors. Relative paths in a recipe file are relative to that file; on the command
line, relative to the working directory. `python -m adapt.validate RECIPE` prints the resolved recipe.

Data paths take four forms: a local file (`.jsonl`, `.json`, `.csv`, `.parquet`; globs such as
`data/*.jsonl` allowed), `builtin:<corpus>/<split>` for the generated corpus (see
`data_cards/builtin_reviews.md`), `amazon:<domain>/<split>` for the fixed carve of a local copy of the Amazon
multi-domain reviews (folder in `ADAPT_AMAZON_DIR`; see `data_cards/amazon_multidomain.md`), or
`hub:<dataset id>[?config=NAME&split=NAME]` for a Hugging Face Hub dataset (needs the Hub, or
`HF_HUB_OFFLINE=1` and a cached copy).
"""


def _default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return "(section)" if dataclasses.is_dataclass(value) else f"`{value}`"
    return "`null`" if f.default is None else f"`{f.default}`"


def _rows(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, (f, hint) in schema_fields(cls).items():
        key = f"{prefix}{name}"
        inner, _ = _unwrap_optional(hint)
        rows.append((key, type_name(hint), _default(f), f.metadata.get("help", "")))
        if _is_dataclass_type(inner):
            rows += _rows(inner, f"{key}.")
    return rows


def render() -> str:
    lines = [HEADER]
    top = [r for r in _rows(Recipe, "") if "." not in r[0] and r[2] != "(section)"]
    sections = [f.name for f in dataclasses.fields(Recipe) if _is_dataclass_type(_unwrap_optional(typing.get_type_hints(Recipe)[f.name])[0])]
    groups = [("Top level", top)] + [(f"`{s}`", [r for r in _rows(Recipe, "") if r[0].startswith(f"{s}.")]) for s in sections]
    for title, rows in groups:
        lines += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {t.replace('|', '&#124;')} | {d} | {h} |" for k, t, d, h in rows]
        lines.append("")
    return "\n".join(lines)
