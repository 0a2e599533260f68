"""Training over tensors: learning, zero-label distillation, fine-tuning, evaluation, conformal sets."""

import copy

import numpy as np
import pytest
import torch

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.models.finetune import (
    TrainConfig,
    evaluate,
    finetune,
    fit,
    fit_conformal,
    predict,
    with_loss,
)
from bci_affect.models.transfer import AffectModel
from bci_affect.uncertainty import ConformalPredictor, coverage_of

from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows

CHANCE = 0.25


def test_untrained_teacher_predicts_above_chance_from_the_prior(model, test_set):
    report = evaluate(model, test_set.batch, test_set.labels)
    assert report["teacher"]["accuracy"] > CHANCE + 0.1
    assert report["student"]["n"] == len(test_set.labels)


def test_training_learns_both_modalities(trained, test_set):
    model, history = trained
    assert not model.training and bool(model.calibrated)
    assert history.n_labelled == history.n_windows == 600 and history.device == "cpu"
    assert history.epochs[-1]["total"] < 0.7 * history.epochs[0]["total"]
    report = evaluate(model, test_set.batch, test_set.labels)
    assert report["teacher"]["accuracy"] > 0.8
    assert report["student"]["accuracy"] > CHANCE + 0.2
    assert report["fused"]["accuracy"] > 0.8
    out = predict(model, test_set.batch)
    # the fused opinion is more certain where both modalities speak than where only the EEG does
    assert out.uncertainty[out.face_available].mean() < out.uncertainty[~out.face_available].mean()
    wrong = out.predicted != torch.as_tensor(test_set.labels)
    assert out.uncertainty[wrong].mean() > out.uncertainty[~wrong].mean()


def _class_lift(probs, y):
    """Mean over classes of P(c | windows of class c) - P(c | other windows)."""
    return float(np.mean([probs[y == c, c].mean() - probs[y != c, c].mean() for c in range(4)]))


def test_distillation_from_the_prior_teaches_the_student_without_labels(train_set, test_set):
    """With no label at all, distillation moves the teacher's (prior) class information into the EEG path."""
    torch.manual_seed(0)
    model = AffectModel(
        len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES
    )
    model.fit_input_stats(train_set.batch)
    y = torch.as_tensor(test_set.labels)

    def eeg_path_lift():
        out = predict(model, test_set.batch, with_injected=True)
        return _class_lift(torch.softmax(out.injected_logits, -1), y)

    before = eeg_path_lift()
    unlabelled = np.full(len(train_set.labels), -1)
    history = fit(
        model, train_set.batch, unlabelled, with_loss(TrainConfig(epochs=10), use_sim=False)
    )
    assert history.n_labelled == 0 and not bool(model.calibrated)
    assert history.final["task"] == 0.0 and history.final["kd"] < 0.5 * history.epochs[0]["kd"]
    after = eeg_path_lift()
    assert abs(before) < 0.01 and after > 0.02


def test_finetune_personalises_to_a_new_subject(trained):
    model = copy.deepcopy(trained[0])
    new_train = make_windows(160, seed=11, subject=1)
    new_test = make_windows(600, seed=12, subject=1)
    before = evaluate(model, new_test.batch, new_test.labels)["student"]["accuracy"]
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    finetune(
        model,
        new_train.batch,
        new_train.labels,
        TrainConfig(epochs=25, lr=3e-3, freeze_teacher=True, fit_input_stats=False),
    )
    after = evaluate(model, new_test.batch, new_test.labels)["student"]["accuracy"]
    assert after > before + 0.1
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # the teacher stayed frozen
    assert all(p.requires_grad for p in model.parameters())


def test_evaluation_reports_emg_clean_windows_separately():
    """With facial EMG leaking the class into the EEG, the split exposes the leak."""
    train = make_windows(600, seed=21, leak=3.0, emg_fraction=0.4, eeg_separation=0.1)
    test = make_windows(800, seed=22, leak=3.0, emg_fraction=0.4, eeg_separation=0.1)
    torch.manual_seed(0)
    model = AffectModel(
        len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES
    )
    fit(model, train.batch, train.labels, with_loss(TrainConfig(epochs=10), emg_guard=True))
    student = evaluate(model, test.batch, test.labels, emg_clean_threshold=0.3)["student"]
    assert student["n_emg_clean"] + student["n_emg_contaminated"] == student["n"] == 800
    assert student["accuracy_emg_contaminated"] > student["accuracy_emg_clean"] + 0.1


@pytest.fixture(scope="module")
def conformal_pool(trained):
    windows = make_windows(3000, seed=31)
    return predict(trained[0], windows.batch).probs, torch.as_tensor(windows.labels)


@pytest.mark.parametrize(
    ("method", "allow_empty", "coverage"),
    [("lac", True, 0.9), ("aps", True, 0.9), ("aps", True, 0.8)],
)
def test_conformal_coverage_of_the_model_on_held_out_windows(
    conformal_pool, method, allow_empty, coverage
):
    """Mean coverage over random calibration/test splits (the usual conformal evaluation)."""
    probs, y = conformal_pool
    gen = torch.Generator().manual_seed(0)
    covs = []
    for r in range(10):
        perm = torch.randperm(len(y), generator=gen)
        cal, test = perm[:1500], perm[1500:]
        cp = ConformalPredictor(method=method, coverage=coverage, allow_empty=allow_empty, seed=r)
        cp.fit(probs[cal], y[cal])
        covs.append(coverage_of(cp.predict_sets(probs[test]), y[test]))
    assert abs(np.mean(covs) - coverage) <= 0.03, covs
    assert min(covs) > coverage - 0.05


