"""The experiments: label noise by trial, queries spread in time, the consistency score, and
every table on one tiny simulated subject."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bci_affect.evaluation.arms import ModelSettings
from bci_affect.evaluation.data import CorruptionConfig, build_eval_set
from bci_affect.evaluation.experiments import (
    BenchmarkConfig,
    consistency_scores,
    flip_trial_labels,
    run_benchmark,
    spread_query,
)
from bci_affect.processors import SignalsConfig
from bci_affect.training.dataset import DatasetConfig


def test_label_noise_flips_whole_trials(rng):
    keys = np.repeat([f"s|{i}" for i in range(10)], 4)
    labels = np.repeat(np.arange(10) % 3, 4)
    idx = np.arange(32)  # trials 0..7 are the training side
    noisy = flip_trial_labels(labels, keys, idx, 0.25, 3, rng)
    changed = np.unique(keys[noisy != labels])
    assert changed.size == 2  # round(0.25 * 8) trials
    for key in changed:
        m = keys == key
        assert np.all(noisy[m] == noisy[m][0])  # every window of the trial
        assert noisy[m][0] != labels[m][0] and 0 <= noisy[m][0] < 3
    assert np.array_equal(noisy[32:], labels[32:])  # outside idx: untouched
    assert np.array_equal(flip_trial_labels(labels, keys, idx, 0.0, 3, rng), labels)


def test_queries_are_spread_in_time():
    # 20 windows of 4 s every 1 s; the best scores sit on overlapping neighbours
    starts = np.arange(20.0)
    ends = starts + 4.0
    scores = np.linspace(1.0, 0.0, 20)
    labelled = np.zeros(20, bool)
    labelled[[0]] = True
    got = spread_query(scores, starts, ends, 4, labelled)
    assert got.size == 4 and 0 not in got and np.unique(got).size == 4
    # one pass of non-overlapping windows: 1, 5, 9, 13
    assert got.tolist() == [1, 5, 9, 13]
    # more than one pass fits: later passes fill the gaps, never a labelled window
    got = spread_query(scores, starts, ends, 19, labelled)
    assert sorted(got.tolist()) == list(range(1, 20))
    assert spread_query(scores, starts, ends, 5, np.ones(20, bool)).size == 0


def test_consistency_score_combines_three_ranks():
    n = 6
    teacher = torch.tensor([[0.9, 0.1]] * n)
    student = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]] * 2)
    out = SimpleNamespace(
        teacher_probs=teacher,
        student_probs=student,
        face_available=torch.ones(n, dtype=torch.bool),
        uncertainty=torch.linspace(0.1, 0.6, n),
        z_eeg=torch.eye(n)[:, :4],
        z_face=torch.eye(n)[:, :4],
    )
    s = consistency_scores(out)
    assert s.shape == (n,) and np.all((s > 0) & (s <= 1))
    # window 4 (strong disagreement, high uncertainty) ranks above window 0 (agreement, low)
    assert s[4] > s[0]


@pytest.fixture(scope="module")
def tiny_evalset(tiny_dataset):
    from acquisition.xdf import load_xdf

    path = tiny_dataset / "sub-01" / "ses-01.xdf"
    sessions = [("sub-01/ses-01", {c.name: c for c in load_xdf(path)})]
    signals = SignalsConfig.make(line_hz=60.0, hop_s=1.0)
    return build_eval_set(
        sessions,
        DatasetConfig(signals=signals, label_scheme="arousal"),
        subjects={"sub-01/ses-01": "sub-01"},
        face_stride=2,
        corruption=CorruptionConfig(noise_uv=50.0),
    )


def test_corrupted_twin_is_aligned_and_flagged(tiny_evalset):
    es = tiny_evalset
    assert es.has_corrupted and es.corrupt_eeg_de.shape == es.eeg_de.shape
    assert not np.allclose(es.corrupt_eeg_de, es.eeg_de)
    # broadband noise raises the band power (DE) and the EMG score, and lowers the quality
    assert np.nanmean(es.corrupt_eeg_de) > np.nanmean(es.eeg_de)
    assert es.corrupt_emg_score.mean() > es.emg_score.mean()
    assert es.corrupt_eeg_quality.mean() < es.eeg_quality.mean()


@pytest.mark.slow
def test_every_table_on_one_subject(tiny_evalset):
    cfg = BenchmarkConfig(
        n_folds=2,
        budgets=(0.5, 1.0),
        noise_levels=(0.0, 0.5),
        missing_levels=(0.0, 1.0),
        corrupt_levels=(0.0, 1.0),
        models=ModelSettings(epochs=1, batch_size=32, device="cpu"),
    )
    res = run_benchmark(tiny_evalset, cfg)
    t = res["tables"]
    assert set(t) == {
        "main",
        "ablation",
        "active-learning",
        "label-noise",
        "missing-face",
        "corrupted-eeg",
        "muscle",
        "realism",
    }
    assert not res["skipped"]
    assert len(t["ablation"]["variants"]) == 8
    for v in t["ablation"]["variants"].values():
        assert {"fused", "student_head", "chance"} <= set(v)
    model = t["active-learning"]["arms"]["model"]
    assert set(model) == {"random", "entropy", "disagreement", "consistency"}
    full = {p: model[p]["1"]["fused"]["mean"]["accuracy"] for p in model}
    assert len(set(full.values())) == 1  # one fully supervised model, shared by the policies
    assert set(t["missing-face"]["variants"]) == {"0 %", "100 %"}
    # models that do not read the face are not affected by taking it away
    mf = t["missing-face"]["variants"]
    assert mf["100 %"]["eeg_student"]["mean"] == mf["0 %"]["eeg_student"]["mean"]
    ce = t["corrupted-eeg"]["variants"]
    assert ce["100 %"]["teacher_only"]["mean"] == ce["0 %"]["teacher_only"]["mean"]
    assert ce["0 %"]["fused"]["mean"] == t["main"]["rows"]["fused"]["mean"]
    assert set(t["realism"]) == {"valence", "arousal"}
    assert 0.0 <= t["muscle"]["share_clean"] <= 1.0
    assert set(res["seconds"]) >= {"main", "ablation", "active-learning"}
