"""Reading XDF files: the real recordings in ../shared/data/xdf, damaged copies of them, and
small files written with the project's XDF writer."""

from __future__ import annotations

import gzip
import shutil
import warnings

import numpy as np
import pytest
import pyxdf

from acquisition.files import RecordingNotFoundError, open_recording
from acquisition.xdf import (
    RecordingWarning,
    XdfSource,
    clock_segments,
    dejitter,
    load_xdf,
    select_eeg,
)
from acquisition.xdf_writer import write_xdf
from bci_affect.cli import main
from bci_affect.core import (
    Chunk,
    ConfigError,
    FileFormatError,
    Source,
    StreamInfo,
    StreamNotFoundError,
    read_all,
)

FILES = ["minimal", "empty_streams", "clock_resets", "bci_essentials_switch_example"]
BOUNDARY = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")


@pytest.fixture(scope="module")
def xdf_dir(shared_data):
    return shared_data / "xdf"


def _quiet_load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        return load_xdf(path, **kw)


def _pyxdf(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False, **kw)
    return streams


def _assert_same_as_pyxdf(chunks, reference, atol=1e-9):
    assert [c.name for c in chunks] == [r["info"]["name"][0] for r in reference]
    for c, r in zip(chunks, reference, strict=True):
        assert c.n_times == len(r["time_stamps"])
        np.testing.assert_allclose(c.times, r["time_stamps"], rtol=0, atol=atol)
        if c.info.is_string:
            assert [list(col) for col in c.data.T] == r["time_series"]
        elif c.n_times:
            np.testing.assert_array_equal(c.data, np.asarray(r["time_series"]).T)
            assert c.data.dtype == np.asarray(r["time_series"]).dtype


# --------------------------------------------------------------------------------------------
# every shared file


@pytest.mark.parametrize("name", FILES)
def test_every_shared_file_replays_chunk_by_chunk(xdf_dir, name):
    path = xdf_dir / f"{name}.xdf"
    whole = _quiet_load(path)
    source = XdfSource(path, chunk_s=0.25)
    assert isinstance(source, Source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        with source:
            infos = source.streams
            parts = list(source)
    assert [i.name for i in infos] == [c.name for c in whole]
    got = read_all(parts)
    assert set(got) == {c.name for c in whole if c.n_times}  # empty streams yield nothing
    for c in whole:
        assert c.data.shape == (c.info.n_chans, c.n_times)
        if c.n_times:
            np.testing.assert_array_equal(got[c.name].times, c.times)
            np.testing.assert_array_equal(got[c.name].data, c.data)
    # chunks come in time order: window by window, each at most chunk_s long
    t0 = source.t_first
    windows = [int(np.floor((p.times[0] - t0) / 0.25)) for p in parts]
    assert windows == sorted(windows)
    assert all(p.times[-1] - p.times[0] < 0.25 for p in parts)
    assert all(p.n_times > 0 for p in parts)


@pytest.mark.parametrize("name", ["minimal", "empty_streams", "bci_essentials_switch_example"])
@pytest.mark.parametrize("sync", [True, False])
def test_equals_pyxdf(xdf_dir, name, sync):
    path = xdf_dir / f"{name}.xdf"
    _assert_same_as_pyxdf(
        _quiet_load(path, synchronize_clocks=sync), _pyxdf(path, synchronize_clocks=sync)
    )


def test_dejitter_equals_pyxdf(xdf_dir):
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    ours = _quiet_load(path, dejitter=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=True)
    _assert_same_as_pyxdf(ours, ref, atol=1e-7)
    eeg = select_eeg(ours)
    step = np.diff(eeg.times)
    assert np.ptp(step) < 1e-9  # evenly spaced after dejittering
    assert np.abs(eeg.times - select_eeg(_quiet_load(path)).times).max() > 1e-6


def test_bci_essentials_contents(xdf_dir):
    chunks = _quiet_load(xdf_dir / "bci_essentials_switch_example.xdf")
    eeg = select_eeg(chunks)
    assert eeg.name == "g.USBamp-1"
    assert eeg.data.shape == (16, 34320)
    assert eeg.sfreq == 256.0 and eeg.data.dtype == np.float32
    assert eeg.ch_names[:4] == ("F3", "Fz", "F4", "FC3")
    assert set(eeg.info.units) == {"microvolts"}
    assert eeg.info.source_id == "gUSBamp_1_UB-2016.05.45"
    assert 133 < eeg.times[-1] - eeg.times[0] < 135
    by_name = {c.name: c for c in chunks}
    unity = by_name["UnityMarkerStream"]
    assert unity.info.is_string and unity.info.type == "LSL_Marker_Strings"
    assert unity.n_times == 71 and unity.data[0, 0] == "Trial Started"
    assert by_name["PythonResponse"].n_times == 581
    assert select_eeg([c.info for c in chunks]) is eeg.info


def test_minimal_int16_and_strings(xdf_dir):
    eeg, markers = _quiet_load(xdf_dir / "minimal.xdf")
    assert eeg.data.dtype == np.int16 and eeg.data.shape == (3, 9)
    np.testing.assert_array_equal(eeg.data[:, 0], [192, 255, 238])
    np.testing.assert_array_equal(
        eeg.data[:, 1:5].T, [[12, 22, 32], [13, 23, 33], [14, 24, 34], [15, 25, 35]]
    )
    np.testing.assert_allclose(np.diff(eeg.times), 0.1, atol=1e-9)
    assert list(markers.data[0, 1:5]) == ["Hello", "World", "from", "LSL"]
    assert markers.info.channel_format == "string"


def test_clock_resets_come_out_monotonic(xdf_dir):
    path = xdf_dir / "clock_resets.xdf"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecordingWarning)  # no warning: all timestamps increase
        synced = load_xdf(path)
    with pytest.warns(RecordingWarning, match="earlier than the one before"):
        raw = load_xdf(path, synchronize_clocks=False)
    for s, r in zip(synced, raw, strict=True):
        assert np.all(np.diff(s.times) >= 0), s.name
        assert np.any(np.diff(r.times) < 0), s.name
        # Before the reset the sender's offset was -652340.28 s, after it +1121.17 s.
        shift = s.times - r.times
        reset = int(np.flatnonzero(np.diff(r.times) < 0)[0]) + 1
        np.testing.assert_allclose(shift[:reset], -652340.284, atol=2e-3)
        np.testing.assert_allclose(shift[reset:], 1121.166, atol=2e-3)
    eeg = select_eeg(synced)
    assert eeg.name == "BioSemi" and eeg.n_times == 27815


