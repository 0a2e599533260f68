"""Causal MNE-designed filters and the streaming Preprocess processor."""

from __future__ import annotations

from dataclasses import replace

import mne
import numpy as np
import pytest
from scipy import signal

from bci_affect.core import Chunk, ConfigError, StreamInfo
from bci_affect.dsp.filters import (
    design_chain,
    design_sos,
    filter_causal,
    notch_freqs,
    reference_weights,
    rereference,
)
from bci_affect.processors import Preprocess, PreprocessConfig


def _gain_db(sos, f, sfreq):
    _, h = signal.sosfreqz(sos, worN=np.atleast_1d(f), fs=sfreq)
    return 20 * np.log10(np.abs(h))


def test_design_is_mne_causal_butterworth():
    sos = design_sos(250.0, 1.0, 45.0, order=4)
    ref = mne.filter.create_filter(
        None,
        250.0,
        1.0,
        45.0,
        method="iir",
        iir_params={"order": 4, "ftype": "butter", "output": "sos"},
        phase="forward",
        verbose=False,
    )["sos"]
    np.testing.assert_array_equal(sos, ref)
    assert abs(_gain_db(sos, 10.0, 250.0)[0]) < 0.1  # pass band
    assert _gain_db(sos, 0.1, 250.0)[0] < -60  # DC offsets and drifts
    assert _gain_db(sos, 100.0, 250.0)[0] < -40


def test_chain_notches_the_line_and_keeps_the_band():
    sos = design_chain(1000.0, l_freq_hz=1.0, h_freq_hz=45.0, notch_hz=50.0)
    assert _gain_db(sos, 50.0, 1000.0)[0] < -60  # above the low-pass edge, still notched
    assert _gain_db(sos, 100.0, 1000.0)[0] < -24  # the low-pass handles harmonics
    assert abs(_gain_db(sos, 20.0, 1000.0)[0]) < 0.5
    sos60 = design_chain(250.0, l_freq_hz=1.0, h_freq_hz=None, notch_hz=60.0)
    assert (_gain_db(sos60, [60.0, 120.0], 250.0) < -35).all()  # harmonics without low-pass
    assert design_chain(250.0, l_freq_hz=None, h_freq_hz=None, notch_hz=None).shape == (0, 6)


def test_notch_harmonics_stop_below_nyquist_and_twice_the_low_pass():
    assert notch_freqs(1000.0, 50.0) == [50.0 * k for k in range(1, 10)]
    assert notch_freqs(1000.0, 50.0, max_hz=90.0) == [50.0]
    assert notch_freqs(1000.0, 50.0, max_hz=150.0) == [50.0, 100.0, 150.0]
    assert notch_freqs(250.0, 60.0) == [60.0, 120.0]


@pytest.mark.parametrize("n_pieces", [1, 3, 17])
@pytest.mark.parametrize("reference", [None, "average", "C3"])
def test_output_does_not_depend_on_chunking(sig, rng, n_pieces, reference):
    eeg = sig.make_eeg(rng, seconds=10)
    cfg = PreprocessConfig(notch_hz=50.0, reference=reference)
    proc = Preprocess(cfg)
    got = np.concatenate([proc(c).data for c in sig.split(eeg, n_pieces)], axis=-1)
    sos = design_chain(250.0, l_freq_hz=1.0, h_freq_hz=45.0, notch_hz=50.0)
    expected, _ = filter_causal(sos, eeg.data)  # scipy on the whole array
    if reference is not None:
        ref = "average" if reference == "average" else eeg.ch_names.index(reference)
        expected = rereference(expected, reference_weights(eeg.data.shape[0], ref))
    np.testing.assert_array_equal(got, expected)


def test_empty_chunk_passes_through_and_input_is_unchanged(sig, rng):
    eeg = sig.make_eeg(rng, seconds=2)
    before = eeg.data.copy()
    proc = Preprocess()
    empty = Chunk.empty(eeg.info)
    assert proc(empty) is empty
    out = proc(eeg)
    np.testing.assert_array_equal(eeg.data, before)
    assert out.data.dtype == np.float64 and out.info.channel_format == "double64"
    np.testing.assert_array_equal(out.times, eeg.times)
    assert proc(empty) is empty


