"""`sequential`: supervised on the source, then on the labelled target data."""

from __future__ import annotations

from adapt.methods.base import BaseMethod, MethodContext, Phase
from adapt.methods.source_only.method import supervised_loss


class Sequential(BaseMethod):
    def phases(self, ctx: MethodContext) -> list[Phase]:
        return [
            Phase("source", {"labeled": ctx.splits["source_train"]}, supervised_loss, epochs=ctx.recipe.train.epochs),
            Phase("target", {"labeled": ctx.splits["target_train"]}, supervised_loss,
                  epochs=ctx.recipe.method.target_epochs),
        ]
