"""The Hugging Face Hub: a fast reachability check (offline runs must fail in seconds, not hang), and pushing a run."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from adapt.errors import AdaptError

_TRUE = {"1", "true", "yes", "on"}


def hub_offline_requested() -> bool:
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hub endpoint accepts a TCP connection within `timeout` seconds.

    Without this check a firewalled machine waits for library-level retries and timeouts (minutes) before
    failing; a TCP connect answers in at most `timeout`.
    """
    if hub_offline_requested():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def push_run(run_dir: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a run's `model/` folder and its reports to `repo_id`; returns the repository URL."""
    if not hub_reachable():
        raise AdaptError(
            f"cannot push to the Hub repository {repo_id!r}: the Hugging Face Hub is unreachable (offline or "
            "HF_HUB_OFFLINE=1); nothing was uploaded. Push later with the model in "
            f"{run_dir / 'model'}, or set hub.push=false."
        )
    from huggingface_hub import HfApi

    api = HfApi()  # the token comes from HF_TOKEN or `hf auth login`, never from the recipe
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(run_dir / "model"), commit_message="Upload model from adapt")
    for name in ("report.md", "report.json"):
        if (run_dir / name).exists():
            api.upload_file(path_or_fileobj=str(run_dir / name), path_in_repo=name, repo_id=repo_id,
                            commit_message=f"Upload {name} from adapt")
    return str(url)