def test_clock_segments_split_at_resets():
    t = np.concatenate([np.arange(0, 50, 5.0), np.arange(1000, 1050, 5.0) - 990])
    v = np.concatenate([np.full(10, -100.0), np.full(10, 20.0)])
    assert clock_segments(t, v) == [(0, 9), (10, 19)]
    assert clock_segments(t[:10], v[:10]) == [(0, 9)]


def test_empty_streams_yield_nothing(xdf_dir):
    with XdfSource(xdf_dir / "empty_streams.xdf") as source:
        infos = {i.name: i for i in source.streams}
        got = read_all(source)
    assert len(infos) == 4
    assert set(got) == {"Data stream: test stream 0 counter", "ctrl"}
    np.testing.assert_array_equal(got["Data stream: test stream 0 counter"].data[0], np.arange(10))
    assert got["ctrl"].data[0, 0] == '{"state": 2}'
    empty = infos["Empty data stream: test stream 0 counter"]
    assert empty.ch_names == ("ch:00",) and empty.channel_format == "float32"


def test_stream_selection_and_errors(xdf_dir):
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    only = _quiet_load(path, streams=["UnityMarkerStream"])
    assert [c.name for c in only] == ["UnityMarkerStream"] and only[0].n_times == 71
    with pytest.raises(StreamNotFoundError, match=r"'nope'.*available: 'PythonResponse'"):
        load_xdf(path, streams=["nope"])
    with pytest.raises(ConfigError, match="chunk_s"):
        XdfSource(path, chunk_s=0)
    infos = XdfSource(xdf_dir / "empty_streams.xdf").streams
    with pytest.raises(StreamNotFoundError, match=r"type 'EEG'.*'ctrl' \(type 'control'"):
        select_eeg(infos)
    assert select_eeg(infos, type="data").name == "Empty data stream: test stream 0 counter"
    markers = [i for i in infos if i.is_string]
    with pytest.raises(StreamNotFoundError, match="numeric stream"):
        select_eeg(markers, name="ctrl", type=None)


def test_stop_ends_iteration(xdf_dir):
    source = XdfSource(xdf_dir / "bci_essentials_switch_example.xdf", chunk_s=0.1)
    n = 0
    with source:
        for _ in source:
            n += 1
            if n == 5:
                source.stop()
        assert n == 5
        assert len(list(source)) > 1000  # a new pass starts from the beginning


# --------------------------------------------------------------------------------------------
# damaged files


