"""One command-line face: the `adapt` console script with a subcommand per stage, and every `python -m adapt.<cmd>`
the README documents, all with the same argparse style and the same error handling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapt.cli import COMMANDS
from adapt.cli import main as adapt_main

ROOT = Path(__file__).resolve().parent.parent
# `python -m adapt.<module>` entry points the README documents (kept working beside `adapt <command>`).
MODULE_COMMANDS = ["adapt.train", "adapt.validate", "adapt.evaluate_run", "adapt.report", "adapt.hub", "adapt.predict",
                   "adapt.export", "adapt.sweep", "adapt.carve", "adapt.builtin_data", "adapt.recipe_docs"]


def test_help_lists_every_command(capsys):
    assert adapt_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "validate", "evaluate", "report", "compare", "push", "predict", "export", "sweep", "carve"):
        assert f"\n  {name} " in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_has_help_under_its_own_name(name, capsys):
    with pytest.raises(SystemExit) as done:
        adapt_main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: adapt {name}")


def test_unknown_command_suggests_the_close_one(capsys):
    assert adapt_main(["valdiate", "x.yaml"]) == 2
    assert "unknown command `valdiate` (did you mean `validate`?)" in capsys.readouterr().err


def test_missing_command_prints_usage_and_fails(capsys):
    assert adapt_main([]) == 2
    assert "usage: adapt <command>" in capsys.readouterr().out


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert adapt_main(["validate", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the recipe has 1 problem(s)") and "recipe file not found" in err
    assert adapt_main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_validate_through_adapt_and_through_the_module_agree(tiny_recipe, capsys):
    from adapt.validate import main as validate_main

    assert adapt_main(["validate", str(tiny_recipe), "train.lr=1e-4"]) == 0
    first = capsys.readouterr().out
    assert validate_main([str(tiny_recipe), "train.lr=1e-4"]) == 0
    assert capsys.readouterr().out == first and "lr: 0.0001" in first


def test_the_module_entry_points_run():
    """Each documented `python -m adapt.<module>` answers --help (in one interpreter per module, as users run it)."""
    for module in MODULE_COMMANDS:
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                              timeout=120)
        assert done.returncode == 0, (module, done.stderr)
        assert done.stdout.startswith("usage: "), module
    done = subprocess.run([sys.executable, "-m", "adapt", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: adapt <command>" in done.stdout
