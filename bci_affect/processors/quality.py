"""Signal quality per channel and window (see :mod:`bci_affect.dsp.quality` for the scores).

:class:`QualityScorer` scores one :class:`~bci_affect.processors.windower.Window` at a time,
reusing the per-segment results of segments it already transformed; :func:`score_windows` scores
a stack of windows at once with the same per-segment function. Both finish through
:func:`quality_from_measures`, so they agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.dsp import quality as dq
from bci_affect.dsp.spectrum import (
    bin_weights,
    hann,
    rfft_freqs,
    segment_band_powers,
    window_segments,
)
from bci_affect.processors._channels import frontal_polar, resolve
from bci_affect.processors._segments import WindowPowers, WindowSpectra
from bci_affect.processors.windower import Window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality scores.

    Parameters
    ----------
    flat_uv : float
        Raw peak-to-peak range (µV) below which a channel is flat.
    rail_uv : float or None
        Amplifier limit in µV (OpenBCI Cyton and Ganglion: 187,500); ``None``: no railed test.
    line_hz : float or None
        Power-line frequency (50 or 60 Hz); ``None``: no line-noise ratio.
    line_ratio_max : float
        Line-noise ratio above which a channel is flagged ``line_noise``.
    line_noise_is_bad : bool
        Also leave channels flagged ``line_noise`` out of the features (default: only report:
        the notch removes the line).
    emg_band_hz : (float, float)
        Band of the muscle score in Hz (top clipped to 90 % of Nyquist).
    emg_uv : float
        RMS amplitude (µV) of that band at which a channel counts as muscle-contaminated.
    blink_uv : float
        Smoothed frontal peak-to-peak amplitude (µV) at which a window counts as a blink.
    blink_smooth_s : float
        Moving-average length for the blink amplitude, seconds.
    frontal : tuple of str or int, or None
        Channels for the blink score (names or indices); ``None``: every channel named Fp* or
        AF* (no such channel: no blink score).
    welch_seg_s : float
        Welch segment length in seconds (50 % overlap).
    """

    flat_uv: float = 1.0
    rail_uv: float | None = 187_500.0
    line_hz: float | None = 50.0
    line_ratio_max: float = 10.0
    line_noise_is_bad: bool = False
    emg_band_hz: tuple[float, float] = (30.0, 100.0)
    emg_uv: float = 20.0
    blink_uv: float = 100.0
    blink_smooth_s: float = 0.1
    frontal: tuple[str | int, ...] | None = None
    welch_seg_s: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "flat_uv",
            "line_ratio_max",
            "emg_uv",
            "blink_uv",
            "blink_smooth_s",
            "welch_seg_s",
        ):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be > 0, got {v}")
        for name in ("rail_uv", "line_hz"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be > 0 or None, got {v}")
        lo, hi = self.emg_band_hz
        if not 0 < lo < hi:
            raise ConfigError(f"emg_band_hz must be (lo, hi) with 0 < lo < hi, got {lo}, {hi}")
        if self.frontal is not None:
            object.__setattr__(self, "frontal", tuple(self.frontal))


@dataclass(frozen=True)
class Quality:
    """Quality of one window, or of many (every array then gains a leading window axis).

    Attributes
    ----------
    quality : float or ndarray
        Window quality in [0, 1] (0 for incomplete windows).
    blink_uv, blink_score : float or ndarray
        Smoothed frontal peak-to-peak amplitude (µV) and its ratio to ``blink_uv``; NaN
        without a usable frontal channel.
    blink : bool or ndarray
        ``blink_score >= 1``.
    muscle_score : float or ndarray
        Largest per-channel ``emg_uv / QualityConfig.emg_uv`` over good channels.
    muscle : bool or ndarray
        ``muscle_score >= 1``.
    flat, railed, line_noise, muscle_ch, bad : ndarray of bool, shape (..., n_chans)
        Per-channel flags; ``bad`` (flat or railed, and line noise when
        ``line_noise_is_bad``) channels are left out of features. In incomplete windows flat
        and railed are judged on the samples present and the spectral flags are False.
    line_ratio, emg_rms_uv : ndarray, shape (..., n_chans)
        Per-channel line-noise ratio and muscle-band RMS (µV); NaN in incomplete windows.
    """

    quality: NDArray
    blink_uv: NDArray
    blink_score: NDArray
    blink: NDArray
    muscle_score: NDArray
    muscle: NDArray
    flat: NDArray
    railed: NDArray
    line_noise: NDArray
    muscle_ch: NDArray
    bad: NDArray
    line_ratio: NDArray
    emg_rms_uv: NDArray

    def __getitem__(self, i: int) -> Quality:
        """Quality of window ``i`` of a stacked result."""
        return Quality(**{f.name: getattr(self, f.name)[i] for f in fields(self)})

    @property
    def good(self) -> NDArray:
        return ~np.asarray(self.bad)


def quality_from_measures(
    *,
    lo: NDArray,
    hi: NDArray,
    band_power: NDArray,
    blink_amp: NDArray,
    frontal: Sequence[int],
    complete: NDArray | bool,
    config: QualityConfig,
) -> Quality:
    """Flags, scores and window quality from per-window measures (vectorised).

    Parameters
    ----------
    lo, hi : ndarray, shape (..., n_chans)
        Raw minimum and maximum per channel (µV).
    band_power : ndarray, shape (..., n_chans, 3)
        Raw PSD summed with :func:`bci_affect.dsp.quality.spectral_weights` (µV²).
    blink_amp : ndarray, shape (..., n_frontal)
        From :func:`bci_affect.dsp.quality.blink_amplitude`.
    frontal : sequence of int
        Channel index of each column of ``blink_amp``.
    complete : bool or ndarray of bool, shape (...)
        Windows without gaps; the others get quality 0 and NaN scores; their flat and railed
        flags come from the samples present (``lo``/``hi`` ignoring the missing ones).
    config : QualityConfig
    """
    # Few, whole-array operations: this runs once per hop live.
    flat, railed = dq.flat_and_railed(lo, hi, flat_uv=config.flat_uv, rail_uv=config.rail_uv)
    ratio, emg = dq.line_ratio_and_emg(band_power)
    line_noise = ratio > config.line_ratio_max
    bad = flat | railed
    if config.line_noise_is_bad:
        bad |= line_noise
    any_bad = np.count_nonzero(bad) > 0  # usually not: then nothing needs masking
    emg_score = emg * (1.0 / config.emg_uv)
    if any_bad:
        emg_score = np.where(bad, np.nan, emg_score)  # NaN: left out
    muscle_ch = emg_score >= 1.0
    muscle_score = np.fmax.reduce(emg_score, axis=-1)  # NaN when every channel is bad
    if len(frontal):
        amp = np.where(bad[..., frontal], np.nan, blink_amp) if any_bad else blink_amp
        blink_uv = np.fmax.reduce(amp, axis=-1)
    else:
        blink_uv = np.full(bad.shape[:-1], np.nan)
    blink_score = blink_uv * (1.0 / config.blink_uv)
    if any_bad:
        quality = dq.window_quality(~bad, blink_score, muscle_score)
    else:
        quality = dq.window_quality_from_fraction(1.0, blink_score, muscle_score)
    if complete is True or np.all(complete):
        return Quality(
            quality=quality,
            blink_uv=blink_uv,
            blink_score=blink_score,
            blink=blink_score >= 1.0,
            muscle_score=muscle_score,
            muscle=muscle_score >= 1.0,
            flat=flat,
            railed=railed,
            line_noise=line_noise,
            muscle_ch=muscle_ch,
            bad=bad,
            line_ratio=ratio,
            emg_rms_uv=emg,
        )
    complete = np.asarray(complete, bool)
    cmask = complete[..., None]
    nan = np.nan
    return Quality(
        quality=np.where(complete, quality, 0.0),
        blink_uv=np.where(complete, blink_uv, nan),
        blink_score=np.where(complete, blink_score, nan),
        blink=(blink_score >= 1.0) & complete,
        muscle_score=np.where(complete, muscle_score, nan),
        muscle=(muscle_score >= 1.0) & complete,
        flat=flat,
        railed=railed,
        line_noise=line_noise & cmask,
        muscle_ch=muscle_ch & cmask,
        bad=bad,
        line_ratio=np.where(cmask, ratio, nan),
        emg_rms_uv=np.where(cmask, emg, nan),
    )


class _Setup:
    """What depends on the stream: frontal channels and Welch parameters."""

    def __init__(self, config: QualityConfig, sfreq: float, ch_names: tuple[str, ...]) -> None:
        self.key = (sfreq, ch_names)
        self.sfreq = sfreq
        self.n_chans = len(ch_names)
        self.seg_len = max(2, int(round(config.welch_seg_s * sfreq)))
        self.step = max(1, self.seg_len // 2)
        self.taper = hann(self.seg_len)
        self.freqs = rfft_freqs(sfreq, self.seg_len)
        #: PSD bins -> the three powers of the spectral scores (n_freqs, 3)
        self.weights = dq.spectral_weights(
            self.freqs, line_hz=config.line_hz, emg_band_hz=config.emg_band_hz
        )
        self.smooth_n = max(1, int(round(config.blink_smooth_s * sfreq)))
        if config.frontal is None:
            frontal = frontal_polar(ch_names)
        else:
            frontal = resolve(config.frontal, ch_names, "QualityConfig.frontal")
        self.frontal = np.array(frontal, dtype=np.intp)
        # A run of neighbouring channels is read as a view, not copied.
        f = self.frontal
        self.frontal_sel: slice | NDArray = (
            slice(int(f[0]), int(f[-1]) + 1)
            if len(f) and np.array_equal(f, np.arange(f[0], f[-1] + 1))
            else f
        )
        self.nan_power = np.full((self.n_chans, 3), np.nan)
        self.nan_blink = np.full(len(f), np.nan)
        self.nan_power.flags.writeable = self.nan_blink.flags.writeable = False


def _check_window_length(n_times: int, seg_len: int, window_s: float, seg_s: float) -> None:
    if n_times < seg_len:
        raise ConfigError(
            f"window_s={window_s} s is shorter than welch_seg_s={seg_s} s; lengthen the window "
            "or shorten the Welch segment"
        )


class QualityScorer:
    """Scores windows one at a time: ``__call__(window) -> Quality``.

    Uses ``window.eeg_raw`` for flat, railed, line-noise and muscle scores and ``window.eeg``
    (filtered, not re-referenced) for the blink score. Measures of Welch segments shared with
    earlier windows are reused, so each hop transforms only its new segments.
    """

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self.reset()

    def reset(self) -> None:
        self._setup: _Setup | None = None
        self._spectra: WindowSpectra | None = None
        self._warned_raw = False

    def setup(self, window: Window) -> _Setup:
        """The per-stream constants for ``window``'s stream (built on first use)."""
        s = self._setup
        if s is None or s.key != (window.sfreq, window.ch_names):
            s = _Setup(self.config, window.sfreq, window.ch_names)
            _check_window_length(
                window.n_times, s.seg_len, window.window_s, self.config.welch_seg_s
            )
            self._setup = s
            self._spectra = None
        return s

    def __call__(self, window: Window, powers: WindowPowers | None = None) -> Quality:
        """Quality of ``window``.

        Parameters
        ----------
        window : Window
        powers : WindowPowers, optional
            The window's raw band powers (``raw_weights`` = this scorer's ``setup().weights``)
            and extremes, from a :class:`WindowSpectra` shared with other steps; default:
            computed here.
        """
        s = self.setup(window)
        if window.eeg_raw is None and not self._warned_raw:
            logger.warning(
                "windows carry no raw EEG: railed, line-noise and muscle scores are "
                "computed on the filtered signal"
            )
            self._warned_raw = True
        if not window.complete:  # flat / railed from the samples present; no spectra
            raw = window.eeg if window.eeg_raw is None else window.eeg_raw
            return quality_from_measures(
                lo=np.fmin.reduce(raw, axis=-1),
                hi=np.fmax.reduce(raw, axis=-1),
                band_power=s.nan_power,
                blink_amp=s.nan_blink,
                frontal=s.frontal,
                complete=False,
                config=self.config,
            )
        if powers is None:
            if self._spectra is None:
                self._spectra = WindowSpectra(
                    s.sfreq, s.n_chans, s.seg_len, s.step, raw_weights=s.weights
                )
            powers = self._spectra(window)
        if len(s.frontal):
            blink_amp = dq.blink_amplitude(window.eeg[s.frontal_sel], s.smooth_n)
        else:
            blink_amp = s.nan_blink
        return quality_from_measures(
            lo=powers.lo,
            hi=powers.hi,
            band_power=powers.raw,
            blink_amp=blink_amp,
            frontal=s.frontal,
            complete=True,
            config=self.config,
        )


def score_windows(
    raw: NDArray,
    filtered: NDArray,
    sfreq: float,
    ch_names: Sequence[str],
    config: QualityConfig | None = None,
    *,
    complete: NDArray | None = None,
) -> Quality:
    """Quality of many windows at once.

    Parameters
    ----------
    raw : ndarray, shape (n_windows, n_chans, n_times)
        Unfiltered EEG, µV.
    filtered : ndarray, shape (n_windows, n_chans, n_times)
        Filtered EEG, not re-referenced.
    sfreq : float
    ch_names : sequence of str
    config : QualityConfig
    complete : ndarray of bool, shape (n_windows,), optional
        Windows without gaps (default: all). Incomplete windows may hold NaN.

    Returns
    -------
    Quality
        Arrays with a leading window axis.
    """
    config = config or QualityConfig()
    s = _Setup(config, float(sfreq), tuple(ch_names))
    n_win = raw.shape[0]
    complete = np.ones(n_win, bool) if complete is None else np.asarray(complete, bool)
    _check_window_length(raw.shape[-1], s.seg_len, raw.shape[-1] / sfreq, config.welch_seg_s)
    lo, hi = np.fmin.reduce(raw, axis=-1), np.fmax.reduce(raw, axis=-1)  # NaN: missing samples
    raw = np.where(complete[:, None, None], raw, 0.0)
    filtered = np.where(complete[:, None, None], filtered, 0.0)
    # Each segment's share, summed over each window's segments: what the live scorer does.
    segs = window_segments(raw, s.seg_len, s.step)
    w = bin_weights(s.sfreq, s.taper, s.weights, 1.0 / segs.shape[-2])
    band_power = np.add.reduce(segment_band_powers(segs, s.taper, w), axis=-2)
    blink_amp = dq.blink_amplitude(filtered[:, s.frontal], s.smooth_n)
    return quality_from_measures(
        lo=lo,
        hi=hi,
        band_power=band_power,
        blink_amp=blink_amp,
        frontal=s.frontal,
        complete=complete,
        config=config,
    )