def test_not_xdf(tmp_path):
    text = tmp_path / "notes.xdf"
    text.write_text("this is not a recording\n")
    with pytest.raises(FileFormatError, match="not an XDF file"):
        load_xdf(text)
    empty = tmp_path / "empty.xdf"
    empty.write_bytes(b"")
    with pytest.raises(FileFormatError, match="not an XDF file"):
        load_xdf(empty)
    garbage = tmp_path / "garbage.xdf"
    garbage.write_bytes(b"XDF:" + bytes(range(7, 250)) * 4)
    with pytest.raises(FileFormatError, match="no readable XDF stream header"):
        load_xdf(garbage)
    with pytest.raises(RecordingNotFoundError, match="does not exist"):
        load_xdf(tmp_path / "missing.xdf")


def test_truncated_file_keeps_what_it_holds(xdf_dir, tmp_path):
    src = xdf_dir / "bci_essentials_switch_example.xdf"
    data = src.read_bytes()
    cut = tmp_path / "cut.xdf"
    n_bytes = len(data) // 2 + 37  # mid-chunk
    cut.write_bytes(data[:n_bytes])
    with pytest.warns(
        RecordingWarning, match=rf"truncated: it ends at byte {n_bytes}.*'g.USBamp-1' \d+ samples"
    ):
        part = load_xdf(cut, synchronize_clocks=False)
    full = _quiet_load(src, synchronize_clocks=False)
    for p, f in zip(part, full, strict=True):
        assert 0 < p.n_times < f.n_times
        np.testing.assert_array_equal(p.times, f.times[: p.n_times])
        np.testing.assert_array_equal(p.data, f.data[:, : p.n_times])
    # roughly half the EEG survives
    eeg_part, eeg_full = select_eeg(part), select_eeg(full)
    assert 0.3 < eeg_part.n_times / eeg_full.n_times < 0.7


def test_cut_at_a_chunk_boundary_is_reported(xdf_dir, tmp_path):
    data = (xdf_dir / "bci_essentials_switch_example.xdf").read_bytes()
    at = data.find(BOUNDARY, len(data) // 2) - 4  # where the Boundary chunk starts
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(data[:at])
    with pytest.warns(RecordingWarning, match=rf"ends at byte {at} without any stream footer"):
        part = load_xdf(cut)
    assert 0 < select_eeg(part).n_times < 34320


def test_truncated_before_any_stream(xdf_dir, tmp_path):
    cut = tmp_path / "cut.xdf"
    cut.write_bytes((xdf_dir / "minimal.xdf").read_bytes()[:40])
    with pytest.raises(FileFormatError, match="no readable XDF stream header"):
        load_xdf(cut)


def test_corrupt_chunk_is_skipped_to_next_boundary(xdf_dir, tmp_path):
    src = xdf_dir / "bci_essentials_switch_example.xdf"
    data = bytearray(src.read_bytes())
    first = data.find(BOUNDARY)
    second = data.find(BOUNDARY, first + 1)
    assert first > 0 and second > 0
    data[second + 16] = 0x07  # an invalid length-field width right after a boundary
    bad = tmp_path / "corrupt.xdf"
    bad.write_bytes(bytes(data))
    with pytest.warns(RecordingWarning, match=rf"corrupt data at byte {second + 16}.*skipped"):
        got = load_xdf(bad, synchronize_clocks=False)
    full = _quiet_load(src, synchronize_clocks=False)
    eeg, eeg_full = select_eeg(got), select_eeg(full)
    assert eeg.n_times < eeg_full.n_times
    assert eeg.times[-1] == eeg_full.times[-1]  # read on after the damage
    assert np.all(np.isin(eeg.times, eeg_full.times))


def test_gzip_compressed(xdf_dir, tmp_path):
    z = tmp_path / "minimal.xdfz"
    z.write_bytes(gzip.compress((xdf_dir / "minimal.xdf").read_bytes()))
    a, b = load_xdf(z), load_xdf(xdf_dir / "minimal.xdf")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.data, y.data)
        np.testing.assert_array_equal(x.times, y.times)
    bad = tmp_path / "bad.xdfz"
    shutil.copy(xdf_dir / "minimal.xdf", bad)
    with pytest.raises(FileFormatError, match="gzip"):
        load_xdf(bad)


