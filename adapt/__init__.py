"""adapt: domain adaptation for text classifiers on the Hugging Face stack.

    from adapt import load_recipe, run
    report = run(load_recipe("recipes/sentiment.yaml", ["train.epochs=1"]))

Importing the package (and reading a recipe) imports no torch; `run` loads the training stack when called. The
stages are sub-packages (see docs/architecture.md); `AdaptError` is what every user-facing problem raises.
"""

from adapt.core.errors import AdaptError, RecipeError
from adapt.recipe import Recipe, load_recipe

__version__ = "0.1.0"
__all__ = ["AdaptError", "Recipe", "RecipeError", "load_recipe", "run"]


def run(recipe: Recipe) -> dict:
    """Train and evaluate a recipe in this process; returns the report (see `report.json`)."""
    from adapt.training.run import run as _run  # heavy imports (torch, transformers) only when training

    return _run(recipe)
