"""OpenBCI GUI text files and BrainFlow CSV files as sources, and ``bci-affect convert``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from acquisition.textfiles import (
    BrainFlowCsvSource,
    OpenBciTextSource,
    host_timestamps,
    regularise_times,
    resolve_board,
    sniff_format,
)
from bci_affect.cli import main
from bci_affect.core import ConfigError, FileFormatError, Source, read_all

OPENBCI_NAME = "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
CYTON_LABELS = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
SYNTHETIC_LABELS = tuple(
    [
        "Fz",
        "C3",
        "Cz",
        "C4",
        "Pz",
        "PO7",
        "Oz",
        "PO8",
        "F5",
        "F7",
        "F3",
        "F1",
        "F2",
        "F4",
        "F6",
        "F8",
    ]
)


@pytest.fixture(scope="module")
def openbci_file(shared_data) -> Path:
    path = shared_data / "openbci" / OPENBCI_NAME
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def openbci_table(openbci_file):
    """The file's rows parsed independently: (header lines, column row, values[n, 24])."""
    lines = openbci_file.read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("%")]
    column_row = lines[len(header)]
    rows = lines[len(header) + 1 :]
    values = np.array([[float(x) for x in r.split(",")[:-1]] for r in rows])
    return header, column_row, rows, values


@pytest.fixture(scope="module")
def openbci_whole(openbci_file):
    with OpenBciTextSource(openbci_file) as src:
        return src.streams, read_all(src)


def _write(path: Path, header, column_row, rows) -> Path:
    text = "\n".join([*header, *([column_row] if column_row else []), *rows]) + "\n"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# the real OpenBCI GUI v6 file


def test_openbci_v6_streams(openbci_whole):
    streams, whole = openbci_whole
    assert [s.name for s in streams] == ["EEG", "EEG-accel", "EEG-events"]
    eeg, accel, events = streams
    assert eeg.type == "EEG" and eeg.sfreq == 250.0 and eeg.n_chans == 8
    assert eeg.ch_names == CYTON_LABELS  # BrainFlow's default Cyton montage
    assert eeg.units == ("microvolts",) * 8
    assert eeg.desc["montage"] == "board-default" and eeg.desc["board"] == "Cyton"
    assert accel.type == "Accelerometer" and accel.units == ("g",) * 3 and accel.sfreq == 250.0
    assert events.type == "Markers" and events.channel_format == "string"
    e = whole["EEG"]
    assert e.n_times == 22490
    duration = e.times[-1] - e.times[0]
    assert 89.5 < duration < 90.5
    assert whole["EEG-accel"].n_times == e.n_times
    assert "EEG-events" not in whole  # nothing dropped in this file


def test_openbci_values_and_times_match_the_file(openbci_whole, openbci_table):
    _, whole = openbci_whole
    _, _, _, values = openbci_table
    eeg, accel = whole["EEG"], whole["EEG-accel"]
    np.testing.assert_array_equal(eeg.data, values[:, 1:9].T)  # exact: double64
    np.testing.assert_array_equal(accel.data, values[:, 9:12].T)
    unix_s = values[:, 22] / 1000.0
    steps = np.diff(eeg.times)
    assert steps.min() > 0
    assert steps.max() - steps.min() < 1e-6  # evenly spaced: regularised
    assert 1.0 / steps.mean() == pytest.approx(250.0, rel=0.01)
    # the times follow the file's arrival clock (bursts of up to tens of ms around the line)
    assert np.abs(eeg.times - unix_s).max() < 0.1
    assert abs(np.median(eeg.times - unix_s)) < 0.02


def test_source_protocol_chunks_in_time_order(openbci_file):
    src = OpenBciTextSource(openbci_file, chunk_s=0.5)
    assert isinstance(src, Source)
    with src:
        chunks = list(src)
    eeg = [c for c in chunks if c.name == "EEG"]
    assert {c.n_times for c in eeg[:-1]} == {125}
    firsts = [c.times[0] for c in chunks]
    assert firsts == sorted(firsts)
    assert sum(c.n_times for c in eeg) == 22490


