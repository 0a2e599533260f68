"""Welch band powers of consecutive windows from per-segment results computed once.

Windows on a hop grid share most of their Welch segments (segments are aligned to the window
end, see :mod:`bci_affect.dsp.spectrum`). :class:`WindowSpectra` transforms each segment once
(the raw and the filtered EEG together, in one FFT), keeps its band powers, its raw minimum and
maximum and, when asked, its complex spectrum, keyed by the position of its first sample in the
stream, and combines them for each window. The per-segment maths is
:func:`bci_affect.dsp.spectrum.segment_band_powers`, the same the offline path applies to all
the segments of a stack of windows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bci_affect.dsp.spectrum import (
    bin_weights,
    hann,
    n_segments,
    segment_spectra,
    spectra_band_powers,
)


class WindowPowers:
    """What :class:`WindowSpectra` gives for one window.

    Attributes
    ----------
    raw : ndarray, shape (n_chans, n_raw), or None
        Welch band powers of the raw window (µV²), one column per column of ``raw_weights``.
    lo, hi : ndarray, shape (n_chans,), or None
        Raw minimum and maximum over the window (µV).
    filtered : ndarray, shape (n_chans, n_filtered), or None
        Welch band powers of the filtered window (µV²).
    keys : list of int
        Stream position of the first sample of each segment, oldest first.
    spectra : ndarray of complex128, shape (n_segments, n_chans, n_freqs), or None
        Complex spectra of the filtered segments (de-meaned, tapered). Read-only.
    """

    __slots__ = ("filtered", "hi", "keys", "lo", "raw", "spectra")

    def __init__(self, raw, lo, hi, filtered, keys, spectra) -> None:
        self.raw, self.lo, self.hi, self.filtered = raw, lo, hi, filtered
        self.keys, self.spectra = keys, spectra


class WindowSpectra:
    """Welch band powers of complete windows, reusing the segments they share.

    Parameters
    ----------
    sfreq : float
        Sample rate in Hz.
    n_chans : int
    seg_len, step : int
        Welch segment length and spacing in samples.
    raw_weights : ndarray, shape (n_freqs, n_raw), optional
        Weights summing the raw window's PSD into band powers; also keeps the raw extremes.
    filtered_weights : ndarray, shape (n_freqs, n_filtered), optional
        The same for the filtered window (``window.eeg``).
    keep_spectra : bool
        Also keep the complex spectra of the filtered segments.

    Notes
    -----
    The raw signal is ``window.eeg_raw`` (``window.eeg`` when the window carries none). Results
    depend only on the windows asked for, in order, never on how the stream was chunked.
    """

    def __init__(
        self,
        sfreq: float,
        n_chans: int,
        seg_len: int,
        step: int,
        *,
        raw_weights: NDArray | None = None,
        filtered_weights: NDArray | None = None,
        keep_spectra: bool = False,
    ) -> None:
        self.seg_len, self.step = int(seg_len), int(step)
        self.taper = hann(self.seg_len)
        self._raw = raw_weights is not None
        self._filt = filtered_weights is not None or keep_spectra
        self.n_raw = 0 if raw_weights is None else raw_weights.shape[1]
        parts = [w for w in (raw_weights, filtered_weights) if w is not None]
        self.weights = bin_weights(sfreq, self.taper, np.hstack(parts)) if parts else None
        self._has_filt_power = filtered_weights is not None
        self._n_out = 0 if self.weights is None else self.weights.shape[1]
        self._n_sig = int(self._raw) + int(self._filt)
        self._n_chans = int(n_chans)
        self._keep = keep_spectra
        self._offsets: dict[int, tuple[list[int], int]] = {}
        self.clear()

    def clear(self) -> None:
        """Forget every segment."""
        self._slot: dict[int, int] = {}
        self._end = 0
        self._rows = np.empty((0, self._n_sig, self._n_chans, self._n_out + 2 * self._raw))
        n_freqs = self.seg_len // 2 + 1
        self._spec = np.empty((0, self._n_chans, n_freqs), complex) if self._keep else None

    def offsets(self, n_times: int) -> tuple[list[int], int]:
        """Start of each segment in a window of ``n_times`` samples (oldest first), and the
        number of samples before the first segment."""
        out = self._offsets.get(n_times)
        if out is None:
            k = n_segments(n_times, self.seg_len, self.step)
            rel = [n_times - self.seg_len - self.step * j for j in range(k - 1, -1, -1)]
            out = self._offsets[n_times] = (rel, rel[0])
        return out

    def __call__(self, window) -> WindowPowers:
        """Powers of a complete window (``window.complete``)."""
        rel, head = self.offsets(window.n_times)
        first = window.first_index
        keys = [first + r for r in rel]
        slot = self._slot
        for key in [key for key in slot if key < first]:  # segments no window will need
            del slot[key]
        idx = [slot.get(key, -1) for key in keys]
        if -1 in idx:
            self._compute(window, rel, keys, idx)
        k, i0 = len(idx), idx[0]
        if idx == list(range(i0, i0 + k)):
            rows = self._rows[i0 : i0 + k]
            spectra = self._spec[i0 : i0 + k] if self._keep else None
        else:
            rows = self._rows[idx]
            spectra = self._spec[idx] if self._keep else None
        raw = lo = hi = filtered = None
        n_out = self._n_out
        if n_out:
            mean = np.add.reduce(rows[..., :n_out], axis=0)
            mean *= 1.0 / k
            if self._raw:
                raw = mean[0, :, : self.n_raw]
            if self._has_filt_power:
                filtered = mean[-1, :, self.n_raw :]
        if self._raw:
            lo = np.minimum.reduce(rows[:, 0, :, n_out], axis=0)
            hi = np.maximum.reduce(rows[:, 0, :, n_out + 1], axis=0)
            if head:  # samples before the first segment
                x = window.eeg if window.eeg_raw is None else window.eeg_raw
                lo = np.minimum(lo, x[:, :head].min(axis=-1))
                hi = np.maximum(hi, x[:, :head].max(axis=-1))
        if spectra is not None:
            spectra.flags.writeable = False
        return WindowPowers(raw, lo, hi, filtered, keys, spectra)

    def _compute(self, window, rel: list[int], keys: list[int], idx: list[int]) -> None:
        """Transform the window's segments not seen yet; fills in their slots in ``idx``."""
        missing = [i for i, v in enumerate(idx) if v < 0]
        signals = []
        if self._raw:
            signals.append(window.eeg if window.eeg_raw is None else window.eeg_raw)
        if self._filt:
            signals.append(window.eeg)
        L = self.seg_len
        segs = np.empty((len(missing), len(signals), self._n_chans, L))
        for j, i in enumerate(missing):
            a = rel[i]
            for s, x in enumerate(signals):
                segs[j, s] = x[:, a : a + L]
        spectra = segment_spectra(segs, self.taper)  # one transform for every signal
        start = self._reserve(len(missing))
        stop = start + len(missing)
        rows = self._rows[start:stop]
        n_out = self._n_out
        if n_out:
            rows[..., :n_out] = spectra_band_powers(spectra, self.weights)
        if self._raw:
            np.minimum.reduce(segs[:, 0], axis=-1, out=rows[:, 0, :, n_out])
            np.maximum.reduce(segs[:, 0], axis=-1, out=rows[:, 0, :, n_out + 1])
        if self._keep:
            self._spec[start:stop] = spectra[:, -1]
        for j, i in enumerate(missing):
            self._slot[keys[i]] = idx[i] = start + j

    def _reserve(self, m: int) -> int:
        """First of ``m`` free rows at the end of the store (compacting or growing it)."""
        if self._end + m > self._rows.shape[0]:
            live = sorted(self._slot.items(), key=lambda kv: kv[1])
            old = [v for _, v in live]
            cap = max(self._rows.shape[0], 2 * (len(old) + m), 16)
            rows = np.empty((cap, *self._rows.shape[1:]))
            rows[: len(old)] = self._rows[old]
            self._rows = rows
            if self._keep:
                spec = np.empty((cap, *self._spec.shape[1:]), complex)
                spec[: len(old)] = self._spec[old]
                self._spec = spec
            self._slot = {key: i for i, (key, _) in enumerate(live)}
            self._end = len(old)
        start = self._end
        self._end += m
        return start
