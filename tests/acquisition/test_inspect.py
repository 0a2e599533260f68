"""`bci-affect inspect` and `bci-affect replay` (in process): per-stream summaries."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from acquisition.files import SUMMARY_FIELDS, StreamStats, open_recording, summarize
from acquisition.xdf import XdfSource, load_xdf
from acquisition.xdf_writer import write_xdf
from bci_affect.cli import main
from bci_affect.core import Chunk, FileFormatError, StreamInfo


@pytest.fixture(scope="module")
def xdf_dir(shared_data):
    return shared_data / "xdf"


def _json_lines(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


def test_inspect_json_fields(xdf_dir, capsys):
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    rows = _json_lines(capsys, ["inspect", str(path), "--json"])
    assert [r["stream"] for r in rows] == ["PythonResponse", "g.USBamp-1", "UnityMarkerStream"]
    for r in rows:
        assert list(r) == ["file", *SUMMARY_FIELDS]
        assert r["file"] == str(path)
    eeg = rows[1]
    assert eeg["type"] == "EEG" and eeg["n_chans"] == 16 and eeg["channel_format"] == "float32"
    assert eeg["ch_names"][:3] == ["F3", "Fz", "F4"] and set(eeg["units"]) == {"microvolts"}
    assert eeg["nominal_srate"] == 256.0 and abs(eeg["effective_srate"] - 256.0) < 0.1
    assert eeg["n_samples"] == 34320 and eeg["n_gaps"] == 0 and eeg["nan_count"] == 0
    assert eeg["duration_s"] == pytest.approx(eeg["last_timestamp"] - eeg["first_timestamp"])
    assert 133 < eeg["duration_s"] < 135
    assert eeg["n_markers"] is None and eeg["first_markers"] is None
    unity = rows[2]
    assert unity["n_markers"] == 71 and unity["first_markers"][0] == "Trial Started"
    assert len(unity["first_markers"]) == 5
    assert unity["n_gaps"] is None and unity["nan_count"] is None
    assert unity["nominal_srate"] == 0.0
    whole = {c.name: c for c in load_xdf(path)}
    for r in rows:
        c = whole[r["stream"]]
        assert r["first_timestamp"] == c.times[0] and r["last_timestamp"] == c.times[-1]


def test_inspect_table(xdf_dir, capsys):
    assert main(["inspect", str(xdf_dir / "bci_essentials_switch_example.xdf")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].endswith("3 streams, 134.060 s (1222188.232 -> 1222322.292 s)")
    eeg_row = next(line for line in lines if line.startswith("g.USBamp-1 "))
    assert eeg_row.split()[:7] == ["g.USBamp-1", "EEG", "16", "float32", "256", "255.996", "34320"]
    assert "markers: 71; first: 'Trial Started', 'switch,3,1,2'" in out
    assert "channels: F3 Fz F4 FC3" in out and "[microvolts]" in out


def test_inspect_empty_streams_and_clock_resets(xdf_dir, capsys):
    rows = _json_lines(capsys, ["inspect", str(xdf_dir / "empty_streams.xdf"), "--json"])
    assert len(rows) == 4
    empty = [r for r in rows if r["n_samples"] == 0]
    assert len(empty) == 2
    assert all(r["first_timestamp"] is None and r["effective_srate"] is None for r in empty)
    rows = _json_lines(capsys, ["inspect", str(xdf_dir / "clock_resets.xdf"), "--json"])
    biosemi = next(r for r in rows if r["stream"] == "BioSemi")
    assert biosemi["backward_steps"] == 0
    # the recording pauses for about 4.5 minutes around the clock reset
    assert biosemi["n_gaps"] >= 1 and 250 < biosemi["gap_s"] < 300


def test_gaps_and_nans_counted(tmp_path, rng):
    info = StreamInfo("EEG", "EEG", 100.0, ["a", "b"], ["microvolts"] * 2, "g1", "float32")
    times = np.arange(1000) / 100.0
    times[500:] += 2.0  # 2 s without samples
    times[800:] += 0.015  # a step of 2.5 periods: a gap of 0.015 s
    data = rng.standard_normal((2, 1000)).astype(np.float32)
    data[0, [3, 4, 900]] = np.nan
    path = write_xdf(tmp_path / "gaps.xdf", [Chunk(data, times, info)])
    for chunk_s in (0.05, 0.5, 100.0):  # summaries do not depend on chunking
        with pytest.warns(UserWarning, match="3 NaN values"), XdfSource(path, chunk_s=chunk_s) as s:
            (summary,) = summarize(s)
        assert summary.n_gaps == 2
        assert summary.gap_s == pytest.approx(2.0 + 0.015, abs=1e-9)
        assert summary.nan_count == 3
        assert summary.effective_srate == pytest.approx(100.0, rel=1e-6)
        assert summary.n_samples == 1000


def test_stats_irregular_and_backwards():
    info = StreamInfo("M", "Markers", 0.0, ["event"], channel_format="string")
    st = StreamStats(info)
    data = np.array([["a", "b", "c"]], dtype=object)
    st.update(Chunk(data, np.array([1.0, 5.0, 4.0]), info))
    st.update(Chunk(data[:, :1], np.array([3.0]), info))
    s = st.summary()
    assert s.backward_steps == 2 and s.n_markers == 4 and s.first_markers == ["a", "b", "c", "a"]
    assert s.first_timestamp == 1.0 and s.last_timestamp == 5.0 and s.n_gaps is None


def test_inspect_text_recording(shared_data, capsys):
    path = shared_data / "openbci" / "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
    rows = _json_lines(capsys, ["inspect", str(path), "--json"])
    eeg = next(r for r in rows if r["stream"] == "EEG")
    assert eeg["n_chans"] == 8 and eeg["nominal_srate"] == 250.0
    assert 85 < eeg["duration_s"] < 95
    source = open_recording(path, streams=["EEG"])
    with source:
        assert [s.stream for s in summarize(source)] == ["EEG"]


def test_replay_in_process_prints_statistics(xdf_dir, capsys):
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    assert main(["replay", str(path), "--streams", "g.USBamp-1", "UnityMarkerStream"]) == 0
    out = capsys.readouterr().out
    assert "g.USBamp-1" in out and "PythonResponse" not in out
    assert "replayed 34391 samples" in out and "x real time" in out


def test_truncated_file_warns_on_one_line(xdf_dir, tmp_path, capsys):
    data = (xdf_dir / "bci_essentials_switch_example.xdf").read_bytes()
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(data[: len(data) // 3])
    assert main(["inspect", str(cut), "--json"]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith("bci-affect inspect: warning: ")
    assert "is truncated: it ends at byte" in err[0]
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert 0 < next(r for r in rows if r["stream"] == "g.USBamp-1")["n_samples"] < 34320


def test_text_reader_missing_is_a_clear_error(shared_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "acquisition.textfiles", None)  # as if not installed
    path = shared_data / "openbci" / "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
    with pytest.raises(FileFormatError, match=r"OpenBCI GUI text recordings.*not installed"):
        open_recording(path)
