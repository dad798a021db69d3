"""A checkpoint's weight files, and their sha256: what a run records of the exact weights it started from, and
what the MLM head is read from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HASH_LIMIT = 2 * 1024**3  # hash weights up to this many bytes (MPNet's 438 MB took 0.5 s here; cheap next to using them)


def checkpoint_files(model_path: str) -> list[Path]:
    """The checkpoint's safetensors files: a local folder's, or a Hub model's already in the local cache (it was
    loaded from them). Nothing is downloaded."""
    if Path(model_path).is_dir():
        return sorted(Path(model_path).glob("*.safetensors"))
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(model_path, "model.safetensors.index.json")
    if isinstance(index, str):
        shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        return [p for p in (Path(index).parent / s for s in shards) if p.is_file()]
    single = try_to_load_from_cache(model_path, "model.safetensors")
    return [Path(single)] if isinstance(single, str) else []


def files_sha256(files: list[Path]) -> dict[str, str] | None:
    """{file name: sha256}; None when there are none or they are over `HASH_LIMIT` together."""
    if not files or sum(f.stat().st_size for f in files) > HASH_LIMIT:
        return None
    return {f.name: file_sha256(f) for f in files}


def file_sha256(path: Path) -> str:
    """One file's sha256, read in 1 MiB chunks (no size limit: a caller that must have the hash asks for it here)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
