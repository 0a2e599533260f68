"""A personalisation round never makes things worse: a candidate replaces the current version
only when its out-of-sample estimate on the answers so far is at least as good."""

from __future__ import annotations

import json

import pytest

from bci_affect.models.checkpoint import load_checkpoint
from bci_affect.uncertainty.fusion import FusionPool
from calibration.personalise import RoundSettings, personalise_round

from .util import labelled_store, start_model

FAST = RoundSettings(epochs=3, folds=3)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return start_model(tmp_path_factory.mktemp("v0") / "v0")


def test_a_candidate_worse_than_the_live_model_is_kept_out(parent, tmp_path):
    # the live model was sure of every answer's class before it was used: nothing beats it
    store, n = labelled_store(tmp_path / "s.sqlite", n_windows=60, live="right")
    result = personalise_round(parent, tmp_path / "v1", store, "S01", FAST)
    est = result.estimate
    assert not result.adopted and "not surely as good" in result.reason
    assert est["n_windows"] == n and est["current_accuracy"] == 1.0
    assert est["candidate_accuracy"] < 1.0 or est["candidate_log_loss"] > est["current_log_loss"]
    # the candidate is still written (for the record), with the decision in its metadata
    doc = json.loads((tmp_path / "v1" / "config.json").read_text())
    assert doc["metadata"]["personalisation"]["adopted"] is False


def test_a_candidate_better_only_where_queries_were_chosen_by_score_is_kept_out(parent, tmp_path):
    # wrong on the answers asked by disagreement, right on those asked at random moments: the
    # pooled estimate would favour the candidate; the unbiased sample says it is worse
    store, _ = labelled_store(tmp_path / "s.sqlite", n_windows=80, live="mixed", random_every=2)
    result = personalise_round(parent, tmp_path / "v1", store, "S01", FAST)
    est = result.estimate
    assert est["n_random_answers"] >= 2 and est["n_random_answers"] < est["n_answers"]
    assert est["random_accuracy_difference"] < 0 or est["random_log_loss_difference"] > 0.02
    assert not result.adopted and "asked at random moments" in result.reason


def test_no_version_is_adopted_before_enough_answers_asked_at_random(parent, tmp_path):
    # better on every answer, but every query was chosen by score: nothing unbiased to judge on
    store, _ = labelled_store(tmp_path / "s.sqlite", n_windows=60, live="wrong")
    result = personalise_round(parent, tmp_path / "v1", store, "S01", FAST)
    assert result.estimate["n_random_answers"] == 0
    assert result.estimate["log_loss_difference"] < 0  # the pooled estimate favours it
    assert not result.adopted and "at least 3 such answers" in result.reason


def test_a_candidate_better_than_the_live_model_is_adopted_and_recalibrated(parent, tmp_path):
    # the live model was sure of a wrong class every time: the candidate is better out of sample,
    # on the answers asked at random moments too
    store, n = labelled_store(tmp_path / "s.sqlite", n_windows=100, live="wrong", random_every=2)
    result = personalise_round(parent, tmp_path / "v1", store, "S01", FAST)
    est = result.estimate
    assert result.adopted and result.reason == ""
    assert est["current_accuracy"] == 0.0
    assert est["candidate_log_loss"] < est["current_log_loss"]
    # clearly better answer by answer: one standard error up it is still better
    assert est["log_loss_difference"] + est["log_loss_difference_se"] <= 0.02
    # the fused output was refitted out of sample, pulled towards the parent's
    base, tuned = load_checkpoint(parent), load_checkpoint(tmp_path / "v1")
    assert set(result.fusion) == {"w_face", "w_eeg", "choice"}
    w = FusionPool.weights(tuned.fusion_raw.detach())
    assert w.tolist() == pytest.approx([result.fusion["w_face"], result.fusion["w_eeg"]])
    assert not bool((tuned.fusion_raw == base.fusion_raw).all())
    # the student moved, but the anchor kept it near the parent
    moved = [
        float((p - q).abs().max())
        for p, q in zip(tuned.student.parameters(), base.student.parameters(), strict=True)
    ]
    assert max(moved) > 0


def test_unlabelled_windows_with_a_face_are_distilled_into_the_student(parent, tmp_path):
    import numpy as np

    from calibration.personalise import INPUT_KEYS, load_unlabelled, save_unlabelled
    from calibration.store import LabelStore

    store, _ = labelled_store(tmp_path / "s.sqlite", n_windows=40, live="wrong")
    with LabelStore(store) as st:
        answered = st.answered(subject="S01")
        rows = st.load_query_windows([a.query.id for a in answered])
    windows = [arrays for q in rows.values() for _, _, arrays in q][:30]
    path = save_unlabelled(windows, tmp_path / "u.npz")
    back = load_unlabelled(path)
    assert set(back) == set(INPUT_KEYS) and back["eeg_de"].shape[0] == 30
    np.testing.assert_array_equal(back["eeg_de"][3], windows[3]["eeg_de"])
    plain = personalise_round(parent, tmp_path / "a", store, "S01", FAST)
    distilled = personalise_round(parent, tmp_path / "b", store, "S01", FAST, unlabelled=path)
    assert plain.n_unlabelled == 0 and distilled.n_unlabelled == 30
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert any(
        not bool((p == q).all())
        for p, q in zip(a.student.parameters(), b.student.parameters(), strict=True)
    )
    assert save_unlabelled([], tmp_path / "none.npz") is None
