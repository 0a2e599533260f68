"""Padded face frames and channels left out: inputs that must not change a window's outputs."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from bci_affect.models.finetune import TrainConfig, fit
from bci_affect.models.teacher import FaceTeacher
from bci_affect.models.transfer import AffectModel, AffectOutput

from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows


@pytest.fixture(scope="module")
def model() -> AffectModel:
    torch.manual_seed(0)
    m = AffectModel(len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES)
    data = make_windows(160, seed=1)
    fit(m, data.batch, data.labels, TrainConfig(epochs=2, seed=0))
    with torch.no_grad():
        m.teacher.head_gate.fill_(0.5)
    return m.eval()


def _pad(batch, extra: int):
    """The windows with ``extra`` frames appended: NaN and masked out, as window_arrays pads."""
    b, _, c = batch.face.shape
    face = torch.cat([batch.face, torch.full((b, extra, c), float("nan"))], dim=1)
    mask = torch.cat([batch.face_mask, torch.zeros(b, extra, dtype=torch.bool)], dim=1)
    return replace(batch, face=face, face_mask=mask)


def _outputs(model: AffectModel, batch, fused: bool) -> AffectOutput:
    model.fused_inference = fused
    try:
        if fused:
            with torch.inference_mode():
                return model(batch, with_injected=True)
        return model(batch, with_injected=True)  # the eager pass (autograd on)
    finally:
        model.fused_inference = True


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("calibrated", [True, False])
def test_padding_a_window_with_masked_frames_changes_no_output(model, fused, calibrated):
    model.calibrated.fill_(calibrated)
    batch = make_windows(24, seed=5, n_frames=12).batch  # some windows without any face
    plain = _outputs(model, batch, fused)
    padded = _outputs(model, _pad(batch, 9), fused)
    for f in fields(AffectOutput):
        a, b = getattr(plain, f.name), getattr(padded, f.name)
        if a is None:
            assert b is None
        elif a.dtype == torch.bool:
            assert torch.equal(a, b), f.name
        else:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=f.name)
    model.calibrated.fill_(True)


def test_face_reliability_is_the_mean_quality_of_the_frames_with_a_face():
    names = FACE_CH_NAMES
    teacher = FaceTeacher(len(names), 4, ch_names=names)
    face = torch.zeros(2, 4, len(names))
    face[..., names.index("quality")] = torch.tensor([[0.8, 0.6, 0.2, 1.7], [0.5, 0.5, 0.5, 0.5]])
    mask = torch.tensor([[True, True, False, True], [False, False, False, False]])
    *_, reliability = teacher.encode(face, mask)
    # frames 0, 1 and 3 (1.7 clipped to 1); no face at all -> 0
    torch.testing.assert_close(reliability, torch.tensor([(0.8 + 0.6 + 1.0) / 3, 0.0]))


def test_face_reliability_without_a_quality_channel_is_face_presence():
    names = tuple(c for c in FACE_CH_NAMES if c != "quality")
    teacher = FaceTeacher(len(names), 4, ch_names=names)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    *_, reliability = teacher.encode(torch.zeros(2, 3, len(names)), mask)
    torch.testing.assert_close(reliability, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("fused", [False, True])
def test_a_channel_left_out_counts_as_its_training_mean(model, fused):
    batch = make_windows(6, seed=6).batch
    stats = model.student.de_encoder.input_mean  # (C, n_bands)
    bad = batch.eeg_de.clone()
    bad[:, 3, :] = float("nan")  # channel 3 left out as bad
    bad[1, 5, 2] = float("inf")
    average = batch.eeg_de.clone()
    average[:, 3, :] = stats[3]
    average[1, 5, 2] = stats[5, 2]
    out_bad = _outputs(model, replace(batch, eeg_de=bad), fused)
    out_avg = _outputs(model, replace(batch, eeg_de=average), fused)
    torch.testing.assert_close(out_bad.student_logits, out_avg.student_logits)
    torch.testing.assert_close(out_bad.z_eeg, out_avg.z_eeg)
    # the window still gets no EEG evidence: its input was not all finite
    assert torch.all(out_bad.eeg_reliability == 0)
    assert torch.all(out_avg.eeg_reliability > 0)


def test_a_channel_left_out_is_not_an_extreme_input(model):
    """Zeroing before the standardisation would feed ``-mean / std`` (far off for DE)."""
    batch = make_windows(6, seed=6).batch
    fitted = model.student.de_encoder.input_mean.clone()
    with torch.no_grad():
        model.student.de_encoder.input_mean.fill_(-8.0)  # log-power DE is far from 0
    try:
        bad = batch.eeg_de.clone() - 8.0
        bad[:, 3, :] = float("nan")
        f_bad, _ = model.student.encode(bad)
        avg = batch.eeg_de.clone() - 8.0
        avg[:, 3, :] = -8.0
        f_avg, _ = model.student.encode(avg)
        torch.testing.assert_close(f_bad, f_avg)
    finally:
        with torch.no_grad():
            model.student.de_encoder.input_mean.copy_(fitted)
