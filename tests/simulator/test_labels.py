"""Trials and self-reports: balanced quadrants, rater noise, wrong labels, subjects."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from acquisition.simulator import SimulatorConfig, draw_subject, subject_id
from acquisition.simulator.protocol import QUADRANTS, make_schedule, state_at


def _schedule(seed=0, **sections):
    return make_schedule(SimulatorConfig().replace(**sections), np.random.default_rng(seed))


@pytest.mark.parametrize("n_trials", [16, 18, 3])
def test_quadrants_are_balanced_and_targets_in_range(n_trials):
    sched = _schedule(session={"n_trials": n_trials})
    counts = Counter(t.quadrant for t in sched.trials)
    assert sum(counts.values()) == n_trials
    assert max(counts.values()) - min(counts.get(q, 0) for q in QUADRANTS) <= 1
    cfg = SimulatorConfig()
    for t in sched.trials:
        hv, ha = QUADRANTS[t.quadrant]
        lo, hi = cfg.affect.high_range if hv else cfg.affect.low_range
        assert lo <= t.target_valence <= hi
        lo, hi = cfg.affect.high_range if ha else cfg.affect.low_range
        assert lo <= t.target_arousal <= hi
        assert 1 <= t.rating_valence <= 9 and 1 <= t.rating_arousal <= 9
        assert 20.0 <= t.end - t.start <= 30.0
        assert t.end - 3.0 <= t.rating_time <= t.end
    starts = np.array([t.start for t in sched.trials])
    ends = np.array([t.end for t in sched.trials])
    rests = starts[1:] - ends[:-1]
    assert np.all((rests >= 8.0) & (rests <= 12.0))
    assert starts[0] == pytest.approx(cfg.session.start_time_s + cfg.session.lead_in_s)
    assert sched.stop == pytest.approx(ends[-1] + cfg.session.tail_s)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_wrong_label_rate_matches_the_config(rate):
    sched = _schedule(
        seed=1, session={"n_trials": 2000}, labels={"wrong_label_rate": rate, "rater_noise_sd": 0.0}
    )
    flips = np.array([(t.flipped_valence, t.flipped_arousal) for t in sched.trials])
    n = flips.size
    sd = np.sqrt(max(rate * (1 - rate), 1e-12) / n)
    assert abs(flips.mean() - rate) < 4 * sd + 1e-12
    for t in sched.trials:
        for felt, rating, flipped in (
            (t.felt_valence, t.rating_valence, t.flipped_valence),
            (t.felt_arousal, t.rating_arousal, t.flipped_arousal),
        ):
            honest = int(np.clip(np.rint(felt), 1, 9))
            assert rating == (10 - honest if flipped else honest)
    # a wrong label lands on the other side of the scale from the felt state
    wrong = [t for t in sched.trials if t.flipped_valence and abs(t.felt_valence - 5) > 1]
    assert all((t.rating_valence - 5) * (t.felt_valence - 5) < 0 for t in wrong)


def test_rater_and_induction_noise():
    sched = _schedule(
        seed=2,
        session={"n_trials": 2000},
        labels={"wrong_label_rate": 0.0, "rater_noise_sd": 1.0},
        affect={"induction_sd": 0.5},
    )
    felt = np.array([t.felt_valence for t in sched.trials])
    target = np.array([t.target_valence for t in sched.trials])
    rating = np.array([t.rating_valence for t in sched.trials])
    inner = (felt > 2.5) & (felt < 7.5)  # away from the clipping at 1 and 9
    assert np.std(rating[inner] - felt[inner]) == pytest.approx(np.sqrt(1.0 + 1 / 12), rel=0.1)
    assert np.std(felt - target) == pytest.approx(0.5, rel=0.1)
    assert np.all(np.abs(rating - felt) < 6)


def test_state_ramps_between_rest_and_trials():
    sched = _schedule(seed=3, session={"n_trials": 4})
    t0 = sched.trials[0]
    times = np.array([t0.start - 1.0, t0.start + 5.0, t0.end + 5.0])
    v, a = state_at(times, sched, ramp_s=2.0)
    assert v[0] == 0.0 and a[0] == 0.0  # rest before the trial: neutral
    assert v[1] == pytest.approx((t0.felt_valence - 5) / 4)
    assert a[1] == pytest.approx((t0.felt_arousal - 5) / 4)
    assert v[2] == 0.0  # back to neutral after the ramp


def test_subjects_vary_and_some_are_non_responders_or_poker_faced():
    cfg = SimulatorConfig()
    subjects = [
        draw_subject(
            cfg, np.random.default_rng(np.random.SeedSequence(0, spawn_key=(k,))), subject_id(k)
        )
        for k in range(1, 201)
    ]
    responders = np.mean([s.responder for s in subjects])
    poker = np.mean([s.poker_face for s in subjects])
    assert responders == pytest.approx(cfg.affect.responder_prob, abs=0.1)
    assert poker == pytest.approx(cfg.face.poker_face_prob, abs=0.1)
    for s in subjects:
        if not s.responder:
            assert s.faa_effect == s.alpha_suppression == s.beta_gamma_effect == 0.0
        if s.poker_face:
            assert s.expressivity == cfg.face.poker_face_expressivity
    iaf = np.array([s.iaf_hz for s in subjects])
    assert 9.5 < iaf.mean() < 10.5 and 0.5 < iaf.std() < 1.1
    assert subject_id(3) == "sub-03" and subject_id(7, 150) == "sub-007"
