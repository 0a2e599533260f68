"""EEG features per window: band power, relative band power and differential entropy per
channel and band, frontal alpha asymmetry, and the filtered window as a tensor.

The window is re-referenced *here*, after quality scoring, so that bad channels stay out of the
average reference; re-referencing is linear and instantaneous, so doing it per window equals
doing it in the stream. Bad channels (and the reference channel itself) get NaN features and a
zero row in the tensor.

:class:`FeatureExtractor` handles one window at a time: each Welch segment's share of the band
powers is computed once (:class:`~bci_affect.processors._segments.WindowSpectra`) and summed for
every window that holds it. :func:`extract_features` handles a stack of windows with the same
per-segment function (:func:`bci_affect.dsp.spectrum.segment_band_powers`). Both end in
:func:`bci_affect.dsp.features.band_features_from_power`, so they agree (to rounding).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.dsp.features import (
    BANDS,
    band_features_from_power,
    frontal_alpha_asymmetry,
    frontal_pairs,
    pair_contrast,
)
from bci_affect.dsp.filters import reference_weights, rereference
from bci_affect.dsp.spectrum import (
    band_matrix,
    bin_weights,
    hann,
    rfft_freqs,
    segment_band_powers,
    spectra_band_powers,
    window_segments,
)
from bci_affect.processors._channels import resolve, resolve_one
from bci_affect.processors._segments import WindowPowers, WindowSpectra
from bci_affect.processors.windower import Window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of :class:`FeatureExtractor`.

    Parameters
    ----------
    bands : tuple of (name, lo_hz, hi_hz)
        Frequency bands, half-open ``[lo, hi)``.
    reference : str, int or None
        Per-window re-reference: ``"average"`` (of the good channels), a channel name or index,
        or ``None`` (keep the recording's reference).
    faa_pairs : tuple of (left, right) channel names, or None
        Frontal pairs for the alpha asymmetry; ``None``: the homologous 10-20 pairs found in
        the channel names (Fp1/Fp2, AF3/AF4, F3/F4, F7/F8, ...).
    tensor : bool
        Also return the re-referenced window as float32 for a convolutional encoder.
    welch_seg_s : float
        Welch segment length in seconds (50 % overlap).
    """

    bands: tuple[tuple[str, float, float], ...] = tuple((k, *v) for k, v in BANDS.items())
    reference: str | int | None = None
    faa_pairs: tuple[tuple[str, str], ...] | None = None
    tensor: bool = True
    welch_seg_s: float = 1.0

    def __post_init__(self) -> None:
        bands = tuple((str(n), float(lo), float(hi)) for n, lo, hi in self.bands)
        if not bands:
            raise ConfigError("bands must name at least one frequency band")
        for name, lo, hi in bands:
            if not 0 <= lo < hi:
                raise ConfigError(f"band {name!r}: need 0 <= lo < hi, got {lo}, {hi} Hz")
        if len({b[0] for b in bands}) != len(bands):
            raise ConfigError(f"band names must be unique, got {[b[0] for b in bands]}")
        object.__setattr__(self, "bands", bands)
        if not (np.isfinite(self.welch_seg_s) and self.welch_seg_s > 0):
            raise ConfigError(f"welch_seg_s must be > 0 s, got {self.welch_seg_s}")
        if self.faa_pairs is not None:
            object.__setattr__(self, "faa_pairs", tuple(tuple(p) for p in self.faa_pairs))
            for p in self.faa_pairs:
                if len(p) != 2:
                    raise ConfigError(f"faa_pairs holds (left, right) pairs, got {p!r}")

    @property
    def band_dict(self) -> dict[str, tuple[float, float]]:
        return {n: (lo, hi) for n, lo, hi in self.bands}


