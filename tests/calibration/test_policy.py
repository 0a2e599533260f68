"""The query policy: budget, spacing, no overlapping spans, highest scores first."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bci_affect.core.errors import ConfigError
from calibration.policy import PolicyConfig, QueryPolicy


def drive(policy: QueryPolicy, scores, *, hop: float = 0.5, answer: bool = True):
    """Offer one window per ``hop`` seconds; answer every query at once. Returns triggers."""
    out = []
    for i, s in enumerate(scores):
        trig = policy.offer(10.0 + i * hop, float(s))
        if trig is not None:
            policy.asked(trig)
            out.append(trig)
            if answer:
                policy.closed(counted=True)
    return out


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1), min_size=1, max_size=400),
    budget=st.integers(0, 8),
    span=st.floats(1.0, 10.0),
    interval=st.floats(0.0, 30.0),
)
def test_budget_spacing_and_spans_hold_for_any_scores(scores, budget, span, interval):
    cfg = PolicyConfig(budget=budget, span_s=span, min_interval_s=interval, warmup=3)
    trigs = drive(QueryPolicy(cfg), scores)
    assert len(trigs) <= budget
    for a, b in zip(trigs, trigs[1:], strict=False):
        assert b.t_end - a.t_end >= interval - 1e-9
        assert b.t_start >= a.t_end - 1e-9  # spans never overlap
    for t in trigs:
        assert math.isclose(t.t_end - t.t_start, span)


@pytest.mark.parametrize("seed", range(3))
def test_asks_at_the_highest_scores(seed):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 0.2, 600)  # 300 s of low disagreement
    peaks = [100, 250, 400, 550]
    for p in peaks:
        scores[p - 4 : p + 1] = 0.9  # a span of high disagreement ending at window p
    cfg = PolicyConfig(
        budget=6, span_s=2.5, min_interval_s=3.0, top_fraction=0.03, warmup=60, explore=0.0
    )
    trigs = drive(QueryPolicy(cfg), scores)
    ends = [round((t.t_end - 10.0) / 0.5) for t in trigs]
    on_peak = [e for e in ends if any(p - 4 <= e <= p + 4 for p in peaks)]
    for p in peaks:  # every peak is asked about, while it is still recent
        assert any(p - 4 <= e <= p + 4 for e in on_peak), (p, ends)
    assert len(ends) - len(on_peak) <= 2, ends  # and little else
    assert all(t.score >= t.threshold for t in trigs)


def test_one_query_at_a_time_and_expiry_returns_the_budget():
    cfg = PolicyConfig(budget=2, span_s=1.0, min_interval_s=0.0, top_fraction=1.0, warmup=1)
    policy = QueryPolicy(cfg)
    first = policy.offer(1.0, 1.0)
    assert first is not None
    policy.asked(first)
    assert policy.offer(5.0, 1.0) is None  # waiting for the answer
    policy.closed(counted=False)  # expired: not counted
    assert policy.remaining == 2
    second = policy.offer(6.0, 1.0)
    assert second is not None and second.t_start >= first.t_end


def test_resumed_policy_never_reasks_a_span_and_counts_used():
    cfg = PolicyConfig(budget=3, span_s=4.0, min_interval_s=0.0, top_fraction=1.0, warmup=1)
    policy = QueryPolicy(cfg, used=2, spans=[(10.0, 14.0), (20.0, 24.0)])
    assert policy.remaining == 1
    assert policy.offer(16.0, 1.0) is None  # [12, 16] overlaps the first span
    assert policy.offer(24.5, 1.0) is None  # [20.5, 24.5] overlaps the second
    trig = policy.offer(28.0, 1.0)
    assert trig is not None and trig.t_start == 24.0


def test_spends_the_budget_when_time_runs_out():
    """Flat scores never reach the top fraction strictly; a known duration still spends it."""
    cfg = PolicyConfig(budget=4, span_s=2.0, min_interval_s=10.0, top_fraction=0.01, warmup=1)
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, 200)  # 100 s of windows
    with_duration = drive(QueryPolicy(cfg, duration_s=100.0), scores)
    assert len(with_duration) == 4


def test_bad_settings_are_refused_with_the_name():
    with pytest.raises(ConfigError, match="budget"):
        PolicyConfig(budget=-1)
    with pytest.raises(ConfigError, match="top_fraction"):
        PolicyConfig(top_fraction=0)
    with pytest.raises(ConfigError, match="unknown query method"):
        PolicyConfig(method="loudest")
    with pytest.raises(ConfigError, match="explore"):
        PolicyConfig(explore=1.5)


def test_a_share_of_the_queries_is_asked_at_random_moments():
    """Exploratory queries ignore the score (an unbiased sample of the session), come at a
    random moment after the spacing, and keep budget, spacing and spans."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 4000)
    cfg = PolicyConfig(budget=60, span_s=2.0, min_interval_s=10.0, warmup=8, explore=0.3)
    trigs = drive(QueryPolicy(cfg), scores)
    methods = [t.method for t in trigs]
    assert set(methods) == {"disagreement", "random"}
    share = methods.count("random") / len(methods)
    assert 0.1 < share < 0.55, share
    scored = [t for t in trigs if t.method != "random"]
    explored = [t for t in trigs if t.method == "random"]
    assert all(t.score >= t.threshold for t in scored)
    assert all(t.threshold == -math.inf for t in explored)
    # scored queries sit in the top 30 % of span scores; exploratory ones anywhere
    assert np.mean([t.score for t in explored]) < np.mean([t.score for t in scored])
    for a, b in zip(trigs, trigs[1:], strict=False):
        assert b.t_end - a.t_end >= cfg.min_interval_s - 1e-9 and b.t_start >= a.t_end - 1e-9
    # explore=0 never explores; explore=1 always does
    none = drive(QueryPolicy(PolicyConfig(budget=20, min_interval_s=10.0, explore=0.0)), scores)
    assert none and all(t.method == "disagreement" for t in none)
    every = drive(QueryPolicy(PolicyConfig(budget=20, min_interval_s=10.0, explore=1.0)), scores)
    assert every and all(t.method == "random" for t in every)
