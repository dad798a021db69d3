"""What every command shares: one argparse style, user errors as one line and exit code 2, quiet libraries.

A command is a module with `make_parser()` and `main(argv) -> int`; `main` is wrapped by `cli_entry`. The
`adapt` console script (`adapt.cli`) and `python -m adapt.<command>` both call that same `main`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from adapt.core.errors import AdaptError, OtherProcessFailed

# Set by the `adapt` console script to `adapt <command>`, so each command's usage line reads as it was typed.
invoked_as: str | None = None


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser: `prog` as the user types it, the module docstring (its usage examples) as the help."""
    return argparse.ArgumentParser(prog=invoked_as or prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def is_main_rank() -> bool:
    # Under `accelerate launch` every rank hits the same user error; one copy of the message is enough.
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def cli_entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a `main(argv) -> int` so user errors print `error: ...` and exit non-zero, without a traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except AdaptError as e:
            if is_main_rank() or isinstance(e, OtherProcessFailed):
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


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1."""
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n