@pytest.mark.parametrize("chunk_s", [0.004, 0.1, 3.0])
def test_chunking_does_not_change_the_data(openbci_file, openbci_whole, chunk_s):
    with OpenBciTextSource(openbci_file, chunk_s=chunk_s) as src:
        whole = read_all(src)
    np.testing.assert_array_equal(whole["EEG"].data, openbci_whole[1]["EEG"].data)
    np.testing.assert_array_equal(whole["EEG"].times, openbci_whole[1]["EEG"].times)


def test_stop_ends_iteration(openbci_file):
    with OpenBciTextSource(openbci_file) as src:
        got = []
        for chunk in src:
            got.append(chunk)
            if len(got) == 4:
                src.stop()
    assert 4 <= len(got) < 10


def test_montage(openbci_file, tmp_path):
    labels = ["F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]
    src = OpenBciTextSource(openbci_file, montage=labels)
    assert src.streams[0].ch_names == tuple(labels)
    assert src.streams[0].desc["montage"] == "given"
    src = OpenBciTextSource(openbci_file, montage=" F3,F4 ,C3,C4,P3,P4,O1,O2")
    assert src.streams[0].ch_names == tuple(labels)
    with pytest.raises(ConfigError, match="3 labels.*8 EEG channels"):
        OpenBciTextSource(openbci_file, montage="a,b,c").streams  # noqa: B018
    with pytest.raises(ConfigError, match="repeats"):
        OpenBciTextSource(openbci_file, montage=["a"] * 8).streams  # noqa: B018


# --------------------------------------------------------------------------------------------
# derived files: drops, markers, older formats


def test_dropped_samples_become_events(tmp_path, openbci_table, openbci_whole):
    header, column_row, rows, _ = openbci_table
    # lose 3 samples at row 1000 and 300 (> one 256-sample counter cycle) at row 5000
    kept = np.r_[0:1000, 1003:5000, 5300 : len(rows)]
    path = _write(tmp_path / "drops.txt", header, column_row, [rows[i] for i in kept])
    with OpenBciTextSource(path) as src:
        assert [s.name for s in src.streams][-1] == "EEG-events"
        whole = read_all(src)
        assert src.n_dropped == 303
    eeg = whole["EEG"]
    np.testing.assert_array_equal(eeg.data, openbci_whole[1]["EEG"].data[:, kept])
    events = [json.loads(v) for v in whole["EEG-events"].data[0]]
    assert [(e["event"], e["stream"], e["n"]) for e in events] == [
        ("dropped_samples", "EEG", 3),
        ("dropped_samples", "EEG", 300),
    ]
    dt = (eeg.times[-1] - eeg.times[0]) / (eeg.n_times + 303 - 1)
    # the samples keep their place in time: the gaps are exactly the missing samples
    assert eeg.times[1000] - eeg.times[999] == pytest.approx(4 * dt, abs=1e-6)
    assert eeg.times[4997] - eeg.times[4996] == pytest.approx(301 * dt, abs=1e-6)
    assert events[0]["t"] == pytest.approx(eeg.times[999] + dt)
    np.testing.assert_allclose(whole["EEG-events"].times, [e["t"] for e in events])


def test_markers_column(tmp_path, openbci_table):
    header, column_row, rows, _ = openbci_table
    rows = list(rows[:2500])
    for i, value in ((100, "3"), (2000, "7.5")):
        fields = rows[i].split(",")
        fields[-2] = value  # Marker Channel
        rows[i] = ",".join(fields)
    path = _write(tmp_path / "markers.txt", header, column_row, rows)
    with OpenBciTextSource(path) as src:
        assert "Markers" in [s.name for s in src.streams]
        whole = read_all(src)
    markers = whole["Markers"]
    assert [json.loads(v) for v in markers.data[0]] == [
        {"event": "marker", "value": 3},
        {"event": "marker", "value": 7.5},
    ]
    np.testing.assert_array_equal(markers.times, whole["EEG"].times[[100, 2000]])


def test_v5_named_columns_with_other_marker(tmp_path, openbci_table, openbci_whole):
    """GUI v5: 'Other' columns, the marker column is the 'Other' after 'Timestamp', and the
    timestamp is in seconds."""
    header, _, rows, values = openbci_table
    n = 3000
    names = (
        ["Sample Index"]
        + [f"EXG Channel {k}" for k in range(8)]
        + [f"Accel Channel {k}" for k in range(3)]
        + ["Other"] * 7
        + ["Analog Channel 0", "Analog Channel 1", "Analog Channel 2", "Timestamp", "Other"]
    )
    out = []
    for i in range(n):
        f = rows[i].split(",")
        marker = "5" if i == 1234 else "0"
        out.append(",".join(f[:12] + f[12:22] + [f"{float(f[22]) / 1000:.3f}", marker]))
    path = _write(tmp_path / "v5.txt", header, ", ".join(names), out)
    with OpenBciTextSource(path) as src:
        whole = read_all(src)
    np.testing.assert_array_equal(whole["EEG"].data, values[:n, 1:9].T)
    np.testing.assert_allclose(whole["EEG"].times, openbci_whole[1]["EEG"].times[:n], atol=0.02)
    assert json.loads(whole["Markers"].data[0, 0]) == {"event": "marker", "value": 5}


def test_headerless_old_format(tmp_path, openbci_table, openbci_whole):
    """GUI v4 and older: no column row; index, EEG, accel, formatted time, unix ms."""
    _, _, rows, values = openbci_table
    header = [
        "%OpenBCI Raw EEG Data",
        "%Number of channels = 8",
        "%Sample Rate = 250.0 Hz",
        "%First Column = SampleIndex",
        "%Last Column = Timestamp ",
        "%Other Columns = EEG data in microvolts followed by Accel Data (in G) interleaved "
        "with Aux Data",
    ]
    out = []
    for r in rows:
        f = [x.strip() for x in r.split(",")]
        out.append(", ".join(f[:12] + [f[24], f[22]]))
    path = _write(tmp_path / "OpenBCI-RAW-old.txt", header, None, out)
    with OpenBciTextSource(path) as src:
        assert src.streams[0].desc["format"].startswith("OpenBCI GUI v4")
        whole = read_all(src)
    np.testing.assert_array_equal(whole["EEG"].data, values[:, 1:9].T)
    np.testing.assert_array_equal(whole["EEG-accel"].data, values[:, 9:12].T)
    np.testing.assert_allclose(whole["EEG"].times, openbci_whole[1]["EEG"].times, atol=1e-6)
    # no board header: generic labels
    assert whole["EEG"].ch_names == tuple(f"EEG{k}" for k in range(1, 9))

    # the oldest files: no channel count, no unix time -> inferred, times from 0 s
    oldest = [ln for ln in header if "Number of channels" not in ln]
    out = [", ".join([x.strip() for x in r.split(",")][:12] + ["12:00:00.000"]) for r in rows[:500]]
    path = _write(tmp_path / "oldest.txt", oldest, None, out)
    with OpenBciTextSource(path) as src:
        whole = read_all(src)
    assert whole["EEG"].info.n_chans == 8
    np.testing.assert_allclose(whole["EEG"].times, np.arange(500) / 250.0)


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path, openbci_table, caplog):
    header, column_row, rows, _ = openbci_table
    rows = list(rows[:1000]) + [rows[1000][:30]]
    path = _write(tmp_path / "cut.txt", header, column_row, rows)
    with caplog.at_level(logging.WARNING), OpenBciTextSource(path) as src:
        assert read_all(src)["EEG"].n_times == 1000
    assert "cut short" in caplog.text and "line 1006" in caplog.text


