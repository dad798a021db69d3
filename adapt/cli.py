"""The `adapt` command: one entry point with a subcommand per stage, as `hf`, `accelerate` and `datasets-cli`
have. Each subcommand is the `main(argv)` of a command module, which `python -m adapt.<module>` also runs.

    adapt train recipes/sentiment.yaml train.epochs=1
    adapt validate recipes/sentiment.yaml
    adapt <command> --help
"""

from __future__ import annotations

import importlib
import sys

from adapt.core import cli

# name -> (command module, what it does). Modules are imported only when their command runs, so `adapt --help`
# and `adapt validate` never import torch.
COMMANDS = {
    "train": ("adapt.train", "train a recipe in this process (several: `accelerate launch -m adapt.train`)"),
    "validate": ("adapt.validate", "check a recipe and print it resolved, or every problem at once"),
    "evaluate": ("adapt.evaluate_run", "score a finished run again, or on new labelled test splits"),
    "report": ("adapt.report", "rebuild a run's report.md / report.html / report.json from its files"),
    "compare": ("adapt.compare", "compare runs (paired bootstrap) or tabulate a benchmark sweep"),
    "push": ("adapt.hub.__main__", "push a finished run to the Hugging Face Hub (or --dry-run DIR)"),
    "predict": ("adapt.predict", "predict labels for new text with a run, an export or a Hub model"),
    "export": ("adapt.export", "export a run as a self-contained model folder (fp32 or int8)"),
    "sweep": ("adapt.sweep", "train a recipe over a grid of overrides, resumable"),
    "carve": ("adapt.carve", "write the fixed Amazon train/dev/test carve"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"usage: adapt <command> [args ...]\n\nDomain adaptation for text classifiers.\n\ncommands:\n{rows}\n\n"
            "`adapt <command> --help` shows a command's arguments.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        print(f"error: unknown command `{name}`{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name == "push":  # `python -m adapt.hub push ...`: the Hub command groups its actions
        rest = ["push", *rest]
    cli.invoked_as = f"adapt {name}"
    try:
        return module.main(rest)
    finally:
        cli.invoked_as = None


if __name__ == "__main__":
    sys.exit(main())
