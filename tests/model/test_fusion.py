"""Dirichlet opinions and their Dempster–Shafer fusion (property tests)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bci_affect.core.errors import ShapeError
from bci_affect.uncertainty import (
    alpha_from_evidence,
    alpha_from_opinion,
    dirichlet_mean,
    dirichlet_uncertainty,
    ds_combine,
    evidence_from_similarity,
    evidential_loss,
    fuse_alphas,
    kl_dirichlet_uniform,
    opinion_from_alpha,
)

K = 4
finite_evidence = arrays(np.float64, (3, K), elements=st.floats(0.0, 1e5, allow_nan=False))
any_evidence = arrays(
    np.float64,
    (3, K),
    elements=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)),
)
SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(finite_evidence, finite_evidence)
def test_adding_a_modality_never_raises_uncertainty(e1, e2):
    a1, a2 = alpha_from_evidence(torch.from_numpy(e1)), alpha_from_evidence(torch.from_numpy(e2))
    fused = ds_combine(a1, a2)
    u, u1, u2 = dirichlet_uncertainty(fused), dirichlet_uncertainty(a1), dirichlet_uncertainty(a2)
    assert torch.all(u <= u1) and torch.all(u <= u2)


@SETTINGS
@given(finite_evidence)
def test_a_missing_modality_is_the_identity(e):
    a = alpha_from_evidence(torch.from_numpy(e))
    vacuous = torch.ones_like(a)
    assert torch.equal(ds_combine(a, vacuous), a)
    assert torch.equal(ds_combine(vacuous, a), a)


@SETTINGS
@given(any_evidence, any_evidence)
def test_any_input_gives_finite_valid_opinions(e1, e2):
    fused = ds_combine(torch.from_numpy(e1) + 1.0, torch.from_numpy(e2) + 1.0)
    assert torch.isfinite(fused).all() and (fused >= 1.0).all()
    u = dirichlet_uncertainty(fused)
    assert torch.all((u > 0) & (u <= 1))
    p = dirichlet_mean(fused)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=p.dtype))


@SETTINGS
@given(finite_evidence, finite_evidence, finite_evidence)
def test_commutative_and_associative(e1, e2, e3):
    a1, a2, a3 = (alpha_from_evidence(torch.from_numpy(e)) for e in (e1, e2, e3))
    torch.testing.assert_close(ds_combine(a1, a2), ds_combine(a2, a1))
    torch.testing.assert_close(
        ds_combine(ds_combine(a1, a2), a3), ds_combine(a1, ds_combine(a2, a3)), rtol=1e-9, atol=1e-6
    )
    torch.testing.assert_close(fuse_alphas([a1, a2, a3]), ds_combine(ds_combine(a1, a2), a3))


moderate_evidence = arrays(np.float64, (3, K), elements=st.floats(0.0, 1e3, allow_nan=False))


@SETTINGS
@given(moderate_evidence, moderate_evidence)
def test_closed_form_matches_the_textbook_rule(e1, e2):
    """The evidence form equals the belief/uncertainty form of trusted multi-view classification.

    (Evidence kept below the clipping level, where the two may differ.)
    """
    a1, a2 = alpha_from_evidence(torch.from_numpy(e1)), alpha_from_evidence(torch.from_numpy(e2))
    b1, u1 = opinion_from_alpha(a1)
    b2, u2 = opinion_from_alpha(a2)
    conflict = b1.sum(-1) * b2.sum(-1) - (b1 * b2).sum(-1)
    b = (b1 * b2 + b1 * u2[:, None] + b2 * u1[:, None]) / (1 - conflict)[:, None]
    u = u1 * u2 / (1 - conflict)
    expected = alpha_from_opinion(b, u)
    torch.testing.assert_close(ds_combine(a1, a2), expected, rtol=1e-6, atol=1e-6)


def test_agreeing_opinions_reinforce_and_conflict_spreads():
    a = alpha_from_evidence(torch.tensor([[9.0, 0, 0, 0]]))
    same = ds_combine(a, a)
    assert dirichlet_mean(same)[0, 0] > dirichlet_mean(a)[0, 0]
    b = alpha_from_evidence(torch.tensor([[0, 9.0, 0, 0]]))
    clash = dirichlet_mean(ds_combine(a, b))[0]
    assert torch.isclose(clash[0], clash[1]) and clash[0] > clash[2]


def test_shape_mismatch_is_refused():
    with pytest.raises(ShapeError, match="same classes"):
        ds_combine(torch.ones(2, 4), torch.ones(2, 3))


def test_evidence_from_similarity_range():
    s = torch.tensor([-1.0, 0.0, 1.0, 1.5])
    e = evidence_from_similarity(s, 0.2)
    assert e[0] == 0 and math.isclose(float(e[1]), 1 - math.exp(-5), rel_tol=1e-5)
    assert math.isclose(float(e[2]), 2 * math.sinh(5), rel_tol=1e-5) and e[3] == e[2]


def test_evidential_loss_prefers_evidence_on_the_true_class():
    y = torch.tensor([2, -1])
    right = alpha_from_evidence(torch.tensor([[0.0, 0, 20, 0], [0.0, 0, 20, 0]]))
    wrong = alpha_from_evidence(torch.tensor([[20.0, 0, 0, 0], [20.0, 0, 0, 0]]))
    lr, lw = evidential_loss(right, y, 0.5), evidential_loss(wrong, y, 0.5)
    assert lr[0] < lw[0] and lr[1] == 0 and lw[1] == 0
    assert torch.isfinite(lw).all()


def test_kl_to_uniform_is_zero_only_at_uniform():
    assert float(kl_dirichlet_uniform(torch.ones(1, K))) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_dirichlet_uniform(torch.tensor([[5.0, 1, 1, 1]]))) > 0.1
