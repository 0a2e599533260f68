"""Validation splits that keep whole trials (or sessions, or subjects) on one side.

Windows of one trial overlap in time and share one label, so a window-level split would let
the validation score measure memory of a trial rather than generalisation. These splits
assign *groups* (trials by default) to train or validation, stratified by class so that
every class appears on both sides when it can, and reproducibly from a seed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["SPLIT_UNITS", "Split", "check_no_leak", "group_split", "split_dataset"]

#: What a split keeps together: a trial, a whole session, or every session of a subject.
SPLIT_UNITS = ("trial", "session", "subject")


@dataclass(frozen=True, eq=False)
class Split:
    """Train and validation window indices, and the groups on each side.

    Attributes
    ----------
    train, val : ndarray of int
        Window indices (sorted).
    train_groups, val_groups : tuple of str
        Groups (e.g. ``"sub-01/ses-01#3"``) on each side.
    unit : str
        What a group is (``"trial"``, ``"session"`` or ``"subject"``).
    """

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    train_groups: tuple[str, ...]
    val_groups: tuple[str, ...]
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "n_train_windows": int(self.train.size),
            "n_val_windows": int(self.val.size),
            "n_train_groups": len(self.train_groups),
            "n_val_groups": len(self.val_groups),
        }


def group_split(
    groups: Any,
    labels: Any,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    unit: str = "trial",
) -> Split:
    """Split windows by group (a trial, a session, a subject).

    When every group holds one class (trials), the split is stratified: of the ``n`` groups
    of each class, ``round(val_fraction * n)`` go to validation, at least one and at most
    ``n - 1``, so each class with two or more groups is on both sides. Groups that mix classes
    (sessions, subjects) are drawn at random: ``round(val_fraction * n_groups)``, at least one.

    Parameters
    ----------
    groups : array-like of str, shape (N,)
        Group of each window.
    labels : array-like of int, shape (N,)
        Class of each window.
    val_fraction : float
        Fraction of groups in validation, in ``(0, 1)``; 0 puts every window in train.
    seed : int
        Seed of the shuffle.
    unit : str
        Name of the grouping, for reports.

    Returns
    -------
    Split
    """
    g = np.asarray(groups).astype(str)
    y = np.asarray(labels).astype(np.int64)
    if g.shape != y.shape or g.ndim != 1:
        raise ConfigError(f"groups {g.shape} and labels {y.shape} must be 1-D and of equal length")
    if not (math.isfinite(val_fraction) and 0.0 <= val_fraction < 1.0):
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    uniq, inverse = np.unique(g, return_inverse=True)
    if val_fraction == 0.0:
        return Split(np.arange(g.size), np.zeros(0, np.int64), tuple(uniq), (), unit)
    rng = np.random.default_rng(seed)
    val_groups = np.zeros(uniq.size, bool)
    n_cls = int(y.max()) + 1 if y.size else 1
    counts = np.zeros((uniq.size, n_cls), np.int64)
    np.add.at(counts, (inverse, y), 1)
    if np.all((counts > 0).sum(axis=1) == 1):
        # one label per group (trials): stratify, so each class is on both sides
        label = counts.argmax(axis=1)
        for c in range(n_cls):
            members = np.flatnonzero(label == c)
            if members.size < 2:
                continue
            k = min(members.size - 1, max(1, int(round(val_fraction * members.size))))
            val_groups[rng.permutation(members)[:k]] = True
    if not val_groups.any() and uniq.size >= 2:
        # groups of mixed classes (sessions, subjects), or too few groups per class
        k = min(uniq.size - 1, max(1, int(round(val_fraction * uniq.size))))
        val_groups[rng.permutation(uniq.size)[:k]] = True
    if not val_groups.any():
        raise ConfigError(
            f"only {uniq.size} {unit}(s): a validation split needs at least 2; record more "
            "trials or use --val-fraction 0"
        )
    is_val = val_groups[inverse]
    return Split(
        train=np.flatnonzero(~is_val),
        val=np.flatnonzero(is_val),
        train_groups=tuple(uniq[~val_groups]),
        val_groups=tuple(uniq[val_groups]),
        unit=unit,
    )


def split_dataset(
    dataset: Any, *, unit: str = "trial", val_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Split a :class:`~bci_affect.training.dataset.WindowDataset` by trial, session or subject."""
    if unit not in SPLIT_UNITS:
        raise ConfigError(f"unknown split unit {unit!r}; valid: {', '.join(SPLIT_UNITS)}")
    if unit == "trial":
        groups = dataset.trial_keys
    elif unit == "session":
        groups = dataset.session.astype(str)
    else:
        groups = dataset.subject.astype(str)
    split = group_split(groups, dataset.labels, val_fraction=val_fraction, seed=seed, unit=unit)
    check_no_leak(groups, split)
    return split


def check_no_leak(groups: Any, split: Split) -> None:
    """Raise if a group has windows on both sides of ``split`` (an internal invariant)."""
    g = np.asarray(groups).astype(str)
    both = set(g[split.train]) & set(g[split.val])
    if both:
        raise AssertionError(
            f"{len(both)} groups on both sides of the split, e.g. {sorted(both)[0]}"
        )
