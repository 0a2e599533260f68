"""The project's XDF writer, checked by reading its files back with pyxdf."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import pyxdf

from acquisition.xdf_writer import (
    StreamingXdfWriter,
    stream_header_xml,
    varlen_int,
    write_xdf,
)
from bci_affect.core import CHANNEL_FORMATS, Chunk, ConfigError, StreamInfo

NUMERIC = [f for f in CHANNEL_FORMATS if f != "string"]


def _load(path, **kwargs):
    kwargs.setdefault("dejitter_timestamps", False)
    streams, header = pyxdf.load_xdf(str(path), **kwargs)
    return {s["info"]["name"][0]: s for s in streams}, header


def _labels_units(stream):
    channels = stream["info"]["desc"][0]["channels"][0]["channel"]
    return (
        tuple(ch["label"][0] for ch in channels),
        tuple(ch["unit"][0] or "" for ch in channels),
        tuple(ch["type"][0] for ch in channels),
    )


def _numeric_data(fmt: str, rng: np.random.Generator, n_chans: int, n_times: int) -> np.ndarray:
    dtype = np.dtype({"float32": np.float32, "double64": np.float64}.get(fmt, fmt))
    if dtype.kind == "f":
        data = (rng.standard_normal((n_chans, n_times)) * 1e4).astype(dtype)
        data[0, :3] = [np.nan, np.inf, -np.inf]
        data[-1, -1] = np.finfo(dtype).max
        return data
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, size=(n_chans, n_times), dtype=dtype, endpoint=True)
    data[0, :2] = [info.min, info.max]
    return data


@pytest.mark.parametrize("fmt", NUMERIC)
def test_numeric_formats_round_trip(tmp_path, rng, fmt):
    info = StreamInfo(
        "EEG",
        "EEG",
        250.0,
        ("Fp1", "Fp2", "Cz"),
        ("microvolts", "microvolts", "µV"),
        "dev-42",
        fmt,
    )
    n = 1300  # several Samples chunks at chunk_samples=512
    data = _numeric_data(fmt, rng, 3, n)
    times = 1.7e9 + np.cumsum(rng.uniform(0.003, 0.005, n))  # irregular, unix-scale
    path = write_xdf(tmp_path / "f.xdf", [Chunk(data, times, info)])

    streams, _ = _load(path)
    s = streams["EEG"]
    got = s["time_series"]
    assert got.dtype == info.dtype
    np.testing.assert_array_equal(got, data.T)  # NaN == NaN for array_equal on floats
    np.testing.assert_array_equal(s["time_stamps"], times)
    assert _labels_units(s) == (info.ch_names, info.units, ("EEG",) * 3)
    assert float(s["info"]["nominal_srate"][0]) == 250.0
    assert s["info"]["channel_format"][0] == fmt
    assert s["info"]["source_id"][0] == "dev-42"
    assert s["info"]["type"][0] == "EEG"
    footer = s["footer"]["info"]
    assert int(footer["sample_count"][0]) == n
    assert float(footer["first_timestamp"][0]) == times[0]
    assert float(footer["last_timestamp"][0]) == times[-1]


def test_string_markers_round_trip(tmp_path):
    info = StreamInfo(
        "Markers", "Markers", 0.0, ("event",), source_id="m1", channel_format="string"
    )
    values = [
        json.dumps({"event": "trial_start", "trial": 3}),
        json.dumps({"event": "rating", "valence": 7, "arousal": 3}),
        "",  # empty marker
        "x" * 70_000,  # needs a 4-byte length
        'ümlaut ✓ <tag> & "quotes"',
    ]
    times = np.array([10.0, 10.5, 11.0, 12.25, 13.0])
    path = write_xdf(tmp_path / "m.xdf", [Chunk(np.array([values], dtype=object), times, info)])
    s = _load(path)[0]["Markers"]
    assert [row[0] for row in s["time_series"]] == values
    np.testing.assert_array_equal(s["time_stamps"], times)
    assert float(s["info"]["nominal_srate"][0]) == 0.0


def test_multichannel_string_stream(tmp_path):
    info = StreamInfo("Pairs", "Markers", 0.0, ("a", "b"), channel_format="string")
    data = np.array([["1", "2", "3"], ["x", "y", "z"]], dtype=object)
    path = write_xdf(tmp_path / "p.xdf", [Chunk(data, np.array([1.0, 2.0, 3.0]), info)])
    s = _load(path)[0]["Pairs"]
    assert s["time_series"] == [["1", "x"], ["2", "y"], ["3", "z"]]


def test_empty_streams(tmp_path):
    eeg = StreamInfo("EEG", "EEG", 100.0, ("C3",), ("microvolts",), "e", "float32")
    mk = StreamInfo("Markers", "Markers", 0.0, ("event",), source_id="m", channel_format="string")
    empty_num = StreamInfo("Empty", "EEG", 100.0, ("C4",), channel_format="int16")
    data = np.arange(5, dtype=np.float32)[None]
    path = write_xdf(
        tmp_path / "e.xdf",
        [Chunk(data, np.arange(5) / 100.0, eeg), Chunk.empty(mk)],
        streams=[empty_num],
    )
    streams, _ = _load(path)
    assert list(streams) == ["Empty", "EEG", "Markers"]  # declared streams first
    assert len(streams["Markers"]["time_stamps"]) == 0
    assert len(streams["Empty"]["time_stamps"]) == 0
    assert streams["Empty"]["footer"]["info"]["sample_count"] == ["0"]
    np.testing.assert_array_equal(streams["EEG"]["time_series"][:, 0], data[0])
    # and pyxdf's default processing (clock sync, dejitter) copes with them too
    default, _ = _load(path, dejitter_timestamps=True)
    assert len(default["Empty"]["time_stamps"]) == 0


def test_only_empty_streams(tmp_path):
    mk = StreamInfo("Markers", "Markers", 0.0, ("event",), channel_format="string")
    streams, _ = _load(write_xdf(tmp_path / "e.xdf", [], streams=[mk]))
    assert len(streams["Markers"]["time_stamps"]) == 0


def test_several_streams_interleaved_by_time(tmp_path, rng):
    eeg = StreamInfo("EEG", "EEG", 250.0, ("C3", "C4"), ("microvolts",) * 2, "a", "float32")
    eeg_b = StreamInfo("EEG", "EEG", 250.0, ("O1", "O2"), ("microvolts",) * 2, "b", "float32")
    face = StreamInfo("FaceFeatures", "FaceFeatures", 30.0, ("present", "q"), (), "f", "double64")
    mk = StreamInfo("Markers", "Markers", 0.0, ("event",), source_id="m", channel_format="string")
    t_eeg = 100.0 + np.arange(5000) / 250.0  # 20 s
    t_face = 100.0 + np.arange(600) / 30.0
    eeg_data = rng.standard_normal((2, 5000)).astype(np.float32)
    eeg_b_data = rng.standard_normal((2, 5000)).astype(np.float32)
    face_data = rng.standard_normal((2, 600))
    markers = np.array([["start", "mid", "end"]], dtype=object)
    t_mk = np.array([100.5, 110.0, 119.5])
    # EEG arrives in 0.1 s chunks; the other streams as one chunk each, all out of time order
    chunks = [Chunk(face_data, t_face, face), Chunk(markers, t_mk, mk)]
    chunks += [Chunk(eeg_data[:, i : i + 25], t_eeg[i : i + 25], eeg) for i in range(0, 5000, 25)]
    chunks.append(Chunk(eeg_b_data, t_eeg, eeg_b))
    path = write_xdf(tmp_path / "multi.xdf", chunks, chunk_samples=100)

    raw = pyxdf.load_xdf(str(path), dejitter_timestamps=False)[0]
    assert [s["info"]["source_id"][0] for s in raw] == ["f", "m", "a", "b"]
    by_id = {s["info"]["source_id"][0]: s for s in raw}
    np.testing.assert_array_equal(by_id["a"]["time_series"], eeg_data.T)
    np.testing.assert_array_equal(by_id["b"]["time_series"], eeg_b_data.T)
    np.testing.assert_array_equal(by_id["f"]["time_series"], face_data.T)
    np.testing.assert_array_equal(by_id["a"]["time_stamps"], t_eeg)
    assert [r[0] for r in by_id["m"]["time_series"]] == ["start", "mid", "end"]

    # the Samples chunks follow the recording's time, like a live recording
    firsts = []

    def on_chunk(values, stamps, stream, stream_id):
        firsts.append(float(stamps[0]))
        return values, stamps, stream

    pyxdf.load_xdf(str(path), on_chunk=on_chunk, dejitter_timestamps=False)
    assert len(firsts) == 2 * 50 + 6 + 1  # 2 x 5000 EEG / 100, 600 face / 100, 3 markers
    assert firsts == sorted(firsts)


def test_file_layout_matches_labrecorder(tmp_path, shared_data):
    """Same chunk kinds, header keys and channel layout as a LabRecorder file."""
    ref = pyxdf.load_xdf(str(shared_data / "xdf" / "bci_essentials_switch_example.xdf"))[0]
    ref_eeg = next(s for s in ref if s["info"]["type"][0] == "EEG")
    info = StreamInfo("EEG", "EEG", 256.0, ("F3", "Fz"), ("microvolts",) * 2, "x", "float32")
    path = write_xdf(
        tmp_path / "l.xdf", [Chunk(np.zeros((2, 600), np.float32), np.arange(600) / 256, info)]
    )
    ours = pyxdf.load_xdf(str(path))[0][0]
    mandatory = {"name", "type", "channel_count", "nominal_srate", "channel_format", "source_id"}
    assert mandatory | {"created_at", "uid", "version", "desc"} <= set(ours["info"])
    assert set(ours["info"]) - {"effective_srate", "stream_id"} <= set(ref_eeg["info"])
    ref_ch = ref_eeg["info"]["desc"][0]["channels"][0]["channel"][0]
    our_ch = ours["info"]["desc"][0]["channels"][0]["channel"][0]
    assert set(our_ch) == set(ref_ch) == {"label", "unit", "type"}
    assert set(ours["footer"]["info"]) == set(ref_eeg["footer"]["info"])
    tags = {c["tag"] for c in pyxdf.pyxdf.parse_xdf(str(path))}
    assert {1, 2, 3, 4, 6} <= tags
    with open(path, "rb") as f:
        assert f.read(4) == b"XDF:"


def test_boundary_chunks_every_10_s(tmp_path):
    info = StreamInfo("EEG", "EEG", 10.0, ("a",), channel_format="float32")
    n = 10 * 35  # 35 s
    write_xdf(
        tmp_path / "b.xdf",
        [Chunk(np.zeros((1, n), np.float32), np.arange(n) / 10, info)],
        chunk_samples=10,
    )
    tags = [c["tag"] for c in pyxdf.pyxdf.parse_xdf(str(tmp_path / "b.xdf"))]
    assert tags.count(5) == 3


def test_default_pyxdf_processing_keeps_times(tmp_path, rng):
    """Zero clock offsets leave the times as written; dejittering regular times is a no-op."""
    info = StreamInfo("EEG", "EEG", 250.0, ("a",), channel_format="double64")
    times = 1.6e9 + np.arange(2500) / 250.0
    path = write_xdf(tmp_path / "d.xdf", [Chunk(rng.standard_normal((1, 2500)), times, info)])
    s = _load(path, dejitter_timestamps=True, synchronize_clocks=True)[0]["EEG"]
    np.testing.assert_allclose(s["time_stamps"], times, rtol=0, atol=1e-6)
    assert s["info"]["effective_srate"] == pytest.approx(250.0, rel=1e-6)


def test_desc_and_file_header(tmp_path):
    info = StreamInfo(
        "EEG",
        "EEG",
        250.0,
        ("C3",),
        ("microvolts",),
        desc={"manufacturer": "OpenBCI", "reference": {"label": "A1", "n": 1}, "bad key": 1},
    )
    path = write_xdf(
        tmp_path / "h.xdf",
        [Chunk(np.zeros((1, 3), np.float32), np.arange(3.0), info)],
        header={"subject": "S01", "session": {"task": "rest"}},
    )
    streams, header = _load(path)
    desc = streams["EEG"]["info"]["desc"][0]
    assert desc["manufacturer"] == ["OpenBCI"]
    assert desc["reference"][0]["label"] == ["A1"]
    assert "bad key" not in desc
    assert header["info"]["version"] == ["1.0"]
    assert header["info"]["subject"] == ["S01"]
    assert header["info"]["session"][0]["task"] == ["rest"]
    with pytest.raises(ConfigError, match="version"):
        write_xdf(tmp_path / "v.xdf", [], header={"version": "2.0"})


def test_header_xml_escapes_labels():
    info = StreamInfo("A<B", "EEG", 1.0, ("x&y", "<z>"), ("µV", ""))
    xml = stream_header_xml(info, created_at=1.0, uid="u")
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.find("name").text == "A<B"
    labels = [c.find("label").text for c in root.iter("channel")]
    assert labels == ["x&y", "<z>"]


@pytest.mark.parametrize("n", [0, 1, 255, 256, 2**32 - 1, 2**32, 2**40])
def test_varlen_int_reads_back_with_pyxdf(n):
    raw = varlen_int(n)
    assert len(raw) == {1: 2, 4: 5, 8: 9}[raw[0]]
    assert pyxdf.pyxdf._read_varlen_int(io.BytesIO(raw)) == n


def test_samples_chunk_bytes_follow_the_spec(tmp_path):
    info = StreamInfo("S", "EEG", 2.0, ("a", "b"), channel_format="int16")
    path = write_xdf(
        tmp_path / "s.xdf", [Chunk(np.array([[1], [-2]], np.int16), np.array([0.5]), info)]
    )
    blob = path.read_bytes()
    # [len width][len][tag=3][stream id][0x04 n_samples uint32][0x08][ts][int16 x 2]
    content = struct.pack("<I", 1) + b"\x04" + struct.pack("<I", 1)
    content += b"\x08" + struct.pack("<d", 0.5) + struct.pack("<hh", 1, -2)
    expected = b"\x01" + bytes([len(content) + 2]) + struct.pack("<H", 3) + content
    assert expected in blob


def test_bad_data_raises_and_leaves_target_alone(tmp_path):
    target = tmp_path / "keep.xdf"
    target.write_bytes(b"previous recording")
    info = StreamInfo("I", "EEG", 10.0, ("a",), channel_format="int8")
    with pytest.raises(ConfigError, match=r"int8.*1000"):
        write_xdf(target, [Chunk(np.array([[1.0, 1000.0]]), np.arange(2.0), info)])
    with pytest.raises(ConfigError, match="integers"):
        write_xdf(target, [Chunk(np.array([[1.5]]), np.zeros(1), info)])
    bad_t = StreamInfo("F", "EEG", 10.0, ("a",))
    with pytest.raises(ConfigError, match="finite timestamp"):
        write_xdf(target, [Chunk(np.zeros((1, 2), np.float32), np.array([0.0, np.nan]), bad_t)])
    assert target.read_bytes() == b"previous recording"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.xdf"]  # no partial files


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        write_xdf(tmp_path / "no" / "x.xdf", [])


def test_streaming_writer_is_atomic(tmp_path, rng):
    info = StreamInfo("EEG", "EEG", 100.0, ("a",), channel_format="float32")
    target = tmp_path / "live.xdf"
    writer = StreamingXdfWriter(target, chunk_samples=16)
    sid = writer.add_stream(info)
    assert writer.add_stream(info) == sid == 1
    parts = [rng.standard_normal((1, 40)).astype(np.float32) for _ in range(3)]
    for k, part in enumerate(parts):
        writer.write_chunk(Chunk(part, k * 0.4 + np.arange(40) / 100, info))
        assert not target.exists()
        assert writer.partial_path.exists()
        assert writer.partial_path.name.endswith(".partial")
    # what is written so far is already readable (a crash leaves a usable partial file)
    partial = pyxdf.load_xdf(str(writer.partial_path), dejitter_timestamps=False)[0][0]
    assert len(partial["time_stamps"]) == 120
    writer.close()
    assert target.exists() and not writer.partial_path.exists()
    s = _load(target)[0]["EEG"]
    np.testing.assert_array_equal(s["time_series"][:, 0], np.concatenate(parts, axis=1)[0])
    with pytest.raises(ConfigError, match="closed"):
        writer.write_chunk(Chunk(parts[0], np.arange(40) / 100, info))


def test_streaming_writer_error_in_block_removes_partial(tmp_path):
    info = StreamInfo("EEG", "EEG", 100.0, ("a",), channel_format="float32")
    with (
        pytest.raises(RuntimeError, match="acquisition failed"),
        StreamingXdfWriter(tmp_path / "x.xdf") as w,
    ):
        w.write_chunk(Chunk(np.zeros((1, 3), np.float32), np.arange(3.0), info))
        raise RuntimeError("acquisition failed")
    assert list(tmp_path.iterdir()) == []


def test_chunk_samples_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="chunk_samples"):
        write_xdf(tmp_path / "x.xdf", [], chunk_samples=0)
