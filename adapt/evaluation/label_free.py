"""Label-free model selection criteria and failure alarms: what can be said about a model on the target domain
without target labels, which is the situation domain adaptation is for.

Pure numpy (scikit-learn for DEV's domain classifier, imported when DEV runs); the predictions and features come
from `adapt.evaluation.scoring.label_free_inputs`. Every criterion is a number for one model; `CRITERIA` says
which way is better and what it needs, so the training loop can select on any of them without naming one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


def _entropies(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    return -(p * np.log(p)).sum(-1)


def entropy(probs: np.ndarray) -> float:
    """Mean prediction entropy over the target sample (Grandvalet & Bengio 2005; as a validation score e.g. Morerio
    et al. 2018). Lower is better: more confident target predictions. It rewards collapse onto one class too, which
    is why `im` and `class_balance` exist."""
    return float(_entropies(probs).mean())


def im(probs: np.ndarray) -> float:
    """Information maximisation, H(mean p) - mean H(p) (Shi & Sha 2012; SHOT, Liang et al. 2020): confident
    predictions that still use every class. Higher is better; 0 when every prediction is the same distribution."""
    p = np.asarray(probs, dtype=np.float64)
    return float(_entropies(p.mean(0)[None])[0] - _entropies(p).mean())


def class_balance(probs: np.ndarray, prior: np.ndarray) -> float:
    """KL(mean predicted target class distribution || source label prior): how far the target predictions drift
    from the class shares the model was trained on. Lower is better; 0 when they match. (Assumes little label shift
    between the domains, which is what makes it a warning sign rather than a fact.)"""
    q = np.clip(np.asarray(probs, dtype=np.float64).mean(0), _EPS, 1.0)
    pr = np.clip(np.asarray(prior, dtype=np.float64), _EPS, 1.0)
    return float((q * np.log(q / pr)).sum())


def snd(probs: np.ndarray, temperature: float = 0.05, max_rows: int | None = None, seed: int = 0) -> float:
    """Soft neighbourhood density (Saito et al. 2021, "Tune it the right way"): L2-normalised softmax outputs,
    their cosine similarities to every other target sample (self excluded) divided by the temperature, a softmax per
    row, and the mean entropy of those rows. Higher is better: each sample has many close neighbours, i.e. the
    target predictions form dense clusters. At most `max_rows` rows (seeded) keep the N x N matrix bounded."""
    p = np.asarray(probs, dtype=np.float64)
    if max_rows is not None and len(p) > max_rows:
        p = p[np.random.default_rng(seed).choice(len(p), max_rows, replace=False)]
    z = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), _EPS)
    sim = z @ z.T / temperature
    np.fill_diagonal(sim, -np.inf)  # a sample is not its own neighbour
    sim -= sim.max(1, keepdims=True)
    w = np.exp(sim)
    w /= w.sum(1, keepdims=True)
    return float(_entropies(w).mean())


def dev(source_features: np.ndarray, source_losses: np.ndarray, target_features: np.ndarray, folds: int = 5,
        seed: int = 0) -> float:
    """Deep Embedded Validation (You et al. 2019, "Towards Accurate Model Selection in Deep Unsupervised Domain
    Adaptation"): the labelled source dev loss, importance-weighted towards the target. Lower is better.

    A logistic-regression domain classifier on the model's features tells source dev (0) from target (1); its
    out-of-fold probabilities (`folds`-fold cross-validation, so no example is weighted by a classifier that saw it,
    as the paper holds out part of the data) give w(x) = p_t(x)/p_s(x) = (n_s/n_t) P(t|x)/P(s|x). The weighted losses
    L = w*loss get the paper's control variate: eta = -Cov(L, w)/Var(w), DEV = mean(L) + eta*mean(w) - eta, which
    cancels much of the variance the weights add (E[w] = 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, xt = np.asarray(source_features, dtype=np.float64), np.asarray(target_features, dtype=np.float64)
    x, y = np.concatenate([xs, xt]), np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    folds = max(2, min(folds, len(xs), len(xt)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p_target = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[: len(xs), 1]
    p_target = np.clip(p_target, 1e-4, 1 - 1e-4)  # a perfectly separating classifier must not give infinite weights
    w = (len(xs) / len(xt)) * p_target / (1 - p_target)
    weighted = w * np.asarray(source_losses, dtype=np.float64)
    var = w.var(ddof=1) if len(w) > 1 else 0.0
    eta = -np.cov(weighted, w)[0, 1] / var if var > _EPS else 0.0
    return float(weighted.mean() + eta * w.mean() - eta)


def atc(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray) -> float:
    """Average thresholded confidence (Garg et al. 2022, "Leveraging Unlabeled Data to Predict Out-of-Distribution
    Performance"), with the negative-entropy score the paper found best (ATC-NE): an estimate of the target accuracy.
    A threshold t is set on the labelled source dev split so that the share of its examples scoring above t equals
    the model's source dev accuracy; the estimate is the share of target examples scoring above t. Higher is better,
    and unlike the other criteria it reads as an accuracy (0..1) that can be set beside the source dev accuracy.

    The paper first calibrates the model by temperature scaling on source dev; with two classes that changes no
    example's rank, so the estimate is the same without it, and it is left out for every label set (with more classes
    the entropy order can move slightly under a temperature)."""
    s_probs = np.asarray(source_probs, dtype=np.float64)
    errors = int((s_probs.argmax(-1) != np.asarray(source_labels)).sum())
    if errors == 0:  # no source error to calibrate on: every target example is above the threshold
        return 1.0
    threshold = np.sort(-_entropies(s_probs))[errors - 1]  # `errors` source examples score at or below it
    return float((-_entropies(target_probs) > threshold).mean())


def domain_balance(domain_acc: Sequence[float]) -> float:
    """|mean logged domain accuracy - 0.5| of an adversarial method's discriminator (DANN, Ganin et al. 2016):
    0 when the discriminator cannot tell the domains apart, which is the equilibrium adversarial training aims at.
    Lower is better. From the training log, not from predictions."""
    return float(abs(np.mean(domain_acc) - 0.5))


@dataclass(frozen=True)
class Criterion:
    fn: Callable[..., float]
    higher_is_better: bool
    # What it needs: "target_probs", "source_prior", "dev_inputs" (source dev features and losses plus target
    # features), "source_dev_probs" (source dev predictions and labels) or "log:<key>" (a quantity the method logs
    # while training).
    needs: tuple[str, ...]


CRITERIA: dict[str, Criterion] = {
    "entropy": Criterion(entropy, False, ("target_probs",)),
    "im": Criterion(im, True, ("target_probs",)),
    "class_balance": Criterion(class_balance, False, ("target_probs", "source_prior")),
    "snd": Criterion(snd, True, ("target_probs",)),
    "dev": Criterion(dev, False, ("dev_inputs",)),
    "atc": Criterion(atc, True, ("target_probs", "source_dev_probs")),
    "domain_balance": Criterion(domain_balance, False, ("log:domain_acc",)),
}
# Selection on these compares models on labelled dev data instead.
LABELLED_SELECTION = ("source_dev", "target_dev")
LOG_KEY = "domain_acc"  # the only log-derived criterion's input


@dataclass
class LabelFreeInputs:
    """Everything the criteria read, as plain arrays (identical on every process: gathered before this point)."""

    target_probs: np.ndarray  # softmax outputs on the target unlabelled sample
    source_prior: np.ndarray  # label shares of the source training data
    source_features: np.ndarray | None = None  # source dev features (DEV)
    source_losses: np.ndarray | None = None  # per-example cross-entropy on source dev (DEV)
    target_features: np.ndarray | None = None  # target sample features (DEV)
    source_probs: np.ndarray | None = None  # softmax outputs on source dev (ATC)
    source_labels: np.ndarray | None = None  # source dev labels (ATC)


def compute_criteria(inputs: LabelFreeInputs, domain_acc: Sequence[float] = (), snd_rows: int | None = None,
                     seed: int = 0) -> dict[str, float]:
    """Every criterion the inputs allow, by name (`domain_balance` only when `domain_acc` values were logged)."""
    out = {"entropy": entropy(inputs.target_probs), "im": im(inputs.target_probs),
           "class_balance": class_balance(inputs.target_probs, inputs.source_prior),
           "snd": snd(inputs.target_probs, max_rows=snd_rows, seed=seed)}
    if inputs.source_features is not None and inputs.target_features is not None:
        out["dev"] = dev(inputs.source_features, inputs.source_losses, inputs.target_features, seed=seed)
    if inputs.source_probs is not None and inputs.source_labels is not None:
        out["atc"] = atc(inputs.source_probs, inputs.source_labels, inputs.target_probs)
    if len(domain_acc):
        out["domain_balance"] = domain_balance(domain_acc)
    return out


def selection_value(name: str, value: float) -> float:
    """The criterion as a score where higher is better, for the loop's improvement test."""
    return value if CRITERIA[name].higher_is_better else -value


def logged_values(log: Sequence[dict], key: str, after_step: int = -1, phase: int | None = None) -> list[float]:
    """`key` from the training log's loss lines after `after_step` (and in `phase`, when given)."""
    return [float(r[key]) for r in log if key in r and r.get("global_step", 0) > after_step
            and (phase is None or r.get("phase") == phase)]


# ----------------------------------------------------------------------------------------------------------
# Alarms: plain-English warnings from unlabelled target text and the training log alone.

# Total-variation distance between the predicted target class shares and the source prior above which the
# predictions are called collapsed. 0.25 is a 75/25 split where the source is 50/50: larger than the label shift
# between the review domains we know of, yet well below the failure we must catch (a DANN run that called 82 of
# 100 negative reviews positive: ~91/9 predicted, TV 0.41). A healthy 55/45 is TV 0.05.
COLLAPSE_TV = 0.25
# A discriminator whose domain accuracy over the last quarter of training averages above this (or below 1 - this)
# never reached the 0.5 equilibrium: above, the features stayed separable (the adversary lost); below, the encoder
# flipped the domains instead of confusing them (docs on `method.dann.lr`). 0.9 leaves room for the noise of
# batch-level accuracy around a true equilibrium (a batch of 16+16 is rarely 90% right by chance).
BALANCE_LIMIT = 0.9


def collapse_alarm(predicted: dict[str, float], prior: dict[str, float]) -> str | None:
    """A warning when the predicted target class shares are far from the source prior (see `COLLAPSE_TV`)."""
    tv = 0.5 * sum(abs(predicted.get(k, 0.0) - prior.get(k, 0.0)) for k in prior.keys() | predicted.keys())
    if tv <= COLLAPSE_TV:
        return None
    top = max(predicted, key=lambda k: predicted[k] - prior.get(k, 0.0))
    return (f"Target predictions collapse towards `{top}`: {predicted[top]:.0%} of the unlabelled target texts are "
            f"predicted `{top}`, against {prior.get(top, 0.0):.0%} of the source training labels (total-variation "
            f"distance {tv:.2f} > {COLLAPSE_TV}). Unless the target's classes really are this skewed, the model has "
            "stopped telling the classes apart on the target.")


def balance_alarm(domain_acc: Sequence[float]) -> str | None:
    """A warning when the discriminator's logged domain accuracy over the last quarter of training stays far from
    0.5 (see `BALANCE_LIMIT`)."""
    if not len(domain_acc):
        return None
    last = list(domain_acc)[-max(1, len(domain_acc) // 4):]
    mean = float(np.mean(last))
    if 1 - BALANCE_LIMIT <= mean <= BALANCE_LIMIT:
        return None
    why = ("it still tells the domains apart, so the features were not aligned" if mean > BALANCE_LIMIT else
           "the encoder flipped the domains instead of confusing the discriminator, which wrecks the target")
    return (f"The domain adversary never balanced: the discriminator's `{LOG_KEY}` averaged {mean:.2f} over the last "
            f"quarter of training ({len(last)} logged values), far from 0.5; {why}.")


def alarms(label_free: dict | None, log: Sequence[dict], label_free_on: dict[str, dict] | None = None) -> list[str]:
    """Every warning that report.json's `label_free` record, the training log, and the criteria on other unlabelled
    text (`label_free_on`, added by `adapt evaluate --unlabeled`) support."""
    out = [_collapse(label_free), balance_alarm(logged_values(log, LOG_KEY))]
    for name, record in (label_free_on or {}).items():
        if alarm := _collapse(record):
            out.append(f"On `{name}`: {alarm}")
    return [a for a in out if a]


def _collapse(label_free: dict | None) -> str | None:
    if label_free and label_free.get("predicted_distribution") and label_free.get("source_prior"):
        return collapse_alarm(label_free["predicted_distribution"], label_free["source_prior"])
    return None
