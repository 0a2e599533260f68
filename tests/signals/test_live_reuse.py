"""What the live chain reuses from one hop to the next: segment spectra computed once, buffers
moved in place when nothing refers to them, a float32 copy converted once per sample; and a
restart (timestamps going back) that leaves nothing stale behind."""

from __future__ import annotations

import weakref
from dataclasses import replace

import numpy as np

from bci_affect.dsp.spectrum import (
    band_matrix,
    bin_weights,
    hann,
    rfft_freqs,
    segment_band_powers,
    segment_spectra,
    welch_psd,
    window_segments,
)
from bci_affect.processors import Preprocess, SignalPipeline, SignalsConfig, Windower
from bci_affect.processors._segments import WindowSpectra

CFG = SignalsConfig.make(line_hz=50.0)


def test_segment_spectra_with_a_large_dc_offset_match_de_meaning_first(rng):
    """The mean comes off after the transform: same spectra, even 180 mV off zero."""
    x = 180_000.0 + np.cumsum(rng.standard_normal((4, 3, 250)), axis=-1)
    taper = hann(250)
    want = np.fft.rfft((x - x.mean(axis=-1, keepdims=True)) * taper)
    got = segment_spectra(x, taper)
    power_want, power_got = np.abs(want[..., 1:]) ** 2, np.abs(got[..., 1:]) ** 2
    np.testing.assert_allclose(power_got.sum(-1), power_want.sum(-1), rtol=1e-10)
    np.testing.assert_allclose(power_got[..., :45], power_want[..., :45], rtol=1e-8)


def test_segment_shares_sum_to_the_welch_band_power(rng):
    x = rng.standard_normal((5, 3, 1000)) * 10.0
    freqs, psd = welch_psd(x, 250.0, 250, 125)
    matrix = band_matrix(freqs, {"a": (1.0, 4.0), "b": (8.0, 13.0), "c": (30.0, 45.0)}).T
    segs = window_segments(x, 250, 125)
    w = bin_weights(250.0, hann(250), matrix, 1.0 / segs.shape[-2])
    got = np.add.reduce(segment_band_powers(segs, hann(250), w), axis=-2)
    np.testing.assert_allclose(got, psd @ matrix, rtol=1e-12)


def test_window_spectra_transform_each_segment_once_and_match_the_offline_sums(sig, rng):
    eeg = sig.make_eeg(rng, seconds=20, dtype=np.float64)
    filtered = Preprocess(CFG.preprocess)(eeg)
    windows = Windower(CFG.window).push_eeg(filtered, raw=eeg)
    assert len(windows) == 32 and all(w.complete for w in windows)
    freqs = rfft_freqs(250.0, 250)
    raw_w = band_matrix(freqs, {"line": (48.0, 53.0), "emg": (30.0, 100.0)}).T
    filt_w = band_matrix(freqs, {"delta": (1.0, 4.0), "alpha": (8.0, 13.0)}).T
    spectra = WindowSpectra(250.0, 8, 250, 125, raw_weights=raw_w, filtered_weights=filt_w)
    for w in windows:
        p = spectra(w)
        raw = np.asarray(w.eeg_raw, dtype=np.float64)
        _, psd_raw = welch_psd(raw, 250.0, 250, 125)
        _, psd = welch_psd(w.eeg, 250.0, 250, 125)
        np.testing.assert_allclose(p.raw, psd_raw @ raw_w, rtol=1e-9)
        np.testing.assert_allclose(p.filtered, psd @ filt_w, rtol=1e-9)
        np.testing.assert_array_equal(p.lo, raw.min(axis=-1))
        np.testing.assert_array_equal(p.hi, raw.max(axis=-1))
    # 7 segments for the first window, then one per 0.5 s hop
    assert spectra.n_transformed == 7 + (len(windows) - 1)


def _check(results, want) -> int:
    for r in results:
        w = want[r.window.index]
        np.testing.assert_array_equal(r.window.eeg, w.window.eeg)
        np.testing.assert_array_equal(r.window.eeg_raw, w.window.eeg_raw)
        np.testing.assert_array_equal(r.features.tensor, w.window.eeg.astype(np.float32))
        np.testing.assert_array_equal(r.features.power, w.features.power)
        assert not r.features.tensor.flags.writeable
    return len(results)


def test_results_right_when_nothing_is_kept_between_hops(sig, rng):
    """With no view held, buffers are moved in place: every window must still be right."""
    eeg = sig.make_eeg(rng, seconds=70, dtype=np.float64)
    want = {r.window.index: r for r in SignalPipeline(CFG)(eeg)}  # all kept: no in-place moves
    pipe, n, seen, new_arrays = SignalPipeline(CFG), 0, [None, None], 0
    for chunk in sig.split_every(eeg, 0.5):
        n += _check(pipe(chunk), want)  # the results are gone once _check returns
        for i, arr in enumerate((pipe.windower._eeg.data[0], pipe.extractor._float32._buf)):
            if seen[i] is None or seen[i]() is not arr:  # (weak references: no view held)
                new_arrays += 1
                seen[i] = weakref.ref(arr)
        del arr
    assert n == len(want) > 120
    # 70 s is 17500 samples; the EEG buffer and the float32 copy hold 4000 each: both were
    # reused in place (the float32 copy replaced its empty start once)
    assert pipe.windower._eeg.base > 4 * 4000 and new_arrays == 3


def test_time_going_back_leaves_nothing_stale(sig, rng):
    a = sig.make_eeg(rng, seconds=12, dtype=np.float64)
    b = sig.make_eeg(rng, seconds=12, dtype=np.float64, t0=900.0)  # other data, earlier clock
    pipe = SignalPipeline(CFG)
    pipe(a)
    again = pipe(b)
    fresh = SignalPipeline(CFG)(b)
    assert len(again) == len(fresh) > 10
    for x, y in zip(again, fresh, strict=True):
        assert x.window.first_index == y.window.first_index
        np.testing.assert_array_equal(x.features.power, y.features.power)
        np.testing.assert_array_equal(x.quality.emg_rms_uv, y.quality.emg_rms_uv)
        np.testing.assert_array_equal(x.features.tensor, y.features.tensor)


def test_a_recording_that_starts_railed_then_recovers(sig, rng):
    """Windows that leave channels out, then windows that use them all again."""
    eeg = sig.make_eeg(rng, seconds=14, dtype=np.float64)
    x = eeg.data.copy()
    x[2, : 6 * 250] = 187_500.0
    eeg = replace(eeg, data=x)
    live = SignalPipeline(CFG)
    results = [r for c in sig.split_every(eeg, 0.1) for r in live(c)]
    left_out = [r for r in results if not r.features.used[2]]
    back = [r for r in results if r.features.used.all()]
    assert left_out and back
    for r in left_out:
        assert (r.features.tensor[2] == 0).all()
        np.testing.assert_array_equal(r.features.tensor[3], r.window.eeg[3].astype(np.float32))
    for r in back:
        np.testing.assert_array_equal(r.features.tensor, r.window.eeg.astype(np.float32))
