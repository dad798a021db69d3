"""`self_training`: pseudo-labelling rounds on the unlabelled target data.

Train on the labelled source data first (none with `source_epochs: 0`, for a stacked start that already learned
it); then, each round, predict the unlabelled target texts with the current (best-on-source-dev) model, keep the
predictions whose top probability reaches `threshold`, balance them across classes (the same number per class, the
most confident first, at most `max_per_class`), and train on source + pseudo-labelled target. Every round is
scored on the selection split (source dev by default) and keeps its best weights. Class balance matters: a source
model is often biased towards one class on the target, and unbalanced pseudo-labels feed that bias back.

Options beyond that (all off by default, which is the method as described above): soft or sharpened targets
instead of the argmax, a mean teacher (an EMA of the student's weights) choosing the pseudo-labels, an R-Drop
consistency term on target text, a per-class curriculum instead of the fixed threshold, and rounds without the
source data.

This file is the method's card (options, registration, description, report lines); `method.py` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adapt.core.fields import option
from adapt.methods.registry import register_method, register_options


@dataclass(frozen=True)
class SelfTrainingOptions:
    rounds: int = option(3, "Pseudo-labelling rounds after the source-only start.")
    source_epochs: int | None = option(
        None, "Epochs on the labelled source before round 1 (null: `train.epochs`). 0 starts the rounds from the model "
              "as loaded, and needs `model.init_from`: for a stacked run whose start already learned the source "
              "(DAPT -> self-training), where training on it again only makes round 1's teacher more confident.")
    threshold: float = option(0.9, "Keep a target prediction only if its top probability is at least this.")
    max_per_class: int | None = option(None, "At most this many pseudo-labels per class per round (null: no cap).")
    epochs: int = option(1, "Epochs over source + pseudo-labelled target in each round.")
    labels: Literal["hard", "soft", "sharpened"] = option(
        "hard", "What a pseudo-labelled row trains towards: `hard`, the predicted class; `soft`, the teacher's whole "
                "probability vector (cross-entropy against it); `sharpened`, that vector raised to 1/"
                "`sharpen_temperature` and renormalised (MixMatch).")
    sharpen_temperature: float = option(0.5, "T of `labels: sharpened`: p^(1/T) renormalised; below 1 sharpens.")
    ema_decay: float | None = option(
        None, "Mean teacher (Tarvainen & Valpola 2017): pseudo-labels are chosen by an exponential moving average of "
              "the student's trainable weights with this decay (e.g. 0.999), updated after every optimizer step of "
              "the rounds; it starts from the source-trained student, which chooses round 1's (null: the student "
              "chooses every round's).")
    consistency: float = option(
        0.0, "Weight of a consistency term in each round (R-Drop, Liang et al. 2021): the symmetric KL between two "
             "dropout passes over a batch of unlabelled target text (0: off; needs a model with dropout).")
    curriculum: bool = option(
        False, "Curriculum labelling (Cascante-Bermudez et al. 2021): instead of `threshold`, round r of R keeps per "
               "class the most confident r/R x `curriculum_max` of the rows predicted as that class, then balances.")
    curriculum_max: float = option(
        0.8, "The fraction the curriculum reaches in the last round. Below 1 because the rounds do not restart from "
             "the pretrained model as Curriculum Labeling does: the least confident fifth stays out of training.")
    keep_source: bool = option(True, "Train each round on the labelled source data too (false: pseudo-labelled target "
                                     "only).")

    def problems(self) -> list[str]:
        rules = (("rounds", self.rounds >= 1, ">= 1"),
                 ("source_epochs", self.source_epochs is None or self.source_epochs >= 0, ">= 0 or null"),
                 ("threshold", 0 < self.threshold <= 1, "in (0, 1]"),
                 ("max_per_class", self.max_per_class is None or self.max_per_class >= 1, ">= 1 or null"),
                 ("epochs", self.epochs >= 1, ">= 1"), ("sharpen_temperature", self.sharpen_temperature > 0, "> 0"),
                 ("ema_decay", self.ema_decay is None or 0 < self.ema_decay < 1, "in (0, 1) or null"),
                 ("consistency", self.consistency >= 0, ">= 0"),
                 ("curriculum_max", 0 < self.curriculum_max <= 1, "in (0, 1]"))
        return [f"`method.self_training.{k}` must be {rule}, got {getattr(self, k)}" for k, ok, rule in rules if not ok]


def checks(recipe) -> list[str]:
    """Rounds without a source phase pseudo-label with the model as loaded: only a trained classifier can."""
    if recipe.method.self_training.source_epochs == 0 and recipe.model.init_from is None:
        return ["`method.self_training.source_epochs: 0` starts round 1 from the model as loaded, and without "
                "`model.init_from` its classifier head is untrained, so round 1's pseudo-labels would be noise; set "
                "`model.init_from` to a finished run on this source, or give `source_epochs` >= 1"]
    return []


def _settings(r: dict) -> str:
    """How a round chose its pseudo-labels and what they train towards (summaries of older runs have only the
    threshold)."""
    if "curriculum_fraction" in r:
        text = f"curriculum: the top {r['curriculum_fraction']:.0%} per class"
    else:
        text = f"threshold {r['threshold']}"
    if "label_mode" in r:
        temperature = f" (T={r['sharpen_temperature']})" if "sharpen_temperature" in r else ""
        teacher = f"the EMA teacher (decay {r['ema_decay']})" if r.get("teacher") == "ema" else "the student"
        text += f"; {r['label_mode']} labels{temperature} chosen by {teacher}"
    return text


def report_lines(summary: dict) -> list[str]:
    """One line per round: how many pseudo-labels were kept, from what, and how."""
    lines = []
    for r in summary.get("rounds", []):
        lines.append(f"- round {r['round']}: {r['kept']} pseudo-labels kept of {r['candidates']} ({_settings(r)}; "
                     f"confident per class {r['confident_per_class']}, kept per class {r['kept_per_class']}, "
                     f"predicted per class {r['predicted_per_class']})")
        if r["kept"] == 0 and r["candidates"] and 0 in r["confident_per_class"]:
            # Seen on the Amazon sweep (B->K, seed 4): 165 confident positives, no confident negative, so nothing.
            empty = ", ".join(str(i) for i, n in enumerate(r["confident_per_class"]) if n == 0)
            lines.append(f"  Round {r['round']} kept none: no text predicted as class {empty} (in `data.label_names` "
                         "order) was confident enough, and class balance keeps as many of each class as the rarest "
                         "has, so the round trained on the source alone. A lower `method.self_training.threshold`, "
                         "or `curriculum: true` (a share of each class's own predictions), keeps some.")
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
    checks=checks,
)
