"""What a method's training side is made of: `Phase`s (data streams, a loss for one step, how long), the
`StepInfo` a loss may read, the `LossOutput` it returns, and `BaseMethod`, the defaults of the optional parts.

A method never touches the loop: the loop (`adapt.training.loop`) draws one batch per stream each step, calls the
phase's loss, and owns accumulation, clipping, the schedule, logging, selection and checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

    from adapt.recipe import Recipe


@dataclass
class StepInfo:
    """What a loss function may need to know about where training is."""

    step: int  # optimizer steps done so far in this phase
    total_steps: int  # optimizer steps planned for this phase

    @property
    def progress(self) -> float:
        """Training progress p in [0, 1], e.g. for DANN's lambda schedule."""
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass
class LossOutput:
    loss: torch.Tensor
    # Detached scalars to log (summed over steps on device, read back only when a log line is written).
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


# loss(model, {stream name: collated batch}, StepInfo) -> LossOutput
LossFn = Callable[[Any, dict[str, dict[str, Any]], StepInfo], LossOutput]


@dataclass
class Phase:
    """One stretch of training. The first stream sets the epoch length; other streams are cycled alongside.

    `streams` may be a function of the loop context, called when the phase starts: a phase that needs the
    model trained by the phases before it (self-training's pseudo-labels) builds its data then."""

    name: str
    streams: dict[str, Dataset] | Callable[[Any], dict[str, Dataset]]
    loss: LossFn
    epochs: int = 1
    select: bool = True  # evaluate the selection split and keep the best weights
    max_steps: int | None = None  # a budget in optimizer steps instead of whole epochs (MLM phases)
    lr: float | None = None  # peak learning rate of this phase (default: train.lr)
    head_lr: dict[str, float] | None = None  # peak learning rate of a method's head, by name in `heads()`
    after: Callable[[Any], None] | None = None  # called with the loop context on every process when the phase ends
    # Called with the loop context on every process right after each optimizer step, before the step counters
    # move on (a mean teacher's weight average); the unwrapped model is `accelerator.unwrap_model(ctx.model)`.
    on_step: Callable[[Any], None] | None = None


@dataclass
class MethodContext:
    recipe: Recipe
    splits: dict[str, Dataset]  # tokenised splits by name: source_train, target_train, target_unlabeled, ...
    tokenizer: Any = None
    model: Any = None  # the unwrapped model (classifier or `adapt.model.heads.AdaptModel`)
    run: Any = None  # the RunDir, for methods that keep files (pseudo-labels, the MLM-adapted encoder)


class BaseMethod:
    """The training side of a method. `phases()` is required; the rest are optional."""

    # DDP must be told when some trainable parameters get no gradient on a step (e.g. the classifier head during
    # an MLM phase): with find_unused_parameters=False it would wait for them forever.
    find_unused_parameters: bool = False
    # Folders of the run directory the method writes while training and may read back (self-training's
    # pseudo-labels). They are part of every checkpoint, and a resumed run gets them back exactly as they were then.
    # Their files must be replaced (`core.fileio`), never rewritten in place: checkpoints hold hard links to them.
    run_dirs: tuple[str, ...] = ()

    def phases(self, ctx: MethodContext) -> list[Phase]:
        raise NotImplementedError(f"{type(self).__name__} must return its training phases")

    def heads(self, recipe: Recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        """Training-only modules put beside the classifier, by name (see `adapt.model.heads.AdaptModel`): each is
        called as `head(last_hidden_states, argument)` inside the model's forward pass. {} for none."""
        return {}

    def prepare_model(self, model: torch.nn.Module, recipe: Recipe) -> None:
        """Called once the heads are attached, before training (e.g. to load a saved MLM phase)."""

    def summary(self, ctx: MethodContext) -> dict:
        """Method-specific facts for the report (beyond the losses, which the loop logs)."""
        return {}
