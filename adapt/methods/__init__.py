"""The registry of adaptation methods.

A method decides *how the domains are used*; the training loop (`adapt.loop`) stays generic. A method returns
one or more `Phase`s: the data streams to draw from, the loss for one step, and how long to train. New methods
register with `@register_method("name")` and plug in without touching the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
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


LossFn = Callable[[torch.nn.Module, dict[str, dict[str, torch.Tensor]], StepInfo], LossOutput]


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


@dataclass
class MethodContext:
    recipe: Recipe
    splits: dict[str, Dataset]  # tokenised splits by name: source_train, target_train, target_unlabeled, ...
    tokenizer: Any = None
    model: Any = None  # the unwrapped model (classifier or `adapt.heads.AdaptModel`)
    run: Any = None  # the RunDir, for methods that keep files (pseudo-labels, the MLM-adapted encoder)


class Method(Protocol):
    # Recipe keys under `method.` the method reads, and data keys it needs (checked when the recipe is parsed).
    uses: tuple[str, ...]
    requires: tuple[str, ...]

    def phases(self, ctx: MethodContext) -> list[Phase]: ...

    def heads(self, recipe: Recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        """Training-only modules put beside the classifier (see `adapt.heads.AdaptModel`); {} for none."""
        ...


class BaseMethod:
    """Defaults for the optional parts of the protocol."""

    uses: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    # DDP must be told when some trainable parameters get no gradient on a step (e.g. the classifier head during
    # an MLM phase): with find_unused_parameters=False it would wait for them forever.
    find_unused_parameters: bool = False

    def heads(self, recipe: Recipe, classifier: torch.nn.Module, model_path: str) -> dict[str, torch.nn.Module]:
        return {}

    def prepare_model(self, model: torch.nn.Module, recipe: Recipe) -> None:
        """Called once the heads are attached, before training (e.g. to load a saved MLM phase)."""

    def summary(self, ctx: MethodContext) -> dict:
        """Method-specific facts for the report (beyond the losses, which the loop logs)."""
        return {}


_REGISTRY: dict[str, Callable[[], Method]] = {}


def register_method(name: str) -> Callable[[Any], Any]:
    """Class decorator adding a method to the registry; a duplicate name is a programming error."""

    def decorator(cls: Any) -> Any:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls
        cls.method_name = name
        return cls

    return decorator


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> Any:
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[name]


def get_method(name: str) -> Method:
    return method_class(name)()


def classifier_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's keyword inputs from a collated batch (drops labels and bookkeeping columns)."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


# Registration happens on import.
from adapt.methods import dann, mlm, self_training, source_only  # noqa: E402,F401
