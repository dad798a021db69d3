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
    """One stretch of training. The first stream sets the epoch length; other streams are cycled alongside."""

    name: str
    streams: dict[str, Dataset]
    loss: LossFn
    epochs: int
    select: bool = True  # evaluate the selection split and keep the best weights


@dataclass
class MethodContext:
    recipe: Recipe
    splits: dict[str, Dataset]  # tokenised splits by name: source_train, target_train, target_unlabeled, ...


class Method(Protocol):
    def phases(self, ctx: MethodContext) -> list[Phase]: ...


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


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[name]()


def classifier_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's keyword inputs from a collated batch (drops labels and bookkeeping columns)."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


# Registration happens on import.
from adapt.methods import source_only  # noqa: E402,F401
