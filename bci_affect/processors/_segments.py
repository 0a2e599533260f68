"""Per-segment results of a stream, kept between consecutive windows.

Windows on a hop grid share most of their Welch segments (segments are aligned to the window
end, see :mod:`bci_affect.dsp.spectrum`). The cache keys each segment by the position of its
first sample in the stream, so each segment is processed once however many windows use it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from bci_affect.dsp.spectrum import n_segments


class SegmentCache:
    """Results of ``compute`` on the segments of a stream, keyed by stream position.

    Parameters
    ----------
    seg_len, step : int
        Segment length and spacing in samples.
    compute : callable
        Maps segments ``(n_segments, n_chans, seg_len)`` (float64) to one result per segment,
        ``(n_segments, ...)``.
    """

    def __init__(self, seg_len: int, step: int, compute: Callable[[NDArray], NDArray]) -> None:
        self.seg_len, self.step, self.compute = seg_len, step, compute
        self._store: dict[int, NDArray] = {}
        self._offsets: dict[int, list[int]] = {}

    def clear(self) -> None:
        self._store.clear()

    def offsets(self, n_times: int) -> list[int]:
        """Start of each segment within a window of ``n_times`` samples, oldest first."""
        rel = self._offsets.get(n_times)
        if rel is None:
            k = n_segments(n_times, self.seg_len, self.step)
            rel = [n_times - self.seg_len - self.step * j for j in range(k - 1, -1, -1)]
            self._offsets[n_times] = rel
        return rel

    def get(self, data: NDArray, first_index: int) -> tuple[list[int], NDArray]:
        """Keys and results of the segments of one window, oldest first.

        Parameters
        ----------
        data : ndarray, shape (n_chans, n_times)
            The window's samples.
        first_index : int
            Position of ``data[:, 0]`` in the stream.

        Returns
        -------
        keys : list of int
            Stream position of each segment's first sample.
        results : ndarray, shape (n_segments, ...)
        """
        rel = self.offsets(data.shape[-1])
        keys = [first_index + r for r in rel]
        store = self._store
        missing = [i for i, key in enumerate(keys) if key not in store]
        if missing:
            L = self.seg_len
            segs = np.empty((len(missing), data.shape[0], L))
            for j, i in enumerate(missing):
                segs[j] = data[:, rel[i] : rel[i] + L]
            res = self.compute(segs)
            for j, i in enumerate(missing):
                store[keys[i]] = res[j : j + 1]
            for key in [key for key in store if key < first_index]:
                del store[key]
        return keys, np.concatenate([store[key] for key in keys])
