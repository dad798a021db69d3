"""The run directory: its layout, and the rules for reusing or resuming one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from adapt.core.errors import AdaptError
from adapt.core.fileio import atomic_write_json

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

CHECKPOINT_PREFIX = "step-"
MARKER = ".adapt-run.json"  # written first: this folder is a run of adapt
MARKER_FORMAT = 1
LOCK = ".lock"  # locked by the main process of the training that writes the folder


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
    marker = property(lambda self: self.root / MARKER)
    lock = property(lambda self: self.root / LOCK)

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


# ----------------------------------------------------------------------------------------------------------
# Whose folder is it? A run writes only into a new folder, an empty one, or a run folder of its own.

# Everything a run writes at the top of its folder, and the temporary names it writes through: core.fileio's
# `.<file>.<random>.tmp`, the model staged as `.model.tmp`, an older model moved aside as `.model.old-<pid>`.
RUN_ENTRIES = {"recipe.yaml", "model", "predictions", "train_log.jsonl", "report.md", "report.json",
               "report.html", "diagnostics.json", "checkpoints", "best", "mlm", "pseudo_labels", "trackers",
               MARKER, LOCK}
_RUN_TEMP = re.compile(r"\.model\.(tmp|old-\d+)"
                       r"|\.(recipe\.yaml|train_log\.jsonl|report\.(md|json|html)|diagnostics\.json)\..+\.tmp")
_CHOOSE = "choose another `output_dir=...`, or leave it unset for a new folder under runs/"


def check_output_dir(run: RunDir) -> None:
    """Refuse a folder that is not ours before anything is read or written: a run replaces `model/`, `mlm/`,
    `checkpoints/`... of its folder, which in somebody else's folder are somebody else's files."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise AdaptError(f"`output_dir` {root} is a file, not a folder; {_CHOOSE}")
    if not root.exists() or run.marker.is_file():
        return
    try:
        names = sorted(p.name for p in root.iterdir() if p.name != LOCK)
    except OSError as err:
        raise AdaptError(f"`output_dir` {root} cannot be read ({err.strerror}); {_CHOOSE}") from None
    if names and not _run_of_before_markers(run, names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise AdaptError(f"`output_dir` {root} is not empty and is not a run folder of adapt (it holds "
                         f"{shown}); a run writes only into a new or empty folder or its own unfinished run, "
                         f"so {_CHOOSE}")


def _run_of_before_markers(run: RunDir, names: list[str]) -> bool:
    """Run folders written before runs left a marker must still resume. One is taken for ours only when it
    looks exactly like one: a resolved recipe, a complete checkpoint or a finished report, and nothing but a
    run's own files; a user's folder that merely holds a `model/` or `checkpoints/` is never taken for one."""
    own = all(n in RUN_ENTRIES or _RUN_TEMP.fullmatch(n) for n in names)
    return own and run.recipe.is_file() and (run.latest_checkpoint() is not None or run.is_finished())


def _cannot_write(root: Path, err: OSError, what: str = "write in it") -> AdaptError:
    return AdaptError(f"`output_dir` {root}: cannot {what} ({err.strerror}); choose a folder you can write "
                      "to with `output_dir=...`, or leave it unset")


class RunClaim:
    """The main process's hold on its run folder: the folder's lock, held from before the data loads to the
    end of the run, and what the claim itself created, so that a run that stops before writing anything of
    its own leaves the folder as it found it."""

    def __init__(self, run: RunDir):
        self.run = run
        self._fd: int | None = None
        self._created: list[Path] = []
        self._marked = False

    def acquire(self) -> None:
        self._create_folders()
        if fcntl is not None:
            self._lock()

    def _create_folders(self) -> None:
        missing = [p for p in (self.run.root, *self.run.root.parents) if not p.exists()]
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise _cannot_write(self.run.root, err, f"create the folder {folder}") from None
            self._created.append(folder)

    def _lock(self) -> None:
        busy = AdaptError(f"`output_dir` {self.run.root} is being written by another training (it holds "
                          f"{self.run.lock}); wait for it to finish, or choose another `output_dir=...`")
        for _ in range(3):  # a finishing run removes the file: if it went between our open and lock, reopen
            try:
                fd = os.open(self.run.lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise _cannot_write(self.run.root, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise busy from None
            if _is_file_at(fd, self.run.lock):
                self._fd = fd
                return
            os.close(fd)
        raise busy

    def write_marker(self, name: str) -> None:
        if self.run.marker.is_file():
            return
        try:
            atomic_write_json(self.run.marker, {"format": MARKER_FORMAT, "name": name})
        except OSError as err:
            raise _cannot_write(self.run.root, err) from None
        self._marked = True

    def release(self) -> None:
        """Unlock, and take back what the claim created when the run wrote nothing after it."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.run.lock.unlink()  # while locked: whoever opened it before sees it went, and reopens
            os.close(self._fd)
            self._fd = None
        try:
            left = {p.name for p in self.run.root.iterdir()}
        except OSError:
            return
        if self._marked and left <= {MARKER}:
            self.run.marker.unlink(missing_ok=True)
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------------
# Names that become file or folder names, and paths as they are shared.

_NAME = re.compile(r"[\w-][\w.-]{0,199}")


def name_problem(value: str, what: str) -> str | None:
    """A run's or a test split's name becomes a folder or file name: one path component, or it could write
    anywhere (`../../x`)."""
    if _NAME.fullmatch(value):
        return None
    return (f"{what} {value!r} must be one file name: letters, digits, `_`, `-` and `.`, not starting with "
            f"`.`, at most 200 characters; e.g. {safe_name(value)!r}")


def safe_name(text: str) -> str:
    """`text` made a valid name (for names the user did not write, such as a recipe file's stem)."""
    return re.sub(r"[^\w.-]+", "-", text).lstrip(".-")[:200] or "run"


def portable_paths(obj: object, root: str | Path) -> object:
    """A report or recipe (plain data) with every absolute path made one that names nothing of this machine:
    `<run>/...` inside the run folder `root`, else `./<name>`, the file or folder name (with its run folder's
    name for a part of a run, e.g. `./dapt-1/mlm`). Shared files have no use for this machine's folders, which
    may name a person (a home directory)."""
    if isinstance(obj, dict):
        return {k: portable_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_paths(v, root) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        path, root = Path(os.path.normpath(obj)), Path(os.path.normpath(root))
        if path == root or root in path.parents:
            return "/".join(("<run>", *path.relative_to(root).parts))
        keep = 2 if path.name in RUN_ENTRIES else 1
        return "./" + "/".join(path.parts[-keep:]).lstrip("/")
    return obj
