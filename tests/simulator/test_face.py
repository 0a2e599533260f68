"""The simulated FaceFeatures stream: live layout, NaN without a face, expressions, embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acquisition.face_features import face_features_info
from acquisition.face_tracking import quality_score
from acquisition.simulator import simulate_session

LIVE = face_features_info()
IDX = {c: i for i, c in enumerate(LIVE.ch_names)}
EXPR = [IDX[c] for c in LIVE.ch_names if c.startswith("expr_")]
EMB = [IDX[c] for c in LIVE.ch_names if c.startswith("emb_")]


def _in(times, spans):
    mask = np.zeros(times.size, dtype=bool)
    for a, b in spans:
        mask |= (times >= a) & (times < b)
    return mask


def test_face_lost_spans_follow_the_live_nan_convention(short_config):
    cfg = short_config.replace(face={"face_lost_rate_per_min": 4.0})
    s = simulate_session(cfg, seed=3)
    face = s.chunk("FaceFeatures")
    spans = s.ground_truth["face"]["face_lost"]
    assert len(spans) >= 3
    lost = _in(face.times, spans)
    assert lost.any() and (~lost).any()
    zero = [IDX["face_present"], IDX["quality"], IDX["n_faces"]]
    assert np.all(face.data[np.ix_(zero, np.flatnonzero(lost))] == 0.0)
    others = np.setdiff1d(np.arange(len(LIVE.ch_names)), zero)
    assert np.all(np.isnan(face.data[np.ix_(others, np.flatnonzero(lost))]))
    present = face.data[:, ~lost]
    assert np.all(present[IDX["face_present"]] == 1.0)
    assert np.all(np.isfinite(present))  # nothing missing while a face is tracked
    # face_lost / face_found events at the first frame of each change, like the live source
    events = s.chunk("FaceFeatures-events")
    bodies = [json.loads(e) for e in events.data[0]]
    lost_t = [b["t"] for b in bodies if b["event"] == "face_lost"]
    found_t = [b["t"] for b in bodies if b["event"] == "face_found"]
    first_lost = face.times[np.flatnonzero(np.diff(lost.astype(int)) == 1) + 1]
    first_found = face.times[np.flatnonzero(np.diff(lost.astype(int)) == -1) + 1]
    np.testing.assert_allclose(lost_t, first_lost)
    np.testing.assert_allclose(found_t, first_found)
    assert all(b["stream"] == "FaceFeatures" for b in bodies)


def test_dropped_frames_are_reported(short_config):
    s = simulate_session(short_config.replace(face={"drop_prob": 0.02}), seed=5)
    face = s.chunk("FaceFeatures")
    bodies = [json.loads(e) for e in s.chunk("FaceFeatures-events").data[0]]
    drops = [b for b in bodies if b["event"] == "dropped_samples"]
    n_dropped = sum(b["n"] for b in drops)
    assert n_dropped == s.ground_truth["face"]["dropped_frames"] > 0
    nominal = int(np.floor(s.schedule.duration_s * 30 + 1e-9)) + 1
    assert face.n_times + n_dropped == nominal
    gaps = np.diff(face.times)
    assert np.sum(gaps > 1.5 / 30) == len(drops)


def test_occlusions_and_quality(short_config):
    s = simulate_session(short_config.replace(face={"occlusion_rate_per_min": 3.0}), seed=6)
    face = s.chunk("FaceFeatures")
    present = face.data[IDX["face_present"]] == 1
    occl = _in(face.times, s.ground_truth["face"]["occlusions"]) & present
    assert occl.any()
    assert np.all(face.data[IDX["occluded"], occl] == 1.0)
    assert np.all(face.data[IDX["occlusion"], occl] >= 0.1)
    assert np.all(face.data[IDX["occluded"], present & ~occl] == 0.0)
    q = face.data[IDX["quality"]]
    assert np.all((q[present] >= 0) & (q[present] <= 1))
    assert q[occl].mean() < q[present & ~occl].mean() - 0.1
    # the live pipeline's quality formula, on the stream's own fields (640x480 camera)
    for i in np.flatnonzero(present)[::500]:
        v = face.data[:, i].astype(float)
        expected = quality_score(
            detection_score=v[IDX["detection_score"]],
            face_px=v[IDX["face_size"]] * 480.0,
            yaw_deg=v[IDX["head_yaw_deg"]],
            pitch_deg=v[IDX["head_pitch_deg"]],
            in_frame=1.0,
            occlusion=v[IDX["occlusion"]],
        )
        assert v[IDX["quality"]] == pytest.approx(expected, abs=1e-5)


def _per_trial_happy(session):
    """Per trial: mean happy probability, felt valence, and a face valence score (happy minus
    the negative expressions)."""
    face = session.chunk("FaceFeatures")
    out = []
    for t in session.schedule.trials:
        m = (face.times >= t.start) & (face.times < t.end)
        p = {
            c: np.nanmean(face.data[IDX[f"expr_{c}"], m]) for c in ("happy", "sad", "angry", "fear")
        }
        score = p["happy"] - p["sad"] - p["angry"] - p["fear"]
        out.append((p["happy"], t.felt_valence, score))
    return np.array(out)


def test_expressions_follow_valence_and_poker_faces_hide_them(short_config):
    cfg = short_config.replace(session={"n_trials": 12})
    expressive = simulate_session(cfg.replace(face={"poker_face_prob": 0.0}), seed=8)
    poker = simulate_session(cfg.replace(face={"poker_face_prob": 1.0}), seed=8)
    assert poker.subject.poker_face and not expressive.subject.poker_face
    for s in (expressive, poker):
        probs = s.chunk("FaceFeatures").data[EXPR]
        ok = np.isfinite(probs[0])
        np.testing.assert_allclose(probs[:, ok].sum(0), 1.0, atol=1e-5)
    happy = _per_trial_happy(expressive)
    hv, lv = happy[happy[:, 1] > 5, 0], happy[happy[:, 1] < 5, 0]
    assert hv.mean() > 2 * lv.mean()
    assert np.corrcoef(happy[:, 2], happy[:, 1])[0, 1] > 0.6
    # a poker face stays mostly neutral: less expression than the same subject unmasked
    neutral = IDX["expr_neutral"]
    n_poker = np.nanmean(poker.chunk("FaceFeatures").data[neutral])
    n_expr = np.nanmean(expressive.chunk("FaceFeatures").data[neutral])
    assert n_poker > 0.6 and n_poker > n_expr + 0.1
    assert _per_trial_happy(poker)[:, 0].max() < happy[:, 0].max()


def test_geometry_consistent_with_expression_and_blinks(short_config):
    s = simulate_session(short_config.replace(face={"poker_face_prob": 0.0}), seed=2)
    face = s.chunk("FaceFeatures")
    ok = face.data[IDX["face_present"]] == 1
    happy = face.data[IDX["expr_happy"], ok]
    for g in ("mouth_corner_lift_left", "mouth_corner_lift_right", "mouth_width"):
        assert np.corrcoef(happy, face.data[IDX[g], ok])[0, 1] > 0.5, g
    eye = face.data[IDX["eye_open_left"]]
    assert 0.15 < np.nanmedian(eye) < 0.45  # eye_span units, like real faces
    blinks = np.asarray(s.ground_truth["eeg_artifacts"]["blinks"])
    d = s.config.artifacts.blink_duration_s
    during = _in(face.times, [(t + 0.3 * d, t + 0.5 * d) for t in blinks]) & ok
    assert during.sum() > 5
    assert np.mean(eye[during]) < 0.6 * np.nanmedian(eye)


def test_embedding_is_structured_not_noise(short_session):
    face = short_session.chunk("FaceFeatures")
    ok = face.data[IDX["face_present"]] == 1
    emb = face.data[EMB][:, ok].T.astype(float)
    probs = face.data[EXPR][:, ok].T.astype(float)
    # magnitudes like the real network's embeddings of real faces
    assert 0.0 < emb.mean() < 0.2 and 0.05 < emb.std() < 0.3
    # low-dimensional: prototypes (7) + slow noise subspace (8) hold nearly all variance
    centred = emb - emb.mean(0)
    sv = np.linalg.svd(centred, compute_uv=False)
    assert np.sum(sv[:15] ** 2) / np.sum(sv**2) > 0.85
    # the expression can be read back from the embedding (a linear head suffices)
    design = np.hstack([emb, np.ones((len(emb), 1))])
    coef, *_ = np.linalg.lstsq(design, probs, rcond=None)
    resid = probs - design @ coef
    r2 = 1 - resid.var(0).sum() / probs.var(0).sum()
    assert r2 > 0.8
    # a different subject has a different identity offset
    other = simulate_session(short_session.config, seed=11, subject_index=2)
    o = other.chunk("FaceFeatures")
    o_emb = o.data[EMB][:, o.data[IDX["face_present"]] == 1].mean(1)
    assert np.linalg.norm(o_emb - emb.mean(0)) > 0.1
