"""Optional raw video: the compressed file, the VideoFrameIndex stream and its sidecar."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from acquisition.camera import CameraConfig, CameraSource, FrameChunk
from acquisition.face_features import FaceFeatureExtractor, FaceFeaturesConfig, FaceFeatureSource
from acquisition.face_tracking import FaceTrackerConfig
from acquisition.video_writer import (
    VIDEO_INDEX_TYPE,
    VideoRecorder,
    match_frames,
    read_frame_index,
    video_index_info,
)
from bci_affect.core.errors import ConfigError
from bci_affect.core.source import read_all


def test_frames_go_to_a_video_file_and_an_index(faces, tmp_path, fer_model):
    path = tmp_path / "S01" / "ses1_video.avi"
    cam = CameraSource(
        CameraConfig(file=faces / "face_noface.mov", realtime=False, max_frames=12, start_time=5.0)
    )
    extractor = FaceFeatureExtractor(
        FaceFeaturesConfig(tracker=FaceTrackerConfig(hand_check_every=0)), model=fer_model
    )
    with FaceFeatureSource(cam, extractor, video=VideoRecorder(path)) as src:
        names = [s.name for s in src.streams]
        chunks = read_all(src)
    assert names == ["FaceFeatures", "FaceFeatures-events", "VideoFrames"]
    index, ff = chunks["VideoFrames"], chunks["FaceFeatures"]
    assert index.info.type == VIDEO_INDEX_TYPE and index.info.channel_format == "int32"
    assert index.info.ch_names == ("frame",) and index.info.sfreq == 0.0
    assert index.info.desc["video_file"] == "ses1_video.avi"
    np.testing.assert_array_equal(index.data[0], np.arange(12))
    np.testing.assert_array_equal(index.times, ff.times)  # one index sample per feature sample
    # the file holds the frames, compressed, in order
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (960, 540)
    src_cap = cv2.VideoCapture(str(faces / "face_noface.mov"))
    for _ in range(3):
        ok, written = cap.read()
        ok2, original = src_cap.read()
        assert ok and ok2
    err = np.abs(written.astype(float) - original.astype(float)).mean()
    assert err < 8, "frame 2 of the file is frame 2 of the camera (lossy codec)"
    assert path.stat().st_size < 12 * 960 * 540 * 3 / 10  # compressed
    # the sidecar holds the same index
    frames, times = read_frame_index(path.with_name(path.name + ".frames.csv"))
    np.testing.assert_array_equal(frames, np.arange(12))
    np.testing.assert_allclose(times, ff.times, atol=1e-9)


def test_match_frames():
    t = np.array([10.0, 10.04, 10.08, 10.2])
    f = np.array([0, 1, 2, 3])
    got = match_frames(t, f, [9.0, 10.0, 10.05, 10.1999, 10.2, 99.0])
    np.testing.assert_array_equal(got, [-1, 0, 1, 2, 3, 3])


def test_video_is_never_overwritten(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"earlier recording")
    with pytest.raises(ConfigError, match="exists"):
        VideoRecorder(path)
    with pytest.raises(ConfigError, match="4-character"):
        VideoRecorder(tmp_path / "w.mp4", fourcc="h264x")
    rec = VideoRecorder(tmp_path / "x.mp4")
    chunk = FrameChunk(
        np.zeros((1, 4, 4, 3), np.uint8), np.zeros(1), video_index_info(), np.zeros(1, np.int64)
    )
    with pytest.raises(ConfigError, match="not open"):
        rec.write(chunk)


def test_frame_size_change_is_resized(tmp_path):
    from bci_affect.core.chunk import StreamInfo

    info = StreamInfo("Camera", "VideoFrames", 30.0, ("frame",), channel_format="int64")
    rec = VideoRecorder(tmp_path / "r.avi", fourcc="MJPG")
    rec.open(30.0, (64, 48))
    for i, shape in enumerate([(48, 64), (96, 128), (48, 64)]):
        chunk = FrameChunk(
            np.full((1, *shape, 3), 60 * i, np.uint8), np.array([float(i)]), info, np.array([i])
        )
        assert rec.write(chunk).data[0, 0] == i
    rec.close()
    cap = cv2.VideoCapture(str(tmp_path / "r.avi"))
    sizes = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        sizes.append(frame.shape)
    assert sizes == [(48, 64, 3)] * 3


def _frame(i: int, info) -> FrameChunk:
    """One 64x48 grey frame number ``i``, captured at ``i`` s."""
    return FrameChunk(
        np.full((1, 48, 64, 3), 10 * i, np.uint8), np.array([float(i)]), info, np.array([i])
    )


@pytest.mark.parametrize("name", ["v.mp4", "v.MOV", "v.avi"])
def test_a_container_lost_when_killed_is_named_in_a_warning(tmp_path, caplog, name):
    """MP4/MOV write their index last (nothing readable if the process is killed): a warning
    names the file and the container to use instead; an AVI needs none."""
    rec = VideoRecorder(tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="acquisition.video_writer"):
        rec.open(30.0, (64, 48))
    rec.close()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if name.endswith(".avi"):
        assert said == []
    else:
        assert len(said) == 1 and str(tmp_path / name) in said[0], said
        assert "whole video is lost" in said[0] and "name it .avi" in said[0]


def test_the_frame_index_is_on_disk_before_the_frames_are_published(tmp_path):
    """Each ``write`` leaves its index lines in the sidecar file before it returns (read by
    another reader while the recorder is still open), so a killed process keeps them."""
    from bci_affect.core.chunk import StreamInfo

    info = StreamInfo("Camera", "VideoFrames", 30.0, ("frame",), channel_format="int64")
    rec = VideoRecorder(tmp_path / "v.avi")
    rec.open(30.0, (64, 48))
    try:
        for i in range(3):
            rec.write(_frame(i, info))
            frames, times = read_frame_index(rec.index_path)
            np.testing.assert_array_equal(frames, np.arange(i + 1))
            np.testing.assert_array_equal(times, np.arange(i + 1, dtype=float))
    finally:
        rec.close()
