"""``kill -9`` of ``bci-affect run`` and of ``bci-affect camera`` at a random moment.

A killed process runs no handler and flushes nothing: what it leaves is what it had already
handed to the operating system. Real processes and real ``SIGKILL``: ``run`` on BrainFlow's
synthetic board with a ``bci-affect record`` of its predictions beside it, and ``camera`` playing
a shared video in real time with ``--video``. The moment of each kill is a seeded random delay
after the first outputs are known to exist.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from acquisition.recorder import sidecar_path
from acquisition.xdf import RecordingWarning, load_xdf
from bci_affect.core import FileFormatError, StreamNotFoundError

from . import test_camera_faults as camera
from .processes import Child, bci_affect, read_records, run_args, start_publisher, wait_until

_Child, _camera_args = camera._Child, camera._camera_args
face_video, fer_cached = camera.face_video, camera.fer_cached  # the module's fixtures

pytestmark = [
    pytest.mark.slow,
    pytest.mark.lsl,
    pytest.mark.skipif(sys.platform != "linux", reason="sends POSIX signals"),
]

#: Seconds a command may take to start (imports, models, first output) on a loaded machine.
START_S = 60.0
#: A status line of ``run``.
STATUS = re.compile(r"\] (\d+) predictions; last: ")


def _kill_at_random(proc, seed: str, most_s: float = 0.5) -> float:
    """``SIGKILL`` after a seeded random delay of up to ``most_s`` seconds; the delay."""
    delay = random.Random(seed).uniform(0.0, most_s)
    threading.Event().wait(delay)  # the moment of the fault, not a synchronisation
    proc.send_signal(signal.SIGKILL)
    return delay


def _xdf_samples(path: Path, name: str):
    """The chunk of stream ``name`` in a (growing) XDF file; ``None`` before its header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)  # still being written: no footer yet
        with contextlib.suppress(FileFormatError, StreamNotFoundError):
            (chunk,) = load_xdf(path, streams=[name])
            return chunk
    return None


def _n_xdf(path: Path, name: str) -> int:
    chunk = _xdf_samples(path, name)
    return 0 if chunk is None else chunk.data.shape[1]


def _last_status_count(lines: list[str]) -> int:
    """``N`` of the last ``N predictions; last: ...`` status line printed (0 if none)."""
    counts = [m.group(1) for m in map(STATUS.search, lines) if m]
    return int(counts[-1]) if counts else 0


def test_run_killed_keeps_every_prediction_written_and_record_goes_on(tmp_path, uid):
    """``kill -9`` of ``run --board synthetic --out F.jsonl --report F.html`` while ``record``
    stores its AffectPredictions stream and another EEG stream: every complete line of F.jsonl
    is JSON, it holds every prediction the run had counted (lines are flushed one by one), no
    report is left half-drawn; ``record`` keeps recording the stream still there, and once
    stopped with Ctrl-C its file is complete and its predictions are the file's."""
    out, report, xdf = tmp_path / "p.jsonl", tmp_path / "p.html", tmp_path / "rec" / "s.xdf"
    eeg_name, predictions = f"EEG-{uid}", f"AffectPredictions-{uid}"
    publisher, _ = start_publisher(eeg_name, f"faults-{uid}")
    board = ("--board", "synthetic", "--no-publish-inputs", "--status-every", "1")
    run = Child(bci_affect(*run_args(uid, out, *board, "--report", str(report))))
    record = None
    try:
        wait_until(lambda: read_records(out), START_S, "the first prediction")
        record = Child(
            bci_affect("record", "--out", str(xdf), "--streams",
                       f"source_id=bci-affect:predictions:{uid}", f"source_id=faults-{uid}")
        )  # fmt: skip
        record.wait_line(r"^recording 2 stream\(s\)", 30)
        wait_until(lambda: _n_xdf(xdf, predictions) >= 2, 30, "2 predictions in the XDF file")
        delay = _kill_at_random(run.proc, "kill-run")
        assert run.wait(30) == -signal.SIGKILL
        text = out.read_text(encoding="utf-8")
        counted = _last_status_count(run.out)

        # the predictions file: complete lines parse, nothing counted is missing
        lines = text.splitlines(keepends=True)
        assert all(line.endswith("\n") for line in lines[:-1])
        records = [json.loads(line) for line in lines if line.endswith("\n")]
        assert len(records) >= max(counted, 2), (delay, counted, len(records))
        index = [r["index"] for r in records]
        assert index == sorted(set(index))
        assert not report.exists()  # drawn only at the end: no half-written report

        # record goes on: the EEG stream still grows in its file after the kill
        n_eeg = _n_xdf(xdf, eeg_name)
        wait_until(lambda: _n_xdf(xdf, eeg_name) > n_eeg + 250, 30, "1 s more EEG recorded")
        assert record.proc.poll() is None, record.err
        record.proc.send_signal(signal.SIGINT)
        assert record.wait(60) == 0, record.err
    finally:
        for child in (run, record, publisher):
            if child is not None:
                child.stop()
    assert not any("Traceback" in line for line in record.err), record.err
    side = json.loads(sidecar_path(xdf).read_text())
    assert side["status"] == "complete", side["error"]
    chunk = _xdf_samples(xdf, predictions)
    col = {name: i for i, name in enumerate(chunk.info.ch_names)}
    got = chunk.data[col["window_index"]].astype(int).tolist()
    # recorded from its start on; each prediction is pushed to LSL just before it is written,
    # so the XDF may hold one more than the file, and lack the last one or two that were still
    # in transit when the run was killed
    by_index = {r["index"]: r for r in records}
    expected = index[index.index(got[0]) :]
    assert len(expected) - 2 <= len(got) <= len(expected) + 1, (got, expected)
    assert got[: len(expected)] == expected[: len(got)]
    for j, k in enumerate(got[: len(expected)]):
        r = by_index[k]
        assert chunk.data[col["t_window_end"], j] == r["t_window_end"]
        for c in r["classes"]:
            assert chunk.data[col[f"p_{c}"], j] == r["probs"][c]


