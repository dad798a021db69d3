"""User-facing errors: one clear message, no traceback, a non-zero exit code."""

from __future__ import annotations


class AdaptError(Exception):
    """A problem the user can fix (bad recipe, missing file, bad data). Printed without a traceback."""


class RecipeError(AdaptError):
    """Every problem found in a recipe, reported together."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the recipe has {len(self.problems)} problem(s):\n{lines}")


class OtherProcessFailed(AdaptError):
    """Raised on the processes of a multi-process run where shared work did not fail, when it failed on another
    (the main process's work for all, or a share every process does), so they stop with it instead of waiting. Every
    process prints it (other user errors print once): on another machine it is the only word of the failure."""


class RunInterrupted(AdaptError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint."""

    exit_code = 130
