"""Folds never cut a trial (or, cross-subject, a subject), and every window is tested once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bci_affect.core.errors import ConfigError
from bci_affect.evaluation.protocols import (
    check_folds,
    cross_subject_folds,
    within_subject_folds,
)


@st.composite
def windows(draw, min_subjects=1):
    """Random subjects x trials x windows, one label per trial."""
    n_subjects = draw(st.integers(min_subjects, 4))
    n_classes = draw(st.integers(2, 4))
    subjects, trials, labels = [], [], []
    for s in range(n_subjects):
        n_trials = draw(st.integers(2, 9))
        for t in range(n_trials):
            n_win = draw(st.integers(1, 6))
            y = draw(st.integers(0, n_classes - 1))
            subjects += [f"s{s}"] * n_win
            trials += [f"ses#{t}"] * n_win
            labels += [y] * n_win
    order = draw(st.permutations(range(len(labels))))  # windows need not come sorted
    idx = np.array(order)
    return np.array(subjects)[idx], np.array(trials)[idx], np.array(labels)[idx]


def _keys(s, t):
    return np.char.add(np.char.add(s.astype(str), "|"), t.astype(str))


@settings(max_examples=60, deadline=None)
@given(
    data=windows(),
    n_folds=st.integers(2, 5),
    calib=st.sampled_from([0.0, 0.25, 0.5]),
    seed=st.integers(0, 50),
)
def test_within_subject_folds_keep_trials_whole(data, n_folds, calib, seed):
    s, t, y = data
    folds = within_subject_folds(s, t, y, n_folds=n_folds, calib_fraction=calib, seed=seed)
    keys = _keys(s, t)
    tested = np.concatenate([f.test for f in folds])
    # every window is tested exactly once
    assert np.array_equal(np.sort(tested), np.arange(len(y)))
    for f in folds:
        parts = [set(keys[f.train]), set(keys[f.calib]), set(keys[f.test])]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2])
        assert not (parts[1] & parts[2])
        # one subject per fold, and its train side is that subject's other trials
        assert set(s[f.test]) == set(f.test_subjects) and len(f.test_subjects) == 1
        assert set(s[f.pool]) <= set(f.test_subjects)
        both = np.union1d(f.pool, f.test)
        assert np.array_equal(both, np.flatnonzero(s == f.test_subjects[0]))
    check_folds(folds, keys)


@settings(max_examples=40, deadline=None)
@given(data=windows(min_subjects=2), n_folds=st.integers(2, 4), seed=st.integers(0, 50))
def test_cross_subject_folds_keep_subjects_whole(data, n_folds, seed):
    s, t, y = data
    folds = cross_subject_folds(s, t, y, n_folds=n_folds, calib_fraction=0.25, seed=seed)
    tested = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(tested), np.arange(len(y)))
    for f in folds:
        assert not (set(s[f.pool]) & set(s[f.test]))
        assert set(s[f.test]) == set(f.test_subjects)
    check_folds(folds, _keys(s, t), subjects=s)


@settings(max_examples=30, deadline=None)
@given(data=windows(), seed=st.integers(0, 20), perm=st.permutations([0, 1, 2, 3]))
def test_folds_do_not_depend_on_class_numbering(data, seed, perm):
    s, t, y = data
    a = within_subject_folds(s, t, y, n_folds=3, calib_fraction=0.0, seed=seed)
    b = within_subject_folds(s, t, np.array(perm)[y], n_folds=3, calib_fraction=0.0, seed=seed)
    assert [f.test.tolist() for f in a] == [f.test.tolist() for f in b]


def test_folds_are_reproducible_and_stratified():
    # one subject, 4 classes x 4 trials x 5 windows
    trials = np.repeat(np.arange(16), 5)
    y = trials % 4
    s = np.full(y.size, "sub-01")
    a = within_subject_folds(s, trials, y, n_folds=4, seed=3)
    b = within_subject_folds(s, trials, y, n_folds=4, seed=3)
    c = within_subject_folds(s, trials, y, n_folds=4, seed=4)
    assert [f.test.tolist() for f in a] == [f.test.tolist() for f in b]
    assert [f.test.tolist() for f in a] != [f.test.tolist() for f in c]
    for f in a:  # one trial of each class in each test fold
        assert sorted(np.unique(trials[f.test] % 4).tolist()) == [0, 1, 2, 3]
        assert f.calib.size > 0  # at least one calibration trial per class
        assert set(y[f.calib]) == {0, 1, 2, 3}


def test_check_folds_catches_a_leak():
    s = np.array(["a"] * 6)
    t = np.array(["1", "1", "2", "2", "3", "3"])
    folds = within_subject_folds(s, t, np.array([0, 0, 1, 1, 0, 0]), n_folds=3, seed=0)
    bad = folds[0]
    from dataclasses import replace

    leaky = replace(bad, train=np.sort(np.append(bad.train, bad.test[:1])))
    with pytest.raises(AssertionError, match="has windows in train and test"):
        check_folds([leaky], _keys(s, t))


def test_protocol_errors_are_clear():
    with pytest.raises(ConfigError, match="at least 2 per subject"):
        within_subject_folds(["a", "a"], ["1", "1"], [0, 0])
    with pytest.raises(ConfigError, match="at least 2 subjects"):
        cross_subject_folds(["a", "a"], ["1", "2"], [0, 1])
    with pytest.raises(ConfigError, match="n_folds"):
        within_subject_folds(["a", "a"], ["1", "2"], [0, 1], n_folds=1)
