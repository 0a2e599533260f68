"""Active-learning scores and time-spread batch selection."""

import math

import numpy as np
import pytest
import torch

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.uncertainty import (
    ACQUISITION_METHODS,
    acquisition_scores,
    cross_modal_reliability_scores,
    entropy,
    js_divergence,
    select_batch,
)


def test_js_divergence_properties(rng):
    p = torch.softmax(torch.from_numpy(rng.normal(size=(50, 4))), -1)
    q = torch.softmax(torch.from_numpy(rng.normal(size=(50, 4))), -1)
    js = js_divergence(p, q)
    torch.testing.assert_close(js, js_divergence(q, p))
    assert torch.all(js >= 0) and torch.all(js <= math.log(2) + 1e-9)
    assert torch.allclose(js_divergence(p, p), torch.zeros(50, dtype=p.dtype), atol=1e-12)
    disjoint = js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert float(disjoint) == pytest.approx(math.log(2), rel=1e-5)
    with pytest.raises(
        ShapeError, match=r"p and q must have the same shape, got \(50, 4\) and \(50, 3\)"
    ):
        js_divergence(p, q[:, :3])


def test_entropy_bounds():
    assert float(entropy(torch.full((1, 4), 0.25))) == pytest.approx(math.log(4))
    assert float(entropy(torch.tensor([[1.0, 0, 0, 0]]))) == pytest.approx(0.0, abs=1e-9)


def test_reliability_matches_brute_force(rng):
    n = 30
    zs = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, 8))), dim=-1)
    zt = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, 8))), dim=-1)
    avail = torch.from_numpy(rng.random(n) > 0.3)
    got = cross_modal_reliability_scores(zs, zt, avail)
    sims = zs @ zt.t()
    for i in range(n):
        others = [j for j in range(n) if j != i and avail[j]]
        assert float(got[i]) == pytest.approx(float(sims[i, others].mean()), abs=1e-9)


def test_reliability_flags_an_eeg_embedding_that_matches_every_face(rng):
    faces = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(20, 8))), dim=-1)
    eeg = faces.clone()
    eeg[0] = torch.nn.functional.normalize(faces.mean(0), dim=0)  # resembles all faces at once
    scores = cross_modal_reliability_scores(eeg, faces)
    assert int(scores.argmax()) == 0


def test_select_batch_never_overlaps_and_takes_best_first():
    starts = np.arange(10.0)  # 2 s windows every 1 s: neighbours overlap
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.95, 0.3, 0.0, np.nan, 0.5])
    chosen = select_batch(scores, starts, starts + 2.0, 4)
    assert chosen[0] == 5  # the best window comes first
    assert 4 not in chosen and 6 not in chosen  # its overlapping neighbours are out
    iv = sorted((starts[i], starts[i] + 2.0) for i in chosen)
    assert all(a[1] <= b[0] for a, b in zip(iv, iv[1:], strict=False))
    assert 8 not in chosen  # NaN scores rank last
    spaced = select_batch(scores, starts, starts + 2.0, 10, min_gap_s=2.0)
    iv = sorted(starts[spaced])
    assert all(b - a >= 4.0 for a, b in zip(iv, iv[1:], strict=False))
    assert 1 not in select_batch(scores, starts, starts + 2.0, 3, exclude=np.arange(10) == 1)


def test_select_batch_bad_input():
    with pytest.raises(ShapeError, match="scores, starts_s and ends_s must have the same length"):
        select_batch([1, 2], [0, 1, 2], [1, 2, 3], 1)
    with pytest.raises(ConfigError, match="n must be >= 0"):
        select_batch([1], [0], [1], -1)


def test_every_acquisition_method_scores_model_output(trained, test_set):
    from bci_affect.models.finetune import predict

    model, _ = trained
    out = predict(model, test_set.batch.index(slice(0, 200)))
    for method in ACQUISITION_METHODS:
        s = acquisition_scores(out, method, seed=0)
        assert s.shape == (200,) and torch.isfinite(s).all(), method
    js = acquisition_scores(out, "disagreement")
    assert torch.all(js[~out.face_available] == 0)
    assert not torch.equal(
        acquisition_scores(out, "random", seed=0), acquisition_scores(out, "random", seed=1)
    )
    with pytest.raises(ConfigError, match="unknown acquisition method"):
        acquisition_scores(out, "margin")


def test_disagreement_finds_windows_where_the_modalities_disagree(trained, test_set):
    """Windows whose EEG was swapped with another class's are the most disagreeing ones."""
    from bci_affect.models.finetune import predict
    from bci_affect.models.transfer import WindowBatch

    model, _ = trained
    b = test_set.batch.index(slice(0, 300))
    y = torch.as_tensor(test_set.labels[:300])
    de = b.eeg_de.clone()
    swapped = torch.zeros(300, dtype=torch.bool)
    for i in range(0, 300, 5):  # every 5th window gets the EEG of a window of another class
        j = int(torch.nonzero(y != y[i])[0])
        de[i] = b.eeg_de[j]
        swapped[i] = True
    out = predict(
        model,
        WindowBatch(
            face=b.face,
            face_mask=b.face_mask,
            eeg_de=de,
            emg_score=b.emg_score,
            eeg_quality=b.eeg_quality,
        ),
    )
    js = acquisition_scores(out, "disagreement")
    ok = out.face_available
    assert js[swapped & ok].mean() > 2 * js[~swapped & ok].mean()