@dataclass(frozen=True)
class Features:
    """Features of one window, or of many (arrays then gain a leading window axis).

    Attributes
    ----------
    bands : tuple of str
    power : ndarray, shape (..., n_chans, n_bands)
        Band power, µV²; NaN for channels left out.
    relative : ndarray, shape (..., n_chans, n_bands)
        Band power over the sum of the bands.
    de : ndarray, shape (..., n_chans, n_bands)
        Differential entropy, nats.
    faa : float or ndarray
        Frontal alpha asymmetry (NaN without a usable pair).
    used : ndarray of bool, shape (..., n_chans)
        Channels whose features are valid.
    tensor : ndarray of float32, shape (..., n_chans, n_times), or None
        Re-referenced filtered window, zero rows for channels left out. Live, it may be a
        read-only view of a float32 copy of the stream (copy it before changing it).
    sites : ndarray of float32, shape (..., n_sites, n_bands), or None
        Differential entropy on the virtual 10-20 montage, z-scored with the session's own
        statistics (:mod:`bci_affect.processors.sites`); ``None`` until the signals chain adds
        it, or when no channel has a scalp position.
    """

    bands: tuple[str, ...]
    power: NDArray
    relative: NDArray
    de: NDArray
    faa: NDArray
    used: NDArray
    tensor: NDArray | None
    sites: NDArray | None = None

    def __getitem__(self, i: int) -> Features:
        """Features of window ``i`` of a stacked result."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if f.name == "bands" or v is None else v[i]
        return Features(**out)


class _Setup:
    def __init__(self, config: FeatureConfig, sfreq: float, ch_names: tuple[str, ...]) -> None:
        self.key = (sfreq, ch_names)
        self.seg_len = max(2, int(round(config.welch_seg_s * sfreq)))
        self.step = max(1, self.seg_len // 2)
        self.taper = hann(self.seg_len)
        freqs = rfft_freqs(sfreq, self.seg_len)
        self.bands = config.band_dict
        nyq = sfreq / 2
        for name, (lo, hi) in self.bands.items():
            if hi > nyq:
                raise ConfigError(
                    f"band {name!r} ({lo:g}-{hi:g} Hz) reaches above the Nyquist frequency "
                    f"({nyq:g} Hz) at {sfreq:g} Hz"
                )
        #: PSD bins -> band powers (n_freqs, n_bands)
        self.matrix = band_matrix(freqs, self.bands).T
        self._segment_weights: dict[int, NDArray] = {}
        self.band_names = tuple(self.bands)
        self.sfreq, self.n_chans = sfreq, len(ch_names)
        ref = config.reference
        if ref is not None and ref != "average":
            ref = resolve_one(ref, ch_names, "FeatureConfig.reference")
        self.reference = ref
        if config.faa_pairs is None:
            self.pairs = frontal_pairs(ch_names)
        else:
            flat = resolve([c for p in config.faa_pairs for c in p], ch_names, "faa_pairs")
            self.pairs = list(zip(flat[0::2], flat[1::2], strict=True))
        self.pairs = np.array(self.pairs, dtype=np.intp).reshape(-1, 2)
        alpha = [i for i, b in enumerate(self.bands) if b == "alpha"]
        self.alpha = alpha[0] if alpha else None
        # FAA (mean over pairs of ln right - ln left) = de @ de_contrast, as DE = ln(.) / 2 + c
        self.de_contrast = 2.0 * pair_contrast(self.n_chans, self.pairs.tolist())

    def segment_weights(self, n_seg: int) -> NDArray:
        """Weights giving each segment's share of the band powers of a window of ``n_seg``
        segments (:func:`~bci_affect.dsp.spectrum.bin_weights` with ``scale=1 / n_seg``)."""
        w = self._segment_weights.get(n_seg)
        if w is None:
            w = bin_weights(self.sfreq, self.taper, self.matrix, 1.0 / n_seg)
            self._segment_weights[n_seg] = w
        return w

    @property
    def filtered_weights(self) -> NDArray | None:
        """What a :class:`WindowSpectra` must sum for these features (None: it must keep the
        spectra instead, for re-referencing)."""
        return self.matrix if self.reference is None else None

    @property
    def keep_spectra(self) -> bool:
        return self.reference is not None

    def used_and_weights(self, good: NDArray) -> tuple[NDArray, NDArray | None]:
        """Channels with valid features and reference weights, for ``good`` (..., n_chans)."""
        good = np.asarray(good, bool)
        used = good.copy()
        if self.reference is None:
            return used, None
        if self.reference == "average":
            n = good.sum(axis=-1, keepdims=True)
            return used, np.where(good, 1.0 / np.maximum(n, 1), 0.0)
        used[..., self.reference] = False
        used &= good[..., self.reference][..., None]
        return used, reference_weights(good.shape[-1], self.reference)

    def finish(
        self, power: NDArray, used: NDArray, tensor: NDArray | None, all_used: bool
    ) -> Features:
        """Features from band powers (..., n_chans, n_bands) and the channels ``used``."""
        bf = band_features_from_power(power, self.band_names)
        if all_used:
            power, relative, de = bf.power, bf.relative, bf.de
        else:
            mask = used[..., None]
            power = np.where(mask, bf.power, np.nan)
            relative = np.where(mask, bf.relative, np.nan)
            de = np.where(mask, bf.de, np.nan)
        if self.alpha is None or not len(self.pairs):
            faa = np.full(power.shape[:-2], np.nan)
        else:
            faa = np.nan
            if all_used:  # one product; NaN when a pair has no alpha power
                faa = np.matmul(de[..., self.alpha], self.de_contrast)
            if _has_nan(faa):  # some channels left out: skip their pairs
                faa = frontal_alpha_asymmetry(power[..., self.alpha], self.pairs)
        return Features(
            bands=bf.bands,
            power=power,
            relative=relative,
            de=de,
            faa=faa,
            used=used,
            tensor=tensor,
        )


def _has_nan(x: NDArray | float) -> bool:
    if np.ndim(x) == 0:
        return bool(x != x)
    return bool(np.isnan(x).any())


class _Float32Copy:
    """float32 copy of the filtered stream, each sample converted once.

    Successive windows get read-only views of it: the same values as
    ``window.eeg.astype(np.float32)`` without converting the whole window every hop. The copy
    moves its samples in place only while no view of it is held, otherwise it allocates anew.
    """

    def __init__(self) -> None:
        self._buf = np.empty((0, 0), np.float32)
        self._lo = self._hi = 0  # stream positions held: [lo, hi)

    def __call__(self, eeg: NDArray, first: int) -> NDArray:
        """``eeg`` (n_chans, n_times) starting at stream position ``first`` (>= 0), as float32."""
        n_chans, n = eeg.shape
        end = first + n
        buf = self._buf
        afresh = buf.shape[0] != n_chans or not self._lo <= first <= self._hi
        if afresh:
            self._lo = self._hi = first
        if afresh or end - self._lo > buf.shape[1]:  # lay out anew from ``first``
            keep = self._hi - first  # samples held from ``first`` on
            start = first - self._lo
            # sys.getrefcount counts self._buf, buf and its argument: 3 = no view out.
            if buf.shape[0] == n_chans and 2 * n <= buf.shape[1] and sys.getrefcount(buf) == 3:
                buf[:, :keep] = buf[:, start : start + keep]  # (overlapping moves are safe)
            else:
                new = np.empty((n_chans, 4 * n), np.float32)
                if keep:
                    new[:, :keep] = buf[:, start : start + keep]
                self._buf = buf = new
            self._lo = first
        lo = self._lo
        if end > self._hi:  # convert the new samples only
            buf[:, self._hi - lo : end - lo] = eeg[:, n - (end - self._hi) :]
            self._hi = end
        view = buf[:, first - lo : end - lo]
        view.flags.writeable = False
        return view


def _tensor(filtered: NDArray, weights: NDArray | None, used: NDArray, all_used: bool) -> NDArray:
    x = rereference(filtered, weights)
    if not all_used:
        x = np.where(used[..., None], x, 0.0)
    return x.astype(np.float32)


class FeatureExtractor:
    """Features of one window at a time: ``__call__(window, good=None) -> Features``.

    ``good`` (bool, shape (n_chans,)) marks the channels to use, usually
    ``~quality.bad`` from :class:`~bci_affect.processors.quality.QualityScorer`; default all.
    Incomplete windows (with gaps) give NaN features and no tensor. Band powers of Welch
    segments shared with earlier windows are reused (per set of good channels when
    re-referencing), so each hop transforms only its new segments.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self.reset()

    def reset(self) -> None:
        self._setup: _Setup | None = None
        self._spectra: WindowSpectra | None = None
        self._ref_store: dict[tuple[int, bytes], NDArray] = {}
        self._float32 = _Float32Copy()

    def setup(self, window: Window) -> _Setup:
        """The per-stream constants for ``window``'s stream (built on first use)."""
        s = self._setup
        if s is None or s.key != (window.sfreq, window.ch_names):
            s = _Setup(self.config, window.sfreq, window.ch_names)
            if window.n_times < s.seg_len:
                raise ConfigError(
                    f"window_s={window.window_s} s is shorter than welch_seg_s="
                    f"{self.config.welch_seg_s} s; lengthen the window or shorten the segment"
                )
            self._setup = s
            self._spectra = None
            self._ref_store = {}
        return s

    def __call__(
        self, window: Window, good: NDArray | None = None, powers: WindowPowers | None = None
    ) -> Features:
        """Features of ``window``.

        Parameters
        ----------
        window : Window
        good : ndarray of bool, shape (n_chans,), optional
            Channels to use (default all).
        powers : WindowPowers, optional
            The window's filtered band powers (or spectra, when re-referencing) from a
            :class:`WindowSpectra` built with this extractor's ``setup().filtered_weights``
            and ``keep_spectra``, shared with other steps; default: computed here.
        """
        s = self.setup(window)
        n_chans = s.n_chans
        good = np.ones(n_chans, bool) if good is None else np.asarray(good, bool)
        if good.shape != (n_chans,):
            raise ConfigError(f"good must have shape ({n_chans},), got {good.shape}")
        if not window.complete:
            nan = np.full((n_chans, len(s.bands)), np.nan)
            return s.finish(nan, np.zeros(n_chans, bool), None, False)
        used, weights = s.used_and_weights(good)
        all_used = np.count_nonzero(used) == n_chans
        if powers is None:
            if self._spectra is None:
                self._spectra = WindowSpectra(
                    s.sfreq,
                    n_chans,
                    s.seg_len,
                    s.step,
                    filtered_weights=s.filtered_weights,
                    keep_spectra=s.keep_spectra,
                )
            powers = self._spectra(window)
        if weights is None:
            power = powers.filtered
        else:
            seg = self._referenced(powers.keys, powers.spectra, weights, window.first_index)
            power = np.add.reduce(seg, axis=0)  # the weights carry the 1 / n_segments
        tensor = None
        if self.config.tensor:
            if weights is None and all_used:  # the filtered window as it is
                tensor = self._float32(window.eeg, window.first_index)
            else:
                tensor = _tensor(window.eeg, weights, used, all_used)
        return s.finish(power, used, tensor, all_used)

    def _referenced(
        self, keys: list[int], spectra: NDArray, weights: NDArray, first_index: int
    ) -> NDArray:
        """Band powers of re-referenced segments, cached per segment and reference weights."""
        store, tag = self._ref_store, weights.tobytes()
        missing = [i for i, k in enumerate(keys) if (k, tag) not in store]
        if missing:
            x = rereference(spectra[missing], weights)
            w = self._setup.segment_weights(len(keys))
            for i, p in zip(missing, spectra_band_powers(x, w), strict=True):
                store[(keys[i], tag)] = p
            for k in [k for k in store if k[0] < first_index]:
                del store[k]
        return np.stack([store[(k, tag)] for k in keys])


