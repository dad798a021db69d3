"""Checkpoints: every piece of state that decides a run's result, written and read back without pickle.

A checkpoint is `<run>/checkpoints/step-<N>/`, complete or absent (built as `.tmp-step-<N>`, then renamed):

  checkpoint.json          format, processes, the size of train_log.jsonl, which optional parts are present
  train_state.json         the loop's TrainState: phase, epoch, batches drawn from each stream, steps, best score
  model.safetensors        the whole model: the classifier and the method's heads (DANN's discriminator, MLM head)
  optimizer.safetensors    the running phase's optimizer: each per-parameter state tensor, as `<param>.<name>`
  optimizer.json           its parameter groups and per-parameter values that are not tensors
  scheduler.json           the running phase's learning-rate schedule
  scaler.json              the fp16 loss scaler (fp16 runs only)
  rng/rank<k>.safetensors  process k's torch generator states: the CPU one and its accelerator device's
  rng/rank<k>.json         process k's python `random` and numpy global states
  best.safetensors         the trainable parameters at the running phase's best evaluation (once it has one)
  extra/<name>.safetensors state the model keeps outside its parameters (`ExtraState`, e.g. AdaLoRA's importance
                           estimates): its tensors (main process only: it is the same on every process)
  extra/<name>.json        its other values (AdaLoRA's current rank allocation)
  run_files/<dir>/         the method's own folders of the run directory as they were (`pseudo_labels/`, `mlm/`)

Only JSON and safetensors are read back (`torch.load` and pickle never are, since unpickling a crafted file runs
code), and every file is checked before anything is restored: a damaged or foreign checkpoint is refused with an
`AdaptError`. Under several processes the main process writes the shared files and each process its random
states; every failure is shared through a collective, so all processes stop together instead of waiting forever.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from adapt.core.errors import AdaptError
from adapt.core.fileio import replace_dir

FORMAT = 1
TMP_PREFIX = ".tmp-"
MANIFEST, TRAIN_STATE, MODEL = "checkpoint.json", "train_state.json", "model.safetensors"
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
SCHEDULER, SCALER = "scheduler.json", "scaler.json"
BEST, RUN_FILES = "best.safetensors", "run_files"


def _rng_files(rank: int) -> tuple[str, str]:
    return f"rng/rank{rank}.safetensors", f"rng/rank{rank}.json"


def _extra_files(name: str) -> tuple[str, str]:
    return f"extra/{name}.safetensors", f"extra/{name}.json"


class ExtraState(Protocol):
    """State that decides later steps but is neither a parameter nor the optimizer's, e.g. AdaLoRA's importance
    estimates (`adapt.model.peft_setup.checkpointed_state`): tensors (saved as safetensors) and JSON values. It must
    be the same on every process: only the main process's is written, and every process loads it."""

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]: ...

    def load_state_dict(self, tensors: dict[str, torch.Tensor], rest: dict) -> None: ...


@dataclass
class Contents:
    """What a checkpoint holds, as the loop hands it over."""

    model: torch.nn.Module  # unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_state: dict
    best: Path | None  # the current phase's best weights, once it has them
    run_files: list[Path]  # the method's folders in the run directory (those that exist are copied)
    train_log: Path
    extra: dict[str, ExtraState] = field(default_factory=dict)  # by name, a file name: [a-z0-9_]+


# ----------------------------------------------------------------------------------------------------------
# Failures, shared between processes.


def _errno_of(err: Exception) -> int | None:
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"os error (\d+)", str(err))  # safetensors reports I/O errors as "... (os error 28)"
    return int(found.group(1)) if found else None


def describe_os_error(err: Exception) -> str:
    """An I/O failure in words, saying so plainly when the disk (or a quota) is full."""
    code = _errno_of(err)
    text = os.strerror(code) if code else str(err)
    if code in (errno.ENOSPC, errno.EDQUOT):
        text += ": the disk (or your quota) is full"
    return text


def _raise_if_any(acc: Accelerator, error: str | None) -> None:
    """Raise on every process when any one failed. A collective: every process must reach it, which also makes it
    a barrier."""
    errors = [error] if error else []
    if acc.num_processes > 1:
        errors = [e for e in gather_object([error]) if e]
    if errors:
        raise AdaptError(error or f"another process failed: {errors[0]}")


# ----------------------------------------------------------------------------------------------------------
# Writing.


def _optimizer_parts(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, other = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                other.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "state": other}


