"""Shared work in a multi-process run, with its failure reaching every process: work one process does for all
(writing a file the others then read), and work every process does a share of (predicting with a teacher)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from adapt.core.errors import OtherProcessFailed

T = TypeVar("T")


def _one_line(error: Exception) -> str:
    """What the other processes are told of a failure: its type and first line, bounded."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def on_main_process(acc: Accelerator, work: Callable[[], None], what: str) -> None:
    """Run `work` on the main process while the others wait, and stop every process if it fails there: the main
    process raises its own error, the others an `OtherProcessFailed` that points at it.

    A plain barrier after `work` would leave the others waiting there for the distributed timeout (30 minutes by
    default) when the main process fails before reaching it: NCCL does not notice a peer that exited."""
    error = None
    if acc.is_main_process:
        try:
            work()
        except Exception as err:  # anything: a teacher that does not load, out of memory, a tokenizer error
            error = err
    if acc.num_processes > 1:
        shared = [None if error is None else _one_line(error)]
        broadcast_object_list(shared)  # also the barrier: the others read what the main process wrote
        if error is None and shared[0] is not None:
            raise OtherProcessFailed(f"the main process failed while {what}: {shared[0]}. This process stopped with "
                                     "it; the full error is in process 0's output")
    if error is not None:
        raise error


def on_every_process(acc: Accelerator, work: Callable[[], T], what: str) -> list[T]:
    """Run `work` on every process and return every process's result, in process order, on every process. If it
    fails on any process, every process stops: those where it failed raise their own error, the others an
    `OtherProcessFailed` that names the first that failed. Every process reaches the gather, failed or not, so none
    is left waiting in a collective."""
    result, error = None, None
    try:
        result = work()
    except Exception as err:  # anything: a teacher that does not load, out of memory on one device
        error = err
    if acc.num_processes == 1:
        if error is not None:
            raise error
        return [result]
    note = None if error is None else _one_line(error)
    gathered = gather_object([(note, None if error is not None else result)])
    if error is not None:
        raise error
    failed = [(rank, note) for rank, (note, _) in enumerate(gathered) if note is not None]
    if failed:
        rank, note = failed[0]
        raise OtherProcessFailed(f"process {rank} failed while {what}: {note}. This process stopped with it; the full "
                                 f"error is in process {rank}'s output")
    return [r for _, r in gathered]
