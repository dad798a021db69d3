"""Classification metrics against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from adapt.evaluation.metrics import classification_metrics

# 7 examples, 3 classes; class `c` is never predicted.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 0, 1])


def test_metrics_match_a_hand_computation():
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert m["n"] == 7
    assert m["accuracy"] == pytest.approx(4 / 7)
    # a: TP 2, FP 1, FN 1 -> P = R = 2/3.  b: TP 2, FP 2, FN 0 -> P = 1/2, R = 1 -> F1 = 2/3.  c: TP 0 -> F1 = 0.
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 0.0})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # confusion[i][j]: true i predicted as j.
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 1, 0]]


def test_metrics_are_plain_json_types():
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert type(m["n"]) is int and type(m["accuracy"]) is float and type(m["macro_f1"]) is float
    assert all(type(v) is float for v in m["per_class_f1"].values())
    assert all(type(x) is int for row in m["confusion"] for x in row)