def test_sets_attached_to_every_prediction_never_empty_by_default(trained, test_set):
    model = copy.deepcopy(trained[0])
    cp = fit_conformal(
        model, test_set.batch.index(slice(0, 600)), test_set.labels[:600], coverage=0.9
    )
    assert cp.n_calibration == 600 and model.conformal is cp and cp.method == "aps"
    held = test_set.batch.index(slice(600, None))
    report = evaluate(model, held, test_set.labels[600:])
    out = predict(model, held)
    assert out.prediction_sets.shape == (900, 4) and out.prediction_sets.any(-1).all()
    assert report["coverage"] >= 0.9 - 0.03 and 1.0 <= report["mean_set_size"] < 4.0


def test_bad_training_input_is_refused(model, train_set):
    with pytest.raises(ShapeError, match="labels for 600 windows"):
        fit(model, train_set.batch, train_set.labels[:10])
    with pytest.raises(ConfigError, match=r"labels must be -1 \(unlabelled\) or in \[0, 4\)"):
        fit(model, train_set.batch, np.full(600, 4))
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        TrainConfig(batch_size=1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            fit(model, train_set.batch, train_set.labels, TrainConfig(device="cuda"))


@pytest.mark.gpu
def test_training_uses_cuda_when_present(train_set):
    model = AffectModel(
        len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES
    )
    history = fit(model, train_set.batch, train_set.labels, TrainConfig(epochs=2))
    assert history.device.startswith("cuda")
    assert next(model.parameters()).is_cuda
    out = predict(model, train_set.batch.index(slice(0, 10)))
    assert torch.isfinite(out.probs).all()


# --------------------------------------------------------------------------------------------
# Epoch callback and freeze modes
# --------------------------------------------------------------------------------------------


def test_on_epoch_is_called_after_every_epoch_with_the_mean_terms(model, train_set):
    calls = []
    history = fit(
        model,
        train_set.batch.index(slice(0, 200)),
        train_set.labels[:200],
        TrainConfig(epochs=3, seed=0),
        on_epoch=lambda i, n, terms: calls.append((i, n, terms)),
    )
    assert [(i, n) for i, n, _ in calls] == [(0, 3), (1, 3), (2, 3)]
    assert [t for *_, t in calls] == history.epochs
    assert set(calls[0][2]) == {"total", "task", "sim", "unc", "kd"}
    seen = []
    finetune(
        model,
        train_set.batch.index(slice(0, 100)),
        train_set.labels[:100],
        on_epoch=lambda i, n, terms: seen.append(n),
    )
    assert seen == [15] * 15  # the default personalisation round: 15 epochs


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_freeze_teacher_encoder_trains_the_head_only(model, train_set):
    sub = train_set.batch.index(slice(0, 200))
    fit(model, sub, train_set.labels[:200], TrainConfig(epochs=2, seed=0))
    teacher = model.teacher
    frame, window = _snapshot(teacher.frame_encoder), _snapshot(teacher.window_encoder)
    stats = (teacher.input_mean.clone(), teacher.input_std.clone())
    head, gate = _snapshot(teacher.head), teacher.head_gate.detach().clone()
    student = _snapshot(model.student)
    labels = train_set.labels[200:500].copy()
    labels[100:] = -1  # 100 labelled windows, 200 unlabelled
    cfg = TrainConfig(epochs=3, lr=1e-3, freeze="teacher_encoder", seed=0)
    fit(model, train_set.batch.index(slice(200, 500)), labels, cfg)
    for before, module in ((frame, teacher.frame_encoder), (window, teacher.window_encoder)):
        for k, v in module.state_dict().items():
            assert torch.equal(v, before[k]), k  # bit-identical
    assert torch.equal(teacher.input_mean, stats[0]) and torch.equal(teacher.input_std, stats[1])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards
    assert any(not torch.equal(v, head[k]) for k, v in teacher.head.state_dict().items())
    assert not torch.equal(teacher.head_gate.detach(), gate)
    assert any(not torch.equal(v, student[k]) for k, v in model.student.state_dict().items())


def test_freeze_teacher_keeps_the_whole_teacher(model, train_set):
    before = _snapshot(model.teacher)
    for cfg in (
        TrainConfig(epochs=1, freeze="teacher", fit_input_stats=False),
        TrainConfig(epochs=1, freeze_teacher=True, fit_input_stats=False),
    ):
        assert cfg.frozen == "teacher"
        fit(model, train_set.batch.index(slice(0, 100)), train_set.labels[:100], cfg)
        for k, v in model.teacher.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_freeze_modes_are_checked():
    assert TrainConfig().frozen == "none"
    with pytest.raises(ConfigError, match="unknown freeze mode 'head'; valid: none, teacher"):
        TrainConfig(freeze="head")
    with pytest.raises(ConfigError, match="freeze_teacher=True means freeze='teacher'"):
        TrainConfig(freeze_teacher=True, freeze="teacher_encoder")