# --------------------------------------------------------------------------------------------
# bad input


def _bad(tmp_path, openbci_table, edit):
    header, column_row, rows, _ = openbci_table
    rows = list(rows[:200])
    edit(rows)
    return _write(tmp_path / "bad.txt", header, column_row, rows)


def test_bad_openbci_files(tmp_path, openbci_table):
    def replace_field(i, k, value):
        def edit(rows):
            f = rows[i].split(",")
            f[k] = value
            rows[i] = ",".join(f)

        return edit

    cases = [
        (
            replace_field(50, 3, " abc"),
            r"bad\.txt, line 56: value 'abc' in column 4 .EXG Channel 2",
        ),
        (replace_field(60, 1, " nan"), r"line 66: column 2 .EXG Channel 0. is 'nan'"),
        (replace_field(70, 22, " inf"), r"line 76: column 23 .Timestamp. is 'inf'"),
        (lambda rows: rows.__setitem__(20, rows[20] + ", 1"), r"line 26: 26 values, expected 25"),
        (lambda rows: rows.__setitem__(30, rows[30][:40]), r"line 36: \d+ values, expected 25"),
        (replace_field(5, 0, " 4.5"), r"line 11: Sample Index 4.5 is not"),
    ]
    for edit, pattern in cases:
        path = _bad(tmp_path, openbci_table, edit)
        with pytest.raises(FileFormatError, match=pattern):
            OpenBciTextSource(path).streams  # noqa: B018


