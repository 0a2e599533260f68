"""Validation splits keep whole trials (sessions, subjects) on one side."""

from __future__ import annotations

import numpy as np
import pytest

from bci_affect.core import ConfigError
from bci_affect.training.split import check_no_leak, group_split, split_dataset


def _groups(n_groups: int, windows_per_group: int, n_classes: int, rng):
    labels_of_group = rng.integers(0, n_classes, n_groups)
    groups = np.repeat([f"s#{i}" for i in range(n_groups)], windows_per_group)
    return groups, np.repeat(labels_of_group, windows_per_group)


@pytest.mark.parametrize("seed", range(5))
def test_no_group_is_on_both_sides_and_every_class_is_validated(seed):
    rng = np.random.default_rng(seed)
    groups, labels = _groups(40, 13, 4, rng)
    split = group_split(groups, labels, val_fraction=0.25, seed=seed)
    assert not set(groups[split.train]) & set(groups[split.val])
    assert np.array_equal(np.sort(np.concatenate([split.train, split.val])), np.arange(groups.size))
    assert set(split.val_groups) == set(groups[split.val])
    for c in range(4):
        n_c = len(set(groups[labels == c]))
        if n_c >= 2:
            assert c in set(labels[split.val]) and c in set(labels[split.train])
    assert abs(len(split.val_groups) - 10) <= 2
    check_no_leak(groups, split)


def test_splits_are_reproducible_and_depend_on_the_seed(rng):
    groups, labels = _groups(30, 5, 2, rng)
    a = group_split(groups, labels, seed=1)
    b = group_split(groups, labels, seed=1)
    c = group_split(groups, labels, seed=2)
    assert np.array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)


def test_a_leak_is_caught():
    groups = np.array(["a", "a", "b", "b"])
    split = group_split(groups, np.array([0, 0, 1, 1]), val_fraction=0.5, seed=0)
    bad = type(split)(np.array([0, 2]), np.array([1, 3]), ("a", "b"), ("a", "b"), "trial")
    with pytest.raises(AssertionError, match="both sides"):
        check_no_leak(groups, bad)


def test_degenerate_splits():
    groups = np.array(["a"] * 5)
    with pytest.raises(ConfigError, match="only 1 trial"):
        group_split(groups, np.zeros(5, int), val_fraction=0.2)
    all_train = group_split(groups, np.zeros(5, int), val_fraction=0.0)
    assert all_train.val.size == 0 and all_train.train.size == 5
    with pytest.raises(ConfigError, match="val_fraction"):
        group_split(groups, np.zeros(5, int), val_fraction=1.0)


@pytest.mark.parametrize("unit", ["trial", "session", "subject"])
def test_dataset_splits_by_trial_session_or_subject(sim_windows, unit):
    ds = sim_windows
    split = split_dataset(ds, unit=unit, val_fraction=0.34, seed=0)
    key = {"trial": ds.trial_keys, "session": ds.session, "subject": ds.subject}[unit]
    train_keys, val_keys = set(key[split.train]), set(key[split.val])
    assert train_keys and val_keys and not train_keys & val_keys
    # windows of one trial never straddle the split, whatever the unit
    assert not set(ds.trial_keys[split.train]) & set(ds.trial_keys[split.val])
    assert split.unit == unit and split.to_dict()["n_val_windows"] == split.val.size
