"""Scores of probabilistic classifiers: accuracy, macro-F1, calibration, uncertainty, conformal sets.

Every function takes plain arrays (numpy or torch) of ``N`` windows and ``K`` classes and returns
a Python float, NaN where the score is undefined (no window, one class only...).

- :func:`expected_calibration_error`: top-label ECE with equal-width confidence bins
  (Naeini et al. 2015; Guo et al. 2017);
- :func:`negative_log_likelihood`: mean ``-ln p(true class)``;
- :func:`auroc`: area under the ROC curve by the Mann–Whitney statistic (ties count one half);
  :func:`error_auroc` asks how well an uncertainty score ranks wrong decisions above right ones;
- :func:`fit_temperature` / :func:`apply_temperature`: post-hoc temperature scaling of the
  log-probabilities, fitted by minimising the NLL of held-out windows (Guo et al. 2017);
- :func:`set_coverage` / :func:`mean_set_size`: conformal prediction sets.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ShapeError
from bci_affect.training.train import macro_f1

logger = logging.getLogger(__name__)

__all__ = [
    "accuracy",
    "apply_temperature",
    "auroc",
    "brier_score",
    "error_auroc",
    "expected_calibration_error",
    "fit_temperature",
    "macro_f1",
    "max_prob_uncertainty",
    "mean_set_size",
    "negative_log_likelihood",
    "prediction_metrics",
    "set_coverage",
]

#: Smallest probability used inside logarithms.
PROB_FLOOR = 1.0e-12


def _np(x: Any) -> NDArray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _probs_labels(probs: Any, labels: Any) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    p = _np(probs).astype(np.float64)
    y = _np(labels).astype(np.int64).ravel()
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ShapeError(f"probs must be (N, K) with N = {y.shape[0]} labels, got {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ShapeError(f"labels must lie in [0, {p.shape[1]}), got [{y.min()}, {y.max()}]")
    return p, y


def accuracy(predicted: Any, labels: Any) -> float:
    """Fraction of windows whose decision equals the label (NaN without windows)."""
    p = _np(predicted).astype(np.int64).ravel()
    y = _np(labels).astype(np.int64).ravel()
    if p.shape != y.shape:
        raise ShapeError(f"{p.size} decisions for {y.size} labels")
    return float(np.mean(p == y)) if y.size else float("nan")


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 10) -> float:
    """Top-label expected calibration error.

    Windows are binned by their confidence ``max_k p_k`` into ``n_bins`` equal-width bins of
    ``(0, 1]``; ECE is the window-weighted mean over bins of ``|accuracy - mean confidence|``.

    Parameters
    ----------
    probs : array-like, shape (N, K)
        Class probabilities (rows sum to 1).
    labels : array-like of int, shape (N,)
    n_bins : int
        Number of bins.

    Returns
    -------
    float
        In ``[0, 1]``; NaN without windows.
    """
    p, y = _probs_labels(probs, labels)
    if y.size == 0:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    return float(np.abs(sum_acc - sum_conf).sum() / y.size)


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean ``-ln p(true class)`` in nats (probabilities floored at 1e-12); NaN without windows."""
    p, y = _probs_labels(probs, labels)
    if y.size == 0:
        return float("nan")
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], PROB_FLOOR))))


def brier_score(probs: Any, labels: Any) -> float:
    """Mean squared distance between the probabilities and the one-hot label (in ``[0, 2]``)."""
    p, y = _probs_labels(probs, labels)
    if y.size == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def auroc(scores: Any, positive: Any) -> float:
    """Area under the ROC curve of ``scores`` for telling positives from negatives.

    The probability that a random positive scores higher than a random negative, ties counting
    one half (the Mann–Whitney U statistic divided by ``n_pos * n_neg``).

    Returns
    -------
    float
        NaN when there is no positive or no negative (or a non-finite score).
    """
    from scipy.stats import rankdata

    s = _np(scores).astype(np.float64).ravel()
    pos = _np(positive).astype(bool).ravel()
    if s.shape != pos.shape:
        raise ShapeError(f"{s.size} scores for {pos.size} positive flags")
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0 or not np.all(np.isfinite(s)):
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def error_auroc(uncertainty: Any, predicted: Any, labels: Any) -> float:
    """AUROC of an uncertainty score for detecting wrong decisions (0.5: no information)."""
    p = _np(predicted).astype(np.int64).ravel()
    y = _np(labels).astype(np.int64).ravel()
    return auroc(uncertainty, p != y)


