"""`sequential`: source epochs, then epochs on the labelled target data (the few-shot target setting)."""

from __future__ import annotations

from dataclasses import dataclass

from adapt.core.fields import option
from adapt.methods.registry import register_method, register_options


@dataclass(frozen=True)
class SequentialOptions:
    target_epochs: int = option(3, "`sequential`: epochs on the labelled target data after the source epochs.")

    def problems(self) -> list[str]:
        return [] if self.target_epochs >= 1 else [f"`method.target_epochs` must be >= 1, got {self.target_epochs}"]


register_options(SequentialOptions, section=None)
register_method(
    "sequential",
    impl="adapt.methods.sequential.method:Sequential",
    description="supervised training on the source, then on the few labelled target examples",
    options=("target_epochs",),
    requires=("data.target.train",),
)
