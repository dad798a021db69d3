"""Check a recipe without training: print the resolved recipe, or every problem at once (schema, cross-field
checks, data paths that do not exist, and `data.max_length`, `model.num_layers` and `model.attention` against the
model's config.json when the model is on this machine: a local folder or the Hugging Face cache, never downloaded).

    adapt validate recipes/sentiment.yaml [key=value ...]
    python -m adapt.validate recipes/sentiment.yaml [key=value ...]     # the same

It imports neither torch nor transformers, and answers in well under a second; except with `model.attention: sdpa`,
which only transformers' model class can confirm (a few seconds more).
"""

from __future__ import annotations

import argparse
import sys

from adapt.core.cli import cli_entry, parser
from adapt.core.errors import RecipeError
from adapt.recipe import load_recipe, recipe_to_yaml


def make_parser(prog: str = "python -m adapt.validate") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("recipe", help="path to a YAML recipe")
    p.add_argument("overrides", nargs="*", help="dotted `key=value` overrides and `~key` removals")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    from adapt.data.specs import spec_problems
    from adapt.model.limits import start_problems

    problems = spec_problems(recipe) + start_problems(recipe.model, recipe.data.max_length, recipe.data.label_names)
    if problems:
        raise RecipeError(problems)
    print(f"# {args.recipe}: valid. Resolved recipe (paths absolute, defaults filled in):")
    print(recipe_to_yaml(recipe), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
