"""Eval-mode inference on folded weights: the same outputs as the eager pass, fewer ops."""

from __future__ import annotations

import copy
from dataclasses import fields, replace

import pytest
import torch

from bci_affect.models.finetune import TrainConfig, fit, fit_conformal
from bci_affect.models.fused import fold_standardisation
from bci_affect.models.transfer import AffectModel, AffectOutput

from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows

INPUTS = {
    "de": {},
    "raw": {"eeg_inputs": "raw", "n_times": 256, "sfreq": 128.0},
    "both": {"eeg_inputs": "both", "n_times": 256, "sfreq": 128.0},
}


def _trained(inputs: str, **overrides) -> AffectModel:
    torch.manual_seed(0)
    model = AffectModel(
        len(EEG_CH_NAMES),
        4,
        face_ch_names=FACE_CH_NAMES,
        eeg_ch_names=EEG_CH_NAMES,
        **INPUTS[inputs],
        **overrides,
    )
    data = make_windows(160, seed=1, raw=True)
    fit(model, data.batch, data.labels, TrainConfig(epochs=2, seed=0))
    # the head gate starts at 0: give it a value so the folded gate is exercised
    with torch.no_grad():
        if model.teacher.head_gate is not None:
            model.teacher.head_gate.fill_(0.7)
    return model


def _random_batch(n: int = 48, seed: int = 7):
    batch = make_windows(n, seed=seed, raw=True, n_frames=20).batch
    de = batch.eeg_de.clone()
    de[3, 2, :] = float("nan")  # a channel left out as bad
    de[5, 0, 1] = float("inf")
    face = batch.face.clone()
    face[8, :4, 1] = 1.5  # quality out of range: clipped to 1
    face[9, :, 5] = -0.2  # an expression probability below 0: clipped to 0
    quality = batch.eeg_quality.clone()
    quality[2] = float("nan")
    emg = batch.emg_score.clone()
    emg[4] = float("nan")
    return replace(batch, eeg_de=de, face=face, eeg_quality=quality, emg_score=emg)


def _both_paths(model: AffectModel, batch, **kw) -> tuple[AffectOutput, AffectOutput]:
    model.eval()
    with torch.inference_mode():
        model.fused_inference = False
        eager = model(batch, **kw)
        model.fused_inference = True
        fused = model(batch, **kw)
    assert model._fused is not None  # the folded path ran
    return eager, fused


def _assert_same(eager: AffectOutput, fused: AffectOutput) -> None:
    for f in fields(AffectOutput):
        a, b = getattr(eager, f.name), getattr(fused, f.name)
        if a is None:
            assert b is None, f.name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, f.name
        if a.dtype == torch.bool:
            assert torch.equal(a, b), f.name
        else:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=f.name)


@pytest.mark.parametrize("inputs", sorted(INPUTS))
@pytest.mark.parametrize("calibrated", [True, False])
def test_folded_pass_equals_the_eager_pass(inputs, calibrated):
    model = _trained(inputs)
    model.calibrated.fill_(calibrated)
    batch = _random_batch()
    _assert_same(*_both_paths(model, batch, with_injected=True))
    _assert_same(*_both_paths(model, batch))
    one = batch.index(slice(0, 1))  # batch 1, the live case
    _assert_same(*_both_paths(model, one))


def test_folded_pass_without_prior_quality_or_mask():
    names = tuple(c for c in FACE_CH_NAMES if c != "quality")
    keep = [FACE_CH_NAMES.index(c) for c in names]
    torch.manual_seed(0)
    model = AffectModel(
        len(EEG_CH_NAMES), 4, face_ch_names=names, eeg_ch_names=EEG_CH_NAMES, use_prior=False
    )
    data = make_windows(100, seed=1)
    batch = replace(data.batch, face=data.batch.face[..., keep])
    fit(model, batch, data.labels, TrainConfig(epochs=1, seed=0))
    test = _random_batch()
    test = replace(test, face=test.face[..., keep], face_mask=None)  # mask from face_present
    _assert_same(*_both_paths(model, test))


def test_prediction_sets_come_with_the_folded_pass():
    model = _trained("de")
    cal = make_windows(200, seed=3)
    fit_conformal(model, cal.batch, cal.labels, coverage=0.9, method="lac")
    eager, fused = _both_paths(model, _random_batch())
    assert fused.prediction_sets is not None
    _assert_same(eager, fused)


def test_folded_weights_follow_every_change_of_the_model():
    model = _trained("de")
    batch = _random_batch()
    _both_paths(model, batch)
    # an in-place edit in eval mode (version counters)
    with torch.no_grad():
        model.student.head_out.weight.mul_(1.5)
        model.teacher.input_std.mul_(2.0)
    _assert_same(*_both_paths(model, batch))
    # the calibration flag
    model.calibrated.fill_(False)
    _assert_same(*_both_paths(model, batch))
    # a state dict from another model
    other = _trained("de")
    with torch.no_grad():
        other.prototypes.prototypes.add_(0.3)
    model.load_state_dict(other.state_dict())
    eager, fused = _both_paths(model, batch)
    _assert_same(eager, fused)
    with torch.inference_mode():
        other.eval()
        other.fused_inference = False
        _assert_same(other(batch), fused)
    # a deep copy, then training the copy, leaves the original's folded weights right
    twin = copy.deepcopy(model)
    data = make_windows(80, seed=4)
    fit(twin, data.batch, data.labels, TrainConfig(epochs=1, seed=1))
    _assert_same(*_both_paths(model, batch))
    _assert_same(*_both_paths(twin, batch))


def test_checkpoints_stay_plain_state_dicts():
    model = _trained("de")
    keys = set(model.state_dict())
    _both_paths(model, _random_batch())
    assert set(model.state_dict()) == keys
    assert all(not k.startswith("_fused") for k in keys)


def test_autograd_and_training_use_the_eager_pass():
    model = _trained("de")
    batch = _random_batch()
    model.eval()
    model._fused = None
    out = model(batch)  # eval, autograd on: gradients must reach the parameters
    out.probs.sum().backward()
    assert model.student.de_encoder.fc1.weight.grad is not None
    assert model._fused is None


def test_fold_standardisation_matches_standardise_then_linear():
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(6, 5, generator=gen), torch.randn(6, generator=gen)
    mean, std = torch.randn(5, generator=gen), torch.rand(5, generator=gen) + 0.5
    x = torch.randn(10, 5, generator=gen)
    wt, bf = fold_standardisation(w, b, mean, std)
    torch.testing.assert_close(
        x @ wt + bf, torch.nn.functional.linear((x - mean) / std, w, b), rtol=1e-5, atol=1e-5
    )
