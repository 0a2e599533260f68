import numpy as np
import pytest

from bci_affect.core import (
    Chunk,
    ConfigError,
    ShapeError,
    StreamInfo,
    StreamNotFoundError,
    concat,
    pick_stream,
    read_all,
)

EEG = StreamInfo("EEG", "EEG", 250.0, ("Fp1", "Fp2"), ("microvolts",) * 2, "src")


def test_time_is_last_axis():
    with pytest.raises(ShapeError, match="time must be the last axis"):
        Chunk(np.zeros((2, 5)), np.zeros(4), EEG)
    with pytest.raises(ShapeError, match="3 channels"):
        Chunk(np.zeros((3, 4)), np.zeros(4), EEG)


def test_from_samples_transposes_lsl_order():
    samples = np.arange(10, dtype=float).reshape(5, 2)  # (n_times, n_chans)
    c = Chunk.from_samples(samples, np.arange(5) / 250, EEG)
    assert c.data.shape == (2, 5)
    np.testing.assert_array_equal(c.data[1], [1, 3, 5, 7, 9])
    assert c.data.dtype == np.float32
    assert Chunk.from_samples([], [], EEG).data.shape == (2, 0)


def test_streaminfo_validates():
    with pytest.raises(ConfigError, match="channel_format"):
        StreamInfo("x", "EEG", 1.0, ("a",), channel_format="float128")
    with pytest.raises(ShapeError, match="units"):
        StreamInfo("x", "EEG", 1.0, ("a", "b"), ("uV",))
    assert StreamInfo("x", "EEG", 1.0, ("a", "b")).units == ("", "")


def test_concat_read_all_and_slice():
    a = Chunk(np.ones((2, 3)), np.array([0.0, 0.1, 0.2]), EEG)
    b = Chunk(np.zeros((2, 2)), np.array([0.3, 0.4]), EEG)
    whole = concat([a, b])
    assert whole.n_times == 5
    assert read_all([a, b])["EEG"].n_times == 5
    np.testing.assert_array_equal(whole.slice_times(0.1, 0.35).times, [0.1, 0.2, 0.3])


def test_pick_stream_lists_what_exists():
    markers = StreamInfo("M", "Markers", 0.0, ("m",), channel_format="string")
    assert pick_stream([markers, EEG], type="eeg") is EEG
    with pytest.raises(StreamNotFoundError, match=r"available: 'M' \(type 'Markers'"):
        pick_stream([markers], type="EEG")
