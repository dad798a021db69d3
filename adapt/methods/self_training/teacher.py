"""The mean teacher (Tarvainen & Valpola 2017): an exponential moving average of the student's weights that chooses
each round's pseudo-labels. An average over many steps is a smoother, better-calibrated model than the student of
the last step, so its confident predictions are less often the student's latest mistakes fed back.

The average covers the self-training rounds only: it starts as a copy of the source-trained student at the first
round's first step, and round 1's pseudo-labels come from that student itself. Averaging the source phase too made
the teacher the plain mean of a trajectory that starts at an untrained head (with the warm-up below, d = 0.999 is
that mean for the first 1,000 steps): on electronics -> dvd, 225 source steps in, it was confident (>= 0.9) about
208 of 1,200 target reviews where the student was about 650, and self-training with it and soft labels gained
nothing over source-only (77.5 against 82.0 without it; one seed).

The average is kept as buffers of a training-only head (`EMA_HEAD` in `AdaptModel.heads`): checkpoints save the
whole model's state dict, buffers included, so a resumed run continues the average bit for bit. It averages only the
classifier's trainable parameters: frozen ones (the encoder under `finetune: head`, the base weights under LoRA)
never change, so their average is themselves, and copying them would cost a second encoder for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from adapt.model.heads import classifier_of

EMA_HEAD = "ema"


def _buffer_name(param: str) -> str:
    return param.replace(".", "/")  # a buffer's name may not contain dots


class EmaTeacher(nn.Module):
    """θ_ema ← d_t·θ_ema + (1 − d_t)·θ after every optimizer step of the rounds, with d_t = min(d, t / (t + 1)) for
    the update that follows t earlier ones (counted in the `updates` buffer, so a resumed run continues the count).

    The warm-up of d_t is Tarvainen & Valpola's own: the first update copies the student (d_0 = 0), and until
    t / (t + 1) reaches d the average is the plain mean of the weights so far. It also makes the starting value
    irrelevant, so no process needs another's copy of it."""

    def __init__(self, classifier: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.names = [n for n, p in classifier.named_parameters() if p.requires_grad]
        for name, p in classifier.named_parameters():
            if p.requires_grad:
                self.register_buffer(_buffer_name(name), p.detach().clone())
        # Parameters of submodules hold a "/" here; only a top-level parameter could take the counter's name, and
        # register_buffer would silently replace its average.
        if "updates" in self.names:
            raise ValueError("the mean teacher keeps its update count as a buffer named `updates`, the name of a "
                             "top-level parameter of this classifier")
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def started(self) -> bool:
        """Whether the average holds any of the student's weights yet (before, it is only a placeholder)."""
        return int(self.updates) > 0

    def averaged(self) -> list[torch.Tensor]:
        """The averaged weights, in the order of `names`."""
        return [self.get_buffer(_buffer_name(n)) for n in self.names]

    def _student(self, classifier: nn.Module) -> list[torch.nn.Parameter]:
        params = dict(classifier.named_parameters())
        return [params[n] for n in self.names]

    def decay_at(self, updates: int) -> float:
        """d_t for the update that follows `updates` earlier ones."""
        return min(self.decay, updates / (updates + 1))

    @torch.no_grad()
    def update(self, classifier: nn.Module) -> None:
        """Fold the classifier's current weights in."""
        d = self.decay_at(int(self.updates))
        averaged = self.averaged()
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, [p.detach() for p in self._student(classifier)], alpha=1.0 - d)
        self.updates += 1

    @contextmanager
    def weights_in(self, classifier: nn.Module) -> Iterator[None]:
        """The classifier with the averaged weights in place of its own; its own put back exactly afterwards (copies,
        so the optimizer's references to the parameters stay valid)."""
        params = self._student(classifier)
        own = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, avg in zip(params, self.averaged()):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(params, own):
                    p.copy_(saved)


def update_teacher(loop) -> None:
    """`Phase.on_step` of the rounds: every process updates its own copy from the unwrapped model, the same weights
    everywhere after DDP's all-reduce, so the copies agree without a collective."""
    net = loop.accelerator.unwrap_model(loop.model, keep_torch_compile=False)
    net.heads[EMA_HEAD].update(classifier_of(net))


def ddp_ignored_buffers(model: nn.Module) -> list[str]:
    """The teacher's buffers by their names in `model`. DDP broadcasts every buffer from process 0 before each forward
    pass (a copy of the trainable classifier every step); each process's average is already the same."""
    return [f"heads.{EMA_HEAD}.{name}" for name, _ in model.heads[EMA_HEAD].named_buffers()]
