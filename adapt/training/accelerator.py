"""The accelerator and its processes: precision (`auto` = bf16 where it is native), the DDP settings a method
needs, CPU threads per process, a check that `accelerate launch` started what it says, and a clean shutdown."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, TorchDynamoPlugin

from adapt.core.errors import AdaptError
from adapt.methods import method_class
from adapt.recipe import Recipe


def bf16_native() -> bool:
    """bf16 runs natively on Ampere+ GPUs and on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated (slow)."""
    if torch.cuda.is_available():
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation flag
            return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str) -> tuple[str, str]:
    """The effective precision and where it came from. A precision set through Accelerate wins over the recipe.

    `accelerate launch` always exports ACCELERATE_MIXED_PRECISION, as "no" when nothing was set, so only a
    value other than "no" is taken as an explicit Accelerate choice (use `train.mixed_precision=no` for fp32).
    """
    env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if env != "no":
        return env, "accelerate"
    if requested == "auto":
        return ("bf16" if bf16_native() else "no"), "auto"
    return requested, "recipe"


def setup_accelerator(recipe: Recipe) -> tuple[Accelerator, str]:
    precision, source = resolve_precision(recipe.train.mixed_precision)
    if precision == "fp16" and not torch.cuda.is_available():
        raise AdaptError("`train.mixed_precision=fp16` needs a CUDA GPU; use `bf16` or `no` on this machine")
    handlers = []
    if method_class(recipe.method.name).find_unused_parameters:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    dynamo = None
    if recipe.train.compile:
        # Regional compilation compiles one encoder layer and reuses it for the others: far less compile time.
        dynamo = TorchDynamoPlugin(backend="inductor", dynamic=True, use_regional_compilation=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision, kwargs_handlers=handlers,
                              dynamo_plugin=dynamo)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise AdaptError(
            f"{launched} processes were launched (WORLD_SIZE) but Accelerate sees {accelerator.num_processes}: each "
            "would train its own copy into the same directory. On a CPU machine launch with "
            "`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N ...`"
        )
    set_cpu_threads(accelerator, recipe.train.cpu_threads)
    return accelerator, source


def set_cpu_threads(accelerator: Accelerator, requested: int | None) -> None:
    """Torch's intra-op threads on CPU. `accelerate launch` without `--cpu` exports OMP_NUM_THREADS=1 to every
    process, which on a CPU-only machine halves training speed on 2 cores; spread the cores over the processes
    instead."""
    if accelerator.device.type != "cpu":
        return
    if requested is not None:
        torch.set_num_threads(requested)
        return
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ  # exported by `accelerate launch`
    if launched_by_accelerate and os.environ.get("OMP_NUM_THREADS") == "1":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // max(1, local)))


# How a collective fails when a peer process died (killed, out of memory, preempted): gloo sees the connection go,
# NCCL's watchdog aborts the communicator or times out.
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "communicator was aborted",
              "Watchdog caught collective operation timeout")


def lost_process_error(accelerator: Accelerator, err: BaseException) -> AdaptError | None:
    """One line for a run that lost one of its processes, instead of every survivor's gloo/NCCL traceback; None
    for any other error."""
    text = str(err)
    network = isinstance(err, (torch.distributed.DistNetworkError, torch.distributed.DistStoreError))
    if accelerator.num_processes < 2 or not (network or any(s in text for s in _PEER_LOST)):
        return None
    cause = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0])[:160]  # without gloo's source location
    return AdaptError(f"lost another process of this {accelerator.num_processes}-process run ({cause}); it was probably "
                      "killed (out of memory, preempted, a crash: see its output). Continue from the last checkpoint "
                      "with the same command and `output_dir` (train.resume=auto)")


def shutdown(accelerator: Accelerator) -> None:
    """End trackers and destroy the process group (a 2-process gloo run aborts at exit without it); reset
    Accelerate's process-wide state so another run can start in the same process."""
    from accelerate.state import AcceleratorState, GradientState

    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(accelerator.device)})"
    return f"cpu ({cpu_model()}, {len(os.sched_getaffinity(0))} cores)"
