"""Classification metrics with scikit-learn (`evaluate.load` fetches metric scripts from the Hub)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (`confusion[i][j]`: true i predicted as j)."""
    labels = list(range(len(label_names)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Over every label in the label set, so a class the model never predicts counts as F1 = 0.
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_f1": {name: float(f) for name, f in zip(label_names, per_class)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


# ----------------------------------------------------------------------------------------------------------
# Uncertainty: bootstrap intervals and calibration. Vectorised (counts per resample), so 1,000 resamples of a
# few thousand predictions take milliseconds.


def _resample_scores(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of each resample (`idx`: resamples x n row indices)."""
    t, p = y_true[idx], y_pred[idx]
    acc = (t == p).mean(axis=1)
    f1 = np.zeros(len(idx))
    for c in range(k):
        tp = ((t == c) & (p == c)).sum(axis=1)
        fp = ((t != c) & (p == c)).sum(axis=1)
        fn = ((t == c) & (p != c)).sum(axis=1)
        denom = 2 * tp + fp + fn
        f1 += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return acc, f1 / k


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int, resamples: int = 1000,
                 seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of accuracy and macro-F1, resampling examples with replacement."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    idx = np.random.default_rng(seed).integers(0, len(y_true), size=(resamples, len(y_true)))
    acc, f1 = _resample_scores(y_true, y_pred, idx, num_labels)
    return {"accuracy": np.percentile(acc, [2.5, 97.5]).tolist(), "macro_f1": np.percentile(f1, [2.5, 97.5]).tolist()}


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_labels: int,
                     resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Difference b - a in accuracy and macro-F1 on the same examples: the observed difference, its 95% interval,
    and a two-sided bootstrap p-value (twice the share of resampled differences on the other side of 0)."""
    y_true, pred_a, pred_b = map(np.asarray, (y_true, pred_a, pred_b))
    idx = np.random.default_rng(seed).integers(0, len(y_true), size=(resamples, len(y_true)))
    full = np.arange(len(y_true))[None, :]
    out = {}
    for i, metric in enumerate(("accuracy", "macro_f1")):
        observed = _resample_scores(y_true, pred_b, full, num_labels)[i][0] - _resample_scores(y_true, pred_a, full, num_labels)[i][0]
        diffs = _resample_scores(y_true, pred_b, idx, num_labels)[i] - _resample_scores(y_true, pred_a, idx, num_labels)[i]
        p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
        out[metric] = {"difference": float(observed), "ci95": np.percentile(diffs, [2.5, 97.5]).tolist(),
                       "p_value": float(min(1.0, p))}
    return out


def calibration(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error over equal-width confidence bins, and the bins for a reliability diagram."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = (pred == y_true).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        acc, mean_conf = correct[mask].mean(), conf[mask].mean()
        ece += mask.mean() * abs(acc - mean_conf)
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(mask.sum()),
                      "accuracy": float(acc), "confidence": float(mean_conf)})
    return {"ece": float(ece), "bins": table}
