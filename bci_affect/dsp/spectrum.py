"""Welch power spectra, built from per-segment spectra so live code can reuse segments.

A window of ``n_times`` samples is cut into segments of ``seg_len`` samples, ``step`` samples
apart, aligned to the *end* of the window (the newest sample ends the last segment). Each
segment is de-meaned, Hann-weighted and Fourier transformed; the Welch estimate is the mean of
the segments' periodograms, scaled as a one-sided power spectral density (µV²/Hz for µV input),
exactly as :func:`scipy.signal.welch` with ``window='hann', detrend='constant',
scaling='density'`` when ``(n_times - seg_len)`` is a multiple of ``step``.

Because segments are aligned to the window end, consecutive windows on a hop grid that is a
multiple of ``step`` share all but their newest segments; the live feature extractor keeps the
complex spectra of past segments and transforms only the new ones.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy import fft as sp_fft
from scipy import signal

from bci_affect.core.errors import ConfigError

#: Batches smaller than this (samples) are transformed with numpy.fft, larger with scipy.fft.
_SMALL_FFT = 16_384


def hann(seg_len: int) -> NDArray[np.float64]:
    """The periodic Hann taper of ``seg_len`` samples (scipy's default for spectral analysis)."""
    return signal.get_window("hann", seg_len)


def n_segments(n_times: int, seg_len: int, step: int) -> int:
    """How many segments fit in a window of ``n_times`` samples."""
    if n_times < seg_len:
        return 0
    return (n_times - seg_len) // step + 1


def segment_spectra(segments: NDArray, taper: NDArray[np.float64]) -> NDArray[np.complex128]:
    """Complex spectra of de-meaned, tapered segments.

    Parameters
    ----------
    segments : ndarray, shape (..., seg_len)
    taper : ndarray, shape (seg_len,)

    Returns
    -------
    spectra : ndarray of complex128, shape (..., seg_len // 2 + 1)
    """
    mean = np.add.reduce(segments, axis=-1, keepdims=True) / segments.shape[-1]
    x = (segments - mean) * taper
    # Same algorithm (pocketfft) either way: numpy's call costs less for a few segments,
    # scipy's transform runs faster on large batches.
    if x.size < _SMALL_FFT:
        return np.fft.rfft(x, axis=-1)
    return sp_fft.rfft(x, axis=-1, workers=1)


def window_segments(x: NDArray, seg_len: int, step: int) -> NDArray:
    """Segments of ``x`` aligned to its end, as a view.

    Parameters
    ----------
    x : ndarray, shape (..., n_times)

    Returns
    -------
    segments : ndarray, shape (..., n_segments, seg_len)
        Oldest segment first.
    """
    n_times = x.shape[-1]
    k = n_segments(n_times, seg_len, step)
    if k == 0:
        raise ConfigError(
            f"a window of {n_times} samples is shorter than one Welch segment ({seg_len} samples); "
            "use a longer window or a shorter segment"
        )
    first = n_times - seg_len - (k - 1) * step
    return sliding_window_view(x[..., first:], seg_len, axis=-1)[..., ::step, :]


def psd_scale(sfreq: float, taper: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-bin factor turning ``|rfft|**2`` into a one-sided density, shape (n_freqs,)."""
    seg_len = taper.shape[0]
    n_freqs = seg_len // 2 + 1
    scale = np.full(n_freqs, 2.0 / (sfreq * np.sum(taper**2)))
    scale[0] /= 2
    if seg_len % 2 == 0:
        scale[-1] /= 2
    return scale


def spectra_to_psd(spectra: NDArray[np.complex128], scale: NDArray[np.float64]) -> NDArray:
    """Mean periodogram of segment spectra.

    Parameters
    ----------
    spectra : ndarray, shape (..., n_segments, n_chans, n_freqs)
    scale : ndarray, shape (n_freqs,)
        From :func:`psd_scale`.

    Returns
    -------
    psd : ndarray, shape (..., n_chans, n_freqs)
    """
    return power_to_psd(spectra.real**2 + spectra.imag**2, scale)


def power_to_psd(power: NDArray, scale: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean periodogram from segment powers ``|X|**2``.

    Parameters
    ----------
    power : ndarray, shape (..., n_segments, n_chans, n_freqs)
    scale : ndarray, shape (n_freqs,)
        From :func:`psd_scale`.

    Returns
    -------
    psd : ndarray, shape (..., n_chans, n_freqs)
    """
    return np.add.reduce(power, axis=-3) * (scale / power.shape[-3])


def rfft_freqs(sfreq: float, seg_len: int) -> NDArray[np.float64]:
    """Frequencies in Hz of the bins of a ``seg_len``-sample segment."""
    return np.fft.rfftfreq(seg_len, 1.0 / sfreq)


def welch_psd(
    x: NDArray, sfreq: float, seg_len: int, step: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Welch PSD of each window, vectorised over any leading axes.

    Parameters
    ----------
    x : ndarray, shape (..., n_chans, n_times)
        Signals in µV.
    sfreq : float
        Sample rate in Hz.
    seg_len, step : int
        Segment length and spacing in samples.

    Returns
    -------
    freqs : ndarray, shape (n_freqs,)
        Hz.
    psd : ndarray, shape (..., n_chans, n_freqs)
        µV²/Hz.
    """
    taper = hann(seg_len)
    segs = window_segments(np.asarray(x, dtype=np.float64), seg_len, step)  # (..., C, K, L)
    spectra = np.moveaxis(segment_spectra(segs, taper), -2, -3)  # (..., K, C, F)
    return rfft_freqs(sfreq, seg_len), spectra_to_psd(spectra, psd_scale(sfreq, taper))


def band_matrix(
    freqs: NDArray[np.float64], bands: dict[str, tuple[float, float]]
) -> NDArray[np.float64]:
    """Weights summing PSD bins into band powers, shape (n_bands, n_freqs).

    A bin at frequency ``f`` belongs to band ``(lo, hi)`` when ``lo <= f < hi``; each weight is
    the bin width, so ``psd @ band_matrix(...).T`` is the power (variance, µV²) of each band.
    """
    df = freqs[1] - freqs[0]
    m = np.zeros((len(bands), freqs.shape[0]))
    for i, (name, (lo, hi)) in enumerate(bands.items()):
        sel = (freqs >= lo) & (freqs < hi)
        if not sel.any():
            raise ConfigError(
                f"band {name!r} ({lo:g}-{hi:g} Hz) holds no frequency bin at {df:g} Hz "
                f"resolution up to {freqs[-1]:g} Hz; use a longer Welch segment or a wider band"
            )
        m[i, sel] = df
    return m
