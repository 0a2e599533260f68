"""EEG features from power spectra: band power, relative band power, differential entropy and
frontal alpha asymmetry. Vectorised over any leading axes (many windows offline, one live).

Band power is the variance of the signal in a band, the integral of the one-sided PSD over the
band's bins (µV²). Differential entropy assumes a Gaussian band-limited signal:
``DE = 0.5 * ln(2 * pi * e * power)`` (nats, power in µV²). Relative band power divides each
band by the sum of all bands. Frontal alpha asymmetry is ``ln(alpha right) - ln(alpha left)``
averaged over the homologous frontal pairs present (F4/F3, Fp2/Fp1, ...): positive values mean
more right-frontal alpha, read as relatively more left-frontal activity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bci_affect.dsp.spectrum import band_matrix, welch_psd

#: The classic EEG bands in Hz, half-open ``[lo, hi)``.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

_FRONTAL = re.compile(r"^(Fp|AF|F)(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class BandFeatures:
    """Per-channel band features.

    Attributes
    ----------
    bands : tuple of str
        Band names, the last axis of every array.
    power : ndarray, shape (..., n_chans, n_bands)
        Band power in µV².
    relative : ndarray, shape (..., n_chans, n_bands)
        Band power divided by the sum over bands (each channel's row sums to 1).
    de : ndarray, shape (..., n_chans, n_bands)
        Differential entropy in nats.
    """

    bands: tuple[str, ...]
    power: NDArray[np.float64]
    relative: NDArray[np.float64]
    de: NDArray[np.float64]


def _log(x: NDArray) -> NDArray[np.float64]:
    """Natural log without warnings: NaN where ``x <= 0`` (or NaN)."""
    x = np.asarray(x, dtype=np.float64)
    if np.count_nonzero(x > 0) == x.size:  # all positive (NaN is not): nothing to mask
        return np.log(x)
    return np.log(np.where(x > 0, x, np.nan))


_LOG_2_PI_E = float(np.log(2.0 * np.pi * np.e))


def differential_entropy(power: NDArray) -> NDArray[np.float64]:
    """Differential entropy (nats) of a Gaussian signal of variance ``power`` (µV²).

    NaN where the power is zero (a dead channel has no defined entropy).
    """
    return 0.5 * (_log(power) + _LOG_2_PI_E)


def band_features_from_psd(
    psd: NDArray,
    freqs: NDArray[np.float64],
    bands: dict[str, tuple[float, float]] = BANDS,
) -> BandFeatures:
    """Band power, relative band power and differential entropy from a PSD.

    Parameters
    ----------
    psd : ndarray, shape (..., n_chans, n_freqs)
        One-sided PSD in µV²/Hz.
    freqs : ndarray, shape (n_freqs,)
        Hz, evenly spaced from 0.
    bands : dict
        Name -> ``(lo, hi)`` in Hz.

    Returns
    -------
    BandFeatures
    """
    return band_features_from_power(np.matmul(psd, band_matrix(freqs, bands).T), tuple(bands))


def band_features_from_power(power: NDArray, bands: Sequence[str]) -> BandFeatures:
    """Relative band power and differential entropy from band powers.

    Parameters
    ----------
    power : ndarray, shape (..., n_chans, n_bands)
        Band power in µV².
    bands : sequence of str
        Band names.
    """
    power = np.asarray(power, dtype=np.float64)
    total = np.add.reduce(power, axis=-1, keepdims=True)
    if np.count_nonzero(power > 0) == power.size:  # the usual case: nothing to mask
        relative = power / total
        log_power = np.log(power)
    else:
        relative = power / np.where(total > 0, total, np.nan)
        log_power = np.log(np.where(power > 0, power, np.nan))
    return BandFeatures(tuple(bands), power, relative, 0.5 * (log_power + _LOG_2_PI_E))


def band_features(
    windows: NDArray,
    sfreq: float,
    *,
    bands: dict[str, tuple[float, float]] = BANDS,
    seg_len: int | None = None,
    step: int | None = None,
) -> BandFeatures:
    """Band features of filtered windows, vectorised over windows.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_chans, n_times) or (n_chans, n_times)
        Filtered, re-referenced EEG in µV.
    sfreq : float
        Sample rate in Hz.
    bands : dict
        Name -> ``(lo, hi)`` in Hz.
    seg_len, step : int, optional
        Welch segment length and spacing in samples (default: 1 s segments, 50 % overlap).

    Returns
    -------
    BandFeatures
        Arrays shaped ``(n_windows, n_chans, n_bands)`` (no window axis for a 2-D input).
    """
    seg_len = int(round(sfreq)) if seg_len is None else int(seg_len)
    step = max(1, seg_len // 2) if step is None else int(step)
    freqs, psd = welch_psd(windows, sfreq, seg_len, step)
    return band_features_from_psd(psd, freqs, bands)


def frontal_pairs(ch_names: Sequence[str]) -> list[tuple[int, int]]:
    """Homologous frontal pairs ``(left, right)`` found in 10-20 channel names.

    Left electrodes have odd numbers, their right homologues the next even number: Fp1/Fp2,
    AF3/AF4, F3/F4, F7/F8, ... Names are matched case-insensitively.
    """
    index = {}
    for i, name in enumerate(ch_names):
        m = _FRONTAL.match(name.strip())
        if m:
            index[(m.group(1).lower(), int(m.group(2)))] = i
    pairs = []
    for (prefix, num), i in sorted(index.items(), key=lambda kv: kv[1]):
        if num % 2 == 1 and (prefix, num + 1) in index:
            pairs.append((i, index[(prefix, num + 1)]))
    return pairs


def pair_contrast(n_chans: int, pairs: Sequence[tuple[int, int]]) -> NDArray[np.float64]:
    """Weights ``w`` with ``x @ w`` = mean over ``pairs`` of ``x[right] - x[left]``.

    Returns
    -------
    w : ndarray, shape (n_chans,)
        All zero without pairs.
    """
    w = np.zeros(n_chans)
    for left, right in pairs:
        w[right] += 1.0
        w[left] -= 1.0
    return w / max(1, len(pairs))


def frontal_alpha_asymmetry(
    alpha_power: NDArray, pairs: Sequence[tuple[int, int]]
) -> NDArray[np.float64]:
    """Mean of ``ln(alpha right) - ln(alpha left)`` over ``pairs``.

    Parameters
    ----------
    alpha_power : ndarray, shape (..., n_chans)
        Alpha band power in µV²; NaN for channels left out (bad), whose pairs are skipped.
    pairs : sequence of (left, right) channel indices

    Returns
    -------
    faa : ndarray, shape (...)
        NaN where no pair is usable.
    """
    alpha_power = np.asarray(alpha_power, dtype=np.float64)
    if not len(pairs):
        return np.full(alpha_power.shape[:-1], np.nan)
    pairs = np.asarray(pairs, dtype=np.intp)
    la = _log(alpha_power)
    d = la[..., pairs[:, 1]] - la[..., pairs[:, 0]]  # NaN where a channel is left out
    ok = d == d
    n = np.add.reduce(ok, axis=-1)
    total = np.add.reduce(np.where(ok, d, 0.0), axis=-1)
    return total / np.where(n > 0, n, np.nan)
