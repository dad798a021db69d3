"""Generate the recipe reference (every key, type, default and meaning) from the schema.

    python -m adapt.recipe_docs > docs/recipe.md        # regenerate
    python -m adapt.recipe_docs --check docs/recipe.md  # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser
from adapt.recipe.docs import render


def make_parser(prog: str = "python -m adapt.recipe_docs") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("--check", type=Path, help="compare with this file instead of printing")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    if not args.check.exists() or args.check.read_text() != text:
        print(f"{args.check} is out of date: run `python -m adapt.recipe_docs > {args.check}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
