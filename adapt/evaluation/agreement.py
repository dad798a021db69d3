"""Seed agreement: a label-free check that needs several runs of one setting.

Runs of one setting trained from different seeds tend to disagree where they are wrong (Jiang et al. 2022,
"Assessing generalization of SGD via disagreement"). So how often a run predicts, on the target's unlabelled text,
the same class as its other seeds says something about its target accuracy that no single run can say. On the
Amazon benchmark (docs/benchmarks.md) it ranked runs better than any criterion a run computes alone, most clearly
where the seeds train independently. Students of one teacher copy it and agree whether or not they are right: with
them among the candidates, choosing by agreement did worse than choosing on the source dev split.

Each run writes its final model's predictions on the label-free sample of the target text to
`predictions/target_unlabeled.jsonl` (id, predicted class, probabilities; see `score_label_free`), and `adapt
evaluate --unlabeled NAME=PATH` writes the same for other text to `predictions/unlabeled_NAME.jsonl`. The sample is
drawn with the run's seed, so when the text has more rows than `eval.label_free_examples` two seeds' samples
overlap only in part; agreement is measured on the ids both have. On the benchmark its correlation with accuracy
came mostly from ranking pairs, not the runs of one pair: it says more about which domain a setting transfers to
than about which of two close settings is better.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping

import numpy as np

UNLABELED_PREDICTIONS = "target_unlabeled"  # predictions/<this>.jsonl: the final model on the label-free sample


def unlabeled_predictions(name: str | None = None) -> str:
    """The predictions file (under `predictions/`, without `.jsonl`) of a run's final model on unlabelled text: its
    own target's label-free sample, or the text `adapt evaluate --unlabeled NAME=PATH` scored (`name`)."""
    return UNLABELED_PREDICTIONS if name is None else f"unlabeled_{name}"


# Recipe entries that may differ between the seeds of one setting. A stack's seeds each start from their own
# first-stage run, so `model.init_from` only counts as set or not.
SEED_ONLY = ("seed", "output_dir", "name")


def agreement_with_others(preds: Mapping[Hashable, Mapping[str, str]]) -> dict[Hashable, float | None]:
    """For each run (key), the mean over the other runs of the share of their common text ids on which both predict
    the same class; None for a run with no other run to compare with (or no common id)."""
    out: dict[Hashable, float | None] = {}
    for key, mine in preds.items():
        shares = [float(np.mean([mine[i] == other[i] for i in common]))
                  for k, other in preds.items() if k != key and (common := mine.keys() & other.keys())]
        out[key] = float(np.mean(shares)) if shares else None
    return out


def setting_key(recipe: dict) -> str:
    """What the seeds of one setting share: the recipe without its seed, output folder and name, with `init_from`
    reduced to whether it is set, and without `train.resume` and `train.cpu_threads` (how a run was started or
    where, not what it trains)."""
    rest = {k: v for k, v in recipe.items() if k not in SEED_ONLY}
    model = dict(rest.get("model") or {})
    model["init_from"] = model.get("init_from") is not None
    train = {k: v for k, v in (rest.get("train") or {}).items() if k not in ("resume", "cpu_threads")}
    return json.dumps({**rest, "model": model, "train": train}, sort_keys=True, default=str)
