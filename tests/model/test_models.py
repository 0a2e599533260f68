"""The modules: registry forward passes, the teacher's prior, the student's montages, missing modalities."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.models.registry import REGISTRY, build_model, get_model_class
from bci_affect.models.student import EEGStudent
from bci_affect.models.teacher import EXPRESSION_CHANNELS, FaceTeacher, expression_prior_matrix
from bci_affect.models.transfer import AffectModel, ModelConfig, WindowBatch
from bci_affect.uncertainty.fusion import FusionPool

from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows

N_FACE = len(FACE_CH_NAMES)


def _kwargs(name):
    return {
        "affect_model": {"face_ch_names": FACE_CH_NAMES},
        "face_teacher": {"ch_names": FACE_CH_NAMES},
        "eeg_student": {},
        "logistic_baseline": {},
    }[name]


def _inputs(name, b=3):
    face = torch.rand(b, 10, N_FACE)
    de = torch.randn(b, 8, 5)
    if name == "affect_model":
        return (WindowBatch(face=face, eeg_de=de),)
    if name == "face_teacher":
        return (face,)
    return (de,)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_model_runs_on_random_input(name):
    if name == "mini_xception":  # the pretrained face network: 64x64 greyscale crops in
        model, inputs = REGISTRY[name](4), (torch.rand(3, 1, 64, 64) * 2 - 1,)
    else:
        n_chans = N_FACE if name == "face_teacher" else 8
        model, inputs = build_model(name, n_chans, 4, **_kwargs(name)), _inputs(name)
    out = model(*inputs)
    logits = out.teacher_logits if name == "affect_model" else out
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()


def test_registry_agrees_with_the_package_registry():
    import bci_affect.models as models

    assert REGISTRY is models.REGISTRY
    assert set(REGISTRY) >= {"affect_model", "face_teacher", "eeg_student", "logistic_baseline"}


def test_registry_unknown_name():
    with pytest.raises(ConfigError, match="unknown model 'resnet'; registered: affect_model"):
        get_model_class("resnet")


def test_untrained_teacher_outputs_the_circumplex_prior():
    teacher = FaceTeacher(N_FACE, 4, ch_names=FACE_CH_NAMES)
    face = torch.zeros(2, 5, N_FACE)
    face[..., FACE_CH_NAMES.index("face_present")] = (
        1.0  # no explicit mask: taken from this channel
    )
    happy = FACE_CH_NAMES.index("expr_happy")
    sad = FACE_CH_NAMES.index("expr_sad")
    face[0, :, happy] = 1.0
    face[1, :, sad] = 1.0
    probs = torch.softmax(teacher(face), -1)
    prior = torch.from_numpy(expression_prior_matrix("quadrant")).float()
    torch.testing.assert_close(probs[0], prior[3], atol=1e-5, rtol=1e-4)  # happy row
    torch.testing.assert_close(probs[1], prior[4], atol=1e-5, rtol=1e-4)  # sad row
    assert int(probs[0].argmax()) == 3 and int(probs[1].argmax()) == 0


def test_teacher_without_expression_channels():
    names = [c for c in FACE_CH_NAMES if c != "expr_fear"]
    with pytest.raises(ConfigError, match="missing from the FaceFeatures channels: expr_fear"):
        FaceTeacher(len(names), 4, ch_names=names)
    t = FaceTeacher(len(names), 4, ch_names=names, use_prior=False)
    assert t(torch.rand(2, 3, len(names))).shape == (2, 4)


def test_expression_columns_found_by_name_in_any_order():
    names = list(reversed(FACE_CH_NAMES))
    t = FaceTeacher(len(names), 4, ch_names=names)
    face = torch.zeros(1, 4, len(names))
    face[0, :, names.index("expr_angry")] = 1.0
    assert int(t(face, torch.ones(1, 4, dtype=torch.bool)).argmax()) == 1  # LVHA
    assert torch.allclose(
        t(face), torch.full((1, 4), -np.log(4))
    )  # face_present = 0: no face, uniform


@pytest.mark.parametrize("n_chans", [1, 3, 32])
@pytest.mark.parametrize("inputs", ["de", "raw", "both"])
def test_student_takes_any_montage(n_chans, inputs):
    names = [f"C{i}" for i in range(n_chans)]
    s = EEGStudent(n_chans, 4, ch_names=names, inputs=inputs, n_times=128, sfreq=128.0)
    s.eval()
    out = s(torch.randn(2, n_chans, 5), torch.randn(2, n_chans, 128))
    assert out.shape == (2, 4)
    if inputs != "de":  # the conv net accepts other window lengths too
        assert s(torch.randn(2, n_chans, 5), torch.randn(2, n_chans, 300)).shape == (2, 4)


def test_student_shape_errors_name_the_input():
    s = EEGStudent(8, 4)
    with pytest.raises(ShapeError, match=r"eeg_de must have shape \(B, 8, 5\)"):
        s(torch.randn(2, 7, 5))
    with pytest.raises(ShapeError, match="pass eeg_de"):
        s(None)
    with pytest.raises(ConfigError, match="need n_times"):
        EEGStudent(8, 4, inputs="raw")


def test_model_config_validation():
    with pytest.raises(ConfigError, match="inject_layer must be an intermediate layer"):
        ModelConfig(FACE_CH_NAMES, EEG_CH_NAMES, inject_layer=3)
    with pytest.raises(ConfigError, match=">= 2 widths"):
        ModelConfig(FACE_CH_NAMES, EEG_CH_NAMES, teacher_head_hidden=(32,))
    with pytest.raises(ConfigError, match="has 2 classes, but n_outputs is 4"):
        AffectModel(8, 4, face_ch_names=FACE_CH_NAMES, label_scheme="valence")
    cfg = ModelConfig(FACE_CH_NAMES, EEG_CH_NAMES, teacher_head_hidden=(64, 32, 16))
    assert cfg.resolved_inject_layer == 2
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("layer", [1, 2])
def test_injection_enters_the_chosen_layer(layer):
    m = AffectModel(
        8, 4, face_ch_names=FACE_CH_NAMES, teacher_head_hidden=(48, 24), inject_layer=layer
    )
    assert m.inject_proj.out_features == m.teacher.head.dims[layer]
    out = m(make_windows(4).batch, with_injected=True)
    assert out.injected_logits.shape == (4, 4)


def _opinions_ok(out):
    for t in (out.probs, out.alpha, out.uncertainty, out.teacher_probs, out.student_probs):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(out.probs.shape[0]))


@pytest.mark.parametrize("calibrated", [False, True])
def test_missing_modalities_never_crash_nor_nan(model, calibrated):
    model.calibrated.fill_(calibrated)
    model.eval()
    d = make_windows(6, seed=3).batch
    no_face = WindowBatch(
        face=torch.full_like(d.face, float("nan")),
        face_mask=torch.zeros_like(d.face_mask),
        eeg_de=d.eeg_de,
    )
    no_camera = WindowBatch(eeg_de=d.eeg_de, eeg_quality=d.eeg_quality)
    bad_eeg = WindowBatch(
        face=d.face, face_mask=d.face_mask, eeg_de=torch.full_like(d.eeg_de, float("nan"))
    )
    no_eeg = WindowBatch(face=d.face, face_mask=d.face_mask)
    zero_quality = WindowBatch(
        face=d.face, face_mask=d.face_mask, eeg_de=d.eeg_de, eeg_quality=torch.zeros(6)
    )
    nothing = WindowBatch(
        face=torch.full_like(d.face, float("nan")),
        face_mask=torch.zeros_like(d.face_mask),
        eeg_de=torch.full_like(d.eeg_de, float("inf")),
    )
    with torch.inference_mode():
        for batch in (no_face, no_camera, bad_eeg, no_eeg, zero_quality, nothing):
            _opinions_ok(model(batch))
        out = model(nothing)
        torch.testing.assert_close(out.uncertainty, torch.ones(6))  # honest: nothing known
        torch.testing.assert_close(out.probs, torch.full((6, 4), 0.25))
        out = model(no_face)
        assert not out.face_available.any()
        other_face = model(replace(no_face, face=torch.zeros_like(d.face)))  # still no face
        torch.testing.assert_close(out.probs, other_face.probs)  # the EEG's opinion alone
        out = model(bad_eeg)
        assert torch.all(out.eeg_reliability == 0)
        torch.testing.assert_close(out.probs, model(no_eeg).probs)  # the face's opinion alone


def test_a_modality_the_fusion_gives_no_weight_is_ignored():
    torch.manual_seed(0)
    model = AffectModel(8, 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES).eval()
    model.calibrated.fill_(True)
    d = make_windows(6, seed=5, face_missing=0.0).batch
    face_only = WindowBatch(face=d.face, face_mask=d.face_mask)
    with torch.no_grad():
        model.fusion_raw.copy_(torch.tensor([FusionPool.RAW_ONE, -40.0]))  # w_eeg ~ 0
    with torch.inference_mode():
        both, alone = model(d), model(face_only)
    torch.testing.assert_close(both.probs, alone.probs)
    # and the fused decision is the face head's when the EEG counts for nothing
    torch.testing.assert_close(both.predicted, both.teacher_probs.argmax(-1))
    # the uncertainty is the rescaled chance of an error of the fused probabilities
    k = 4
    torch.testing.assert_close(
        both.uncertainty, ((1 - both.probs.amax(-1)) * k / (k - 1)).clamp(1e-3, 1.0)
    )
    torch.testing.assert_close(both.alpha / both.alpha.sum(-1, keepdim=True), both.probs)


def test_zero_label_mode_uses_the_prior_and_a_vacuous_student(model):
    model.eval()
    d = make_windows(5, seed=4, face_missing=0.0).batch
    with torch.inference_mode():
        out = model(d)
    assert torch.all(out.uncertainty_student == 1)
    torch.testing.assert_close(out.probs.argmax(-1), out.teacher_probs.argmax(-1))
    assert torch.all(out.uncertainty < 1)


def test_window_batch_validation():
    with pytest.raises(ShapeError, match="same number of windows"):
        WindowBatch(face=torch.zeros(3, 2, N_FACE), eeg_de=torch.zeros(2, 8, 5))
    with pytest.raises(ShapeError, match="at least one of"):
        WindowBatch()
    b = WindowBatch.from_arrays(
        eeg_de=np.zeros((4, 8, 5)),
        face_mask=np.ones((4, 2), dtype=int),
        face=np.zeros((4, 2, N_FACE)),
    )
    assert len(b) == 4 and b.face_mask.dtype == torch.bool and len(b.index(slice(1, 3))) == 2
    with pytest.raises(ConfigError, match="unknown WindowBatch fields"):
        WindowBatch.from_arrays(eeg=np.zeros((1, 8, 5)))


def test_expression_channel_names_are_the_fer2013_ones():
    assert EXPRESSION_CHANNELS == (
        "expr_angry",
        "expr_disgust",
        "expr_fear",
        "expr_happy",
        "expr_sad",
        "expr_surprise",
        "expr_neutral",
    )
