"""A test helper, not a test: run `adapt train` and signal the process at a chosen point, to show that a run
killed anywhere resumes to the uninterrupted result. The library has no test hooks; this patches it from outside.

A point is `KIND:PHASE:N`: the N-th event (from 1) of that kind in phase PHASE (from 0):

  step   a micro-batch's backward pass is done, its optimizer step is not (inside an epoch)
  eval   an evaluation of the selection split is done (its best weights written; no checkpoint since)
  start  a phase has been built (the MLM folder and a round's pseudo-labels were written before it)
  end    training is over, the final evaluation has not started (PHASE and N unused)
  write  a checkpoint's N-th tensor file (counting over checkpoints) has been written: one is half-written

As a script (`python kill_points.py RECIPE KEY=VALUE...`, e.g. under `accelerate launch`) it reads the point from
ADAPT_TEST_KILL, and ADAPT_TEST_KILL_RANK to stop one process of several; ADAPT_TEST_KILL_STAMP names a file that
gets the time of the kill.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def arm(point: str, sig: int = signal.SIGKILL, stamp: str | None = None) -> None:
    import adapt.training.checkpoint as checkpoint
    import adapt.training.loop as loop
    import adapt.training.run as run

    kind, phase, n = point.split(":")
    seen = [0]

    def fire(at_phase: int) -> None:
        if kind not in ("end", "write") and at_phase != int(phase):
            return
        seen[0] += 1
        if seen[0] == int(n):
            if stamp:
                Path(stamp).write_text(f"{time.time()}\n")
            os.kill(os.getpid(), sig)

    def after(fn, phase_of):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            fire(phase_of(*args))
            return out
        return wrapped

    if kind == "step":
        loop.PhaseRunner._micro_step = after(loop.PhaseRunner._micro_step, lambda self, *a: self.ctx.state.phase)
    elif kind == "eval":
        loop.evaluate_selection = after(loop.evaluate_selection, lambda ctx: ctx.state.phase)
    elif kind == "start":
        loop.PhaseRunner.__init__ = after(loop.PhaseRunner.__init__, lambda self, *a: self.ctx.state.phase)
    elif kind == "end":
        run.train = after(run.train, lambda *a: 0)
    elif kind == "write":
        checkpoint.save_file = after(checkpoint.save_file, lambda *a: 0)
    else:
        raise ValueError(f"unknown kill point {point!r}")


def run_child(argv: list[str], env: dict[str, str], point: str, sig: int, log: str) -> None:
    """The body of a forked process: `adapt train argv`, output into `log`, signalled at `point`."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    arm(point, sig)
    from adapt.train import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    point, rank = os.environ.get("ADAPT_TEST_KILL"), os.environ.get("ADAPT_TEST_KILL_RANK")
    if point and (rank is None or os.environ.get("RANK") == rank):
        arm(point, signal.SIGKILL, os.environ.get("ADAPT_TEST_KILL_STAMP"))
    from adapt.train import main

    sys.exit(main(sys.argv[1:]))
