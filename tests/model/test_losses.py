"""The training losses: finite, switchable, reweighted, guarded, and the distillation gradient path."""

import dataclasses

import pytest
import torch

from bci_affect.core.errors import ConfigError
from bci_affect.models.transfer import AffectModel, LossConfig, compute_losses, emg_weights

from .synthetic import make_windows

TERMS = ("task", "sim", "unc", "kd")
WEIGHT = {"task": "task_weight", "sim": "lambda_sim", "unc": "lambda_unc", "kd": "lambda_kd"}


@pytest.fixture
def batch_and_labels():
    d = make_windows(32, seed=5)
    y = torch.as_tensor(d.labels).clone()
    y[::4] = -1  # some windows unlabelled
    return d.batch, y


def test_every_term_is_finite_and_non_negative(model, batch_and_labels):
    batch, y = batch_and_labels
    model.train()
    terms = compute_losses(model(batch), y, LossConfig(), emg_score=batch.emg_score)
    for name in ("total", *TERMS):
        v = getattr(terms, name)
        assert v.ndim == 0 and torch.isfinite(v) and v >= 0, name
    assert all(getattr(terms, t) > 0 for t in TERMS)
    cfg = LossConfig()
    expected = (
        terms.task
        + cfg.lambda_sim * terms.sim
        + cfg.lambda_unc * terms.unc
        + cfg.lambda_kd * terms.kd
    )
    torch.testing.assert_close(terms.total, expected)


@pytest.mark.parametrize("off", TERMS)
def test_each_term_switches_off(model, batch_and_labels, off):
    batch, y = batch_and_labels
    model.train()
    torch.manual_seed(0)
    out = model(batch)
    on = compute_losses(out, y, LossConfig(), emg_score=batch.emg_score)
    cfg = LossConfig(**{f"use_{off}": False})
    part = compute_losses(out, y, cfg, emg_score=batch.emg_score)
    assert float(getattr(part, off).detach()) == 0.0
    weight = getattr(cfg, WEIGHT[off])
    torch.testing.assert_close(part.total, on.total - weight * getattr(on, off))
    part.total.backward()  # still differentiable
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_term_alone_gives_a_finite_gradient(model, batch_and_labels):
    batch, y = batch_and_labels
    model.train()
    for only in TERMS:
        model.zero_grad()
        cfg = LossConfig(**{f"use_{t}": t == only for t in TERMS})
        terms = compute_losses(model(batch), y, cfg, emg_score=batch.emg_score)
        terms.total.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), only
        assert any(g.abs().sum() > 0 for g in grads), only


def test_all_terms_off_is_refused():
    with pytest.raises(ConfigError, match="switch on at least one"):
        LossConfig(use_task=False, use_sim=False, use_unc=False, use_kd=False)
    with pytest.raises(ConfigError, match="kd_temperature must be > 0"):
        LossConfig(kd_temperature=0)


def test_gradients_reach_the_student_through_the_distillation_path(model, batch_and_labels):
    batch, y = batch_and_labels
    model.train()
    kd_only = LossConfig(use_task=False, use_sim=False, use_unc=False, use_kd=True)
    terms = compute_losses(model(batch), y, kd_only, emg_score=batch.emg_score)
    terms.total.backward()
    enc = model.student.de_encoder
    assert enc.fc1.weight.grad is not None and enc.fc1.weight.grad.abs().sum() > 0
    assert model.inject_proj.weight.grad.abs().sum() > 0
    # the teacher's head is the fixed reader on this path, and the student head is not on it
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.teacher.parameters())
    assert (
        model.student.head_out.weight.grad is None
        or model.student.head_out.weight.grad.abs().sum() == 0
    )


def test_plain_logit_distillation_ablation_trains_the_student_head(model, batch_and_labels):
    batch, y = batch_and_labels
    model.train()
    cfg = LossConfig(use_task=False, use_sim=False, use_unc=False, kd_via_injection=False)
    compute_losses(model(batch), y, cfg).total.backward()
    assert model.student.head_out.weight.grad.abs().sum() > 0
    assert model.inject_proj.weight.grad is None
    model.eval()
    with pytest.raises(ConfigError, match="needs injected_logits"):
        compute_losses(model(batch), y, LossConfig())


def test_emg_guard_removes_distillation_on_contaminated_windows(model, batch_and_labels):
    batch, y = batch_and_labels
    model.train()
    out = model(batch)
    dirty = torch.ones(len(batch))
    guarded = compute_losses(out, y, LossConfig(), emg_score=dirty)
    unguarded = compute_losses(out, y, LossConfig(emg_guard=False), emg_score=dirty)
    assert float(guarded.kd.detach()) == 0.0 and float(unguarded.kd.detach()) > 0
    assert float(guarded.sim.detach()) == 0.0 and float(unguarded.sim.detach()) > 0
    torch.testing.assert_close(
        emg_weights(torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0, float("nan")])),
        torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0, 0.0]),
    )


def test_uncertain_windows_are_down_weighted(model, batch_and_labels):
    batch, y = batch_and_labels
    model.train()
    out = model(batch)
    u = torch.zeros(len(batch))
    u[16:] = 1.0  # the second half fully uncertain: weight 1 - u = 0
    out = dataclasses.replace(out, uncertainty=u)
    cfg = LossConfig(use_sim=False, use_unc=False, use_kd=False)
    weighted = compute_losses(out, y, cfg)
    y_first = y.clone()
    y_first[16:] = -1
    first_half_only = compute_losses(
        out,
        y_first,
        LossConfig(use_sim=False, use_unc=False, use_kd=False, reweight_by_uncertainty=False),
    )
    torch.testing.assert_close(weighted.task, first_half_only.task)


def test_student_distillation_needs_no_label_and_follows_the_face_reliability():
    from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES

    torch.manual_seed(0)
    model = AffectModel(8, 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES).train()
    d = make_windows(8, seed=2, face_missing=0.0).batch
    unlabelled = torch.full((8,), -1)
    out = model(d)
    off = compute_losses(out, unlabelled, LossConfig(use_kd=False, use_task=False))
    on = compute_losses(
        out, unlabelled, LossConfig(use_kd=False, use_task=False, lambda_kd_student=1.0)
    )
    assert float(on.total) > float(off.total) and float(on.kd) > 0
    on.total.backward()
    assert model.student.head_out.weight.grad.abs().sum() > 0  # the student's own head learns
    # without a reliable face there is nothing to distil
    model.zero_grad()
    out = model(d)
    out.face_reliability = torch.zeros(8)
    none = compute_losses(
        out, unlabelled, LossConfig(use_kd=False, use_task=False, lambda_kd_student=1.0)
    )
    assert float(none.kd) == 0.0