def _complete_csv_lines(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(frames, lsl_times)`` of the complete lines of a frame index, and any partial tail."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0] == "frame,lsl_time\n"
    rows = [line.split(",") for line in lines[1:] if line.endswith("\n")]
    tail = lines[-1] if not lines[-1].endswith("\n") else ""
    frames = np.array([int(f) for f, _ in rows], np.int64)
    return frames, np.array([float(t) for _, t in rows]), tail


def _decode(path: Path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from ``path`` (none if it cannot open it)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_camera_killed_leaves_a_readable_video_and_frame_index(
    face_video, fer_cached, uid, tmp_path
):
    """``kill -9`` of ``camera --file V --video OUT.avi`` once frames are published: the frame
    index holds a complete line for every frame published, numbered from 0 without a gap; the
    video opens and holds the camera's frames from the first one up to the cut, less at most
    what was still in the encoder's output buffer (with an .mp4 nothing would be readable)."""
    import cv2
    import pylsl

    video = tmp_path / "face.avi"
    child = _Child([*_camera_args(face_video, uid), "--video", str(video)], tmp_path)
    try:
        found = pylsl.resolve_byprop("source_id", uid, timeout=START_S)
        assert found, f"the FaceFeatures stream did not appear; stderr:\n{child.err}"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(timeout=10)
        received: list[float] = []
        # 60 frames: more than FFmpeg's 256 KiB output buffer holds of this video
        while len(received) < 60 and child.proc.poll() is None:
            received += inlet.pull_chunk(timeout=1.0)[1]
        assert len(received) >= 60, f"FaceFeatures stopped coming; stderr:\n{child.err}"
        delay = _kill_at_random(child.proc, "kill-camera")
        assert child.wait(30) == -signal.SIGKILL
        received += inlet.pull_chunk(timeout=0.0)[1]  # what had already arrived
    finally:
        child.kill()
    assert "Traceback" not in child.err

    frames, stamps, tail = _complete_csv_lines(video.with_name(video.name + ".frames.csv"))
    assert tail == "", "the index is flushed line by line: no partial line"
    assert frames.tolist() == list(range(len(frames)))
    assert np.all(np.diff(stamps) > 0)
    # every frame published has its line (written before the frame is published)
    assert np.isin(np.array(received), stamps).all()
    assert len(frames) >= len(received)

    decoded = _decode(video)
    cap = cv2.VideoCapture(str(face_video))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), 3)
    fps = cap.get(cv2.CAP_PROP_FPS)
    ok, first = cap.read()
    cap.release()
    assert ok and decoded, f"{video} ({video.stat().st_size} bytes) is not readable"
    assert all(f.shape == size for f in decoded)
    # the frames lost are those still in the encoder's output buffer: a second or two
    assert len(frames) - 2 * fps <= len(decoded) <= len(frames), (delay, len(decoded), len(frames))
    err = np.abs(decoded[0].astype(float) - first.astype(float)).mean()
    assert err < 8, "frame 0 of the file is the camera's first frame (lossy codec)"
