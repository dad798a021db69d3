"""Domain-shift diagnostics, written to `diagnostics.json` at evaluation time (they need the model and the data;
`adapt.evaluate_run RUN_DIR --diagnostics` recomputes them):

- proxy A-distance (Ben-David et al. 2007) between source and target texts on the encoder's [CLS]
  representation, for the pretrained encoder and the trained one: a linear classifier learns to tell the domains
  apart, its cross-validated error is eps, and PAD = 2 (1 - 2 eps) — 0 when the domains are indistinguishable
  to a linear probe, 2 when they are perfectly separable;
- vocabulary overlap between the domains' texts (Jaccard of the word types, and the share of the target's running
  words that occur in the source).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
from datasets import Dataset

from adapt.core.fileio import atomic_write_json
from adapt.core.rundir import RunDir
from adapt.data.features import Collator, classifier_inputs, eval_loader
from adapt.model.loading import ResolvedModel
from adapt.model.start import load_start_encoder
from adapt.recipe import Recipe

_WORD = re.compile(r"[a-z0-9']+")


def cls_features(encode, ds: Dataset, batch_size: int, collate: Collator, device: torch.device) -> np.ndarray:
    """[CLS] vectors of the last layer for every row of `ds`, in row order. `encode(inputs)` returns hidden states."""
    out = np.zeros((len(ds), 0), dtype=np.float32)
    parts, order = [], []
    with torch.inference_mode():
        for batch in eval_loader(ds, batch_size, collate):
            inputs = {k: v.to(device) for k, v in classifier_inputs(batch).items()}
            parts.append(encode(inputs)[:, 0].float().cpu().numpy())
            order.append(batch["idx"].numpy())
    if parts:
        out = np.empty((len(ds), parts[0].shape[1]), dtype=np.float32)
        out[np.concatenate(order)] = np.concatenate(parts)
    return out


def proxy_a_distance(source: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """PAD from the cross-validated error of a logistic-regression domain classifier (standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    acc = cross_val_score(probe, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean()
    error = 1.0 - float(acc)
    # A probe below chance on held-out folds is chance: PAD stays in [0, 2].
    return {"error": error, "pad": 2.0 * (1.0 - 2.0 * min(error, 0.5))}


def vocabulary_overlap(source_texts: list[str], target_texts: list[str]) -> dict:
    src = Counter(w for t in source_texts for w in _WORD.findall(t.lower()))
    tgt = Counter(w for t in target_texts for w in _WORD.findall(t.lower()))
    union = len(src.keys() | tgt.keys())
    covered = sum(c for w, c in tgt.items() if w in src)
    return {"source_types": len(src), "target_types": len(tgt),
            "jaccard": len(src.keys() & tgt.keys()) / max(1, union),
            "target_token_coverage": covered / max(1, sum(tgt.values()))}


def _sample(ds: Dataset, n: int, seed: int) -> Dataset:
    """At most `n` rows (seeded), renumbered so `idx` is the position in the sample."""
    if len(ds) > n:
        ds = ds.select(np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False)))
    return ds.map(lambda b, i: {"idx": i}, batched=True, with_indices=True, desc="diagnostics sample")


def compute_diagnostics(trained: torch.nn.Module, pretrained: torch.nn.Module, splits: dict, tokenized: dict,
                        recipe, collate: Collator, device: torch.device) -> dict:
    """Diagnostics between the source and target test splits (texts in `splits`, token ids in `tokenized`)."""
    n, seed = recipe.eval.diagnostics_examples, recipe.seed
    src_name, tgt_name = "source_test", "target_test"
    src, tgt = _sample(tokenized[src_name], n, seed), _sample(tokenized[tgt_name], n, seed + 1)
    bs = recipe.eval.batch_size
    was_training = trained.training
    trained.eval()
    pretrained.eval()
    pad = {
        "pretrained": proxy_a_distance(*(cls_features(lambda x: pretrained(**x).last_hidden_state, d, bs, collate, device)
                                         for d in (src, tgt))),
        "trained": proxy_a_distance(*(cls_features(lambda x: trained(**x, output_hidden_states=True).hidden_states[-1],
                                                   d, bs, collate, device) for d in (src, tgt))),
    }
    trained.train(was_training)
    vocab_target = "target_unlabeled" if "target_unlabeled" in splits else tgt_name
    vocab = vocabulary_overlap(splits["source_train"].dataset["text"], splits[vocab_target].dataset["text"])
    return {"source_split": src_name, "target_split": tgt_name, "examples_per_domain": min(len(src), len(tgt)),
            "representation": "[CLS] of the last encoder layer", "proxy_a_distance": pad,
            "vocabulary": {"source": "source_train", "target": vocab_target, **vocab}}


def write_diagnostics(run: RunDir, classifier, resolved: ResolvedModel, splits: dict, tokenized: dict, recipe: Recipe,
                      collate: Collator, device) -> None:
    """diagnostics.json (main process): domain-shift measures for the report (see above)."""
    # The encoder the run started from: the pretrained one, or `model.init_from`'s; the kept `model.num_layers`.
    pretrained = load_start_encoder(resolved, recipe.model.attention).to(device)
    atomic_write_json(run.diagnostics, compute_diagnostics(classifier, pretrained, splits, tokenized, recipe, collate,
                                                           device))