def max_prob_uncertainty(probs: Any) -> NDArray[np.float64]:
    """``1 - max_k p_k`` per window, shape ``(N,)``: the uncertainty of a softmax classifier."""
    return 1.0 - _np(probs).astype(np.float64).max(axis=1)


def _log_probs(probs: NDArray) -> NDArray[np.float64]:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), PROB_FLOOR))


def apply_temperature(probs: Any, temperature: float) -> NDArray[np.float64]:
    """``softmax(ln p / T)`` per window, shape ``(N, K)``."""
    z = _log_probs(_np(probs)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(
    probs: Any, labels: Any, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature ``T`` that minimises the NLL of ``softmax(ln p / T)`` on held-out windows.

    Parameters
    ----------
    probs : array-like, shape (N, K)
        Probabilities of windows the model did not train on.
    labels : array-like of int, shape (N,)
    bounds : (float, float)
        Range searched for ``T``.

    Returns
    -------
    float
        1.0 without windows.
    """
    from scipy.optimize import minimize_scalar

    p, y = _probs_labels(probs, labels)
    if y.size == 0:
        return 1.0
    logp = _log_probs(p)
    rows = np.arange(y.size)

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[rows, y]))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    t = math.exp(float(res.x))
    # keep T = 1 unless the fit really helps (flat likelihoods, e.g. uniform probabilities)
    return t if nll(float(res.x)) < nll(0.0) - 1e-9 else 1.0


def set_coverage(sets: Any, labels: Any) -> float:
    """Fraction of windows whose prediction set (bool mask ``(N, K)``) holds the label."""
    s = _np(sets).astype(bool)
    y = _np(labels).astype(np.int64).ravel()
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ShapeError(f"sets must be (N, K) with N = {y.size}, got {s.shape}")
    return float(np.mean(s[np.arange(y.size), y])) if y.size else float("nan")


def mean_set_size(sets: Any) -> float:
    """Mean number of classes per prediction set (NaN without windows)."""
    s = _np(sets).astype(bool)
    return float(s.sum(axis=1).mean()) if s.shape[0] else float("nan")


def prediction_metrics(
    probs: Any,
    labels: Any,
    *,
    uncertainty: Any = None,
    sets: Any = None,
    n_bins: int = 10,
) -> dict[str, float]:
    """Every score of one classifier on one set of windows.

    Parameters
    ----------
    probs : array-like, shape (N, K)
    labels : array-like of int, shape (N,)
    uncertainty : array-like, shape (N,), optional
        The classifier's own uncertainty (default ``1 - max p``).
    sets : array-like of bool, shape (N, K), optional
        Conformal prediction sets.
    n_bins : int
        ECE bins.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``macro_f1``, ``ece``, ``nll``, ``brier``, ``auroc_error`` (of the
        classifier's own uncertainty), ``auroc_error_maxp`` (of ``1 - max p`` of the same
        probabilities: the yardstick an uncertainty must beat) and, with ``sets``,
        ``coverage`` and ``set_size``.
    """
    p, y = _probs_labels(probs, labels)
    pred = p.argmax(axis=1) if y.size else np.zeros(0, np.int64)
    u = max_prob_uncertainty(p) if uncertainty is None else _np(uncertainty).astype(np.float64)
    out = {
        "n": int(y.size),
        "accuracy": accuracy(pred, y),
        "macro_f1": macro_f1(pred, y, p.shape[1]),
        "ece": expected_calibration_error(p, y, n_bins),
        "nll": negative_log_likelihood(p, y),
        "brier": brier_score(p, y),
        "auroc_error": error_auroc(u, pred, y),
        "auroc_error_maxp": error_auroc(max_prob_uncertainty(p), pred, y),
    }
    if sets is not None:
        out["coverage"] = set_coverage(sets, y)
        out["set_size"] = mean_set_size(sets)
    return out
