"""Training and personalisation through the library entry points, with honest baselines."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bci_affect.core import ConfigError
from bci_affect.models.finetune import TrainConfig
from bci_affect.processors import SignalsConfig
from bci_affect.training.dataset import DatasetConfig, build_dataset
from bci_affect.training.train import (
    FinetuneSettings,
    TrainSettings,
    chance_scores,
    classification_scores,
    finetune_model,
    fit_logistic_baseline,
    format_metrics,
    macro_f1,
    train_model,
)

from .sessions import SHORT_SESSION, load_streams, short_config


@pytest.fixture(scope="module")
def base(sim_windows):
    return train_model(sim_windows, TrainSettings(train=TrainConfig(epochs=5), seed=0))


@pytest.fixture(scope="module")
def new_subject(tmp_path_factory):
    """A new subject whose EEG carries the affect strongly and whose face does not (a poker
    face), recorded in a 16-trial calibration session."""
    from acquisition.simulator import simulate_dataset

    config = short_config(
        session={**SHORT_SESSION, "n_trials": 16},
        affect={
            "responder_prob": 1.0,
            "faa_effect": 1.5,
            "alpha_suppression": 1.5,
            "beta_gamma_effect": 0.9,
        },
        face={"poker_face_prob": 1.0},
    )
    out = tmp_path_factory.mktemp("new")
    (path,) = simulate_dataset(1, out, seed=11, config=config)
    return build_dataset(
        [("new/ses-01", load_streams(path))],
        DatasetConfig(signals=SignalsConfig.make(line_hz=60.0)),
    )


def test_training_reports_every_row_on_both_splits(base, sim_windows):
    assert set(base.metrics) == {"train", "val"}
    # the training split less the calibration windows that fitted the fusion
    assert base.split.val.size > 0 and base.fusion["n"] > 0
    assert base.history.n_windows == base.split.train.size - base.fusion["n"]
    assert not set(sim_windows.trial_keys[base.split.train]) & set(
        sim_windows.trial_keys[base.split.val]
    )
    val = base.metrics["val"]
    assert val["n"] == base.split.val.size and val["n_trials"] >= 3
    assert list(val["rows"]) == [
        "fused",
        "teacher",
        "student",
        "student_via_teacher_head",
        "majority",
        "logistic",
        "chance",
    ]
    table = format_metrics(base.metrics)
    assert table.count("majority class") == 2 and "EMG-clean" in table
    # the majority baseline predicts the most frequent training class everywhere
    train_counts = np.bincount(sim_windows.labels[base.split.train], minlength=4)
    val_labels = sim_windows.labels[base.split.val]
    assert val["rows"]["majority"]["accuracy"] == pytest.approx(
        np.mean(val_labels == train_counts.argmax())
    )
    assert base.model.conformal is not None and bool(base.model.calibrated)


def test_finetuning_improves_accuracy_on_a_new_subject(base, new_subject):
    model = base.model
    before = copy.deepcopy(model.state_dict())
    result = finetune_model(model, new_subject, FinetuneSettings(seed=0))
    m = result.metrics
    assert {"train_before", "val_before", "train", "val"} <= set(m)
    # held-out trials of the new subject: never seen by fine-tuning
    assert not set(new_subject.trial_keys[result.split.train]) & set(
        new_subject.trial_keys[result.split.val]
    )
    b, a = m["val_before"]["rows"], m["val"]["rows"]
    assert a["student"]["accuracy"] > b["student"]["accuracy"] + 0.15
    # the fine-tuned model replaces the starting one only if it is no worse on held-out
    # calibration trials (four trials here: too few for the fused output to learn to trust
    # the improved student over this poker-faced subject's face, so the fused gain on the
    # validation trials is not asserted)
    f = result.fusion
    assert f["kept"] in ("tuned", "start") and f["n_groups"] >= 3
    assert (f["kept"] == "tuned") == (f["cal_log_loss_tuned"] <= f["cal_log_loss_start"] + 0.02)
    assert a["fused"]["accuracy"] >= a["teacher"]["accuracy"]
    assert a["fused"]["accuracy"] > a["chance"]["accuracy"]
    # the teacher is frozen during personalisation
    assert a["teacher"] == b["teacher"]
    # the starting model is left as it was
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # hundreds of labels, seconds on a CPU
    assert result.history.n_labelled == result.split.train.size - result.fusion["n"] < 500
    assert result.history.seconds < 30


def test_finetuning_refuses_a_dataset_of_another_scheme(base, new_subject):
    with pytest.raises(ConfigError, match="predicts the label scheme 'quadrant', not 'valence'"):
        finetune_model(base.model, new_subject.relabel("valence"))


def test_one_class_cannot_be_trained(sim_windows):
    only = sim_windows.subset(sim_windows.labels == sim_windows.labels[0])
    with pytest.raises(ConfigError, match="at least two classes"):
        train_model(only, TrainSettings(train=TrainConfig(epochs=1)))


def test_scores_and_baselines(rng):
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, 0])
    # F1: class 0 = 2*2/(3+3), class 1 = 2*2/(3+2), class 2 = 0
    assert macro_f1(p, y, 3) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    emg = np.array([0.1, 0.5, 0.1, 0.1, np.nan, 0.2])
    s = classification_scores(p, y, 3, emg, 0.3)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["n_emg_clean"] == 4
    assert s["accuracy_emg_clean"] == pytest.approx(2 / 4)
    c = chance_scores(y, 3, emg)
    assert c["accuracy"] == pytest.approx(1 / 3)
    q = np.array([3, 2, 1]) / 6
    assert c["macro_f1"] == pytest.approx(np.mean(2 * q / (1 + 3 * q)))
    # the logistic baseline learns a linearly separable band feature
    de = rng.standard_normal((200, 4, 5))
    labels = (de[:, 2, 3] > 0).astype(int)
    de[:, 0, 0] = np.nan  # a channel left out everywhere
    lr = fit_logistic_baseline(de, labels, 2)
    from bci_affect.training.train import _logistic_predict

    assert np.mean(_logistic_predict(lr, de) == labels) > 0.95


def test_progress_gets_one_line_per_epoch_without_touching_logging(base, sim_windows):
    import logging

    lib = logging.getLogger("bci_affect.models.finetune")
    state = (lib.level, lib.propagate, list(lib.handlers))
    lines: list[str] = []
    settings = FinetuneSettings(
        train=TrainConfig(epochs=2, lr=1e-3, freeze_teacher=True, fit_input_stats=False)
    )
    finetune_model(base.model, sim_windows, settings, progress=lines.append)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("total " in e and e.endswith(" s)") for e in epochs)
    assert (lib.level, lib.propagate, list(lib.handlers)) == state