def extract_features(
    filtered: NDArray,
    sfreq: float,
    ch_names: Sequence[str],
    config: FeatureConfig | None = None,
    *,
    good: NDArray | None = None,
    complete: NDArray | None = None,
) -> Features:
    """Features of many windows at once.

    Parameters
    ----------
    filtered : ndarray, shape (n_windows, n_chans, n_times)
        Filtered EEG, not re-referenced (µV).
    sfreq : float
    ch_names : sequence of str
    config : FeatureConfig
    good : ndarray of bool, shape (n_windows, n_chans), optional
        Channels to use (default all).
    complete : ndarray of bool, shape (n_windows,), optional
        Windows without gaps (default all); the others get NaN features.

    Returns
    -------
    Features
        Arrays with a leading window axis.
    """
    config = config or FeatureConfig()
    s = _Setup(config, float(sfreq), tuple(ch_names))
    n_win, n_chans = filtered.shape[:2]
    good = np.ones((n_win, n_chans), bool) if good is None else np.asarray(good, bool)
    if complete is not None:
        good = good & np.asarray(complete, bool)[:, None]
        filtered = np.where(np.asarray(complete, bool)[:, None, None], filtered, 0.0)
    used, weights = s.used_and_weights(good)
    all_used = np.count_nonzero(used) == used.size
    x = rereference(filtered, weights)
    # Each segment's share, summed over each window's segments: what the live extractor does.
    segs = window_segments(x, s.seg_len, s.step)
    power = np.add.reduce(segment_band_powers(segs, s.taper, s.segment_weights(segs.shape[-2])), -2)
    tensor = _tensor(filtered, weights, used, all_used) if config.tensor else None
    return s.finish(power, used, tensor, all_used)
