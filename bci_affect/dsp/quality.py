"""Signal-quality scores per channel and window. Pure functions, vectorised over leading axes.

Scores and what they look at:

* **flat**: the raw peak-to-peak range is below ``flat_uv`` (a disconnected or shorted input).
* **railed**: a raw sample within 1 % of the amplifier's limit (OpenBCI Cyton: ±187,500 µV);
  the input saturated, so nothing in the window is trustworthy.
* **line-noise ratio**: power within ±``width/2`` of the power-line frequency divided by the
  power of the EEG band (raw spectrum). Large values mean poor electrode contact or grounding;
  the notch filter removes the line itself, so this is reported, not used to drop channels
  unless asked.
* **muscle (EMG)**: RMS amplitude (µV) of the raw spectrum in a high band (30-100 Hz by
  default, power-line bins left out); jaw clenches and facial muscles raise it several-fold.
* **blink**: peak-to-peak amplitude (µV) of the filtered frontal channels after a short moving
  average (which keeps the slow, large blink deflection and removes muscle activity).

The window quality is ``fraction of good channels × f(blink score) × f(muscle score)`` with
``f(s) = 1 / max(1, s)``: a score below its threshold (``s < 1``) costs nothing, a score above
it divides the quality (twice the threshold halves it).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import uniform_filter1d

#: A raw sample within this fraction of the rail counts as railed.
RAIL_TOLERANCE = 0.01


def flat_and_railed(
    lo: NDArray, hi: NDArray, *, flat_uv: float, rail_uv: float | None
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Flat and railed channels from each channel's raw minimum and maximum.

    Parameters
    ----------
    lo, hi : ndarray, shape (..., n_chans)
        Minimum and maximum raw value over the window, µV.
    flat_uv : float
        Peak-to-peak range below which a channel is flat.
    rail_uv : float or None
        Amplifier limit in µV; ``None`` disables the railed test.

    Returns
    -------
    flat, railed : ndarray of bool, shape (..., n_chans)
    """
    flat = (hi - lo) < flat_uv
    if rail_uv is None:
        return flat, np.zeros_like(flat)
    limit = rail_uv * (1.0 - RAIL_TOLERANCE)
    return flat, (hi >= limit) | (lo <= -limit)


def _band_mask(freqs: NDArray, lo: float, hi: float) -> NDArray[np.bool_]:
    return (freqs >= lo) & (freqs < hi)


def line_mask(
    freqs: NDArray[np.float64], line_hz: float, half_width_hz: float
) -> NDArray[np.bool_]:
    """Bins within ``half_width_hz`` of the line frequency or any of its harmonics."""
    mask = np.zeros(freqs.shape, bool)
    f = line_hz
    while f - half_width_hz <= freqs[-1]:
        mask |= np.abs(freqs - f) <= half_width_hz
        f += line_hz
    return mask


#: Columns of :func:`spectral_weights`: line band, EEG reference band, muscle band.
LINE, EEG, EMG = 0, 1, 2


def spectral_weights(
    freqs: NDArray[np.float64],
    *,
    line_hz: float | None,
    line_half_width_hz: float = 2.0,
    eeg_band_hz: tuple[float, float] = (1.0, 45.0),
    emg_band_hz: tuple[float, float] = (30.0, 100.0),
    emg_line_half_width_hz: float = 3.0,
) -> NDArray[np.float64]:
    """Weights that sum a PSD into the powers the spectral scores need.

    ``psd @ spectral_weights(...)`` gives, per channel, the power (µV²) in three bands:

    * ``LINE``: within ``line_half_width_hz`` of ``line_hz`` (the Hann main lobe at 1 Hz
      resolution); all zero when there is no line frequency below Nyquist;
    * ``EEG``: ``eeg_band_hz``, line bins left out;
    * ``EMG``: ``emg_band_hz`` (top clipped to 90 % of Nyquist), bins within
      ``emg_line_half_width_hz`` of any line harmonic left out.

    Parameters
    ----------
    freqs : ndarray, shape (n_freqs,)
        Evenly spaced from 0 Hz.

    Returns
    -------
    weights : ndarray, shape (n_freqs, 3)
    """
    df = freqs[1] - freqs[0]
    w = np.zeros((freqs.shape[0], 3))
    eeg = _band_mask(freqs, *eeg_band_hz)
    hi = min(emg_band_hz[1], 0.9 * freqs[-1])
    emg = _band_mask(freqs, emg_band_hz[0], hi)
    if line_hz is not None:
        if line_hz <= freqs[-1]:
            w[np.abs(freqs - line_hz) <= line_half_width_hz, LINE] = df
        eeg &= ~line_mask(freqs, line_hz, line_half_width_hz)
        emg &= ~line_mask(freqs, line_hz, emg_line_half_width_hz)
    w[eeg, EEG] = df
    w[emg, EMG] = df
    return w


