"""Face tracking (MediaPipe face mesh), head pose, geometry, occlusion and quality."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from acquisition.face_tracking import (
    GEOMETRY_NAMES,
    OCCLUSION_LANDMARKS,
    FaceTracker,
    FaceTrackerConfig,
    geometric_features,
    head_pose,
    occlusion_fraction,
    quality_score,
)
from bci_affect.core.errors import ConfigError, ShapeError

G = {n: i for i, n in enumerate(GEOMETRY_NAMES)}


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker(FaceTrackerConfig(static_image_mode=True, hand_check_every=0)) as t:
        yield t


@pytest.fixture(scope="module")
def observe(tracker, faces, read_image):
    cache = {}

    def get(name, transform=None):
        key = (name, transform)
        if key not in cache:
            img = read_image(faces / name)
            h, w = img.shape[:2]
            if transform == "mirror":
                img = np.ascontiguousarray(img[:, ::-1])
            elif transform == "rot15":
                img = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0), (w, h))
            elif transform == "half":
                img = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            cache[key] = tracker.process(img)
            assert cache[key] is not None, key
        return cache[key]

    return get


def test_head_pose_follows_mirror_and_rotation(observe):
    frontal = observe("0-f15-hao-ph.jpg")
    yaw, pitch, roll = head_pose(frontal.landmarks)
    assert abs(yaw) < 10 and abs(pitch) < 15 and abs(roll) < 5
    turned = head_pose(observe("45-m7-di-ph.jpg").landmarks)  # head turned ~45° to image left
    mirrored = head_pose(observe("45-m7-di-ph.jpg", "mirror").landmarks)
    assert -60 < turned[0] < -30 and 30 < mirrored[0] < 60
    assert mirrored[0] == pytest.approx(-turned[0], abs=5)
    rolled = head_pose(observe("0-f15-hao-ph.jpg", "rot15").landmarks)
    assert rolled[2] - roll == pytest.approx(15, abs=4)  # counter-clockwise in the image
    assert rolled[0] == pytest.approx(yaw, abs=6)


def test_geometry_separates_expressions(observe):
    happy = geometric_features(observe("0-f15-hao-ph.jpg").landmarks)
    surprise = geometric_features(observe("0-f1-su-ph.jpg").landmarks)
    angry = geometric_features(observe("15-f13-anc-ph.jpg").landmarks)
    assert happy.shape == (len(GEOMETRY_NAMES),) and happy.dtype == np.float32
    lift = ("mouth_corner_lift_left", "mouth_corner_lift_right")
    for k in lift:
        assert happy[G[k]] > angry[G[k]] + 0.03  # smile: corners up
    assert happy[G["mouth_width"]] > angry[G["mouth_width"]] + 0.08
    assert surprise[G["mouth_open"]] > 3 * angry[G["mouth_open"]]  # dropped jaw
    for k in ("eye_open_left", "eye_open_right", "brow_raise_left", "brow_raise_right"):
        assert surprise[G[k]] > angry[G[k]]  # wide eyes, raised brows
    for k in ("brow_inner_raise_left", "brow_inner_raise_right"):
        assert surprise[G[k]] > angry[G[k]]  # AU1 vs AU4


def test_geometry_is_invariant_to_head_rotation_and_scale(observe):
    """The maths: rotating, scaling and moving the landmarks changes no feature."""
    lm = observe("0-f1-su-ph.jpg").landmarks.astype(np.float64)
    a, b = math.radians(25), math.radians(-20)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    moved = (lm - lm.mean(0)) @ (rz @ ry).T * 0.4 + np.array([300.0, 200.0, 0.0])
    np.testing.assert_allclose(geometric_features(moved), geometric_features(lm), atol=1e-5)
    roll0 = head_pose(lm)[2]
    roll1 = head_pose((lm - lm.mean(0)) @ rz.T)[2]  # image y is down: rz turns clockwise
    assert roll1 - roll0 == pytest.approx(-25, abs=1)


def test_geometry_of_rescaled_mirrored_and_rotated_images(observe):
    full = geometric_features(observe("0-f1-su-ph.jpg").landmarks)
    half = geometric_features(observe("0-f1-su-ph.jpg", "half").landmarks)
    mirrored = geometric_features(observe("0-f1-su-ph.jpg", "mirror").landmarks)
    rolled = geometric_features(observe("0-f1-su-ph.jpg", "rot15").landmarks)
    np.testing.assert_allclose(half, full, atol=0.03)
    # the subject's left becomes right in a mirror image
    swap = [G[n.replace("left", "#").replace("right", "left").replace("#", "right")] for n in G]
    np.testing.assert_allclose(mirrored[swap], full, atol=0.03)
    # MediaPipe places the eyelids of a rotated face somewhat differently; the rest holds
    keep = [i for n, i in G.items() if not n.startswith("eye_open")]
    np.testing.assert_allclose(rolled[keep], full[keep], atol=0.03)


def test_largest_face_is_tracked(tracker, faces, read_image):
    big = read_image(faces / "single_face.jpg")  # one face ~220 px
    small = cv2.resize(read_image(faces / "0-f15-hao-ph.jpg"), (200, 200))  # one face ~130 px
    canvas = np.full((600, 1000, 3), 128, np.uint8)
    for big_x, small_x in ((0, 750), (420, 20)):
        img = canvas.copy()
        img[: big.shape[0] - 0, big_x : big_x + big.shape[1] - 0][:600, :580] = big[:600, :580]
        img[200:400, small_x : small_x + 200] = small
        obs = tracker.process(img)
        assert obs is not None and obs.n_faces == 2
        cx = 0.5 * (obs.box[0] + obs.box[2])
        assert big_x < cx < big_x + big.shape[1], "the larger face must be the one tracked"
        assert obs.size_px > 180


def test_no_face_is_none_not_an_error(tracker):
    assert tracker.process(np.zeros((480, 640, 3), np.uint8)) is None
    assert tracker.process(np.full((32, 32, 3), 255, np.uint8)) is None
    with pytest.raises(ShapeError, match="uint8"):
        tracker.process(np.zeros((480, 640), np.uint8))


def test_hands_over_the_face_are_flagged(faces, read_frames):
    """WolfgangLanger_Pexels.mp4: hands cover mouth, nose or eyes from 2.5 to 9.5 s, not after.

    Each frame is checked on its own here (static mode); a hand is then missed now and then,
    which video tracking (the live mode) bridges.
    """
    hands_times = tuple(np.arange(3.0, 9.0, 0.75))
    clear_times = (12.0, 14.0, 16.0, 18.0)
    frames = read_frames(faces / "WolfgangLanger_Pexels.mp4", hands_times + clear_times)
    cfg = FaceTrackerConfig(static_image_mode=True, hand_check_every=1)
    with FaceTracker(cfg) as tracker:
        occ = np.array([tracker.process(f).occlusion for f in frames])
    n = len(hands_times)
    print("occlusion fraction:", dict(zip(hands_times + clear_times, occ.round(2), strict=True)))
    assert (occ[:n] >= cfg.occluded_threshold).mean() >= 0.75
    assert occ[n:].max() == 0.0


def test_occlusion_fraction_geometry():
    lm = np.zeros((468, 3), np.float32)
    lm[:, 0] = np.linspace(0, 100, 468)
    lm[:, 1] = 50
    hand = np.array([[40, 0], [60, 0], [60, 100], [40, 100]] * 5 + [[50, 50]], np.float32)
    inside = np.abs(lm[OCCLUSION_LANDMARKS, 0] - 50) <= 11  # the hull, grown by 10 %
    got = occlusion_fraction(lm, [hand])
    assert got == pytest.approx(inside.mean()) and 0 < got < 1
    assert occlusion_fraction(lm, []) == 0.0


def test_quality_score_factors():
    base = dict(detection_score=1.0, face_px=200, yaw_deg=0, pitch_deg=0, in_frame=1, occlusion=0)
    assert quality_score(**base) == pytest.approx(1.0)
    assert quality_score(**{**base, "face_px": 48}) == pytest.approx(0.5)
    assert quality_score(**{**base, "yaw_deg": 60}) == pytest.approx(0.0, abs=1e-9)
    assert 0 < quality_score(**{**base, "yaw_deg": 30}) < quality_score(**{**base, "yaw_deg": 10})
    assert quality_score(**{**base, "occlusion": 0.25, "detection_score": 0.8}) == pytest.approx(
        0.6
    )
    assert quality_score(**{**base, "occlusion": math.nan, "detection_score": math.nan}) == 1.0
    assert quality_score(**{**base, "in_frame": 0.5}) == pytest.approx(0.5)


def test_tracker_config_and_landmark_errors():
    with pytest.raises(ConfigError, match="max_num_faces"):
        FaceTrackerConfig(max_num_faces=0)
    with pytest.raises(ConfigError, match="hand_check_every"):
        FaceTrackerConfig(hand_check_every=-1)
    with pytest.raises(ConfigError, match="min_detection_confidence"):
        FaceTrackerConfig(min_detection_confidence=1.5)
    with pytest.raises(ShapeError, match="468"):
        head_pose(np.zeros((10, 3)))
    with pytest.raises(ShapeError, match="degenerate"):
        geometric_features(np.zeros((468, 3)))
