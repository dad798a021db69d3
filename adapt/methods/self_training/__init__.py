"""`self_training`: pseudo-labelling rounds on the unlabelled target data.

Train on the labelled source data first; then, each round, predict the unlabelled target texts with the current
(best-on-source-dev) model, keep the predictions whose top probability reaches `threshold`, balance them across
classes (the same number per class, the most confident first, at most `max_per_class`), and train on source +
pseudo-labelled target. Every round is scored on the selection split (source dev by default) and keeps its best
weights. Class balance matters: a source model is often biased towards one class on the target, and unbalanced
pseudo-labels feed that bias back.

This file is the method's card (options, registration, description, report lines); `method.py` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapt.core.fields import option
from adapt.methods.registry import register_method, register_options


@dataclass(frozen=True)
class SelfTrainingOptions:
    rounds: int = option(3, "Pseudo-labelling rounds after the source-only start.")
    threshold: float = option(0.9, "Keep a target prediction only if its top probability is at least this.")
    max_per_class: int | None = option(None, "At most this many pseudo-labels per class per round (null: no cap).")
    epochs: int = option(1, "Epochs over source + pseudo-labelled target in each round.")

    def problems(self) -> list[str]:
        rules = (("rounds", self.rounds >= 1, ">= 1"), ("threshold", 0 < self.threshold <= 1, "in (0, 1]"),
                 ("max_per_class", self.max_per_class is None or self.max_per_class >= 1, ">= 1 or null"),
                 ("epochs", self.epochs >= 1, ">= 1"))
        return [f"`method.self_training.{k}` must be {rule}, got {getattr(self, k)}" for k, ok, rule in rules if not ok]


def report_lines(summary: dict) -> list[str]:
    """One line per round: how many pseudo-labels were kept, and from what."""
    lines = [f"- round {r['round']}: {r['kept']} pseudo-labels kept of {r['candidates']} (threshold {r['threshold']}; "
             f"confident per class {r['confident_per_class']}, kept per class {r['kept_per_class']}, predicted per "
             f"class {r['predicted_per_class']})" for r in summary.get("rounds", [])]
    return [*lines, ""] if lines else []


register_options(SelfTrainingOptions, section="self_training", help="`self_training` settings.")
register_method(
    "self_training",
    impl="adapt.methods.self_training.method:SelfTraining",
    description="rounds of confident, class-balanced pseudo-labels on unlabelled target text, retraining on source "
                "plus pseudo-labelled target",
    options=("self_training",),
    requires=("data.target.unlabeled",),
    report_lines=report_lines,
)