def test_unreadable_files(tmp_path, openbci_table):
    header, column_row, _, _ = openbci_table
    missing = tmp_path / "missing.txt"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"%OpenBCI\n\x00\x01\x02garbage")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"%OpenBCI Raw EXG Data\n%Sample Rate = 250 Hz\n0, 1.0\xff\n")
    only_header = _write(tmp_path / "header.txt", header, column_row, [])
    prose = tmp_path / "prose.txt"
    prose.write_text("Dear diary,\ntoday I recorded EEG.\n")
    no_rate = _write(
        tmp_path / "norate.txt", [h for h in header if "Sample Rate" not in h], column_row, []
    )
    cases = [
        (missing, "no such file"),
        (empty, "is empty"),
        (binary, "line 2: binary data"),
        (latin, "line 3: not UTF-8"),
        (only_header, "no data rows"),
        (prose, "line 1: not an OpenBCI GUI text file"),
        (tmp_path, "is a folder"),
    ]
    for path, pattern in cases:
        with pytest.raises(FileFormatError, match=pattern) as err:
            OpenBciTextSource(path).streams  # noqa: B018
        assert str(path) in str(err.value)
    no_rate.write_text(
        no_rate.read_text()
        + "0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0,"
        + "0," * 10
        + " 1557936053329,0, 12:00:53.329\n"
    )
    with pytest.raises(FileFormatError, match="Sample Rate.*sfreq"):
        OpenBciTextSource(no_rate).streams  # noqa: B018
    assert OpenBciTextSource(no_rate, sfreq=250).streams[0].sfreq == 250.0


def test_bad_arguments(openbci_file):
    with pytest.raises(ConfigError, match="chunk_s"):
        OpenBciTextSource(openbci_file, chunk_s=0)
    with pytest.raises(ConfigError, match="sfreq"):
        OpenBciTextSource(openbci_file, sfreq=-1)
    with pytest.raises(ConfigError, match="unknown BrainFlow board 'cytn'.*cyton_daisy"):
        BrainFlowCsvSource(openbci_file, board="cytn")


# --------------------------------------------------------------------------------------------
# timestamps


