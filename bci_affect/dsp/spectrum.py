"""Welch power spectra, built from per-segment spectra so live code can reuse segments.

A window of ``n_times`` samples is cut into segments of ``seg_len`` samples, ``step`` samples
apart, aligned to the *end* of the window (the newest sample ends the last segment). Each
segment is de-meaned, Hann-weighted and Fourier transformed; the Welch estimate is the mean of
the segments' periodograms, scaled as a one-sided power spectral density (µV²/Hz for µV input),
exactly as :func:`scipy.signal.welch` with ``window='hann', detrend='constant',
scaling='density'`` when ``(n_times - seg_len)`` is a multiple of ``step``.

Because segments are aligned to the window end, consecutive windows on a hop grid that is a
multiple of ``step`` share all but their newest segments. Band powers are linear in the
periodograms, so each segment's share of a window's band powers
(:func:`segment_band_powers`, with the weights of :func:`bin_weights`) can be computed once
and summed: live code keeps the shares of past segments and transforms only the new ones, and
offline code applies the same function to every segment of a stack of windows.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from scipy import fft as sp_fft
from scipy import signal

from bci_affect.core.errors import ConfigError

#: Transforms shorter than this are computed with numpy.fft (cheaper to call), longer ones with
#: scipy.fft (faster). The choice depends on the length only, never on how many segments are
#: transformed together, so a segment's spectrum is the same bits live and offline.
_SHORT_FFT = 300


def hann(seg_len: int) -> NDArray[np.float64]:
    """The periodic Hann taper of ``seg_len`` samples (scipy's default for spectral analysis)."""
    return signal.get_window("hann", seg_len)


def n_segments(n_times: int, seg_len: int, step: int) -> int:
    """How many segments fit in a window of ``n_times`` samples."""
    if n_times < seg_len:
        return 0
    return (n_times - seg_len) // step + 1


def rfft(x: NDArray[np.float64]) -> NDArray[np.complex128]:
    """Real FFT along the last axis (pocketfft, through numpy or scipy by transform length)."""
    if x.shape[-1] < _SHORT_FFT:
        return np.fft.rfft(x, axis=-1)
    return sp_fft.rfft(x, axis=-1, workers=1)


def demean_correction(taper: NDArray[np.float64]) -> NDArray[np.complex128]:
    """What de-meaning takes off a tapered segment's spectrum, per unit of the segment's sum.

    ``rfft((x - mean(x)) * taper) = rfft(x * taper) - sum(x) * rfft(taper) / seg_len``; only
    the leading bins where ``rfft(taper)`` is not negligible are kept (two for the periodic
    Hann taper, whose transform is zero beyond the first bin).

    Returns
    -------
    ndarray of complex128, shape (n_bins,)
    """
    t = np.fft.rfft(taper) / taper.shape[0]
    big = np.flatnonzero(np.abs(t) > 1e-13 * np.abs(t).max())
    return t[: int(big[-1]) + 1]


def segment_spectra(
    segments: NDArray,
    taper: NDArray[np.float64],
    correction: NDArray[np.complex128] | None = None,
) -> NDArray[np.complex128]:
    """Complex spectra of de-meaned, tapered segments.

    Equal (to rounding) to ``rfft((segments - mean) * taper)``; the mean is taken off after
    the transform, where it touches only the lowest bins.

    Parameters
    ----------
    segments : ndarray, shape (..., seg_len)
    taper : ndarray, shape (seg_len,)
    correction : ndarray, optional
        ``demean_correction(taper)``, when already at hand.

    Returns
    -------
    spectra : ndarray of complex128, shape (..., seg_len // 2 + 1)
    """
    if correction is None:
        correction = demean_correction(taper)
    spectra = rfft(np.multiply(segments, taper, dtype=np.float64))
    sums = np.add.reduce(segments, axis=-1, keepdims=True, dtype=np.float64)
    spectra[..., : correction.shape[0]] -= sums * correction
    return spectra


def bin_weights(
    sfreq: float, taper: NDArray[np.float64], weights: NDArray[np.float64], scale: float = 1.0
) -> NDArray[np.float64]:
    """Weights that turn segment spectra straight into that segment's share of band powers.

    :func:`spectra_band_powers` squares the real and imaginary parts of each bin separately
    (interleaved, as they lie in memory), so every row of ``weights`` appears twice, scaled by
    the one-sided density factor of its bin; bins above the last non-zero weight are dropped.

    Parameters
    ----------
    sfreq : float
        Sample rate in Hz.
    taper : ndarray, shape (seg_len,)
    weights : ndarray, shape (n_freqs, n_out)
        Weights summing a PSD (µV²/Hz) into powers (µV²), e.g. ``band_matrix(...).T``.
    scale : float
        Multiplies every weight: ``1 / n_segments`` makes the *sum* over a window's segments
        the Welch estimate.

    Returns
    -------
    ndarray, shape (2 * n_bins, n_out)
        With ``n_bins <= n_freqs``; the mean over a window's segments of
        ``spectra_band_powers(spectra, result)`` is ``welch_psd(...) @ weights`` (times
        ``scale``).
    """
    weights = np.asarray(weights, dtype=np.float64)
    w = (psd_scale(sfreq, taper) * scale)[:, None] * weights
    used = np.flatnonzero(np.any(w != 0, axis=1))
    n_bins = int(used[-1]) + 1 if used.size else 1
    return np.ascontiguousarray(np.repeat(w[:n_bins], 2, axis=0))


def spectra_band_powers(
    spectra: NDArray[np.complex128],
    weights: NDArray,
    out: NDArray | None = None,
    work: NDArray | None = None,
) -> NDArray:
    """Band powers of each segment from its spectrum.

    Parameters
    ----------
    spectra : ndarray of complex128, shape (..., n_freqs)
        From :func:`segment_spectra`.
    weights : ndarray, shape (2 * n_bins, n_out)
        From :func:`bin_weights`.
    out : ndarray, shape (..., n_out), optional
        Where to write the result.
    work : ndarray of float64, shape (..., 2 * n_bins), optional
        Scratch space (saves allocating it).

    Returns
    -------
    ndarray, shape (..., n_out)
    """
    parts = spectra[..., : weights.shape[0] // 2].view(np.float64)  # re, im, re, im, ...
    return np.matmul(np.square(parts, out=work), weights, out=out)


def segment_band_powers(
    segments: NDArray, taper: NDArray[np.float64], weights: NDArray
) -> NDArray[np.float64]:
    """Each segment's share of band powers (µV²): de-mean, taper, transform, weigh.

    With ``weights = bin_weights(sfreq, taper, psd_weights, 1 / n_segments)``, the sum over a
    window's segments is ``welch_psd(...) @ psd_weights``; live code computes each segment's
    share once and keeps it for the windows that hold that segment.

    Parameters
    ----------
    segments : ndarray, shape (..., seg_len)
        Samples, µV.
    taper : ndarray, shape (seg_len,)
    weights : ndarray, shape (2 * n_bins, n_out)
        From :func:`bin_weights`.

    Returns
    -------
    ndarray, shape (..., n_out)
    """
    return spectra_band_powers(segment_spectra(segments, taper), weights)


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