@pytest.mark.parametrize("argv", [["inspect"], ["replay"]])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, xdf_dir):
    text = tmp_path / "notes.xdf"
    text.write_text("hello")
    cut = tmp_path / "cut.xdf"
    cut.write_bytes((xdf_dir / "minimal.xdf").read_bytes()[:40])
    for bad in (text, cut, tmp_path / "missing.xdf"):
        assert main([*argv, str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"bci-affect {argv[0]}: error: ") and str(bad) in err


# --------------------------------------------------------------------------------------------
# files written with the project's writer


def _eeg_info(name="EEG", n_chans=4, sfreq=100.0, fmt="float32", source_id="w1"):
    return StreamInfo(
        name,
        "EEG",
        sfreq,
        [f"C{i}" for i in range(n_chans)],
        ["microvolts"] * n_chans,
        source_id,
        fmt,
    )


def test_nan_values_are_reported_and_kept(tmp_path, rng):
    info = _eeg_info()
    data = rng.standard_normal((4, 300)).astype(np.float32)
    data[1, [10, 11, 200]] = np.nan
    data[3, 11] = np.nan
    times = 50.0 + np.arange(300) / 100.0
    path = write_xdf(tmp_path / "nan.xdf", [Chunk(data, times, info)])
    with pytest.warns(
        RecordingWarning, match=r"4 NaN values in 3 of 300 samples.*C1 \(3\), C3 \(1\)"
    ):
        (eeg,) = load_xdf(path)
    np.testing.assert_array_equal(np.isnan(eeg.data), np.isnan(data))
    np.testing.assert_allclose(eeg.times, times, atol=1e-12)


@pytest.mark.parametrize("fmt", ["int16", "float32", "double64", "int32"])
def test_numeric_formats_round_trip(tmp_path, rng, fmt):
    info = _eeg_info(fmt=fmt)
    data = (rng.standard_normal((4, 64)) * 100).astype(info.dtype)
    times = 3.0 + np.arange(64) / 100.0
    marks = StreamInfo("Markers", "Markers", 0.0, ["event"], channel_format="string", source_id="m")
    mdata = np.array([['{"event": "trial_start", "trial": 1}', "ünïcødé"]], dtype=object)
    path = write_xdf(
        tmp_path / f"{fmt}.xdf",
        [Chunk(data, times, info), Chunk(mdata, np.array([3.1, 3.3]), marks)],
    )
    eeg, markers = load_xdf(path)
    assert eeg.data.dtype == info.dtype and eeg.info.channel_format == fmt
    np.testing.assert_array_equal(eeg.data, data)
    assert eeg.info.ch_names == info.ch_names and eeg.info.units == info.units
    assert list(markers.data[0]) == list(mdata[0])
    _assert_same_as_pyxdf([eeg, markers], _pyxdf(path))


def test_duplicate_stream_names_stay_apart(tmp_path, rng):
    a, b = _eeg_info(source_id="a"), _eeg_info(n_chans=2, source_id="b")
    t = np.arange(10) / 100.0
    path = write_xdf(
        tmp_path / "dup.xdf",
        [
            Chunk(rng.standard_normal((4, 10)).astype(np.float32), t, a),
            Chunk(np.ones((2, 10), np.float32), t, b),
        ],
    )
    with pytest.warns(RecordingWarning, match="'EEG #2'"):
        chunks = load_xdf(path)
    assert [c.name for c in chunks] == ["EEG", "EEG #2"]
    with pytest.warns(RecordingWarning, match="'EEG #2'"), XdfSource(path) as source:
        got = read_all(source)
    assert got["EEG #2"].data.shape == (2, 10)


def test_dejitter_regularises_times():
    rng = np.random.default_rng(1)
    t = 10 + np.arange(1000) / 250.0 + rng.normal(0, 1e-3, 1000)
    t[600:] += 5.0  # a break: fitted separately
    out = dejitter(t, 250.0)
    np.testing.assert_allclose(np.diff(out[:600]), 1 / 250.0, rtol=1e-3)
    np.testing.assert_allclose(np.diff(out[600:]), 1 / 250.0, rtol=1e-3)
    assert abs(out[600] - t[600]) < 5e-3
    np.testing.assert_array_equal(dejitter(t, 0.0), t)


def test_open_recording_dispatch(xdf_dir, tmp_path):
    noext = tmp_path / "session"
    shutil.copy(xdf_dir / "minimal.xdf", noext)
    assert isinstance(open_recording(noext), XdfSource)
    odd = tmp_path / "session.edf"
    odd.write_bytes(b"0       patient")
    with pytest.raises(FileFormatError, match=r"extension '\.edf'.*\.xdf"):
        open_recording(odd)
    with pytest.raises(RecordingNotFoundError, match="minimal.xdf"):
        open_recording(xdf_dir / "minimal-typo.xdf")  # lists the recordings beside it
