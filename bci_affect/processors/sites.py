"""Montage-free EEG features: differential entropy on a fixed virtual montage, normalised per
session from the session's own unlabelled windows.

Two steps, one class (:class:`SiteFeatures`), the same live and offline:

1. **Virtual montage.** The per-channel differential entropy ``(n_chans, n_bands)`` is mapped
   onto the 19 sites of the 10-20 system (:mod:`bci_affect.dsp.montage`): whatever electrodes a
   board has (Cyton 8, Cyton+Daisy 16, Ganglion 4, Muse, any 10-20 subset), the model sees
   ``(19, n_bands)``. Channels without a scalp position are left out (the map says which and
   why); bad channels of a window (NaN features) are left out of that window only.
2. **Per-session normalisation.** Each site × band is z-scored with running statistics of the
   session itself: the mean and variance of every *good* window so far (quality >= 0.5,
   including the current one), the variance shrunk towards a prior of ``prior_sd`` (in nats)
   worth ``prior_n`` windows, so the first windows of a session are not blown up. It is
   causal (a window never sees later ones), needs no label, and removes what differs between
   people and sessions (skull, electrode impedance, amplifier gain) but not what changes within
   a session (the affect). A rest block at the start of a session is the natural baseline.

Windows are normalised in the order they are pushed: live, as they come; offline,
:func:`~bci_affect.processors.iter_recording` pushes every window of the recording in time
order, so a replay gives the same values as the live session (to rounding).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.dsp.montage import VIRTUAL_SITES, MontageMap, montage_map

logger = logging.getLogger(__name__)

__all__ = ["SiteFeatures", "VIRTUAL_SITES"]


class SiteFeatures:
    """Session-normalised differential entropy on the virtual montage (see module docstring).

    Parameters
    ----------
    prior_n : float
        Weight, in windows, of the prior variance.
    prior_sd : float
        Prior standard deviation of a site's differential entropy within a session, nats.
    min_quality : float
        Windows below this quality (0-1) are normalised but do not update the statistics.
    """

    def __init__(
        self, *, prior_n: float = 10.0, prior_sd: float = 0.3, min_quality: float = 0.5
    ) -> None:
        if not (np.isfinite(prior_n) and prior_n > 0):
            raise ConfigError(f"prior_n must be > 0 windows, got {prior_n}")
        if not (np.isfinite(prior_sd) and prior_sd > 0):
            raise ConfigError(f"prior_sd must be > 0 nats, got {prior_sd}")
        self.prior_n = float(prior_n)
        self.prior_var = float(prior_sd) ** 2
        self.min_quality = float(min_quality)
        self._maps: dict[tuple[str, ...], MontageMap | None] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the session's statistics (a new session starts)."""
        # per feature (n_sites, n_bands): [count, mean, M2] of the good windows, and of all
        self._good: list[NDArray] | None = None
        self._all: list[NDArray] | None = None

    def montage(self, ch_names: tuple[str, ...]) -> MontageMap | None:
        """The map of ``ch_names`` (cached); ``None`` (with one warning) when fewer than two
        labels have a scalp position."""
        if ch_names not in self._maps:
            try:
                m = montage_map(ch_names)
                logger.info("%s", m.describe())
            except ConfigError as exc:
                logger.warning("no montage-free EEG features: %s", exc)
                m = None
            self._maps[ch_names] = m
        return self._maps[ch_names]

    def __call__(
        self, de: NDArray, ch_names: tuple[str, ...], quality: float
    ) -> NDArray[np.float32] | None:
        """Normalised site features of one window.

        Parameters
        ----------
        de : ndarray, shape (n_chans, n_bands)
            Differential entropy per channel and band, nats (NaN for channels left out).
        ch_names : tuple of str
            The EEG channel labels.
        quality : float
            Window quality in [0, 1] (NaN counts as bad).

        Returns
        -------
        ndarray of float32, shape (n_sites, n_bands), or None
            z-scores (NaN where a site has no value yet); ``None`` when the montage has no
            scalp positions.
        """
        m = self.montage(tuple(ch_names))
        if m is None:
            return None
        x = m.apply(np.asarray(de, dtype=np.float64))  # (n_sites, n_bands)
        if self._good is None:
            self._good = [np.zeros(x.shape) for _ in range(3)]
            self._all = [np.zeros(x.shape) for _ in range(3)]
        _welford(self._all, x)
        if quality >= self.min_quality:
            _welford(self._good, x)
        n, mean, m2 = self._good if self._good[0].max() > 0 else self._all
        var = (m2 + self.prior_n * self.prior_var) / (n + self.prior_n)
        z = (x - mean) / np.sqrt(var)
        z[n == 0] = np.nan  # no window yet: no baseline
        return z.astype(np.float32)


def _welford(stats: list[NDArray], x: NDArray) -> None:
    """Add ``x`` to running ``[count, mean, M2]`` in place, feature by feature (NaN skipped)."""
    n0, mean, m2 = stats
    ok = np.isfinite(x)
    n = n0 + ok
    delta = np.where(ok, x - mean, 0.0)
    mean = mean + np.where(ok, delta / np.maximum(n, 1), 0.0)
    stats[:] = [n, mean, m2 + np.where(ok, delta * (x - mean), 0.0)]
