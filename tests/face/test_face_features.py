"""The FaceFeatures stream: channels, per-frame pipeline, face loss, the expression trajectory."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from acquisition.camera import CameraConfig, CameraSource, FrameChunk
from acquisition.face_features import (
    EMBEDDING_CHANNELS,
    EXPRESSION_CHANNELS,
    FACE_FEATURE_CHANNELS,
    FACE_FEATURE_UNITS,
    STATUS_CHANNELS,
    FaceFeatureExtractor,
    FaceFeaturesConfig,
    FaceFeatureSource,
    analyze_file,
    face_crop,
    face_features_info,
    face_record,
)
from acquisition.face_tracking import GEOMETRY_NAMES, FaceTrackerConfig
from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.core.source import Source, read_all
from bci_affect.models.fer import FER_CLASSES

C = {c: i for i, c in enumerate(FACE_FEATURE_CHANNELS)}
NEGATIVE = [C[f"expr_{c}"] for c in ("angry", "disgust", "fear", "sad")]
HAPPY = C["expr_happy"]


def _config(**tracker):
    return FaceFeaturesConfig(tracker=FaceTrackerConfig(**tracker))


def _events(chunks):
    ev = chunks.get("FaceFeatures-events")
    return [] if ev is None else [json.loads(s) for s in ev.data[0]]


def test_channels_are_fixed_and_documented():
    assert len(FACE_FEATURE_CHANNELS) == 160 == len(set(FACE_FEATURE_CHANNELS))
    assert FACE_FEATURE_CHANNELS[:2] == ("face_present", "quality")
    assert tuple(f"expr_{c}" for c in FER_CLASSES) == EXPRESSION_CHANNELS
    assert EXPRESSION_CHANNELS[0] == "expr_angry" and EXPRESSION_CHANNELS[-1] == "expr_neutral"
    assert EMBEDDING_CHANNELS[0] == "emb_0" and EMBEDDING_CHANNELS[-1] == "emb_127"
    assert FACE_FEATURE_CHANNELS == (
        STATUS_CHANNELS + GEOMETRY_NAMES + EXPRESSION_CHANNELS + EMBEDDING_CHANNELS
    )
    assert len(FACE_FEATURE_UNITS) == 160
    assert FACE_FEATURE_UNITS[C["head_yaw_deg"]] == "degrees"
    assert FACE_FEATURE_UNITS[C["expr_happy"]] == "probability"
    info = face_features_info("FF", "sid")
    assert (info.type, info.sfreq, info.channel_format) == ("FaceFeatures", 0.0, "float32")
    assert info.ch_names == FACE_FEATURE_CHANNELS and info.source_id == "sid"


def test_no_face_at_all(faces, fer_model):
    """no_face.mp4: not one frame with a face; missing values are NaN, never zeros."""
    cam = CameraSource(CameraConfig(file=faces / "no_face.mp4", realtime=False, every_n=6))
    with FaceFeatureSource(cam, FaceFeatureExtractor(_config(), model=fer_model)) as src:
        assert isinstance(src, Source)
        assert [s.name for s in src.streams] == ["FaceFeatures", "FaceFeatures-events"]
        chunks = read_all(src)
    ff = chunks["FaceFeatures"]
    cap = cv2.VideoCapture(str(faces / "no_face.mp4"))
    n_frames = 0
    while cap.grab():
        n_frames += 1
    assert ff.n_times == len(range(0, n_frames, 6)) and ff.data.dtype == np.float32
    assert np.all(ff.data[C["face_present"]] == 0) and np.all(ff.data[C["quality"]] == 0)
    assert np.all(ff.data[C["n_faces"]] == 0)
    rest = [i for c, i in C.items() if c not in ("face_present", "quality", "n_faces")]
    assert np.isnan(ff.data[rest]).all()
    assert _events(chunks) == []  # never found, so never lost
    assert src.stats.n_samples == ff.n_times and src.stats.n_face_lost == 0


def test_face_loss_is_flagged_at_the_cut(faces, fer_model):
    """face_noface.mov: the face is on screen until 2.400 s (frame 72 is black, then a cartoon)."""
    cam = CameraSource(
        CameraConfig(
            file=faces / "face_noface.mov", realtime=False, start_s=1.8, stop_s=3.0, start_time=0.0
        )
    )
    with FaceFeatureSource(cam, FaceFeatureExtractor(_config(), model=fer_model)) as src:
        chunks = read_all(src)
    ff = chunks["FaceFeatures"]
    present = ff.data[C["face_present"]] > 0.5
    t = ff.times
    assert present[t < 2.39].all() and not present[t >= 2.40].any()
    (lost,) = _events(chunks)
    assert lost["event"] == "face_lost" and lost["stream"] == "FaceFeatures"
    assert lost["t"] == pytest.approx(2.40, abs=1 / 30 + 1e-6)
    assert chunks["FaceFeatures-events"].times[0] == lost["t"]
    q = ff.data[C["quality"]]
    assert (q[present] > 0.7).all() and (q[~present] == 0).all()
    probs = ff.data[[C[c] for c in EXPRESSION_CHANNELS]][:, present]
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.isfinite(ff.data[:, present]).all()
    assert src.stats.n_face_lost == 1


@pytest.mark.slow
def test_expression_trajectory(faces, fer_model, capsys):
    """WolfgangLanger_Pexels.mp4: crying (hands over the face at times) to laughing.

    Every 4th frame (6 per second). Negative expressions dominate up to ~9.5 s, happy after
    ~10 s; hands are flagged in the first part only.
    """
    cam = CameraSource(
        CameraConfig(
            file=faces / "WolfgangLanger_Pexels.mp4", realtime=False, every_n=4, start_time=0.0
        )
    )
    with FaceFeatureSource(cam, FaceFeatureExtractor(_config(), model=fer_model)) as src:
        ff = read_all(src)["FaceFeatures"]
    d, t = ff.data, ff.times
    assert (d[C["face_present"]] == 1).all()
    neg, happy = d[NEGATIVE].sum(0), d[HAPPY]
    first, last = t < 9.0, t >= 10.5
    rows = []
    for s in range(20):
        m = (t >= s) & (t < s + 1)
        rows.append(
            f"{s:2d}-{s + 1:2d} s  negative {neg[m].mean():.2f}  happy {happy[m].mean():.2f}  "
            f"occluded {np.nanmean(d[C['occluded'], m]):.2f}  quality {d[C['quality'], m].mean():.2f}"
        )
    summary = (
        f"first part (0-9 s): negative {neg[first].mean():.3f}, happy {happy[first].mean():.3f}; "
        f"last part (10.5-19.7 s): negative {neg[last].mean():.3f}, happy {happy[last].mean():.3f}"
    )
    with capsys.disabled():
        print("\nexpression trajectory, WolfgangLanger_Pexels.mp4\n" + "\n".join(rows))
        print(summary)
    assert neg[first].mean() > 0.6 and neg[first].mean() > 3 * happy[first].mean()
    assert happy[last].mean() > 0.8 and happy[last].mean() > 5 * neg[last].mean()
    assert happy[last].mean() - happy[first].mean() > 0.5  # the direction
    # geometry agrees: the mouth corners rise when she laughs
    lift = d[C["mouth_corner_lift_left"]] + d[C["mouth_corner_lift_right"]]
    assert lift[last].mean() > lift[first].mean() + 0.05
    occluded = d[C["occluded"]]
    assert np.nanmean(occluded[(t >= 3) & (t < 8.5)]) > 0.7
    assert np.nanmean(occluded[last]) < 0.05


def test_chunked_frames_give_the_same_features(faces, read_frames, fer_model):
    frames = read_frames(faces / "face_noface.mov", (0.5, 1.0, 3.0))
    fc = FrameChunk(
        np.stack(frames),
        np.array([10.0, 10.5, 12.5]),
        _frames_info(),
        np.arange(3, dtype=np.int64),
    )
    cfg = _config(static_image_mode=True, hand_check_every=0)
    with FaceFeatureExtractor(cfg, model=fer_model) as ex:
        whole = ex(fc)
        single = [ex.process_frame(f).values for f in frames]
    assert whole.info.name == "FaceFeatures" and whole.data.shape == (160, 3)
    np.testing.assert_array_equal(whole.times, fc.times)
    np.testing.assert_allclose(whole.data, np.stack(single, axis=1), rtol=1e-5, atol=1e-5)
    assert whole.data[C["face_present"]].tolist() == [1.0, 1.0, 0.0]


def _frames_info():
    from bci_affect.core.chunk import StreamInfo

    return StreamInfo("Camera", "VideoFrames", 30.0, ("frame",), channel_format="int64")


def test_face_crop_is_upright_square_and_padded():
    img = np.zeros((200, 300), np.uint8)
    cv2.rectangle(img, (100, 90), (200, 110), 255, -1)  # a horizontal bar in a 100 px box
    upright = face_crop(img, (100.0, 50.0, 200.0, 150.0), pad=0.1, size=64)
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((150, 100), 30, 1.0), (300, 200))
    fixed = face_crop(rot, (100.0, 50.0, 200.0, 150.0), pad=0.1, roll_deg=30.0, size=64)
    assert upright.shape == fixed.shape == (64, 64) and upright.dtype == np.uint8
    # the bar spans 100 px of a 120 px crop: 53 of 64 columns, rows 29-35
    cols = np.flatnonzero(upright[32] > 128)
    assert 50 <= cols.size <= 56 and abs(cols.mean() - 31.5) < 1.5
    assert np.corrcoef(upright.ravel(), fixed.ravel())[0, 1] > 0.9
    edge = face_crop(img, (-50.0, -50.0, 50.0, 50.0), size=32)  # outside: border repeated
    assert edge.shape == (32, 32)


def test_face_record_is_valid_json(fer_model, faces, read_image):
    with FaceFeatureExtractor(_config(static_image_mode=True), model=fer_model) as ex:
        present = ex.process_frame(read_image(faces / "astronaut.png")).values
        absent = ex.process_frame(np.zeros((240, 320, 3), np.uint8)).values
    rec = json.loads(json.dumps(face_record(present, file="a.png", frame=0), allow_nan=False))
    assert rec["face_present"] is True and rec["top_expression"] == "happy"
    assert list(rec["expression"]) == list(FER_CLASSES)
    assert sum(rec["expression"].values()) == pytest.approx(1.0, abs=1e-4)
    assert 0.5 < rec["quality"] <= 1 and rec["occluded"] is False and rec["t"] is None
    assert set(rec["geometry"]) == set(GEOMETRY_NAMES) and set(rec["head_pose"]) == {
        "yaw_deg",
        "pitch_deg",
        "roll_deg",
    }
    none = json.loads(json.dumps(face_record(absent, t=1.5, embedding=True), allow_nan=False))
    assert none["face_present"] is False and none["quality"] == 0.0 and none["t"] == 1.5
    assert none["expression"] is none["geometry"] is none["embedding"] is None
    with_emb = face_record(present, embedding=True)
    assert len(with_emb["embedding"]) == 128 and all(
        math.isfinite(x) for x in with_emb["embedding"]
    )


def test_analyze_file_images_and_video(faces, fer_model, tmp_path):
    (img,) = analyze_file(faces / "0-f15-hao-ph.jpg", model=fer_model)
    assert img["top_expression"] == "happy" and img["frame"] == 0
    recs = list(
        analyze_file(
            faces / "face_noface.mov", every_n=10, start_s=2.0, stop_s=3.0, model=fer_model
        )
    )
    assert [r["frame"] for r in recs] == [60, 70, 80]  # 30 fps, then 24 fps after 2.4 s
    assert [r["face_present"] for r in recs] == [True, True, False]
    assert recs[0]["t"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="does not exist"):
        list(analyze_file(tmp_path / "nope.jpg", model=fer_model))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(FileFormatError, match="not an image"):
        list(analyze_file(tmp_path / "broken.png", model=fer_model))


def test_config_errors():
    with pytest.raises(ConfigError, match="crop_pad"):
        FaceFeaturesConfig(crop_pad=2.0)
    with pytest.raises(ConfigError, match="name"):
        FaceFeaturesConfig(name=" ")
