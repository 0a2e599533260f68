"""Split-conformal prediction sets: LAC (score ``1 - p_y``) and adaptive (APS).

Fitted on labelled windows that the model did not train on, a conformal predictor turns class
probabilities into a *set* of classes that contains the true class with probability at least
``coverage`` (marginally, for windows exchangeable with the calibration windows; Vovk et al.
2005, Angelopoulos & Bates 2021 "A gentle introduction to conformal prediction").

- ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019): score ``1 - p_y``;
  the smallest sets on average.
- ``"aps"`` (adaptive prediction sets, Romano, Sesia & Candès 2020): score = probability mass of
  the classes ranked at or above the true one; sets grow where the model is unsure. The
  randomised version (default) gives coverage close to exact rather than only ``>=``.

The functions take and return ``torch`` tensors (numpy arrays are accepted) so the sets can be
built inside a model's forward pass; :class:`ConformalPredictor` holds the fitted threshold and
serialises to a JSON-able dict for checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bci_affect.core.errors import ConfigError, ShapeError

__all__ = [
    "CONFORMAL_METHODS",
    "ConformalPredictor",
    "aps_scores",
    "aps_sets",
    "conformal_quantile",
    "coverage_of",
    "lac_scores",
    "lac_sets",
]

#: Score functions :class:`ConformalPredictor` knows.
CONFORMAL_METHODS = ("lac", "aps")


def _as_probs(probs: Any) -> Tensor:
    p = torch.as_tensor(probs)
    if p.ndim != 2:
        raise ShapeError(
            f"probabilities must have shape (n_windows, n_classes), got {tuple(p.shape)}"
        )
    if not p.is_floating_point():
        p = p.double()
    return torch.nan_to_num(p, nan=0.0).clamp(0.0, 1.0)


def _as_labels(labels: Any, n: int, k: int) -> Tensor:
    y = torch.as_tensor(labels).long()
    if y.shape != (n,):
        raise ShapeError(
            f"labels must have shape ({n},) to match the probabilities, got {tuple(y.shape)}"
        )
    if n and (y.min() < 0 or y.max() >= k):
        raise ConfigError(
            f"labels must lie in [0, {k}), got values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


def _uniform(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.rand(n, generator=generator, dtype=like.dtype).to(like.device)


def lac_scores(probs: Any, labels: Any) -> Tensor:
    """Non-conformity ``1 - p_y`` per window, shape ``(N,)``."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    return 1.0 - p.gather(1, y[:, None]).squeeze(1)