def line_ratio_and_emg(band_power: NDArray) -> tuple[NDArray, NDArray]:
    """Line-noise ratio and muscle-band RMS from :func:`spectral_weights` band powers.

    Parameters
    ----------
    band_power : ndarray, shape (..., n_chans, 3)
        ``psd @ spectral_weights(...)`` (µV²).

    Returns
    -------
    ratio : ndarray, shape (..., n_chans)
        Line power over EEG-band power; NaN where the line band is empty (no line frequency
        below Nyquist) or the EEG band holds no power.
    emg_rms : ndarray, shape (..., n_chans)
        µV.
    """
    line = band_power[..., LINE]
    eeg = band_power[..., EEG]
    both = band_power[..., :EMG]
    if np.count_nonzero(both > 0) == both.size:  # the usual case: nothing to mask (no NaN)
        ratio = line / eeg
    else:
        ratio = line / np.where((eeg > 0) & (line > 0), eeg, np.nan)
    return ratio, np.sqrt(band_power[..., EMG])


def line_noise_ratio(
    psd: NDArray,
    freqs: NDArray[np.float64],
    *,
    line_hz: float,
    half_width_hz: float = 2.0,
    eeg_band_hz: tuple[float, float] = (1.0, 45.0),
) -> NDArray[np.float64]:
    """Power at the line frequency over power in the EEG band (line bins left out).

    Parameters
    ----------
    psd : ndarray, shape (..., n_chans, n_freqs)
        Raw one-sided PSD, µV²/Hz.
    freqs : ndarray, shape (n_freqs,)
    line_hz : float
        50 or 60 Hz.

    Returns
    -------
    ratio : ndarray, shape (..., n_chans)
        NaN when the line frequency is above the Nyquist frequency.
    """
    w = spectral_weights(
        freqs, line_hz=line_hz, line_half_width_hz=half_width_hz, eeg_band_hz=eeg_band_hz
    )
    return line_ratio_and_emg(psd @ w)[0]


def emg_rms(
    psd: NDArray,
    freqs: NDArray[np.float64],
    *,
    band_hz: tuple[float, float] = (30.0, 100.0),
    line_hz: float | None = None,
) -> NDArray[np.float64]:
    """RMS amplitude (µV) of the high band where muscle activity dominates.

    Parameters
    ----------
    psd : ndarray, shape (..., n_chans, n_freqs)
        Raw one-sided PSD, µV²/Hz.
    freqs : ndarray, shape (n_freqs,)
    band_hz : (float, float)
        The band; its top is clipped to 90 % of the Nyquist frequency.
    line_hz : float or None
        Power-line frequency whose bins (±3 Hz, and harmonics') are left out.

    Returns
    -------
    rms : ndarray, shape (..., n_chans)
    """
    w = spectral_weights(freqs, line_hz=line_hz, emg_band_hz=band_hz)
    return line_ratio_and_emg(psd @ w)[1]


def blink_amplitude(frontal: NDArray, smooth_n: int) -> NDArray[np.float64]:
    """Peak-to-peak amplitude (µV) of frontal channels after a moving average.

    Parameters
    ----------
    frontal : ndarray, shape (..., n_frontal, n_times)
        Filtered frontal EEG (not re-referenced), µV.
    smooth_n : int
        Moving-average length in samples (about 0.1 s).

    Returns
    -------
    amplitude : ndarray, shape (..., n_frontal)
    """
    n = frontal.shape[-1]
    k = max(1, min(int(smooth_n), n))
    # Moving averages of k samples that lie wholly inside the window (a running sum in C).
    avg = uniform_filter1d(np.asarray(frontal, dtype=np.float64), k, axis=-1, output=np.float64)
    avg = avg[..., k // 2 : n - k + 1 + k // 2]
    return np.maximum.reduce(avg, axis=-1) - np.minimum.reduce(avg, axis=-1)


def artifact_factor(score: NDArray) -> NDArray[np.float64]:
    """Quality factor of an artifact score (1 = at threshold): ``1 / max(1, s)``; NaN -> 1."""
    return 1.0 / np.fmax(score, 1.0)  # fmax ignores NaN


def window_quality(
    good: NDArray[np.bool_], blink_score: NDArray, muscle_score: NDArray
) -> NDArray[np.float64]:
    """Window quality in [0, 1].

    Parameters
    ----------
    good : ndarray of bool, shape (..., n_chans)
        Channels kept for features.
    blink_score, muscle_score : ndarray, shape (...)
        Window scores, 1 at their thresholds; NaN (not measurable) costs nothing.

    Returns
    -------
    quality : ndarray, shape (...)
    """
    good = np.asarray(good)
    frac = np.add.reduce(good, axis=-1) * (1.0 / good.shape[-1])
    return window_quality_from_fraction(frac, blink_score, muscle_score)


def window_quality_from_fraction(
    good_fraction: NDArray | float, blink_score: NDArray, muscle_score: NDArray
) -> NDArray[np.float64]:
    """:func:`window_quality` from the fraction of good channels."""
    return good_fraction / (np.fmax(blink_score, 1.0) * np.fmax(muscle_score, 1.0))
