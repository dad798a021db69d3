"""`entmin`: entropy minimisation on the target (Grandvalet & Bengio 2005)."""

from __future__ import annotations

from dataclasses import dataclass

from adapt.core.fields import option
from adapt.methods.registry import register_method, register_options


@dataclass(frozen=True)
class EntminOptions:
    weight: float = option(0.1, "Weight of the mean target prediction entropy in CE(source) + weight * H(target).")

    def problems(self) -> list[str]:  # checked when the recipe is parsed, with every other problem
        return [] if self.weight >= 0 else [f"`method.entmin.weight` must be >= 0, got {self.weight}"]


register_options(EntminOptions, section="entmin", help="`entmin` settings.")   # -> method.entmin.weight
register_method(
    "entmin",
    impl="adapt.methods.entmin.method:Entmin",        # imported only when a run starts
    description="supervised loss on the source plus the entropy of the predictions on unlabelled target text "
                "(Grandvalet & Bengio 2005)",         # the model card's and report's sentence
    options=("entmin",),                               # other methods' keys are refused with this one
    requires=("data.target.unlabeled",),               # checked when the recipe is parsed
)
