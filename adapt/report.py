"""Rebuild a run's report.md, report.html and report.json from its files alone (no model, no retraining).

    adapt report RUN_DIR
    python -m adapt.report RUN_DIR
    python -m adapt.report compare RUN_DIR RUN_DIR ... [--out DIR]     # = adapt compare (see `adapt compare --help`)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adapt.core.cli import cli_entry, parser


def make_parser(prog: str = "python -m adapt.report") -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:  # the older spelling of `adapt compare`
        from adapt.compare import main as compare_main

        return compare_main(argv[1:])
    args = make_parser().parse_args(argv)
    from adapt.core.rundir import RunDir
    from adapt.reporting.report import load_report, write_reports

    run = RunDir(args.run_dir)
    write_reports(run, load_report(run))
    print(run.report_md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
