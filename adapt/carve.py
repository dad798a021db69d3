"""Write the fixed Amazon train/dev/test carve as <OUT>/<domain>.<split>.jsonl (rules: `adapt.data.carve`).

    adapt carve --data-dir /path/to/amazon_multidomain --out DIR [--domains books,kitchen]
    python -m adapt.carve ...     # the same

Recipes name carved splits as `amazon:<domain>/<train|dev|test>` (and the untouched unlabelled text as
`amazon:<domain>/unlabeled`), with the data folder in the environment variable `ADAPT_AMAZON_DIR`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser
from adapt.data.carve import DOMAINS, carve_dir


def make_parser(prog: str = "python -m adapt.carve") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("--data-dir", type=Path, required=True, help="the amazon_multidomain folder (<domain>.train.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="output folder (must not be the read-only data folder)")
    p.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated domains (default: all four)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    manifest = carve_dir(args.data_dir, args.out, domains)
    for name, entry in manifest["outputs"].items():
        labels = ", ".join(f"{k}: {v}" for k, v in entry["labels"].items())
        print(f"{args.out / name}\t{entry['rows']} rows\tlabels {labels}")
    groups = ", ".join(f"{d} {g['groups']} ({g['rows']} rows)" for d, g in manifest["duplicate_groups"].items())
    print(f"{args.out / 'carve.json'}\tcarve {manifest['version']}, seed {manifest['seed']}; duplicate groups kept in train: {groups}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
