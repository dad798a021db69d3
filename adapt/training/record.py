"""What report.json records about how a run ran: the environment (processes, precision, device, versions, git
commit, data hashes) and the timing (throughput, padding, the token counts benchmarks derive FLOPs from)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch
from accelerate import Accelerator

from adapt.data.splits import Split
from adapt.training.accelerator import device_name


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import accelerate
    import datasets
    import peft
    import sklearn
    import transformers

    mods = {"torch": torch, "transformers": transformers, "accelerate": accelerate, "peft": peft,
            "datasets": datasets, "scikit-learn": sklearn}
    return {"python": platform.python_version(), **{k: m.__version__ for k, m in mods.items()}}


def environment(accelerator: Accelerator, precision_source: str, splits: dict[str, Split]) -> dict:
    return {
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "mixed_precision_source": precision_source,
        "device": device_name(accelerator),
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "data_sha256": {name: s.sha256 for name, s in splits.items()},
        "versions": versions(),
    }


def timing(state, eval_throughput: float, wall_seconds: float) -> dict:
    """Throughput over all processes; token counts let benchmarks compute padding and FLOP utilisation."""
    secs = max(state.train_seconds, 1e-9)
    return {
        "train_seconds": state.train_seconds, "train_samples_per_second": state.samples / secs,
        "train_tokens_per_second": state.real_tokens / secs,
        "train_padding_fraction": 1 - state.real_tokens / max(state.padded_tokens, 1),
        "train_real_tokens": state.real_tokens, "train_sum_len_sq": state.sum_len_sq,
        "eval_samples_per_second": eval_throughput, "wall_seconds": wall_seconds,
    }
