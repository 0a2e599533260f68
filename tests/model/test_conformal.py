"""Split-conformal and APS prediction sets: coverage on held-out data."""

import math

import numpy as np
import pytest
import torch

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.uncertainty import (
    ConformalPredictor,
    aps_sets,
    conformal_quantile,
    coverage_of,
    lac_scores,
)


def _overconfident_classifier(n, seed, k=4, sharpness=3.0):
    """Probabilities of a miscalibrated (over-confident) classifier, and labels drawn from the truth."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, k))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in true_p])
    sharp = np.exp(sharpness * logits) / np.exp(sharpness * logits).sum(
        1, keepdims=True
    )  # what the model says
    return sharp, y


@pytest.mark.parametrize("method", ["lac", "aps"])
@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_coverage_on_held_out_windows(method, coverage):
    p_cal, y_cal = _overconfident_classifier(2000, seed=1)
    p_test, y_test = _overconfident_classifier(4000, seed=2)
    naive = float(np.mean(p_test.argmax(1) == y_test))
    cp = ConformalPredictor(method=method, coverage=coverage).fit(p_cal, y_cal)
    sets = cp.predict_sets(p_test)
    got = coverage_of(sets, y_test)
    assert abs(got - coverage) <= 0.03, f"{method} coverage {got:.3f} vs target {coverage}"
    assert naive < coverage - 0.05  # the top-1 prediction alone would not cover
    assert sets.sum(1).min() >= 1  # never an empty set
    assert sets.sum(1).float().mean() < 4  # and not trivially everything


def test_aps_adapts_set_size_to_difficulty():
    p_cal, y_cal = _overconfident_classifier(2000, seed=3, sharpness=1.0)  # calibrated
    cp = ConformalPredictor(method="aps", coverage=0.8, randomized=False).fit(p_cal, y_cal)
    easy = torch.tensor([[0.97, 0.01, 0.01, 0.01]])
    hard = torch.tensor([[0.3, 0.3, 0.2, 0.2]])
    assert cp.predict_sets(easy).sum() < cp.predict_sets(hard).sum()


def test_too_few_windows_give_full_sets():
    cp = ConformalPredictor(method="lac", coverage=0.95).fit(
        np.full((5, 3), 1 / 3), [0, 1, 2, 0, 1]
    )
    assert math.isinf(cp.threshold)
    assert cp.predict_sets(np.array([[0.9, 0.05, 0.05]])).all()
    assert math.isinf(conformal_quantile([], 0.9))


def test_state_round_trip_gives_the_same_sets():
    p_cal, y_cal = _overconfident_classifier(500, seed=4)
    cp = ConformalPredictor(method="aps", coverage=0.85, seed=7).fit(p_cal, y_cal)
    clone = ConformalPredictor.from_dict(cp.to_dict())
    fresh = ConformalPredictor(method="aps", coverage=0.85, seed=7, threshold=cp.threshold)
    assert clone.threshold == cp.threshold
    assert torch.equal(clone.predict_sets(p_cal), fresh.predict_sets(p_cal))
    inf = ConformalPredictor.from_dict(ConformalPredictor(threshold=math.inf).to_dict())
    assert math.isinf(inf.threshold)


def test_lac_score_and_quantile_are_exact():
    s = lac_scores(np.array([[0.7, 0.3], [0.4, 0.6]]), [0, 0])
    torch.testing.assert_close(s, torch.tensor([0.3, 0.6], dtype=torch.float64))
    assert conformal_quantile(np.arange(1, 10) / 10, 0.5) == pytest.approx(
        0.5
    )  # ceil(10 * .5) = 5th


def test_aps_deterministic_sets_are_prefixes():
    p = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
    assert aps_sets(p, 0.75, randomized=False).tolist() == [[True, False, True, False]]


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="coverage must be in"):
        ConformalPredictor(coverage=1.0)
    with pytest.raises(ConfigError, match="unknown conformal method"):
        ConformalPredictor(method="raps")
    with pytest.raises(ConfigError, match="not fitted"):
        ConformalPredictor().predict_sets(np.ones((1, 2)) / 2)
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 2\)"):
        ConformalPredictor().fit(np.ones((2, 2)) / 2, [0, 2])
    with pytest.raises(ShapeError, match="labels must have shape"):
        ConformalPredictor().fit(np.ones((2, 2)) / 2, [0])
