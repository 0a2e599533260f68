"""Evaluation folds that keep whole trials on one side: within-subject and cross-subject.

Windows of one trial overlap in time and share one self-report, so a window-level split would
score memory of a trial rather than generalisation. Every fold here assigns *trials* (and, in
the cross-subject protocol, whole subjects) to one of three disjoint parts:

- ``train``: windows the model fits on;
- ``calib``: held-out trials of the training side, for post-hoc calibration (temperature
  scaling) and the conformal predictor;
- ``test``: the trials scored.

``within-subject``: each subject's trials are dealt into ``n_folds`` folds stratified by class;
each fold tests one part and trains on the subject's other trials, so every trial is tested
exactly once. ``cross-subject``: subjects are dealt into ``n_folds`` folds; each fold tests
the windows of its subjects and trains on the other subjects (calibration on held-out training
subjects when there are at least three, else on held-out trials).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.training.split import group_split

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "Fold",
    "check_folds",
    "cross_subject_folds",
    "make_folds",
    "trial_labels",
    "within_subject_folds",
]

#: Evaluation protocols.
PROTOCOLS = ("within-subject", "cross-subject")


@dataclass(frozen=True, eq=False)
class Fold:
    """Window indices of one evaluation fold.

    Attributes
    ----------
    name : str
        E.g. ``"sub-01/fold-2"`` or ``"fold-1"``.
    train, calib, test : ndarray of int
        Sorted window indices; no trial has windows in two of them.
    test_subjects : tuple of str
        Subjects whose windows are tested.
    """

    name: str
    train: NDArray[np.int64]
    calib: NDArray[np.int64]
    test: NDArray[np.int64]
    test_subjects: tuple[str, ...]

    @property
    def pool(self) -> NDArray[np.int64]:
        """The whole training side (``train`` and ``calib``), sorted."""
        return np.union1d(self.train, self.calib).astype(np.int64)


def trial_labels(groups: NDArray, labels: NDArray) -> tuple[NDArray, NDArray[np.int64]]:
    """Unique groups (sorted) and each group's majority label."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    k = int(labels.max()) + 1 if labels.size else 1
    counts = np.zeros((uniq.size, k), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return uniq, counts.argmax(axis=1)


def _as_arrays(subjects: Any, trials: Any, labels: Any) -> tuple[NDArray, NDArray, NDArray]:
    s = np.asarray(subjects).astype(str)
    t = np.asarray(trials).astype(str)
    y = np.asarray(labels).astype(np.int64)
    if not (s.ndim == t.ndim == y.ndim == 1 and s.size == t.size == y.size):
        raise ConfigError(
            f"subjects, trials and labels must be 1-D of one length, got {s.shape}, {t.shape}, {y.shape}"
        )
    if y.size and y.min() < 0:
        raise ConfigError("labels must be class indices >= 0")
    return s, t, y


def _trial_keys(subjects: NDArray, trials: NDArray) -> NDArray:
    return np.char.add(np.char.add(subjects, "|"), trials)


def _stratified_deal(
    classes: NDArray[np.int64], n_folds: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Fold of each item: within each class, shuffled and dealt round-robin from a random
    start, so folds get near-equal class counts.

    Classes are dealt in order of their first item, so the folds depend on which items share
    a class, not on the class numbers (a feature table whose labels are numbered otherwise
    gets the same folds)."""
    fold = np.zeros(classes.size, np.int64)
    nxt = int(rng.integers(n_folds))
    _, first = np.unique(classes, return_index=True)
    for c in classes[np.sort(first)]:
        members = rng.permutation(np.flatnonzero(classes == c))
        fold[members] = (nxt + np.arange(members.size)) % n_folds
        nxt = (nxt + members.size) % n_folds  # continue dealing where the last class stopped
    return fold


def _calib_split(
    train_idx: NDArray[np.int64],
    groups: NDArray,
    labels: NDArray,
    calib_fraction: float,
    seed: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    if calib_fraction <= 0 or train_idx.size == 0:
        return train_idx, np.zeros(0, np.int64)
    g = groups[train_idx]
    if np.unique(g).size < 2:
        return train_idx, np.zeros(0, np.int64)
    split = group_split(g, labels[train_idx], val_fraction=calib_fraction, seed=seed, unit="trial")
    return np.sort(train_idx[split.train]), np.sort(train_idx[split.val])


def within_subject_folds(
    subjects: Any,
    trials: Any,
    labels: Any,
    *,
    n_folds: int = 4,
    calib_fraction: float = 0.25,
    seed: int = 0,
) -> list[Fold]:
    """Per-subject k-fold over trials, stratified by each trial's class.

    Parameters
    ----------
    subjects, trials : array-like of str, shape (N,)
        Subject and trial id of each window (a trial id is unique within its subject).
    labels : array-like of int, shape (N,)
        Class of each window.
    n_folds : int
        Folds per subject (fewer when a subject has fewer trials).
    calib_fraction : float
        Fraction of each fold's training trials held out for calibration (0: none).
    seed : int
        Seed of the dealing.

    Returns
    -------
    list of Fold
        Subject by subject; each subject's test parts partition its trials.

    Raises
    ------
    ConfigError
        A subject has fewer than two trials.
    """
    s, t, y = _as_arrays(subjects, trials, labels)
    _check_params(n_folds, calib_fraction)
    keys = _trial_keys(s, t)
    rng = np.random.default_rng(seed)
    folds = []
    for subject in np.unique(s):
        in_subject = np.flatnonzero(s == subject)
        uniq, cls = trial_labels(keys[in_subject], y[in_subject])
        if uniq.size < 2:
            raise ConfigError(
                f"subject {subject} has {uniq.size} trial(s): the within-subject protocol needs "
                "at least 2 per subject; use --protocol cross-subject or record more trials"
            )
        k = min(n_folds, uniq.size)
        trial_fold = _stratified_deal(cls, k, rng)
        window_fold = trial_fold[np.searchsorted(uniq, keys[in_subject])]
        for f in range(k):
            test = in_subject[window_fold == f]
            if test.size == 0:
                continue
            train_side = in_subject[window_fold != f]
            train, calib = _calib_split(
                train_side, keys, y, calib_fraction, seed * 1000 + f + 7919 * len(folds)
            )
            folds.append(Fold(f"{subject}/fold-{f + 1}", train, calib, test, (str(subject),)))
    check_folds(folds, keys)
    return folds


def cross_subject_folds(
    subjects: Any,
    trials: Any,
    labels: Any,
    *,
    n_folds: int = 4,
    calib_fraction: float = 0.25,
    seed: int = 0,
) -> list[Fold]:
    """Leave-subjects-out folds: subjects dealt at random into ``n_folds`` folds.

    Calibration windows come from held-out *training subjects* when a fold trains on at least
    three subjects (the shift to a new person is then part of what calibration sees), else
    from held-out training trials.

    Raises
    ------
    ConfigError
        Fewer than two subjects.
    """
    s, t, y = _as_arrays(subjects, trials, labels)
    _check_params(n_folds, calib_fraction)
    keys = _trial_keys(s, t)
    uniq = np.unique(s)
    if uniq.size < 2:
        raise ConfigError(
            f"the cross-subject protocol needs at least 2 subjects, got {uniq.size}; use "
            "--protocol within-subject"
        )
    k = min(n_folds, uniq.size)
    rng = np.random.default_rng(seed)
    subject_fold = np.empty(uniq.size, np.int64)
    subject_fold[rng.permutation(uniq.size)] = np.arange(uniq.size) % k
    window_fold = subject_fold[np.searchsorted(uniq, s)]
    folds = []
    for f in range(k):
        test = np.flatnonzero(window_fold == f)
        train_side = np.flatnonzero(window_fold != f)
        train_subjects = np.unique(s[train_side])
        if calib_fraction > 0 and train_subjects.size >= 3:
            split = group_split(
                s[train_side],
                y[train_side],
                val_fraction=calib_fraction,
                seed=seed * 1000 + f,
                unit="subject",
            )
            # stratifying subjects by their majority class can leave the split lopsided;
            # only the subject grouping matters here
            train, calib = np.sort(train_side[split.train]), np.sort(train_side[split.val])
        else:
            train, calib = _calib_split(train_side, keys, y, calib_fraction, seed * 1000 + f)
        folds.append(
            Fold(
                f"fold-{f + 1}", train, calib, test, tuple(str(x) for x in uniq[subject_fold == f])
            )
        )
    check_folds(folds, keys, subjects=s)
    return folds


def make_folds(protocol: str, subjects: Any, trials: Any, labels: Any, **kwargs: Any) -> list[Fold]:
    """:func:`within_subject_folds` or :func:`cross_subject_folds` by name."""
    if protocol == "within-subject":
        return within_subject_folds(subjects, trials, labels, **kwargs)
    if protocol == "cross-subject":
        return cross_subject_folds(subjects, trials, labels, **kwargs)
    raise ConfigError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")


def _check_params(n_folds: int, calib_fraction: float) -> None:
    if not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if not (math.isfinite(calib_fraction) and 0.0 <= calib_fraction < 1.0):
        raise ConfigError(f"calib_fraction must be in [0, 1), got {calib_fraction}")


def check_folds(folds: Sequence[Fold], trial_keys: Any, *, subjects: Any = None) -> None:
    """Raise ``AssertionError`` if a fold puts one trial (or, with ``subjects``, one subject)
    in two of train / calib / test, or if two folds test the same window (internal
    invariants)."""
    g = np.asarray(trial_keys).astype(str)
    tested: set[int] = set()
    for fold in folds:
        parts = {"train": fold.train, "calib": fold.calib, "test": fold.test}
        for name, idx in parts.items():
            if idx.size and (np.any(np.diff(idx) <= 0)):
                raise AssertionError(f"{fold.name}: {name} indices are not sorted and unique")
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                both = set(g[parts[a]]) & set(g[parts[b]])
                if both:
                    raise AssertionError(
                        f"{fold.name}: trial {sorted(both)[0]} has windows in {a} and {b}"
                    )
                if subjects is not None and b == "test":
                    s = np.asarray(subjects).astype(str)
                    shared = set(s[parts[a]]) & set(s[parts[b]])
                    if shared:
                        raise AssertionError(
                            f"{fold.name}: subject {sorted(shared)[0]} is in {a} and test"
                        )
        overlap = tested & set(fold.test.tolist())
        if overlap:
            raise AssertionError(f"{fold.name}: window {min(overlap)} is tested twice")
        tested |= set(fold.test.tolist())
