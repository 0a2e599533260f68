"""The one container every source yields: time-stamped samples on the LSL clock.

A :class:`Chunk` holds ``data`` of shape ``(n_chans, n_times)`` (time is always the last axis),
``times`` of shape ``(n_times,)`` in seconds on the LSL clock (``pylsl.local_clock()`` of the
machine that reads the stream, after clock correction), and the :class:`StreamInfo` of the
stream it came from. Consumers never know whether a chunk came from a board, an LSL inlet or a
file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError, ShapeError

#: LSL channel formats bci-affect reads and writes (pylsl names).
CHANNEL_FORMATS = ("float32", "double64", "int8", "int16", "int32", "int64", "string")

_NUMPY_DTYPES = {
    "float32": np.float32,
    "double64": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "string": object,
}


def numpy_dtype(channel_format: str) -> np.dtype:
    """The numpy dtype that holds samples of an LSL ``channel_format``."""
    try:
        return np.dtype(_NUMPY_DTYPES[channel_format])
    except KeyError:
        raise ConfigError(
            f"unknown channel_format {channel_format!r}; valid: {', '.join(CHANNEL_FORMATS)}"
        ) from None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Metadata of one stream (the fields LSL and XDF carry).

    Parameters
    ----------
    name : str
        Stream name, e.g. ``"EEG"`` or ``"OpenBCI-Cyton"``.
    type : str
        Content type: ``"EEG"``, ``"Markers"``, ``"FaceFeatures"``, ``"Accelerometer"``...
    sfreq : float
        Nominal sample rate in Hz; ``0.0`` for irregular streams (markers, webcam frames).
    ch_names : tuple of str
        One label per channel.
    units : tuple of str
        One unit per channel (``"microvolts"`` for EEG); empty strings where unknown.
    source_id : str
        A stable identifier of the producing device or program (used to re-resolve a stream).
    channel_format : str
        One of :data:`CHANNEL_FORMATS`.
    """

    name: str
    type: str
    sfreq: float
    ch_names: tuple[str, ...]
    units: tuple[str, ...] = ()
    source_id: str = ""
    channel_format: str = "float32"
    desc: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_names", tuple(str(c) for c in self.ch_names))
        if not self.units:
            object.__setattr__(self, "units", ("",) * len(self.ch_names))
        object.__setattr__(self, "units", tuple(str(u) for u in self.units))
        if len(self.units) != len(self.ch_names):
            raise ShapeError(
                f"stream {self.name!r}: {len(self.units)} units for {len(self.ch_names)} channels"
            )
        if self.sfreq < 0 or not np.isfinite(self.sfreq):
            raise ConfigError(f"stream {self.name!r}: sfreq must be >= 0 Hz, got {self.sfreq}")
        numpy_dtype(self.channel_format)  # validates

    @property
    def n_chans(self) -> int:
        return len(self.ch_names)

    @property
    def is_string(self) -> bool:
        return self.channel_format == "string"

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.channel_format)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Samples of one stream with their LSL-clock timestamps.

    Parameters
    ----------
    data : ndarray, shape (n_chans, n_times)
        Samples; dtype follows ``info.channel_format`` (``object`` for string streams).
    times : ndarray of float64, shape (n_times,)
        Seconds on the LSL clock.
    info : StreamInfo
        Metadata of the stream.
    """

    data: NDArray
    times: NDArray[np.float64]
    info: StreamInfo

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ShapeError(f"data must be (n_chans, n_times), got shape {self.data.shape}")
        if self.times.ndim != 1:
            raise ShapeError(f"times must be 1-D, got shape {self.times.shape}")
        if self.data.shape[-1] != self.times.shape[0]:
            raise ShapeError(
                f"data has {self.data.shape[-1]} samples, times has {self.times.shape[0]}; "
                "time must be the last axis"
            )
        if self.data.shape[0] != self.info.n_chans:
            raise ShapeError(
                f"stream {self.info.name!r}: data has {self.data.shape[0]} channels, "
                f"info names {self.info.n_chans}"
            )

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def sfreq(self) -> float:
        return self.info.sfreq

    @property
    def ch_names(self) -> tuple[str, ...]:
        return self.info.ch_names

    @property
    def n_times(self) -> int:
        return int(self.times.shape[0])

    def __len__(self) -> int:
        return self.n_times

    @classmethod
    def from_samples(cls, samples: NDArray, times: NDArray, info: StreamInfo) -> Chunk:
        """Build a chunk from ``samples`` shaped ``(n_times, n_chans)`` (pylsl/pyxdf order)."""
        samples = np.asarray(samples, dtype=info.dtype)
        if samples.ndim == 1:
            samples = samples.reshape(-1, max(info.n_chans, 1))
        if samples.size == 0:
            samples = np.empty((0, info.n_chans), dtype=info.dtype)
        return cls(np.ascontiguousarray(samples.T), np.asarray(times, dtype=np.float64), info)

    @classmethod
    def empty(cls, info: StreamInfo) -> Chunk:
        return cls(np.empty((info.n_chans, 0), dtype=info.dtype), np.empty(0), info)

    def slice_times(self, tmin: float, tmax: float) -> Chunk:
        """Samples with ``tmin <= t < tmax`` (seconds, LSL clock)."""
        lo, hi = np.searchsorted(self.times, [tmin, tmax], side="left")
        return replace(self, data=self.data[:, lo:hi], times=self.times[lo:hi])


def concat(chunks: Iterable[Chunk]) -> Chunk:
    """Concatenate chunks of one stream along time. Raises on mixed streams or no chunks."""
    chunks = list(chunks)
    if not chunks:
        raise ShapeError("concat needs at least one chunk")
    info = chunks[0].info
    for c in chunks[1:]:
        if c.info.name != info.name or c.info.n_chans != info.n_chans:
            raise ShapeError(f"cannot concatenate stream {c.info.name!r} onto {info.name!r}")
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(
        np.concatenate([c.data for c in chunks], axis=-1),
        np.concatenate([c.times for c in chunks]),
        info,
    )
