"""Write every split of a built-in generated corpus as <DIR>/<split>.jsonl (the corpus: `adapt.data.builtin`).

    python -m adapt.builtin_data --out DIR [--corpus reviews]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser
from adapt.data.builtin import CORPORA, generate, splits, write_jsonl


def make_parser(prog: str = "python -m adapt.builtin_data") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--corpus", default="reviews", choices=sorted(CORPORA))
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    for split in splits(args.corpus):
        rows = generate(args.corpus, split)
        path = args.out / f"{split}.jsonl"
        digest = write_jsonl(rows, path)
        print(f"{path}\t{len(rows)} rows\tsha256={digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
