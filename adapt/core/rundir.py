"""The run directory: its layout, and the rules for reusing or resuming one."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.core.fileio import read_jsonl, write_jsonl

CHECKPOINT_PREFIX = "step-"


class RunDir:
    """Paths inside one run directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    recipe = property(lambda self: self.root / "recipe.yaml")
    model = property(lambda self: self.root / "model")
    predictions = property(lambda self: self.root / "predictions")
    train_log = property(lambda self: self.root / "train_log.jsonl")
    report_json = property(lambda self: self.root / "report.json")
    report_md = property(lambda self: self.root / "report.md")
    report_html = property(lambda self: self.root / "report.html")
    diagnostics = property(lambda self: self.root / "diagnostics.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "best")

    def is_finished(self) -> bool:
        # report.json is written last, so its presence means the run completed.
        return self.report_json.exists()

    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints (renamed into place only after every file was written), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "train_state.json").exists()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))

    def latest_checkpoint(self) -> Path | None:
        dirs = self.checkpoint_dirs()
        return dirs[-1] if dirs else None

    def prune_checkpoints(self, keep: int) -> None:
        for old in self.checkpoint_dirs()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def append_log(self, record: dict) -> None:
        with open(self.train_log, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_log(self, global_step: int) -> None:
        """On resume: drop log lines written after the checkpoint, so the resumed run does not repeat them."""
        kept = [r for r in read_jsonl(self.train_log) if r.get("global_step", 0) <= global_step]
        write_jsonl(self.train_log, kept)


def default_output_dir(name: str, cwd: Path) -> Path:
    """`runs/<name>-<timestamp>`: re-running the same command makes a new run instead of clobbering one."""
    base = cwd / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def plan_output_dir(run: RunDir, resume: str) -> Path | None:
    """Check that `run` may be used and return the checkpoint to resume from, if any."""
    if run.is_finished():
        raise AdaptError(
            f"`output_dir` {run.root} already holds a finished run (report.json exists); choose another "
            "`output_dir=...`, or leave it unset for a new timestamped directory"
        )
    if resume == "never":
        if run.latest_checkpoint() is not None:
            raise AdaptError(
                f"`output_dir` {run.root} holds an unfinished run with checkpoints and `train.resume=never`; use "
                "`train.resume=auto` to continue it, or choose another `output_dir`"
            )
        return None
    if resume == "auto":
        return run.latest_checkpoint()
    path = Path(resume)
    if not (path / "train_state.json").exists():
        raise AdaptError(f"`train.resume`: {path} is not a checkpoint directory (no train_state.json); use auto, never or a checkpoint path")
    return path