def test_regularise_times_unwraps_and_ignores_bursts(rng):
    fs, n = 250.0, 5000
    true_pos = np.arange(n + 700)
    keep = np.r_[0:1000, 1002:3000, 3000 + 512 + 5 : n + 700]  # 2 lost; then 2 cycles + 5
    pos = true_pos[keep]
    board_fs = 250.4  # the board's crystal against the computer clock
    arrival = 1.7e9 + pos / board_fs + rng.uniform(0.0, 0.03, pos.size)
    arrival[4000:4250] = arrival[4250]  # a 1 s stall, then a burst
    times, got = regularise_times(pos % 256, arrival, fs)
    np.testing.assert_array_equal(got, pos - pos[0])
    assert np.all(np.diff(times) > 0)
    assert 1 / np.median(np.diff(times)) == pytest.approx(board_fs, rel=1e-3)
    # Cyton-Daisy counts in steps of 2; a counter without timestamps gives position / fs
    times, got = regularise_times((2 * pos[:2900]) % 256, None, 125.0)
    np.testing.assert_array_equal(got, pos[:2900])
    np.testing.assert_allclose(times, pos[:2900] / 125.0)


# --------------------------------------------------------------------------------------------
# BrainFlow CSV from the real synthetic board


@pytest.fixture(scope="module")
def brainflow_csv(tmp_path_factory):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams
        from brainflow.data_filter import DataFilter

    board = BoardShim(BoardIds.SYNTHETIC_BOARD.value, BrainFlowInputParams())
    board.prepare_session()
    try:
        board.start_stream()
        deadline = time.monotonic() + 20
        while board.get_board_data_count() < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        board.insert_marker(2.0)
        while board.get_board_data_count() < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        data = board.get_board_data()
        board.stop_stream()
    finally:
        board.release_session()
    assert data.shape[1] >= 400, "the synthetic board produced too few samples"
    path = tmp_path_factory.mktemp("brainflow") / "BrainFlow-RAW.csv"
    DataFilter.write_file(data, str(path), "w")
    return path, data, BoardShim.get_board_descr(BoardIds.SYNTHETIC_BOARD.value)


@pytest.mark.parametrize("board", ["synthetic", None])
def test_brainflow_csv(brainflow_csv, board):
    path, data, descr = brainflow_csv
    with BrainFlowCsvSource(path, board=board) as src:
        streams = src.streams
        whole = read_all(src)
    assert [s.name for s in streams] == ["EEG", "EEG-accel", "Markers", "EEG-events"]
    eeg = whole["EEG"]
    assert eeg.info.sfreq == descr["sampling_rate"] == 250
    assert eeg.ch_names == SYNTHETIC_LABELS
    assert eeg.n_times == data.shape[1]
    # write_file keeps 6 decimals
    np.testing.assert_allclose(eeg.data, data[descr["eeg_channels"]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        whole["EEG-accel"].data, data[descr["accel_channels"]], rtol=0, atol=1e-6
    )
    ts = data[descr["timestamp_channel"]]
    assert np.abs(eeg.times - ts).max() < 0.05
    assert np.ptp(np.diff(eeg.times)) < 1e-6
    marker_rows = np.flatnonzero(data[descr["marker_channel"]])
    assert marker_rows.size == 1
    assert json.loads(whole["Markers"].data[0, 0]) == {"event": "marker", "value": 2}
    assert whole["Markers"].times[0] == eeg.times[marker_rows[0]]


def test_brainflow_csv_drops_and_bad_input(brainflow_csv, tmp_path):
    path, data, _ = brainflow_csv
    lines = path.read_text().splitlines()
    cut = tmp_path / "drops.csv"
    cut.write_text("\n".join(lines[:100] + lines[110:]) + "\n")
    with BrainFlowCsvSource(cut, board="synthetic") as src:
        whole = read_all(src)
    assert [json.loads(v)["n"] for v in whole["EEG-events"].data[0]] == [10]

    with pytest.raises(FileFormatError, match=r"32 tab-separated values per line.*'Cyton'.*24"):
        BrainFlowCsvSource(path, board="cyton").streams  # noqa: B018
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("\n".join(lines[:5] + [lines[5].replace("\t", "\tx", 1)] + lines[6:]))
    with pytest.raises(FileFormatError, match=r"garbled\.csv, line 6: value 'x"):
        BrainFlowCsvSource(garbled, board="synthetic").streams  # noqa: B018
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:5] + ["\t".join(lines[5].split("\t")[:20])] + lines[6:]))
    with pytest.raises(FileFormatError, match=r"line 6: 20 values, expected 32"):
        BrainFlowCsvSource(short, board="synthetic").streams  # noqa: B018
    odd = tmp_path / "odd.csv"
    odd.write_text("1\t2\t3\n4\t5\t6\n")
    with pytest.raises(FileFormatError, match="no BrainFlow board writes 3 columns"):
        BrainFlowCsvSource(odd).streams  # noqa: B018


