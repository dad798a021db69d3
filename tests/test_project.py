"""Project files that users read or run: the generated recipe reference, the Accelerate config, the README."""

from __future__ import annotations

import re
from pathlib import Path

from adapt.recipe.docs import render

ROOT = Path(__file__).resolve().parent.parent


def test_recipe_reference_is_up_to_date():
    assert (ROOT / "docs" / "recipe.md").read_text() == render(), "run: python -m adapt.recipe_docs > docs/recipe.md"


def test_recipe_reference_documents_every_key():
    from adapt.recipe import Recipe, recipe_to_dict

    def keys(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if prefix or not isinstance(v, dict):  # top-level sections are headings, not rows
                out.append(prefix + k)
            if isinstance(v, dict):
                out += keys(v, f"{prefix}{k}.")
        return out

    text = render()
    missing = [k for k in keys(recipe_to_dict(Recipe())) if f"| `{k}` |" not in text]
    assert not missing
    assert "| `model.lora.r` |" in text  # optional sections are documented too


def test_accelerate_config_parses_as_multi_gpu():
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "accelerate_config.yaml"))
    assert str(cfg.distributed_type).endswith("MULTI_GPU") and cfg.num_processes >= 2 and cfg.num_machines == 1


def test_readme_shows_the_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "accelerate launch -m adapt.train recipes/sentiment.yaml" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"^python -m pytest.*$", ci, re.M).group(0)
    assert test_cmd in readme, "the README's test command and .ci/run must be the same"
