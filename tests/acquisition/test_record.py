"""Recording LSL streams to XDF with LabRecorder, read back with pyxdf; the record and devices
commands."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

import bci_affect
from acquisition.lsl import Outlet
from acquisition.recorder import (
    Recorder,
    read_back,
    sidecar_path,
    subject_session_from_path,
)
from acquisition.xdf import RecordingWarning, load_xdf
from bci_affect.cli import main
from bci_affect.core import BciAffectError, Chunk, ConfigError, DeviceError, StreamInfo

pytestmark = pytest.mark.lsl

LABELS = ("Fp1", "Fp2", "C3", "C4", "P3", "P4", "O1", "O2")


class Pusher:
    """Publishes an 8-channel 250 Hz EEG stream in real time (10-sample chunks) from a thread,
    and a marker stream; remembers everything it pushed."""

    def __init__(self, uid: str, sfreq: float = 250.0) -> None:
        self.info = StreamInfo(
            f"EEG{uid}", "EEG", sfreq, LABELS, ("microvolts",) * 8, uid, "float32"
        )
        self.marker_info = StreamInfo(
            f"Markers{uid}", "Markers", 0.0, ("event",), source_id=f"m{uid}",
            channel_format="string",
        )  # fmt: skip
        self.outlet = Outlet(self.info)
        self.markers = Outlet(self.marker_info)
        self.sent: list[Chunk] = []
        self.sent_markers: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, duration_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(duration_s,), daemon=True)
        self._thread.start()

    def _run(self, duration_s: float) -> None:
        sfreq, n = self.info.sfreq, 10
        t0 = pylsl.local_clock()
        k = 0
        while not self._stop.is_set() and k * n / sfreq < duration_s:
            i = np.arange(k * n, (k + 1) * n)
            data = (np.sin(i / 7.0)[None, :] * 50 + np.arange(8)[:, None]).astype(np.float32)
            chunk = Chunk(data, t0 + i / sfreq, self.info)
            self.outlet.push(chunk)
            self.sent.append(chunk)
            if k % 25 == 0:
                text = json.dumps({"event": "trial_start", "trial": k // 25})
                t = float(chunk.times[0])
                self.markers.push(Chunk(np.array([[text]], dtype=object), np.array([t]),
                                        self.marker_info))  # fmt: skip
                self.sent_markers.append((text, t))
            k += 1
            # pace like a device: the next chunk is due at t0 + (k * n) / sfreq
            time.sleep(max(0.0, t0 + k * n / sfreq - pylsl.local_clock()))

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(30)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def stream_by_name(streams: list[dict], name: str) -> dict:
    for s in streams:
        if s["info"]["name"][0] == name:
            return s
    raise AssertionError(f"{name} not in the file")


# --------------------------------------------------------------------------------------------
# pure helpers and argument checks


def test_sidecar_and_subject_session_from_path():
    assert sidecar_path("recordings/S01/ses1.xdf") == Path("recordings/S01/ses1.json")
    assert subject_session_from_path("recordings/S01/ses1.xdf") == ("S01", "ses1")
    assert subject_session_from_path("ses2.xdf") == (None, "ses2")
    rec = Recorder("data/P7/run3.xdf", ["EEG"], subject="P8")
    assert (rec.subject, rec.session) == ("P8", "run3")


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"must end in \.xdf"):
        Recorder(tmp_path / "rec.txt")
    with pytest.raises(ConfigError, match="timeout_s"):
        Recorder(tmp_path / "rec.xdf", timeout_s=0)
    with pytest.raises(ConfigError, match="not started"):
        Recorder(tmp_path / "rec.xdf").stop()


def test_refuses_to_overwrite(tmp_path, uid):
    path = tmp_path / "S01" / "ses1.xdf"
    path.parent.mkdir()
    path.write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        Recorder(path, [f"source_id={uid}"]).start()
    assert path.read_bytes() == b"precious"
    other = tmp_path / "S01" / "ses2.xdf"
    sidecar_path(other).write_text("{}")
    with pytest.raises(ConfigError, match=r"ses2\.json already exists"):
        Recorder(other, [f"source_id={uid}"]).start()
    assert not other.exists()


def test_unwritable_destination(tmp_path, uid):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = Outlet(StreamInfo(f"E{uid}", "EEG", 10.0, ("a",), source_id=uid))
    with pytest.raises(ConfigError, match="cannot (write|create the folder)"):
        Recorder(blocker / "ses.xdf", [f"source_id={uid}"], timeout_s=5).start()
    out.close()


# --------------------------------------------------------------------------------------------
# recording


@pytest.mark.slow
def test_record_read_back_and_sidecar(tmp_path, uid):
    path = tmp_path / "rec" / f"S{uid}" / "ses1.xdf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"an old file that overwrite=True replaces")
    pusher = Pusher(uid)
    rec = Recorder(
        path,
        [f"source_id={uid}", f"source_id=m{uid}"],
        timeout_s=5,
        board="cyton",
        montage="10-20",
        overwrite=True,
        config={"purpose": "test", "path": path},
    )
    t_before = pylsl.local_clock()
    infos = rec.start()
    assert sorted(i.name() for i in infos) == sorted([pusher.info.name, pusher.marker_info.name])
    early = json.loads(sidecar_path(path).read_text())
    assert early["status"] == "recording" and early["stop"] is None
    pusher.start(duration_s=1.6)
    pusher.join()
    # another thread stops the recording while this one waits in wait()
    summaries = []
    stopper = threading.Thread(target=lambda: summaries.append(rec.stop()))
    stopper.start()
    assert rec.wait() == "stop_requested"
    stopper.join(60)
    summary = rec.stop()
    assert summaries == [summary]  # idempotent: the same summary
    t_after = pylsl.local_clock()

    # --- the XDF file, read back by pyxdf
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    eeg = stream_by_name(streams, pusher.info.name)
    info = eeg["info"]
    assert float(info["nominal_srate"][0]) == 250.0
    assert info["channel_format"][0] == "float32"
    chans = info["desc"][0]["channels"][0]["channel"]
    assert tuple(c["label"][0] for c in chans) == LABELS
    assert all(c["unit"][0] == "microvolts" for c in chans)
    expected = np.concatenate([c.data for c in pusher.sent], axis=1)
    assert eeg["time_series"].shape == expected.T.shape  # every sample, none twice
    np.testing.assert_array_equal(eeg["time_series"], expected.T)
    ts = eeg["time_stamps"]
    np.testing.assert_allclose(ts, np.concatenate([c.times for c in pusher.sent]), atol=1e-3)
    dt = np.diff(ts)
    assert np.allclose(dt, 1 / 250, atol=1e-4), "sample intervals differ from 1/sfreq"
    assert dt.max() < 1.5 / 250  # no gap that was not in the stream
    assert int(eeg["footer"]["info"]["sample_count"][0]) == len(ts)
    markers = stream_by_name(streams, pusher.marker_info.name)
    assert [m[0] for m in markers["time_series"]] == [m for m, _ in pusher.sent_markers]
    np.testing.assert_allclose(
        markers["time_stamps"], [t for _, t in pusher.sent_markers], atol=1e-3
    )

    # --- the summary
    assert summary.status == "complete" and summary.error is None
    assert summary.size_bytes == path.stat().st_size > 1000
    counts = {s.name: s.n_samples for s in summary.streams}
    assert counts == {pusher.info.name: len(ts), pusher.marker_info.name: len(pusher.sent_markers)}
    assert t_before <= summary.start_lsl <= ts[0]
    assert ts[-1] <= summary.stop_lsl <= t_after

    # --- the sidecar
    side = json.loads(sidecar_path(path).read_text())
    assert side["status"] == "complete" and side["error"] is None
    assert (side["subject"], side["session"]) == (f"S{uid}", "ses1")
    assert (side["board"], side["montage"]) == ("cyton", "10-20")
    assert side["software"]["bci_affect"] == bci_affect.__version__
    assert side["software"]["labrecorder"] == "1.0.0rc0"
    assert side["config"] == {"purpose": "test", "path": str(path)}
    assert side["file"] == "ses1.xdf" and side["size_bytes"] == summary.size_bytes
    assert side["start"]["lsl_clock"] == summary.start_lsl
    assert side["stop"]["lsl_clock"] == summary.stop_lsl
    start_utc = datetime.fromisoformat(side["start"]["utc"].replace("Z", "+00:00"))
    stop_utc = datetime.fromisoformat(side["stop"]["utc"].replace("Z", "+00:00"))
    assert 0 < (stop_utc - start_utc).total_seconds() == pytest.approx(summary.duration_s, abs=0.1)
    by_name = {s["name"]: s for s in side["streams"]}
    e = by_name[pusher.info.name]
    assert e["ch_names"] == list(LABELS) and e["units"] == ["microvolts"] * 8
    assert (e["sfreq"], e["n_chans"], e["source_id"]) == (250.0, 8, uid)
    assert e["n_samples"] == len(ts)
    assert e["effective_sfreq"] == pytest.approx(250.0, rel=1e-3)
    assert by_name[pusher.marker_info.name]["n_samples"] == len(pusher.sent_markers)
    assert read_back(path)[1] == list(summary.streams)


@pytest.mark.slow
def test_recording_process_crash_is_reported(tmp_path, uid):
    pusher = Pusher(uid)
    pusher.start(duration_s=60)
    path = tmp_path / "crash.xdf"
    rec = Recorder(path, [f"source_id={uid}"], timeout_s=5)
    try:
        rec.start()
        # data flows: wait until the file holds EEG samples
        deadline = time.monotonic() + 20
        n_before = 0
        while n_before == 0:
            assert time.monotonic() < deadline, "nothing recorded"
            time.sleep(0.05)
            with warnings.catch_warnings(), contextlib.suppress(BciAffectError):
                warnings.simplefilter("ignore", RecordingWarning)
                n_before = load_xdf(path)[0].data.shape[1]
        os.kill(rec.pid, signal.SIGKILL)
        assert rec.wait(duration_s=20) == "recorder_exited"
        with pytest.raises(
            DeviceError, match=r"failed: the recording process was killed by signal 9"
        ):
            rec.stop()
    finally:
        pusher.stop()
    assert rec.summary.status == "failed"
    side = json.loads(sidecar_path(path).read_text())
    assert side["status"] == "failed" and "signal 9" in side["error"]
    assert [s["name"] for s in side["streams"]] == [pusher.info.name]
    assert side["size_bytes"] == path.stat().st_size and side["stop"] is not None

    # the file reads back up to the cut: what was written before the crash is all there
    with pytest.warns(RecordingWarning, match="truncated"):
        (eeg,) = load_xdf(path)
    n = eeg.data.shape[1]
    assert n >= n_before
    sent = np.concatenate([c.data for c in pusher.sent], axis=1)
    sent_times = np.concatenate([c.times for c in pusher.sent])
    first = int(np.argmin(np.abs(sent_times - eeg.times[0])))
    np.testing.assert_array_equal(eeg.data, sent[:, first : first + n])  # no gap, none twice
    np.testing.assert_allclose(eeg.times, sent_times[first : first + n], atol=1e-3)


# --------------------------------------------------------------------------------------------
# the commands


@pytest.mark.slow
def test_cli_record(tmp_path, uid, capsys):
    pusher = Pusher(uid)
    out = tmp_path / "S02" / "ses9.xdf"
    pusher.start(duration_s=30)
    try:
        args = ["record", "--out", str(out), "--streams", f"source_id={uid}", "--duration", "1",
                "--montage", "10-20"]  # fmt: skip
        assert main(args) == 0
    finally:
        pusher.stop()
    text = capsys.readouterr().out
    assert "recording 1 stream(s)" in text and pusher.info.name in text
    streams, _ = pyxdf.load_xdf(str(out), dejitter_timestamps=False)
    n = len(stream_by_name(streams, pusher.info.name)["time_stamps"])
    assert 200 <= n <= 30 * 250  # about 1 s plus the drain at 250 Hz
    assert f"{n} samples" in text and f"wrote {out}" in text
    side = json.loads(sidecar_path(out).read_text())
    assert (side["subject"], side["session"], side["montage"]) == ("S02", "ses9", "10-20")
    assert side["config"]["duration"] == 1.0 and side["config"]["streams"] == [f"source_id={uid}"]

    # the same file again: refused, one line, exit status 2, file untouched
    size = out.stat().st_size
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert out.stat().st_size == size


@pytest.mark.slow
def test_cli_record_stops_cleanly_on_ctrl_c(tmp_path, uid):
    pusher = Pusher(uid)
    out = tmp_path / "S03" / "ses1.xdf"
    pusher.start(duration_s=60)
    cmd = [sys.executable, "-m", "bci_affect", "record", "--out", str(out),
           "--streams", f"source_id={uid}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("recording 1 stream(s)")
        deadline = time.monotonic() + 20
        while out.stat().st_size < 5000:  # LabRecorder has written samples
            assert time.monotonic() < deadline, "nothing recorded"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        pusher.stop()
    assert proc.returncode == 0, stderr
    assert f"wrote {out}" in stdout
    streams, _ = pyxdf.load_xdf(str(out), dejitter_timestamps=False)
    eeg = stream_by_name(streams, pusher.info.name)
    assert int(eeg["footer"]["info"]["sample_count"][0]) == len(eeg["time_stamps"]) > 0
    assert json.loads(sidecar_path(out).read_text())["status"] == "complete"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--out", "x.txt"], "must end in .xdf"),
        (["--out", "{tmp}/a.xdf", "--duration", "0"], "--duration must be > 0"),
        (["--out", "{tmp}/a.xdf", "--timeout", "-1"], "--timeout must be > 0"),
        (
            ["--out", "{tmp}/a.xdf", "--streams", "source_id={uid}-missing", "--timeout", "0.3"],
            "no LSL stream with selector",
        ),  # fmt: skip
        (["--out", "{tmp}/a.xdf", "--streams", "colour=red"], "unknown key 'colour'"),
    ],
)
def test_cli_record_errors(tmp_path, uid, capsys, extra, needle):
    argv = ["record"] + [a.format(tmp=tmp_path, uid=uid) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bci-affect record: error: ") and err.count("\n") == 1
    assert needle in err
    assert not (tmp_path / "a.xdf").exists()


def test_cli_devices(uid, capsys):
    out = Outlet(StreamInfo(f"Dev{uid}", "EEG", 125.0, ("a", "b", "c"), source_id=uid))
    resolve_until = time.monotonic() + 10
    rows: list[dict] = []
    while time.monotonic() < resolve_until:  # the stream must answer within the listen window
        assert main(["devices", "--json", "--timeout", "1"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        if any(r.get("source_id") == uid for r in rows):
            break
    (mine,) = [r for r in rows if r.get("source_id") == uid]
    assert mine == {
        "kind": "lsl_stream",
        "name": f"Dev{uid}",
        "type": "EEG",
        "n_chans": 3,
        "sfreq": 125.0,
        "channel_format": "float32",
        "source_id": uid,
        "hostname": mine["hostname"],
        "uid": mine["uid"],
    }
    assert mine["hostname"] and mine["uid"]
    boards = [r for r in rows if r["kind"] == "brainflow_board"]
    assert {r["kind"] for r in rows} <= {"lsl_stream", "brainflow_board"}
    assert all(isinstance(r["name"], str) for r in boards)

    assert main(["devices", "--timeout", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("LSL streams (") and "BrainFlow boards" in text
    assert main(["devices", "--timeout", "0"]) == 2
    assert "--timeout must be > 0" in capsys.readouterr().err
    out.close()
