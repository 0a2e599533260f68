"""Scores against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bci_affect.evaluation.metrics import (
    accuracy,
    apply_temperature,
    auroc,
    brier_score,
    error_auroc,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    mean_set_size,
    negative_log_likelihood,
    prediction_metrics,
    set_coverage,
)


def test_ece_by_hand():
    probs = np.array(
        [
            [0.85, 0.15],  # right, bin (0.8, 0.9]
            [0.25, 0.75],  # wrong, bin (0.7, 0.8]
            [0.72, 0.28],  # wrong, bin (0.7, 0.8]
            [0.58, 0.42],  # right, bin (0.5, 0.6]
            [0.45, 0.55],  # right, bin (0.5, 0.6]
        ]
    )
    labels = np.array([0, 0, 1, 0, 1])
    expected = (abs(1 - 0.85) * 1 + abs(0 - 0.735) * 2 + abs(1 - 0.565) * 2) / 5
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)
    # one bin: |accuracy - mean confidence|
    conf = (0.85 + 0.75 + 0.72 + 0.58 + 0.55) / 5
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(abs(3 / 5 - conf))


def test_ece_is_zero_when_confidence_matches_accuracy():
    # four windows at confidence 0.75, three of them right
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.0)
    assert expected_calibration_error(probs, [0, 1, 1, 1]) == pytest.approx(0.5)


def test_nll_and_brier_by_hand():
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    labels = np.array([0, 2])
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        -(math.log(0.5) + math.log(0.8)) / 2
    )
    b1 = 0.5**2 + 0.25**2 + 0.25**2
    b2 = 0.1**2 + 0.1**2 + 0.2**2
    assert brier_score(probs, labels) == pytest.approx((b1 + b2) / 2)
    # a zero probability for the true class is floored, not infinite
    assert math.isfinite(negative_log_likelihood([[1.0, 0.0]], [1]))


def test_auroc_by_hand_with_ties():
    # positives 0.8, 0.4; negatives 0.4, 0.1, 0.6
    # pairs (pos > neg): 0.8 beats all three; 0.4 beats 0.1, ties 0.4, loses to 0.6
    scores = [0.8, 0.4, 0.4, 0.1, 0.6]
    positive = [True, True, False, False, False]
    assert auroc(scores, positive) == pytest.approx((3 + 1 + 0.5) / 6)
    assert auroc([0.1, 0.9], [False, True]) == 1.0
    assert auroc([0.9, 0.1], [False, True]) == 0.0
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_error_auroc_ranks_wrong_decisions():
    pred = np.array([0, 1, 1, 0])
    labels = np.array([0, 1, 0, 1])  # windows 2 and 3 are wrong
    assert error_auroc([0.1, 0.2, 0.9, 0.8], pred, labels) == 1.0
    assert error_auroc([0.9, 0.8, 0.1, 0.2], pred, labels) == 0.0


def test_macro_f1_and_accuracy_by_hand():
    pred = np.array([0, 0, 1, 1, 2, 0])
    y = np.array([0, 1, 1, 1, 2, 2])
    # class 0: tp 1, fp 2, fn 0 -> 2/4; class 1: tp 2, fp 0, fn 1 -> 4/5; class 2: tp 1, fn 1 -> 2/3
    assert macro_f1(pred, y, 3) == pytest.approx((2 / 4 + 4 / 5 + 2 / 3) / 3)
    assert accuracy(pred, y) == pytest.approx(4 / 6)


def test_coverage_and_set_size():
    sets = np.array([[True, False, True], [False, False, True], [True, True, True]])
    assert set_coverage(sets, [0, 1, 1]) == pytest.approx(2 / 3)
    assert mean_set_size(sets) == pytest.approx(2.0)


def test_temperature_scaling_recovers_an_overconfident_model(rng):
    n, k, t_true = 4000, 3, 2.5
    logits = rng.normal(0.0, 2.0, (n, k))
    calibrated = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1.0)
    labels = np.array([rng.choice(k, p=p) for p in calibrated])
    over = np.exp(t_true * logits)
    over /= over.sum(1, keepdims=True)  # the same model, t_true times too sharp
    t = fit_temperature(over, labels)
    assert t == pytest.approx(t_true, rel=0.1)
    before = expected_calibration_error(over, labels)
    after = expected_calibration_error(apply_temperature(over, t), labels)
    assert after < 0.03 < before
    np.testing.assert_allclose(apply_temperature(over, 1.0), over, atol=1e-9)
    assert fit_temperature(np.full((10, 2), 0.5), np.arange(10) % 2) == 1.0  # nothing to fit


def test_prediction_metrics_fields():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.8, 0.2]])
    sets = np.array([[True, False], [True, True], [True, False]])
    m = prediction_metrics(probs, [0, 1, 1], sets=sets)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["coverage"] == pytest.approx(2 / 3) and m["set_size"] == pytest.approx(4 / 3)
    # default uncertainty 1 - max p: the wrong window (0.8) is the most confident -> AUROC 0
    assert m["auroc_error"] == 0.0
    assert m["n"] == 3
