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
