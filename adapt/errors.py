"""User-facing errors: one clear message, no traceback, a non-zero exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable


class AdaptError(Exception):
    """A problem the user can fix (bad recipe, missing file, bad data). Printed without a traceback."""


class RecipeError(AdaptError):
    """Every problem found in a recipe, reported together."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the recipe has {len(self.problems)} problem(s):\n{lines}")


class RunInterrupted(AdaptError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint."""

    exit_code = 130


def _is_main_rank() -> bool:
    # Under `accelerate launch` every rank hits the same user error; one copy of the message is enough.
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def cli_entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a `main(argv) -> int` so user errors print `error: ...` and exit non-zero, without a traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except AdaptError as e:
            if _is_main_rank():
                print(f"error: {e}", file=sys.stderr)
            return getattr(e, "exit_code", 2)

    return wrapper


def quiet_libraries() -> None:
    """Command-line runs show our own progress bar and a line per stage; the libraries' per-file and per-map
    bars only add noise."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
