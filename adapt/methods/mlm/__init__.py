"""Masked-LM adaptation: `dapt` and `tapt` (Gururangan et al. 2020: continue MLM pretraining on domain or task
text, then fine-tune) and `udalm` (Karouzos et al. 2021: an MLM phase, then CE on source + lambda * MLM on target
in every step, so the encoder keeps modelling the target while it learns the task).

The MLM head (`head.py`: dense to the embedding width, activation, LayerNorm, decoder tied to the word embeddings)
is the checkpoint's own when it has one, in any family whose layout `head.LAYOUTS` names (BERT, RoBERTa, XLM-R,
ELECTRA's generator, DistilBERT, ModernBERT, DeBERTa-v2, MPNet), and starts fresh otherwise (the embedded
all-MiniLM-L6-v2, a sentence-embedding fine-tune, has none). After the MLM phase the encoder and head are saved to
`<run>/mlm/` (mlm.json records the head's shape), which `method.mlm.checkpoint` accepts to skip the phase in later
runs.

This file is the methods' card (options, registration, descriptions, report lines); `method.py` trains them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adapt.core.fields import option
from adapt.methods.registry import register_method, register_options


@dataclass(frozen=True)
class MlmOptions:
    steps: int = option(
        300,
        "Optimizer steps of the masked-LM phase (`dapt`, `tapt`, `udalm`). Budget it by time: an MLM step costs about "
        "2x a supervised one (about 2.3 s at batch 16 x 128 tokens on a 2-core CPU). The loss curve is in `train_log.jsonl`.",
    )
    probability: float = option(0.15, "Share of (non-special, non-padding) tokens selected for prediction; of those "
                                      "80% become [MASK], 10% a random token, 10% stay.")
    include_source: bool = option(False, "`dapt`/`udalm`: also train the masked LM on the source training texts.")
    lr: float | None = option(1e-4, "Peak learning rate of the MLM phase (null: `train.lr`). The MLM head starts fresh "
                                    "when the checkpoint has none, and a fresh head wants a higher rate.")
    checkpoint: str | None = option(
        None, "Skip the MLM phase and start from the `mlm/` folder an earlier `dapt`/`tapt`/`udalm` run wrote "
              "(encoder + MLM head), e.g. to reuse one adapted encoder per target domain across sources.", path=True,
    )

    def problems(self) -> list[str]:
        rules = (("steps", self.steps >= 1, ">= 1"), ("probability", 0 < self.probability < 1, "in (0, 1)"),
                 ("lr", self.lr is None or self.lr > 0, "> 0 or null"))
        out = [f"`method.mlm.{k}` must be {rule}, got {getattr(self, k)}" for k, ok, rule in rules if not ok]
        if self.checkpoint and self != dataclasses.replace(MlmOptions(), checkpoint=self.checkpoint):
            out.append("`method.mlm.checkpoint` skips the MLM phase, so the other `method.mlm.*` keys have no effect; "
                       "remove them (the checkpoint's own settings are recorded in its mlm.json)")
        return out


@dataclass(frozen=True)
class UdalmOptions:
    lambda_: float = option(1.0, "Weight of the target MLM loss in the mixed objective CE(source) + lambda * MLM(target).",
                            key="lambda")

    def problems(self) -> list[str]:
        return [] if self.lambda_ >= 0 else [f"`method.udalm.lambda` must be >= 0, got {self.lambda_}"]


def report_lines(summary: dict) -> list[str]:
    """Where the MLM head came from (pretrained, fresh, or a reused `mlm/` folder)."""
    return [f"MLM head: {summary['mlm_head']}.", ""] if "mlm_head" in summary else []


register_options(MlmOptions, section="mlm", help="Masked-LM phase of `dapt`, `tapt`, `udalm`.")
register_options(UdalmOptions, section="udalm", help="`udalm` settings.")
register_method(
    "dapt", impl="adapt.methods.mlm.method:Dapt", options=("mlm",), requires=("data.target.unlabeled",),
    description="masked-LM training on unlabelled target-domain text, then supervised fine-tuning (Gururangan et al. 2020)",
    report_lines=report_lines,
)
register_method(
    "tapt", impl="adapt.methods.mlm.method:Tapt", options=("mlm",),
    description="masked-LM training on the task's own training texts, then supervised fine-tuning (Gururangan et al. 2020)",
    report_lines=report_lines,
)
register_method(
    "udalm", impl="adapt.methods.mlm.method:Udalm", options=("mlm", "udalm"), requires=("data.target.unlabeled",),
    description="a masked-LM phase, then supervised loss on the source plus masked-LM loss on unlabelled target text at "
                "every step (Karouzos et al. 2021)",
    report_lines=report_lines,
)
