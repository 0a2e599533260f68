"""The camera source: files at native pace or as fast as possible, LSL-clock stamps, drops."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from acquisition.camera import (
    VIDEO_FRAMES_TYPE,
    CameraConfig,
    CameraSource,
    FrameChunk,
    _Captured,
    _FrameBuffer,
    count_dropped,
)
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.clock import local_clock
from bci_affect.core.errors import ConfigError, DeviceError, FileFormatError, ShapeError
from bci_affect.core.source import Source


def _split(items):
    frames = [c for c in items if isinstance(c, FrameChunk)]
    events = [json.loads(s) for c in items if isinstance(c, Chunk) for s in c.data[0]]
    return frames, events


def test_fast_replay_uses_the_files_own_frame_times(faces):
    """face_noface.mov changes from 30 to 24 fps at the cut (variable frame rate)."""
    src = CameraSource(
        CameraConfig(file=faces / "face_noface.mov", realtime=False, start_time=100.0)
    )
    assert isinstance(src, Source)
    with src:
        assert [s.type for s in src.streams] == [VIDEO_FRAMES_TYPE, "Markers"]
        assert src.frame_size == (960, 540)
        frames, events = _split(list(src))
    assert events == []  # nothing is dropped in as-fast-as-possible replay
    assert len(frames) == 169 == src.n_frames
    t = np.array([f.times[0] for f in frames])
    idx = np.array([f.indices[0] for f in frames])
    np.testing.assert_array_equal(idx, np.arange(169))
    assert t[0] == 100.0 and np.all(np.diff(t) > 0)
    dt = np.diff(t)
    np.testing.assert_allclose(np.median(dt[:60]), 1 / 30, rtol=1e-3)
    np.testing.assert_allclose(np.median(dt[80:]), 1 / 24, rtol=1e-2)
    f = frames[0]
    assert f.frames.shape == (1, 540, 960, 3) and f.frames.dtype == np.uint8
    assert (f.width, f.height, f.n_times, len(f)) == (960, 540, 1, 1)


def test_segment_and_subsampling(faces):
    cfg = CameraConfig(
        file=faces / "face_noface.mov", realtime=False, start_s=1.0, stop_s=2.0, every_n=5
    )
    with CameraSource(cfg) as src:
        frames, _ = _split(list(src))
    idx = [int(f.indices[0]) for f in frames]
    assert idx == [30, 35, 40, 45, 50, 55]  # 30 fps part: frames 30..59, every 5th
    with CameraSource(CameraConfig(file=faces / "no_face.mp4", realtime=False, max_frames=3)) as s:
        assert len(_split(list(s))[0]) == 3


def test_fast_replay_stamps_on_the_lsl_clock_by_default(faces):
    t0 = local_clock()
    with CameraSource(CameraConfig(file=faces / "no_face.mp4", realtime=False, max_frames=2)) as s:
        frames, _ = _split(list(s))
    assert t0 <= frames[0].times[0] <= local_clock()


def test_realtime_playback_paces_frames_on_the_lsl_clock(faces):
    cfg = CameraConfig(file=faces / "face_noface.mov", realtime=True, stop_s=0.5)
    t_open = local_clock()
    with CameraSource(cfg) as src:
        items = list(src)
    t_end = local_clock()
    frames, events = _split(items)
    assert events == [] and len(frames) == 15  # 0.5 s at 30 fps, none dropped
    t = np.array([f.times[0] for f in frames])
    assert t_open <= t[0] and t[-1] <= t_end
    # the file plays at its own pace: 14 intervals of 1/30 s
    assert t[-1] - t[0] == pytest.approx(14 / 30, abs=0.1)
    assert t_end - t_open >= 14 / 30 - 0.02


def test_slow_consumer_loses_frames_and_they_are_reported(faces):
    cfg = CameraConfig(file=faces / "face_noface.mov", realtime=True, stop_s=1.5, queue_frames=2)
    items, n_frames = [], 0
    with CameraSource(cfg) as src:
        for item in src:
            items.append(item)
            if isinstance(item, FrameChunk):
                n_frames += 1
                if 10 <= n_frames < 18:
                    time.sleep(0.1)  # a consumer slower than the frame rate (3 frame periods)
    frames, events = _split(items)
    idx = np.array([int(f.indices[0]) for f in frames])
    gaps = np.diff(idx) - 1
    assert gaps.sum() > 10, "the slow part must have cost frames"
    drops = [e for e in events if e["event"] == "dropped_samples"]
    assert sum(e["n"] for e in drops) == gaps.sum() == src.n_dropped
    assert all(e["stream"] == "Camera" for e in drops)
    # each drop is announced just before the frame that follows it, at the missing frame's time
    for f in frames:
        assert f.n_dropped == (gaps[list(idx).index(f.indices[0]) - 1] if f.indices[0] else 0)
    t_frames = np.array([f.times[0] for f in frames])
    for e in drops:
        after = t_frames[t_frames > e["t"]]
        assert after.size and after[0] - e["t"] < 0.2


def test_count_dropped_against_the_nominal_rate():
    assert count_dropped(1 / 30, 30) == 0
    assert count_dropped(1.4 / 30, 30) == 0
    assert count_dropped(2 / 30, 30) == 1
    assert count_dropped(5.2 / 30, 30) == 4
    assert count_dropped(0.5, 30, drop_factor=20) == 0
    assert count_dropped(float("nan"), 30) == 0


def test_frame_buffer_hands_losses_to_the_next_frame():
    buf = _FrameBuffer(max_frames=3)
    frame = np.zeros((2, 2, 3), np.uint8)
    for i in range(10):
        buf.put_frame(_Captured(frame, float(i), i))
    got = [buf.get(0.0) for _ in range(3)]
    assert buf.get(0.0) is None
    assert [g.index for g in got] == [7, 8, 9]
    assert got[0].n_dropped == 7 and got[1].n_dropped == got[2].n_dropped == 0
    buf.put(b := Chunk.empty(StreamInfo("e", "Markers", 0.0, ("event",), channel_format="string")))
    for i in range(4):
        buf.put_frame(_Captured(frame, float(i), i))
    assert buf.get(0.0) is b  # events are never dropped
    assert [buf.get(0.0).index for _ in range(3)] == [1, 2, 3]


def test_config_errors(faces, tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        CameraConfig()
    with pytest.raises(ConfigError, match="exactly one"):
        CameraConfig(device=0, file="x.mp4")
    with pytest.raises(ConfigError, match="device"):
        CameraConfig(device=-1)
    with pytest.raises(ConfigError, match="every_n"):
        CameraConfig(file="x.mp4", every_n=2)  # realtime playback cannot skip frames
    with pytest.raises(ConfigError, match="stop_s"):
        CameraConfig(file="x.mp4", start_s=2.0, stop_s=1.0)
    with pytest.raises(ConfigError, match="does not exist"):
        CameraSource(CameraConfig(file=tmp_path / "missing.mp4"))
    (tmp_path / "notes.mp4").write_text("not a video")
    with (
        pytest.raises(FileFormatError, match="not a video"),
        CameraSource(CameraConfig(file=tmp_path / "notes.mp4")),
    ):
        pass
    with (
        pytest.raises(ConfigError, match="past the end"),
        CameraSource(CameraConfig(file=faces / "no_face.mp4", realtime=False, start_s=60.0)) as src,
    ):
        list(src)


def test_missing_camera_device_is_a_clear_error():
    with (
        pytest.raises(DeviceError, match="cannot open camera device 97"),
        CameraSource(CameraConfig(device=97)),
    ):
        pass


def test_frame_chunk_validates_shapes():
    info = StreamInfo("Camera", VIDEO_FRAMES_TYPE, 30.0, ("frame",), channel_format="int64")
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    with pytest.raises(ShapeError, match="time must be the first axis"):
        FrameChunk(frames, np.zeros(3), info, np.zeros(3, np.int64))
    with pytest.raises(ShapeError, match="height, width, 3"):
        FrameChunk(np.zeros((2, 4, 5)), np.zeros(2), info, np.zeros(2, np.int64))


@pytest.mark.hardware
def test_webcam_frames_are_stamped_at_capture():
    t0 = local_clock()
    with CameraSource(CameraConfig(device=0, max_frames=30)) as src:
        frames, _ = _split(list(src))
    t = np.array([f.times[0] for f in frames])
    assert len(frames) == 30 and t0 < t[0] and np.all(np.diff(t) > 0) and t[-1] <= local_clock()