def _rng_parts(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's random states: dropout and MLM masking draw from them, differently on each process."""
    tensors = {"cpu": torch.get_rng_state()}
    module = getattr(torch, device.type, None) if device.type != "cpu" else None
    if module is not None and hasattr(module, "get_rng_state"):
        tensors["device"] = module.get_rng_state(device)
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"random": [version, list(state), gauss],
                     "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj) + "\n")


def _write_shared(tmp: Path, acc: Accelerator, contents: Contents) -> None:
    """The files every process reads (main process only); the manifest last."""
    for stale in tmp.parent.glob(f"{TMP_PREFIX}*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    (tmp / "rng").mkdir(parents=True)
    _write_training_objects(tmp, acc, contents)
    _write_extra(tmp, contents.extra)
    _write_json(tmp / TRAIN_STATE, contents.train_state)
    if contents.best is not None:
        _link_or_copy(contents.best, tmp / BEST)
    kept = [d for d in contents.run_files if d.is_dir()]
    for folder in kept:
        shutil.copytree(folder, tmp / RUN_FILES / folder.name, copy_function=_link_or_copy)
    log_bytes = contents.train_log.stat().st_size if contents.train_log.exists() else 0
    _write_json(tmp / MANIFEST, {"format": FORMAT, "num_processes": acc.num_processes, "train_log_bytes": log_bytes,
                                 "best": contents.best is not None, "scaler": acc.scaler is not None,
                                 "run_files": [d.name for d in kept], "extra": sorted(contents.extra)})


def _write_training_objects(tmp: Path, acc: Accelerator, contents: Contents) -> None:
    # The heads (DANN's discriminator, the MLM head) are modules of the model, so they are in its file; tensors
    # that share memory (a tied decoder) are written once.
    save_model(contents.model, str(tmp / MODEL))
    tensors, rest = _optimizer_parts(contents.optimizer.state_dict())
    save_file(tensors, str(tmp / OPTIMIZER_TENSORS))
    _write_json(tmp / OPTIMIZER_JSON, rest)
    _write_json(tmp / SCHEDULER, contents.scheduler.state_dict())
    if acc.scaler is not None:
        _write_json(tmp / SCALER, acc.scaler.state_dict())


def _write_extra(tmp: Path, extra: dict[str, ExtraState]) -> None:
    for name, state in extra.items():
        tensors, rest = state.state_dict()
        (tmp / "extra").mkdir(exist_ok=True)
        save_file(tensors, str(tmp / _extra_files(name)[0]))
        _write_json(tmp / _extra_files(name)[1], rest)


def _link_or_copy(src: Path, dst: Path) -> None:
    # The best weights and the method's files are only ever replaced by a rename (a new file), never rewritten in
    # place, so a hard link keeps this version at no cost (the MLM folder holds a whole encoder).
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_rng(tmp: Path, acc: Accelerator) -> None:
    tensors, rest = _rng_parts(acc.device)
    names = _rng_files(acc.process_index)
    save_file(tensors, str(tmp / names[0]))
    _write_json(tmp / names[1], rest)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder to the disk before the rename publishes them (a crash of the machine must not
    leave a complete-looking checkpoint of empty files)."""
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError:  # some file systems cannot fsync a folder
            pass
        finally:
            os.close(fd)


def _attempt(final: Path, step: Callable[[], None]) -> str | None:
    try:
        step()
        return None
    except (OSError, SafetensorError) as err:
        return (f"could not write checkpoint {final}: {describe_os_error(err)}. The previous checkpoint is kept; fix "
                "this, then continue with the same command and `output_dir` (train.resume=auto)")


def write_checkpoint(acc: Accelerator, final: Path, contents: Contents) -> None:
    """Write `final` as a temporary folder renamed into place; on every process (collectives inside)."""
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"

    def finish() -> None:
        _fsync_tree(tmp)
        replace_dir(tmp, final)  # a checkpoint of the same step (a stop right after a periodic one) is replaced

    steps = [(acc.is_main_process, lambda: _write_shared(tmp, acc, contents)), (True, lambda: _write_rng(tmp, acc)),
             (acc.is_main_process, finish)]
    for mine, step in steps:
        try:
            _raise_if_any(acc, _attempt(final, step) if mine else None)
        except AdaptError:
            if acc.is_main_process:  # every process is past the step: nothing writes into `tmp` any more
                shutil.rmtree(tmp, ignore_errors=True)
            raise


# ----------------------------------------------------------------------------------------------------------
# Reading: every file checked first, then restored.


@dataclass
class Checkpoint:
    """A checkpoint whose files were all read (JSON) or checked (safetensors headers)."""

    path: Path
    manifest: dict
    train_state: dict
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    rng: dict
    extra: dict[str, object]  # the JSON part of each extra state, by name


def _refuse(path: Path, name: str, problem: str) -> AdaptError:
    return AdaptError(f"checkpoint {path}: {name} {problem}; it is damaged or was not written by adapt, and is not "
                      "loaded. Resume from another checkpoint (`train.resume=PATH`) or remove this one")


def _read_json(path: Path, name: str) -> object:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _refuse(path, name, f"is not a readable JSON file ({err})") from None


def _check_safetensors(path: Path, name: str) -> None:
    try:
        with safe_open(str(path / name), framework="pt"):
            pass
    except (OSError, SafetensorError) as err:
        raise _refuse(path, name, f"is not a readable safetensors file ({err})") from None


def _read_manifest(path: Path, num_processes: int) -> dict:
    if not (path / MANIFEST).exists():
        raise AdaptError(f"checkpoint {path} has no {MANIFEST}: it was written by an older adapt in Accelerate's "
                         "pickle format, which is not loaded because unpickling can run code. Start the run afresh "
                         "(`train.resume=never` in a new `output_dir`)")
    manifest = _read_json(path, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(path, MANIFEST, f"is not format {FORMAT}")
    log_bytes, flags = manifest.get("train_log_bytes"), (manifest.get("best"), manifest.get("scaler"))
    extra = manifest.setdefault("extra", [])  # absent from checkpoints of an adapt that saved none
    # The names become file names: nothing that could lead outside the checkpoint.
    names_ok = isinstance(extra, list) and all(isinstance(n, str) and re.fullmatch("[a-z0-9_]+", n) for n in extra)
    if not (isinstance(log_bytes, int) and log_bytes >= 0 and all(isinstance(f, bool) for f in flags) and names_ok):
        raise _refuse(path, MANIFEST, "has invalid fields")
    if manifest.get("num_processes") != num_processes:
        raise AdaptError(f"checkpoint {path} was written by {manifest.get('num_processes')} processes, this run has "
                         f"{num_processes}: each process's data shard and random state depend on it. Resume with "
                         f"{manifest.get('num_processes')} processes")
    return manifest


def _check_run_files(path: Path) -> None:
    """The method reads these back (pseudo-labels); they are JSON or safetensors like the rest."""
    for file in sorted((path / RUN_FILES).rglob("*")):
        name = str(file.relative_to(path))
        if file.suffix == ".json":
            _read_json(path, name)
        elif file.suffix == ".safetensors":
            _check_safetensors(path, name)


def _open(path: Path, rank: int, num_processes: int) -> Checkpoint:
    manifest = _read_manifest(path, num_processes)
    extra = manifest["extra"]
    for name in (MODEL, OPTIMIZER_TENSORS, _rng_files(rank)[0], *([BEST] if manifest.get("best") else []),
                 *(_extra_files(n)[0] for n in extra)):
        _check_safetensors(path, name)
    _check_run_files(path)
    return Checkpoint(path, manifest, _read_json(path, TRAIN_STATE), _read_json(path, OPTIMIZER_JSON),
                      _read_json(path, SCHEDULER), _read_json(path, SCALER) if manifest.get("scaler") else None,
                      _read_json(path, _rng_files(rank)[1]), {n: _read_json(path, _extra_files(n)[1]) for n in extra})


def open_checkpoint(acc: Accelerator, path: Path) -> Checkpoint:
    """Read and check every file of the checkpoint at `path` (on every process)."""
    ckpt, error = None, None
    try:
        ckpt = _open(path, acc.process_index, acc.num_processes)
    except AdaptError as err:
        error = str(err)
    _raise_if_any(acc, error)
    return ckpt


def _replace_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.restore")
    shutil.copy2(src, tmp)
    tmp.replace(dst)


def _restore_folder(src: Path, dst: Path) -> None:
    if not src.is_dir():  # written after the checkpoint by the run that was interrupted: not part of this state
        shutil.rmtree(dst, ignore_errors=True)
        return
    tmp = dst.with_name(f".{dst.name}.restore")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    replace_dir(tmp, dst)


def _restore_files(ckpt: Checkpoint, best: Path, run_files: list[Path], train_log: Path) -> None:
    # Lines logged after the checkpoint are logged again by the resumed run.
    if train_log.exists() and train_log.stat().st_size > ckpt.manifest["train_log_bytes"]:
        with open(train_log, "r+b") as fh:
            fh.truncate(ckpt.manifest["train_log_bytes"])
    if ckpt.manifest.get("best"):
        _replace_file(ckpt.path / BEST, best)
    else:
        best.unlink(missing_ok=True)
    for folder in run_files:
        _restore_folder(ckpt.path / RUN_FILES / folder.name, folder)


def restore_run_files(acc: Accelerator, ckpt: Checkpoint, best: Path, run_files: list[Path], train_log: Path) -> None:
    """Put the run directory's training files back as they were at the checkpoint: the best weights, the method's
    folders, the log. Files a killed run wrote later (a better score, the next round's pseudo-labels) must not leak
    into the resumed run."""
    error = None
    if acc.is_main_process:
        try:
            _restore_files(ckpt, best, run_files, train_log)
        except OSError as err:
            error = f"could not restore the run directory from checkpoint {ckpt.path}: {describe_os_error(err)}"
    _raise_if_any(acc, error)


def _optimizer_state(ckpt: Checkpoint, optimizer: torch.optim.Optimizer) -> dict:
    state: dict[int, dict] = {int(k): dict(v) for k, v in ckpt.optimizer["state"].items()}
    for key, tensor in load_file(str(ckpt.path / OPTIMIZER_TENSORS)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    groups = ckpt.optimizer["param_groups"]
    for live, saved in zip(optimizer.param_groups, groups):  # JSON has no tuples (AdamW's betas)
        for key, value in saved.items():
            if isinstance(live.get(key), tuple):
                saved[key] = tuple(value)
    return {"state": state, "param_groups": groups}


def _scheduler_state(ckpt: Checkpoint, scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    live = scheduler.state_dict()
    if not isinstance(ckpt.scheduler, dict) or set(ckpt.scheduler) != set(live):
        raise ValueError(f"{SCHEDULER} has the keys {sorted(ckpt.scheduler)}, this schedule {sorted(live)}")
    # Our schedules are plain functions, saved as None; never let a file set attributes on them.
    return {**ckpt.scheduler, "lr_lambdas": live.get("lr_lambdas")}


def _restore_rng(ckpt: Checkpoint, rank: int, device: torch.device) -> None:
    tensors = load_file(str(ckpt.path / _rng_files(rank)[0]))
    version, state, gauss = ckpt.rng["random"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = ckpt.rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["cpu"])
    if "device" in tensors and device.type != "cpu":  # (a GPU run resumed on a CPU keeps only the CPU state)
        getattr(torch, device.type).set_rng_state(tensors["device"], device)


def _restore_extra(ckpt: Checkpoint, extra: dict[str, ExtraState]) -> None:
    missing, unknown = sorted(set(extra) - set(ckpt.extra)), sorted(set(ckpt.extra) - set(extra))
    if missing:
        raise ValueError(f"it has no {', '.join(missing)} state (an older adapt did not save it), without which the "
                         "run would not continue as it would have; start it afresh (`train.resume=never` in a new "
                         "`output_dir`)")
    if unknown:
        raise ValueError(f"it has {', '.join(unknown)} state, which this run's model does not keep")
    for name, state in extra.items():
        rest = ckpt.extra[name]
        if not isinstance(rest, dict):
            raise ValueError(f"{_extra_files(name)[1]} is not a JSON object")
        state.load_state_dict(load_file(str(ckpt.path / _extra_files(name)[0])), rest)


def load_training_state(acc: Accelerator, ckpt: Checkpoint, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                        extra: dict[str, ExtraState]) -> None:
    """Model, optimizer, schedule, loss scaler, the model's extra state and random states from `ckpt` (on every
    process). The random states go last: nothing after them may draw before training continues."""
    error = None
    try:
        load_model(model, str(ckpt.path / MODEL), strict=True)  # read on the CPU, copied into the parameters
        optimizer.load_state_dict(_optimizer_state(ckpt, optimizer))
        scheduler.load_state_dict(_scheduler_state(ckpt, scheduler))
        if acc.scaler is not None and ckpt.scaler is not None:
            acc.scaler.load_state_dict(ckpt.scaler)
        _restore_extra(ckpt, extra)
        _restore_rng(ckpt, acc.process_index, acc.device)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, SafetensorError, OSError) as err:
        error = f"checkpoint {ckpt.path} does not fit this run: {err}"
    _raise_if_any(acc, error)
