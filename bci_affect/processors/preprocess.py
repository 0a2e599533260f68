"""Streaming EEG preprocessing: causal MNE-designed filters with state, then re-referencing.

The output does not depend on how the input is chunked: the filter state carries from one chunk
to the next, so feeding a recording in one piece, in 17 pieces or live gives the same samples
(bit for bit). A pause in the timestamps longer than ``max_gap_s`` (a lost connection) restarts
the filters at the steady state of the first sample after the pause, instead of filtering a
jump of the DC offset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from bci_affect.core.chunk import Chunk
from bci_affect.core.errors import ConfigError
from bci_affect.dsp.filters import CausalFilter, design_chain, reference_weights, rereference
from bci_affect.processors._channels import resolve_one

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of :class:`Preprocess`.

    Parameters
    ----------
    l_freq_hz : float or None
        High-pass edge in Hz (1 Hz removes OpenBCI's DC offsets and slow drifts). ``None``: none.
    h_freq_hz : float or None
        Low-pass edge in Hz. ``None``: none.
    notch_hz : float or None
        Power-line frequency, 50 or 60 Hz; its harmonics below the low-pass edge are notched
        too. ``None``: no notch.
    order : int
        Butterworth order of each band edge.
    notch_width_hz : float
        Width of each notch in Hz.
    reference : str, int or None
        ``"average"``, a channel name or index, or ``None`` to keep the recording's reference.
    max_gap_s : float
        A pause between samples longer than this restarts the filters.
    """

    l_freq_hz: float | None = 1.0
    h_freq_hz: float | None = 45.0
    notch_hz: float | None = 50.0
    order: int = 4
    notch_width_hz: float = 2.0
    reference: str | int | None = None
    max_gap_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("l_freq_hz", "h_freq_hz", "notch_hz"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive frequency in Hz or None, got {v}")
        if (
            self.l_freq_hz is not None
            and self.h_freq_hz is not None
            and not self.l_freq_hz < self.h_freq_hz
        ):
            raise ConfigError(
                f"need l_freq_hz < h_freq_hz, got {self.l_freq_hz} and {self.h_freq_hz} Hz"
            )
        if not 1 <= int(self.order) <= 10 or int(self.order) != self.order:
            raise ConfigError(f"order must be an integer from 1 to 10, got {self.order}")
        if not self.notch_width_hz > 0:
            raise ConfigError(f"notch_width_hz must be > 0, got {self.notch_width_hz}")
        if isinstance(self.reference, str) and not self.reference:
            raise ConfigError("reference must be 'average', a channel name or index, or None")
        if not self.max_gap_s > 0:
            raise ConfigError(f"max_gap_s must be > 0 s, got {self.max_gap_s}")


class Preprocess:
    """Causal band-pass + notch (MNE filter design, SOS) and re-reference, chunk by chunk.

    ``__call__(chunk) -> chunk`` returns the filtered samples (float64, same times and
    channels). Filters are designed from the first chunk's sample rate and rebuilt only when
    the stream's rate or channels change. Empty chunks pass through unchanged.
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config or PreprocessConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the filter state and the stream: the next chunk starts afresh."""
        self._key: tuple | None = None
        self._filter = CausalFilter(np.zeros((0, 6)))
        self._ref_weights: np.ndarray | None = None
        self._last_time: float | None = None
        self._info = None

    @property
    def sos(self) -> np.ndarray:
        """The filter chain in use, shape (n_sections, 6) (empty before the first chunk)."""
        return self._filter.sos

    def _setup(self, chunk: Chunk) -> None:
        cfg = self.config
        if chunk.info.is_string:
            raise ConfigError(f"stream {chunk.name!r} holds strings; Preprocess needs EEG samples")
        if chunk.sfreq <= 0:
            raise ConfigError(
                f"stream {chunk.name!r} has no nominal sample rate (irregular); filtering needs "
                "a regular stream such as EEG"
            )
        nyq = chunk.sfreq / 2
        h = cfg.h_freq_hz
        if h is not None and h >= nyq:
            raise ConfigError(
                f"h_freq_hz={h} Hz is not below the Nyquist frequency ({nyq:g} Hz) of stream "
                f"{chunk.name!r} at {chunk.sfreq:g} Hz; lower it or set it to None"
            )
        sos = design_chain(
            chunk.sfreq,
            l_freq_hz=cfg.l_freq_hz,
            h_freq_hz=h,
            notch_hz=cfg.notch_hz if cfg.notch_hz is None or cfg.notch_hz < nyq else None,
            order=cfg.order,
            notch_width_hz=cfg.notch_width_hz,
        )
        ref = cfg.reference
        if ref is not None and ref != "average":
            ref = resolve_one(ref, chunk.ch_names, "PreprocessConfig.reference")
        self._ref_weights = reference_weights(chunk.info.n_chans, ref)
        self._info = replace(chunk.info, channel_format="double64")
        self._filter = CausalFilter(sos)
        self._key = (chunk.sfreq, chunk.ch_names)
        logger.debug(
            "Preprocess: %d SOS sections for %r at %g Hz", len(sos), chunk.name, chunk.sfreq
        )

    def __call__(self, chunk: Chunk) -> Chunk:
        if chunk.n_times == 0:
            return chunk
        if (chunk.sfreq, chunk.ch_names) != self._key:
            if self._key is not None:
                logger.warning("stream %r changed (rate or channels); filters restart", chunk.name)
            self._setup(chunk)
        times = chunk.times
        gap = self.config.max_gap_s
        first_step = times[0] - self._last_time if self._last_time is not None else np.inf
        if chunk.n_times > 1:
            steps = times[1:] - times[:-1]
            jumps = np.count_nonzero((steps > gap) | (steps < 0)) > 0
        else:
            jumps = False
        if not (jumps or first_step > gap or first_step < 0):  # the usual case: one piece
            out = self._filter(chunk.data)
        else:
            out = self._filter_in_pieces(chunk, first_step)
        self._last_time = float(times[-1])
        if self._ref_weights is not None:
            out = rereference(out, self._ref_weights)
        return Chunk(out, times, self._info)

    def _filter_in_pieces(self, chunk: Chunk, first_step: float) -> np.ndarray:
        """Filter a chunk that holds pauses: the filters restart after each."""
        times = chunk.times
        steps = np.empty(chunk.n_times)
        steps[0] = first_step
        steps[1:] = times[1:] - times[:-1]
        gap = self.config.max_gap_s
        starts = np.flatnonzero((steps > gap) | (steps < 0)).tolist()
        for i in starts:
            if i or self._last_time is not None:
                logger.info(
                    "stream %r: %.3f s step at t=%.3f; filters restart",
                    chunk.name,
                    float(steps[i]),
                    float(times[i]),
                )
        bounds = sorted({0, *starts, chunk.n_times})
        pieces = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if a in starts:
                self._filter.restart(np.asarray(chunk.data[:, a], dtype=np.float64))
            pieces.append(self._filter(chunk.data[:, a:b]))
        return np.concatenate(pieces, axis=-1)
