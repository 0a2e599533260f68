"""Spectra and band features (pure maths)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from bci_affect.core import ConfigError
from bci_affect.dsp.features import (
    BANDS,
    band_features,
    differential_entropy,
    frontal_alpha_asymmetry,
    frontal_pairs,
)
from bci_affect.dsp.spectrum import band_matrix, rfft_freqs, welch_psd, window_segments


def test_welch_matches_scipy(rng):
    x = rng.standard_normal((3, 4, 1000))
    freqs, psd = welch_psd(x, 250.0, 250, 125)
    f_ref, p_ref = signal.welch(x, 250.0, nperseg=250, noverlap=125)
    np.testing.assert_array_equal(freqs, f_ref)
    np.testing.assert_allclose(psd, p_ref, rtol=1e-12)


def test_segments_are_aligned_to_the_window_end():
    x = np.arange(1010.0)
    segs = window_segments(x, 250, 125)
    assert segs.shape == (7, 250)
    assert segs[-1, -1] == 1009 and segs[0, 0] == 1010 - 250 - 6 * 125
    with pytest.raises(ConfigError, match="shorter than one Welch segment"):
        window_segments(x[:100], 250, 125)


def test_band_power_of_sines(rng):
    sfreq, n = 250.0, 1000
    t = np.arange(n) / sfreq
    x = np.stack([20 * np.sin(2 * np.pi * 10.5 * t), 10 * np.sin(2 * np.pi * 20.5 * t)])
    bf = band_features(x, sfreq)
    alpha, beta = bf.bands.index("alpha"), bf.bands.index("beta")
    assert bf.power[0, alpha] == pytest.approx(20**2 / 2, rel=0.02)  # variance of a sine
    assert bf.power[1, beta] == pytest.approx(10**2 / 2, rel=0.02)
    assert bf.relative[0, alpha] > 0.99 and bf.relative[1, beta] > 0.99
    np.testing.assert_allclose(bf.relative.sum(axis=-1), 1.0)
    np.testing.assert_allclose(bf.de, 0.5 * np.log(2 * np.pi * np.e * bf.power))


def test_differential_entropy_of_band_limited_noise(rng):
    sfreq, n = 250.0, 250 * 60
    white = rng.standard_normal((1, n)) * 5.0  # variance 25 spread over 0-125 Hz
    bf = band_features(white, sfreq)
    for j, (lo, hi) in enumerate(BANDS.values()):
        expected_power = 25.0 * (hi - lo) / (sfreq / 2)
        assert bf.power[0, j] == pytest.approx(expected_power, rel=0.1)
        assert bf.de[0, j] == pytest.approx(
            0.5 * np.log(2 * np.pi * np.e * expected_power), abs=0.06
        )
    assert np.isnan(differential_entropy(0.0))  # a dead channel has no entropy
    assert np.isnan(differential_entropy(np.nan))


def test_batch_equals_one_window_at_a_time(rng):
    windows = rng.standard_normal((6, 4, 1000)) * 10
    batch = band_features(windows, 250.0)
    for i in range(6):
        one = band_features(windows[i], 250.0)
        np.testing.assert_allclose(batch.de[i], one.de, rtol=1e-13)
        np.testing.assert_allclose(batch.relative[i], one.relative, rtol=1e-13)


def test_frontal_pairs_from_names():
    names = ["Fp1", "Fp2", "F3", "F4", "C3", "F7", "f8", "AF3", "Fz", "O2"]
    assert frontal_pairs(names) == [(0, 1), (2, 3), (5, 6)]
    assert frontal_pairs(["EEG1", "EEG2"]) == []


def test_frontal_alpha_asymmetry():
    alpha = np.array([[1.0, 4.0, 2.0, 2.0], [1.0, 4.0, np.nan, 2.0]])  # F3 F4 F7 F8
    faa = frontal_alpha_asymmetry(alpha, [(0, 1), (2, 3)])
    assert faa[0] == pytest.approx((np.log(4.0) + 0.0) / 2)
    assert faa[1] == pytest.approx(np.log(4.0))  # the pair with a left-out channel is skipped
    assert np.isnan(frontal_alpha_asymmetry(alpha, [])).all()
    assert np.isnan(frontal_alpha_asymmetry(np.full((2, 4), np.nan), [(0, 1)])).all()


def test_a_band_without_bins_is_an_error():
    freqs = rfft_freqs(250.0, 250)
    with pytest.raises(ConfigError, match="'narrow'"):
        band_matrix(freqs, {"narrow": (10.2, 10.6)})
