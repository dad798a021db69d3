"""Schema fields with their documentation: every recipe key, the recipe's own sections and each method's options
alike, is declared with `option(...)`, and docs/recipe.md is rendered from that metadata."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, *, path: bool = False, keywords: tuple[str, ...] = (), factory: Any = None,
           key: str | None = None, hub_id: bool = False) -> Any:
    """A dataclass field with its help text, whether it is a path (made absolute when the recipe is parsed), which
    of its values are keywords rather than paths, and its recipe key when that is not a Python name (`lambda`).
    `hub_id`: a path field that may also hold a Hub model id, so a relative value is taken as a path only when it
    exists or starts with `.` or `~` (as `model.name_or_path`)."""
    meta = {"help": help, "path": path, "keywords": keywords, "key": key, "hub_id": hub_id}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