def test_reset_equals_a_fresh_instance(sig, rng):
    eeg = sig.make_eeg(rng, seconds=4)
    a, b = sig.split(eeg, 2)
    proc = Preprocess()
    proc(a)
    proc.reset()
    np.testing.assert_array_equal(proc(b).data, Preprocess()(b).data)


def test_dc_offset_is_removed_without_a_start_transient(rng):
    sfreq, n = 250.0, 2500
    t = np.arange(n) / sfreq
    x = 60_000.0 + 20.0 * np.sin(2 * np.pi * 10 * t)
    info = StreamInfo("EEG", "EEG", sfreq, ("Cz",))
    out = Preprocess(PreprocessConfig(notch_hz=None))(Chunk(x[None], t, info)).data[0]
    assert np.abs(out).max() < 40.0  # steady-state start: no 60 mV step response
    assert abs(out[500:].mean()) < 0.5
    assert np.std(out[500:]) == pytest.approx(20.0 / np.sqrt(2), rel=0.05)


def test_a_pause_restarts_the_filters(rng):
    sfreq = 250.0
    t1 = 100.0 + np.arange(1000) / sfreq
    t2 = t1[-1] + 1.0 + np.arange(1000) / sfreq  # 1 s without samples
    x = np.r_[np.full(1000, 60_000.0), np.full(1000, 20_000.0)] + rng.standard_normal(2000)
    times = np.r_[t1, t2]
    info = StreamInfo("EEG", "EEG", sfreq, ("Cz",))
    chunk = Chunk(x[None], times, info)
    out = Preprocess(PreprocessConfig(notch_hz=None))(chunk).data[0]
    assert np.abs(out[1000:]).max() < 20.0  # a 40 mV jump filtered through would ring for seconds
    naive, _ = filter_causal(
        design_chain(sfreq, l_freq_hz=1.0, h_freq_hz=45.0, notch_hz=None), x[None]
    )
    assert np.abs(naive[0, 1000:]).max() > 1000.0
    # the restart depends on timestamps only, not on where chunks end
    proc = Preprocess(PreprocessConfig(notch_hz=None))
    pieces = [
        replace(chunk, data=chunk.data[:, a:b], times=chunk.times[a:b])
        for a, b in ((0, 1000), (1000, 1500), (1500, 2000))
    ]
    np.testing.assert_array_equal(np.concatenate([proc(p).data for p in pieces], -1)[0], out)


def test_rereference():
    x = np.arange(12.0).reshape(3, 4) ** 2
    avg = rereference(x, reference_weights(3, "average"))
    np.testing.assert_allclose(avg.sum(axis=0), 0.0, atol=1e-12)
    ch = rereference(x, reference_weights(3, 1))
    np.testing.assert_array_equal(ch[1], 0.0)
    np.testing.assert_array_equal(ch[0], x[0] - x[1])
    good = np.array([True, False, True])
    partial = rereference(x, reference_weights(3, "average", good))
    np.testing.assert_allclose(partial[0], x[0] - (x[0] + x[2]) / 2)
    assert rereference(x, None) is x


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l_freq_hz": 40.0, "h_freq_hz": 30.0}, "l_freq_hz < h_freq_hz"),
        ({"l_freq_hz": -1.0}, "l_freq_hz"),
        ({"order": 0}, "order"),
        ({"notch_hz": 0.0}, "notch_hz"),
        ({"max_gap_s": 0.0}, "max_gap_s"),
        ({"reference": ""}, "reference"),
    ],
)
def test_config_is_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PreprocessConfig(**kwargs)


def test_stream_errors_are_clear(sig, rng):
    eeg = sig.make_eeg(rng, seconds=1)
    with pytest.raises(ConfigError, match="no channel named 'Cz'.*Fp1"):
        Preprocess(PreprocessConfig(reference="Cz"))(eeg)
    with pytest.raises(ConfigError, match="Nyquist"):
        Preprocess(PreprocessConfig(h_freq_hz=200.0))(eeg)
    face = StreamInfo("Face", "FaceFeatures", 0.0, ("face_present",))
    with pytest.raises(ConfigError, match="regular stream"):
        Preprocess()(Chunk(np.zeros((1, 3)), np.arange(3.0), face))
