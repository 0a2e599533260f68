"""LSL metadata conversion and outlets.

Channel labels and units travel in the standard XDF/LSL meta-data layout
(``desc/channels/channel/{label,unit,type}``), so any LSL tool (LabRecorder, MNE-LSL,
OpenViBE) reads them.
"""

from __future__ import annotations

import logging

import numpy as np
import pylsl

from bci_affect.core.chunk import Chunk, StreamInfo

logger = logging.getLogger(__name__)

_TO_LSL_FORMAT = {
    "float32": pylsl.cf_float32,
    "double64": pylsl.cf_double64,
    "int8": pylsl.cf_int8,
    "int16": pylsl.cf_int16,
    "int32": pylsl.cf_int32,
    "int64": pylsl.cf_int64,
    "string": pylsl.cf_string,
}
_FROM_LSL_FORMAT = {v: k for k, v in _TO_LSL_FORMAT.items()}


def to_lsl_info(info: StreamInfo) -> pylsl.StreamInfo:
    """A ``pylsl.StreamInfo`` carrying ``info``'s name, type, rate, format, labels and units."""
    lsl = pylsl.StreamInfo(
        info.name,
        info.type,
        info.n_chans,
        info.sfreq,
        _TO_LSL_FORMAT[info.channel_format],
        info.source_id,
    )
    channels = lsl.desc().append_child("channels")
    for label, unit in zip(info.ch_names, info.units, strict=True):
        ch = channels.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", info.type)
    for key, value in info.desc.items():
        if key != "channels" and isinstance(value, str | int | float):
            lsl.desc().append_child_value(str(key), str(value))
    return lsl


def from_lsl_info(lsl: pylsl.StreamInfo) -> StreamInfo:
    """A :class:`StreamInfo` from a resolved (or full, from an inlet) ``pylsl.StreamInfo``.

    Channels without labels in the meta-data are named ``ch0, ch1, ...``.
    """
    n = lsl.channel_count()
    labels, units = [], []
    ch = lsl.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < n:
        labels.append(ch.child_value("label") or f"ch{len(labels)}")
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    labels += [f"ch{i}" for i in range(len(labels), n)]
    units += [""] * (n - len(units))
    return StreamInfo(
        name=lsl.name(),
        type=lsl.type(),
        sfreq=float(lsl.nominal_srate()),
        ch_names=tuple(labels),
        units=tuple(units),
        source_id=lsl.source_id(),
        channel_format=_FROM_LSL_FORMAT.get(lsl.channel_format(), "float32"),
    )


class Outlet:
    """An LSL outlet for one stream that pushes :class:`Chunk` objects with their timestamps.

    Parameters
    ----------
    info : StreamInfo
        Metadata published with the outlet.
    chunk_size : int
        Preferred transmission chunk size in samples (0 = as pushed).
    max_buffered_s : int
        Seconds of data the outlet keeps for slow consumers.
    """

    def __init__(self, info: StreamInfo, *, chunk_size: int = 0, max_buffered_s: int = 360):
        self.info = info
        self._outlet = pylsl.StreamOutlet(to_lsl_info(info), chunk_size, max_buffered_s)

    def push(self, chunk: Chunk) -> None:
        """Push every sample of ``chunk`` with its own LSL timestamp."""
        if chunk.n_times == 0:
            return
        if chunk.info.is_string:
            for i in range(chunk.n_times):
                self._outlet.push_sample([str(v) for v in chunk.data[:, i]], chunk.times[i])
            return
        samples = np.ascontiguousarray(chunk.data.T, dtype=chunk.info.dtype)
        if chunk.n_times == 1:
            self._outlet.push_sample(samples[0], float(chunk.times[0]))
            return
        # pylsl takes one timestamp per sample when given a list of them.
        self._outlet.push_chunk(samples, chunk.times.tolist())

    def have_consumers(self) -> bool:
        return self._outlet.have_consumers()

    def wait_for_consumers(self, timeout_s: float) -> bool:
        return self._outlet.wait_for_consumers(timeout_s)

    def close(self) -> None:
        # Dropping the last reference destroys the outlet; consumers see it vanish.
        self._outlet = None