def aps_scores(
    probs: Any, labels: Any, *, randomized: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """APS non-conformity per window, shape ``(N,)``.

    The total probability of the classes ranked strictly above the true class, plus ``U * p_y``
    with ``U ~ Uniform(0, 1)`` when ``randomized`` (else plus ``p_y``).
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    p_y = p.gather(1, y[:, None]).squeeze(1)
    # classes ranked above y: strictly larger probability (ties broken by class index)
    idx = torch.arange(p.shape[1], device=p.device)
    above = (p > p_y[:, None]) | ((p == p_y[:, None]) & (idx[None, :] < y[:, None]))
    mass_above = (p * above).sum(dim=1)
    u = _uniform(p.shape[0], generator, p) if randomized else torch.ones_like(p_y)
    return mass_above + u * p_y


def conformal_quantile(scores: Any, coverage: float) -> float:
    """The split-conformal threshold: the ``ceil((n + 1) c) / n`` empirical quantile.

    Parameters
    ----------
    scores : array-like, shape (n,)
        Non-conformity scores of the calibration windows.
    coverage : float
        Target coverage ``c`` in ``(0, 1)``.

    Returns
    -------
    float
        The threshold; ``inf`` when there are too few windows for that coverage (then every
        set holds all classes, which is the honest answer).
    """
    if not 0.0 < coverage < 1.0:
        raise ConfigError(f"coverage must be in (0, 1), got {coverage}")
    s = torch.as_tensor(scores).double().flatten()
    s = s[torch.isfinite(s)]
    n = s.numel()
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return math.inf
    return float(torch.sort(s).values[rank - 1])


def _ensure_top(sets: Tensor, p: Tensor) -> Tensor:
    top = p.argmax(dim=1, keepdim=True)
    return sets.scatter(1, top, True)


def lac_sets(probs: Any, threshold: float, *, allow_empty: bool = False) -> Tensor:
    """Sets ``{k : 1 - p_k <= threshold}`` as a bool mask, shape ``(N, K)``.

    Unless ``allow_empty``, the most probable class is always in the set.
    """
    p = _as_probs(probs)
    sets = (1.0 - p) <= threshold
    return sets if allow_empty else _ensure_top(sets, p)


def aps_sets(
    probs: Any,
    threshold: float,
    *,
    randomized: bool = True,
    generator: torch.Generator | None = None,
    allow_empty: bool = False,
    u: Any = None,
) -> Tensor:
    """APS sets for a fitted threshold, as a bool mask, shape ``(N, K)``.

    ``u`` (shape ``(N,)``, in [0, 1)) gives the randomisation's uniforms instead of drawing
    them, e.g. one per window derived from its index so a set never depends on its batch.

    Class ``k`` is in the set when its APS score (mass of the classes ranked above it, plus
    ``U * p_k``) is at most ``threshold``; with ``randomized=False`` the set is the shortest
    prefix of the ranked classes whose mass reaches ``threshold``. Unless ``allow_empty``, the
    top-ranked class is always in the set: no empty sets, at the price of coverage above the
    target when the model's top-1 accuracy is itself above it (randomised APS with empty sets
    allowed gives coverage close to the target).
    """
    p = _as_probs(probs)
    n, k = p.shape
    order = torch.argsort(p, dim=1, descending=True, stable=True)
    sorted_p = p.gather(1, order)
    mass_above = torch.cumsum(sorted_p, dim=1) - sorted_p  # (N, K) mass strictly above
    if randomized:
        u = _uniform(n, generator, p) if u is None else torch.as_tensor(u).to(p.dtype)
        keep_sorted = mass_above + u[:, None] * sorted_p <= threshold
    else:
        keep_sorted = mass_above < threshold
    if not allow_empty:
        keep_sorted[:, 0] = True  # the top class is always in the set
    if not math.isfinite(threshold) or threshold >= 1.0:
        keep_sorted[:] = True
    sets = torch.zeros_like(keep_sorted)
    sets.scatter_(1, order, keep_sorted)
    return sets


@dataclass
class ConformalPredictor:
    """A split-conformal predictor over class probabilities.

    Parameters
    ----------
    method : {"aps", "lac"}
        Score function (see the module docstring).
    coverage : float
        Target coverage in ``(0, 1)``, e.g. 0.9 for sets that contain the true class 90 % of
        the time.
    randomized : bool
        Randomised APS (ignored for LAC).
    seed : int
        Seed of the tie-breaking uniforms of randomised APS, so a replay gives the same sets.
    allow_empty : bool
        Allow empty sets (exact coverage) instead of always including the top class
        (coverage at least the target; the default, since an empty set says nothing useful).
    threshold : float or None
        The fitted threshold (``None`` before :meth:`fit`).
    n_calibration : int
        Number of windows it was fitted on.
    """

    method: str = "aps"
    coverage: float = 0.9
    randomized: bool = True
    seed: int = 0
    allow_empty: bool = False
    threshold: float | None = None
    n_calibration: int = 0

    def __post_init__(self) -> None:
        if self.method not in CONFORMAL_METHODS:
            raise ConfigError(
                f"unknown conformal method {self.method!r}; valid: {', '.join(CONFORMAL_METHODS)}"
            )
        if not 0.0 < self.coverage < 1.0:
            raise ConfigError(f"coverage must be in (0, 1), got {self.coverage}")
        self._generator = torch.Generator().manual_seed(int(self.seed))

    @property
    def fitted(self) -> bool:
        return self.threshold is not None

    def scores(self, probs: Any, labels: Any) -> Tensor:
        """Non-conformity scores of labelled windows, shape ``(N,)``."""
        if self.method == "lac":
            return lac_scores(probs, labels)
        return aps_scores(probs, labels, randomized=self.randomized, generator=self._generator)

    def fit(self, probs: Any, labels: Any) -> ConformalPredictor:
        """Fit the threshold on labelled windows.

        Parameters
        ----------
        probs : array-like, shape (N, K)
            Predicted class probabilities of windows the model did not train on.
        labels : array-like of int, shape (N,)
            Their true classes.
        """
        scores = self.scores(probs, labels)
        self.threshold = conformal_quantile(scores, self.coverage)
        self.n_calibration = int(scores.numel())
        return self

    def predict_sets(self, probs: Any) -> Tensor:
        """Prediction sets as a bool mask, shape ``(N, K)`` (``True`` = class in the set)."""
        if self.threshold is None:
            raise ConfigError(
                "the conformal predictor is not fitted; call fit(probs, labels) first"
            )
        if self.method == "lac":
            return lac_sets(probs, self.threshold, allow_empty=self.allow_empty)
        return aps_sets(
            probs,
            self.threshold,
            randomized=self.randomized,
            generator=self._generator,
            allow_empty=self.allow_empty,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (``inf`` thresholds are written as ``None`` plus a flag)."""
        thr = self.threshold
        return {
            "method": self.method,
            "coverage": self.coverage,
            "randomized": self.randomized,
            "seed": self.seed,
            "allow_empty": self.allow_empty,
            "threshold": None if thr is None or not math.isfinite(thr) else thr,
            "threshold_infinite": thr is not None and not math.isfinite(thr),
            "n_calibration": self.n_calibration,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ConformalPredictor:
        """Inverse of :meth:`to_dict`."""
        try:
            thr = math.inf if state.get("threshold_infinite") else state.get("threshold")
            return cls(
                method=str(state["method"]),
                coverage=float(state["coverage"]),
                randomized=bool(state.get("randomized", True)),
                seed=int(state.get("seed", 0)),
                allow_empty=bool(state.get("allow_empty", False)),
                threshold=None if thr is None else float(thr),
                n_calibration=int(state.get("n_calibration", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid conformal predictor state {state!r}: {exc}") from None


def coverage_of(sets: Any, labels: Any) -> float:
    """Fraction of windows whose set contains the true class."""
    s = torch.as_tensor(sets).bool()
    y = torch.as_tensor(np.asarray(labels)).long()
    if s.ndim != 2 or y.shape != (s.shape[0],):
        raise ShapeError(
            f"sets (N, K) and labels (N,) expected, got {tuple(s.shape)}, {tuple(y.shape)}"
        )
    if s.shape[0] == 0:
        return float("nan")
    return float(s.gather(1, y[:, None]).float().mean())
