"""Files that appear whole or not at all: text, JSON and JSON lines written through a temporary file and
`os.replace`, and directories built beside their destination and renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from adapt.core.errors import AdaptError


def _umask_from_proc() -> int | None:
    """The umask as Linux shows it (kernel >= 4.7): read without changing it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _umask_by_setting() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Without /proc the umask can only be read by setting it and setting it back, which another thread could see
# in between: that is done once, at import, as the process starts.
_UMASK_AT_IMPORT = _umask_from_proc()
if _UMASK_AT_IMPORT is None:
    _UMASK_AT_IMPORT = _umask_by_setting()


def current_umask() -> int:
    mask = _umask_from_proc()
    return _UMASK_AT_IMPORT if mask is None else mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and `os.replace`, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600 -> the mode `open` would give
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextmanager
def staged_dir(out: Path, what: str = "") -> Iterator[Path]:
    """A new directory beside `out`, renamed to `out` when the block succeeds and removed when it fails, so `out`
    is complete or absent. `out` must not exist or be an empty directory (which the rename replaces atomically,
    on POSIX). An OS error creating or renaming it becomes an `AdaptError` naming `what` (e.g. "--out") and `out`."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a crashed write by a process with the same pid
        tmp.mkdir()
    except OSError as err:
        raise AdaptError(f"cannot write {what} {out}: {err.strerror or err}".replace("  ", " ")) from None
    try:
        yield tmp
        os.replace(tmp, out)
    except OSError as err:
        raise AdaptError(f"cannot write {what} {out}: {err.strerror or err}".replace("  ", " ")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Put the finished directory `src` at `dst`, replacing what was there: the old one is moved aside first and
    removed only after the rename, so a crash in between leaves one of the two, never neither."""
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
