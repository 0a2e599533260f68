"""Decodability: default sessions are weakly, not trivially, decodable from EEG alone."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.simulator import SimulatorConfig, simulate_session
from acquisition.simulator.realism import logistic_fit, session_accuracy


def test_logistic_fit_separates_what_is_separable(rng):
    x = rng.standard_normal((200, 5))
    y = (x[:, 0] - 0.5 * x[:, 3] > 0).astype(float)
    w, b = logistic_fit(x, y, l2=0.1)
    assert np.mean((x @ w + b > 0) == y.astype(bool)) > 0.95
    assert w[0] > 0 and w[3] < 0 and abs(w[1]) < abs(w[0])
    w0, _ = logistic_fit(x, rng.integers(0, 2, 200).astype(float), l2=10.0)
    assert np.all(np.abs(w0) < np.abs(w).max())


@pytest.mark.slow
def test_default_sessions_decode_like_real_data():
    """Trial-split, window-level accuracy of a quick log-band-power classifier: the mean over
    subjects and both labels lies in the 55-75 % that docs/simulator.md promises for the
    defaults (real within-subject EEG affect decoding), above chance (50 %, what sessions
    without the EEG effects score) and far from 100 %; the same check on exaggerated effects
    without drift scores clearly higher, so the check can see effects.

    The bounds are the documented range, not this seed's result: the mean of six subjects
    varies by about 0.05 from seed to seed (seeds 0-19 and 21: 0.57-0.72). A single subject may
    reach 100 % (16 trials), so only the mean is bounded above."""
    subjects = range(1, 7)
    default = [session_accuracy(simulate_session(seed=21, subject_index=k)) for k in subjects]
    acc = np.array([(r.valence, r.arousal) for r in default])
    assert np.all(np.isfinite(acc))
    assert 0.55 <= acc.mean() <= 0.75, acc
    strong_cfg = SimulatorConfig().replace(
        affect={
            "responder_prob": 1.0,
            "faa_effect": 3.0,
            "alpha_suppression": 3.0,
            "beta_gamma_effect": 2.0,
        },
        eeg={"drift_sd": 0.0, "trial_power_sd": 0.0},
    )
    strong = [
        session_accuracy(simulate_session(strong_cfg, seed=21, subject_index=k)) for k in subjects
    ]
    strong_acc = np.array([(r.valence, r.arousal) for r in strong])
    assert strong_acc.mean() > acc.mean() + 0.1
