"""Welch band powers of consecutive windows from per-segment results computed once.

Windows on a hop grid share most of their Welch segments (segments are aligned to the window
end, see :mod:`bci_affect.dsp.spectrum`). :class:`WindowSpectra` transforms each segment once
(the raw and the filtered EEG together, in one FFT), keeps its share of the window's band powers,
its raw extremes and, when asked, its complex spectrum, keyed by the position of its first
sample in the stream, and sums them for each window. The per-segment maths is that of
:func:`bci_affect.dsp.spectrum.segment_band_powers`, which the offline path applies to all the
segments of a stack of windows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bci_affect.dsp.spectrum import (
    bin_weights,
    demean_correction,
    hann,
    n_segments,
    rfft,
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
        self.sfreq = float(sfreq)
        self.seg_len, self.step = int(seg_len), int(step)
        self.taper = hann(self.seg_len)
        self._correction = demean_correction(self.taper)
        self._raw = raw_weights is not None
        self._filt = filtered_weights is not None or keep_spectra
        self._filt_power = filtered_weights is not None
        self._keep = keep_spectra
        self.n_raw = 0 if raw_weights is None else raw_weights.shape[1]
        parts = [w for w in (raw_weights, filtered_weights) if w is not None]
        self._psd_weights = np.hstack(parts) if parts else None
        self._n_out = 0 if self._psd_weights is None else self._psd_weights.shape[1]
        self._n_sig = int(self._raw) + int(self._filt)
        self._n_chans = int(n_chans)
        self._n_times = -1  # window length the constants below are for
        self._rel: list[int] = []
        self.weights: NDArray | None = None
        self._work: tuple[NDArray, NDArray, NDArray | None] | None = None  # scratch, 1 segment
        #: Segments transformed so far.
        self.n_transformed = 0
        self.clear()

    def clear(self) -> None:
        """Forget every segment."""
        self._slot: dict[int, int] = {}  # segment key -> row of the stores below
        self._end = 0
        self._first = -1
        # Each segment's share of the window's band powers, per signal and channel.
        self._pow = np.empty((0, self._n_sig, self._n_chans, self._n_out))
        # Raw maximum and minus the raw minimum (so one maximum over segments gives both).
        self._ext = np.empty((0, self._n_chans, 2)) if self._raw else None
        n_freqs = self.seg_len // 2 + 1
        self._spec = np.empty((0, self._n_chans, n_freqs), complex) if self._keep else None

    def _configure(self, n_times: int) -> None:
        """Constants for windows of ``n_times`` samples."""
        k = n_segments(n_times, self.seg_len, self.step)
        self._rel = [n_times - self.seg_len - self.step * j for j in range(k - 1, -1, -1)]
        if self._psd_weights is not None:  # the weights carry the mean's 1 / n_segments
            self.weights = bin_weights(self.sfreq, self.taper, self._psd_weights, 1.0 / k)
        shape = (1, self._n_sig, self._n_chans)
        self._work = (
            np.empty((*shape, self.seg_len)),
            np.empty((*shape, 1)),
            None if self.weights is None else np.empty((*shape, self.weights.shape[0])),
        )
        self._n_times = n_times
        self.clear()

    def __call__(self, window) -> WindowPowers:
        """Powers of a complete window (``window.complete``)."""
        if window.n_times != self._n_times:
            self._configure(window.n_times)
        rel, first = self._rel, window.first_index
        if first < self._first:  # positions went back: a new stream
            self.clear()
        self._first = first
        keys = [first + r for r in rel]
        slot = self._slot
        for key in [key for key in slot if key < first]:  # segments no window will need
            del slot[key]
        idx = [slot.get(key, -1) for key in keys]
        if -1 in idx:
            self._compute(window, [i for i, v in enumerate(idx) if v < 0], keys)
            slot = self._slot  # (making room may have moved the rows)
            idx = [slot[key] for key in keys]
        k, i0 = len(idx), idx[0]
        sel = slice(i0, i0 + k) if idx == list(range(i0, i0 + k)) else idx
        raw = lo = hi = filtered = spectra = None
        if self._n_out:
            total = np.add.reduce(self._pow[sel], axis=0)  # sum of the shares: the mean
            if self._raw:
                raw = total[0, :, : self.n_raw]
            if self._filt_power:
                filtered = total[-1, :, self.n_raw :]
        if self._raw:
            ext = np.maximum.reduce(self._ext[sel], axis=0)
            hi, lo = ext[:, 0], np.negative(ext[:, 1])
            head = rel[0]
            if head:  # samples before the first segment
                x = window.eeg if window.eeg_raw is None else window.eeg_raw
                lo = np.minimum(lo, x[:, :head].min(axis=-1))
                hi = np.maximum(hi, x[:, :head].max(axis=-1))
        if self._keep:
            spectra = self._spec[sel]
            spectra.flags.writeable = False
        return WindowPowers(raw, lo, hi, filtered, keys, spectra)

    def _compute(self, window, missing: list[int], keys: list[int]) -> None:
        """Transform segments ``missing`` (positions in ``keys``) and store their results."""
        signals = []
        if self._raw:
            signals.append(window.eeg if window.eeg_raw is None else window.eeg_raw)
        if self._filt:
            signals.append(window.eeg)
        rel, L, m = self._rel, self.seg_len, len(missing)
        self.n_transformed += m
        start = self._reserve(m)
        stop = start + m
        # segment_spectra, with every signal tapered straight into one array, so that one
        # transform serves them all.
        if m == 1:  # each hop: one new segment, in the same scratch arrays every time
            x, sums, work = self._work
        else:
            shape = (m, len(signals), self._n_chans)
            x, sums, work = np.empty((*shape, L)), np.empty((*shape, 1)), None
        for j, i in enumerate(missing):
            a = rel[i]
            for s, sig in enumerate(signals):
                seg = sig[:, a : a + L]
                np.multiply(seg, self.taper, out=x[j, s])
                np.add.reduce(seg, axis=-1, keepdims=True, dtype=np.float64, out=sums[j, s])
            if self._raw:
                seg, ext = signals[0][:, a : a + L], self._ext[start + j]
                np.maximum.reduce(seg, axis=-1, out=ext[:, 0])
                np.minimum.reduce(seg, axis=-1, out=ext[:, 1])
                np.negative(ext[:, 1], out=ext[:, 1])
        spectra = rfft(x)
        corr = self._correction
        spectra[..., : corr.shape[0]] -= sums * corr  # the de-meaning
        if self._n_out:
            spectra_band_powers(spectra, self.weights, out=self._pow[start:stop], work=work)
        if self._keep:
            self._spec[start:stop] = spectra[:, -1]
        for j, i in enumerate(missing):
            self._slot[keys[i]] = start + j

    def _reserve(self, m: int) -> int:
        """First of ``m`` free rows at the end of the stores (compacting or growing them)."""
        if self._end + m > self._pow.shape[0]:
            live = sorted(self._slot.items(), key=lambda kv: kv[1])
            old = [v for _, v in live]
            cap = max(self._pow.shape[0], 2 * (len(old) + m), 16)
            # New arrays: spectra handed out earlier stay valid.
            for name in ("_pow", "_ext", "_spec"):
                a = getattr(self, name)
                if a is not None:
                    new = np.empty((cap, *a.shape[1:]), a.dtype)
                    new[: len(old)] = a[old]
                    setattr(self, name, new)
            self._slot = {key: i for i, (key, _) in enumerate(live)}
            self._end = len(old)
        start = self._end
        self._end += m
        return start
