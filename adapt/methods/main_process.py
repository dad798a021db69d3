"""Work one process does for all in a multi-process run (writing a file the others then read), with its failure
reaching every process."""

from __future__ import annotations

from collections.abc import Callable

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from adapt.core.errors import MainProcessFailed


def on_main_process(acc: Accelerator, work: Callable[[], None], what: str) -> None:
    """Run `work` on the main process while the others wait, and stop every process if it fails there: the main
    process raises its own error, the others a `MainProcessFailed` that points at it.

    A plain barrier after `work` would leave the others waiting there for the distributed timeout (30 minutes by
    default) when the main process fails before reaching it: NCCL does not notice a peer that exited."""
    error = None
    if acc.is_main_process:
        try:
            work()
        except Exception as err:  # anything: a teacher that does not load, out of memory, a tokenizer error
            error = err
    if acc.num_processes > 1:
        shared = [None if error is None else f"{type(error).__name__}: {error}".splitlines()[0][:300]]
        broadcast_object_list(shared)  # also the barrier: the others read what the main process wrote
        if error is None and shared[0] is not None:
            raise MainProcessFailed(f"the main process failed while {what}: {shared[0]}. This process stopped with "
                                    "it; the full error is in process 0's output")
    if error is not None:
        raise error
