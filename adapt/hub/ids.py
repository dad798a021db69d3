"""Is a name a Hub id or a local path? Decided by its spelling alone, the same way everywhere (recipes, model
loading, model cards, prediction): whether a directory of that name exists on this machine is the caller's
question, asked first where it matters."""

from __future__ import annotations

import os

# The recipe may name the embedded encoder by its short name; on the Hub it lives under its organisation.
CANONICAL_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def looks_like_path(name: str) -> bool:
    """Absolute, `./`, `../`, `~`, or more than one `/`: a path, never a Hub id (`user/name` or `name`)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1


def hub_model_id(name_or_path: str) -> str | None:
    """The Hub id a recipe's `model.name_or_path` names, or None for a local directory.

    Recipes store a local model as an absolute path (`adapt.recipe` resolves them) and leave a Hub id as written,
    so the spelling alone decides.
    """
    name = CANONICAL_IDS.get(name_or_path, name_or_path)
    return None if looks_like_path(name) else name


def is_hub_model_id(name: str) -> bool:
    """`user/name` that is not a path but a valid Hub repository id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if looks_like_path(name) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