def test_resolve_board():
    assert resolve_board("cyton-daisy")[1] == "CYTON_DAISY_BOARD"
    assert resolve_board("SYNTHETIC_BOARD") == resolve_board(-1) == resolve_board("-1")
    with pytest.raises(ConfigError, match="unknown BrainFlow board"):
        resolve_board(12345)


def test_sniff_format(openbci_file, brainflow_csv, shared_data, tmp_path):
    assert sniff_format(openbci_file) == "openbci"
    assert sniff_format(brainflow_csv[0]) == "brainflow"
    assert sniff_format(shared_data / "xdf" / "minimal.xdf") == "xdf"
    (tmp_path / "x.txt").write_text("hello\n")
    assert sniff_format(tmp_path / "x.txt") is None
    assert sniff_format(tmp_path / "missing") is None


# --------------------------------------------------------------------------------------------
# bci-affect convert


def _pyxdf(path):
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


def test_convert_openbci_reads_back_identically(openbci_file, openbci_whole, tmp_path, capsys):
    out = tmp_path / "session.xdf"
    assert main(["convert", str(openbci_file), str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    line = printed.out.strip()
    assert "\n" not in line
    assert line.startswith(f"wrote {out}: EEG 8 ch 250 Hz 22490 samples")
    streams, whole = openbci_whole
    xdf = _pyxdf(out)
    assert list(xdf) == [s.name for s in streams]
    for info in streams:
        s = xdf[info.name]
        assert s["info"]["type"][0] == info.type
        assert float(s["info"]["nominal_srate"][0]) == info.sfreq
        assert s["info"]["channel_format"][0] == info.channel_format
        channels = s["info"]["desc"][0]["channels"][0]["channel"]
        assert tuple(c["label"][0] for c in channels) == info.ch_names
        assert tuple(c["unit"][0] or "" for c in channels) == info.units
        if info.name in whole:
            np.testing.assert_array_equal(s["time_series"], whole[info.name].data.T)
            np.testing.assert_array_equal(s["time_stamps"], whole[info.name].times)
        else:
            assert len(s["time_stamps"]) == 0

    # XDF in, XDF out: the same again
    again = tmp_path / "again.xdf"
    assert main(["convert", str(out), str(again)]) == 0
    xdf2 = _pyxdf(again)
    np.testing.assert_array_equal(xdf2["EEG"]["time_series"], xdf["EEG"]["time_series"])
    np.testing.assert_array_equal(xdf2["EEG"]["time_stamps"], xdf["EEG"]["time_stamps"])


def test_convert_brainflow_with_options(brainflow_csv, tmp_path, capsys):
    path, data, descr = brainflow_csv
    out = tmp_path / "bf.xdf"
    montage = ",".join(f"E{k}" for k in range(16))
    assert main(["convert", str(path), str(out), "--board", "synthetic", "--montage", montage]) == 0
    assert "Markers 1 event;" in capsys.readouterr().out
    s = _pyxdf(out)["EEG"]
    labels = [c["label"][0] for c in s["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == montage.split(",")
    np.testing.assert_allclose(s["time_series"].T, data[descr["eeg_channels"]], atol=1e-6)


def test_convert_refuses_to_overwrite(openbci_file, tmp_path, capsys):
    out = tmp_path / "exists.xdf"
    out.write_bytes(b"precious")
    assert main(["convert", str(openbci_file), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass --overwrite" in err
    assert out.read_bytes() == b"precious"
    assert main(["convert", str(openbci_file), str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"XDF:"


def test_convert_errors_exit_2_with_one_line(openbci_file, tmp_path, capsys, openbci_table):
    garbled = _bad(tmp_path, openbci_table, lambda rows: rows.__setitem__(9, "1, 2, x"))
    prose = tmp_path / "notes.txt"
    prose.write_text("not a recording\n")
    cases = [
        ([str(tmp_path / "missing.txt"), str(tmp_path / "o.xdf")], "does not exist"),
        ([str(garbled), str(tmp_path / "o.xdf")], "bad.txt, line 15: 3 values, expected 25"),
        ([str(prose), str(tmp_path / "o.xdf")], "not a recognised recording"),
        ([str(openbci_file), str(tmp_path / "o.edf")], "must end in .xdf"),
        ([str(openbci_file), str(tmp_path / "no" / "o.xdf")], "does not exist"),
        ([str(openbci_file), str(tmp_path / "o.xdf"), "--montage", "a,b"], "2 labels"),
        ([str(openbci_file), str(tmp_path / "o.xdf"), "--board", "cyton"], "BrainFlow CSV"),
    ]
    for argv, message in cases:
        assert main(["convert", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("bci-affect convert: error: ") and err.count("\n") == 1, err
        assert message in err, err
    assert not (tmp_path / "o.xdf").exists()
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("name", ["minimal.xdf", "empty_streams.xdf"])
def test_convert_labrecorder_xdf(shared_data, tmp_path, capsys, name):
    """LabRecorder files convert to files pyxdf reads the same (clock offsets applied)."""
    out = tmp_path / "copy.xdf"
    assert main(["convert", str(shared_data / "xdf" / name), str(out)]) == 0
    capsys.readouterr()
    original = pyxdf.load_xdf(str(shared_data / "xdf" / name), dejitter_timestamps=False)[0]
    copy = pyxdf.load_xdf(str(out), dejitter_timestamps=False)[0]
    assert sorted(s["info"]["name"][0] for s in copy) == sorted(
        s["info"]["name"][0] for s in original
    )
    by_name = {s["info"]["name"][0]: s for s in copy}
    for s in original:
        c = by_name[s["info"]["name"][0]]
        assert c["info"]["channel_format"] == s["info"]["channel_format"]
        assert float(c["info"]["nominal_srate"][0]) == float(s["info"]["nominal_srate"][0])
        np.testing.assert_allclose(c["time_stamps"], s["time_stamps"], rtol=0, atol=1e-9)
        if isinstance(s["time_series"], list):
            assert c["time_series"] == s["time_series"]
        else:
            np.testing.assert_array_equal(c["time_series"], s["time_series"])


# --------------------------------------------------------------------------------------------
# one time base for every GUI version


def _gui_rows(openbci_table, version: str, n: int, stamp) -> tuple[list, str | None, list]:
    """The first ``n`` rows of the real file as GUI ``version`` writes them (header, column
    row, rows), with ``stamp(i, unix_ms_text)`` giving row ``i``'s timestamp text."""
    header, column_row, rows, _ = openbci_table
    out = []
    for i, r in enumerate(rows[:n]):
        f = [x.strip() for x in r.split(",")]
        if version == "v6":
            f[22] = stamp(i, f[22])
            out.append(", ".join(f))
        elif version == "v5":  # seconds, 'Other' columns, 'Other' marker after Timestamp
            out.append(", ".join(f[:22] + [stamp(i, f"{float(f[22]) / 1000:.3f}"), "0"]))
        else:  # v4: no column row; index, EEG, accel, formatted time, unix ms
            out.append(", ".join(f[:12] + [f[24], stamp(i, f[22])]))
    if version == "v5":
        names = (
            ["Sample Index"]
            + [f"EXG Channel {k}" for k in range(8)]
            + [f"Accel Channel {k}" for k in range(3)]
            + ["Other"] * 7
            + ["Analog Channel 0", "Analog Channel 1", "Analog Channel 2", "Timestamp", "Other"]
        )
        return header, ", ".join(names), out
    if version == "v4":
        return (
            ["%OpenBCI Raw EEG Data", "%Number of channels = 8", "%Sample Rate = 250.0 Hz"],
            None,
            out,
        )
    return header, column_row, out


@pytest.mark.parametrize("version", ["v6", "v5", "v4"])
def test_time_base_is_unix_for_every_gui_version(
    version, tmp_path, openbci_table, openbci_whole, caplog
):
    """The first rows' timestamps cut short (the GUI started writing mid-value): Unix time
    all the same, those rows placed by the counter, one warning line naming the first."""
    n = 3000

    def cut(i, text):
        return text[:7] if i < 3 else text

    header, column_row, rows = _gui_rows(openbci_table, version, n, cut)
    path = _write(tmp_path / f"{version}.txt", header, column_row, rows)
    with (
        caplog.at_level(logging.WARNING, logger="acquisition.textfiles"),
        OpenBciTextSource(path) as src,
    ):
        whole = read_all(src)
    eeg = whole["EEG"]
    assert eeg.info.desc["time_base"] == "unix"
    np.testing.assert_allclose(eeg.times, openbci_whole[1]["EEG"].times[:n], atol=0.02)
    [msg] = [r.getMessage() for r in caplog.records]
    first_line = len(header) + (2 if column_row else 1)
    assert "3 rows have a timestamp that is cut short" in msg and f"line {first_line}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        (lambda i, text: "0", "all zero"),
        (lambda i, text: f"{i / 250:.3f}", "not a Unix time"),
        # the clock stepped back 100 s after 1200 rows and never caught up
        (lambda i, text: f"{float(text) - (1e5 if i >= 1200 else 0):.0f}", "only 1200 of 3000"),
    ],
    ids=["zero", "seconds-from-start", "clock-stepped-back"],
)
def test_unusable_timestamp_column_gives_times_from_zero(
    stamp, reason, tmp_path, openbci_table, caplog
):
    header, column_row, rows = _gui_rows(openbci_table, "v6", 3000, stamp)
    path = _write(tmp_path / "bad-stamps.txt", header, column_row, rows)
    with (
        caplog.at_level(logging.WARNING, logger="acquisition.textfiles"),
        OpenBciTextSource(path) as src,
    ):
        whole = read_all(src)
    assert whole["EEG"].info.desc["time_base"] == "zero"
    np.testing.assert_allclose(whole["EEG"].times, np.arange(3000) / 250.0)
    [msg] = [r.getMessage() for r in caplog.records]
    assert reason in msg and "times start at 0 s" in msg


def test_host_timestamps_rule():
    n, fs = 1000, 250.0
    ms = 1.7e12 + np.arange(n) * 4.0
    np.testing.assert_allclose(host_timestamps(ms, fs), ms / 1000.0)  # ms -> s
    s = ms / 1000.0
    stepped = s.copy()
    stepped[500:510] -= 2.0  # the clock stepped back 2 s for ten rows
    got = host_timestamps(stepped, fs)
    assert np.isnan(got[500:510]).all() and np.isfinite(np.delete(got, range(500, 510))).all()
    assert host_timestamps(None, fs) is None
    assert host_timestamps(np.zeros(n), fs) is None
