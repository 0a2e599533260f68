"""Open any recording bci-affect reads, and summarise its streams.

:func:`open_recording` picks the source for a file by its extension (or, without one, by its
first bytes):

============================  ===============================================
``.xdf``, ``.xdfz``, ``.gz``  :class:`acquisition.xdf.XdfSource` (LabRecorder, ``bci-affect record``)
``.txt``                      ``acquisition.textfiles.OpenBciTextSource`` (OpenBCI GUI)
``.csv``                      ``acquisition.textfiles.BrainFlowCsvSource`` (BrainFlow)
============================  ===============================================

:func:`summarize` reads a source to its end and returns one :class:`StreamSummary` per
stream (samples, duration, rates, gaps, NaNs, markers): what ``bci-affect inspect`` and
``bci-affect replay`` print.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import BciAffectError, ConfigError, FileFormatError
from bci_affect.core.source import Source

__all__ = [
    "RECORDING_EXTENSIONS",
    "SUMMARY_FIELDS",
    "RecordingNotFoundError",
    "SelectedStreams",
    "StreamStats",
    "StreamSummary",
    "check_recording_path",
    "open_recording",
    "summarize",
]

#: Extensions :func:`open_recording` knows, and what reads them.
RECORDING_EXTENSIONS = {
    ".xdf": "XDF (LabRecorder, bci-affect record)",
    ".xdfz": "gzip-compressed XDF",
    ".xdf.gz": "gzip-compressed XDF",
    ".txt": "OpenBCI GUI text recording",
    ".csv": "BrainFlow CSV recording",
}

#: How many markers of a string stream a summary quotes.
N_FIRST_MARKERS = 5


class RecordingNotFoundError(BciAffectError, FileNotFoundError):
    """The recording path does not exist or is not a file."""


def check_recording_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, after checking it names an existing file.

    Raises
    ------
    RecordingNotFoundError
        Naming the path and, when its folder exists, the recordings in it.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise RecordingNotFoundError(f"{path} is a folder; give the path of a recording file")
    hint = ""
    if path.parent.is_dir():
        near = sorted(
            p.name
            for p in path.parent.iterdir()
            if p.is_file() and _extension(p) in RECORDING_EXTENSIONS
        )
        if near:
            shown = ", ".join(near[:5]) + (", ..." if len(near) > 5 else "")
            hint = f"; recordings in {path.parent}: {shown}"
    raise RecordingNotFoundError(f"recording {path} does not exist{hint}")


def _extension(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".xdf.gz"):
        return ".xdf.gz"
    return path.suffix.lower()


def open_recording(
    path: str | os.PathLike,
    *,
    streams: Iterable[str] | None = None,
    chunk_s: float | None = None,
) -> Source:
    """The :class:`~bci_affect.core.source.Source` that replays a recording file.

    Parameters
    ----------
    path : str or Path
        ``.xdf``/``.xdfz``/``.xdf.gz`` (XDF), ``.txt`` (OpenBCI GUI) or ``.csv`` (BrainFlow).
        A file without a known extension is read as XDF when it starts with ``XDF:``.
    streams : iterable of str, optional
        Names of the streams to replay (default: all).
    chunk_s : float, optional
        Seconds of recording per chunk (default: the reader's, 0.1 s).

    Raises
    ------
    RecordingNotFoundError
        The file does not exist.
    FileFormatError
        Unknown extension, or the reader for it is not installed.
    """
    path = check_recording_path(path)
    ext = _extension(path)
    if ext not in RECORDING_EXTENSIONS:
        with open(path, "rb") as f:
            is_xdf = f.read(4) == b"XDF:"
        if not is_xdf:
            known = ", ".join(f"{e} ({what})" for e, what in RECORDING_EXTENSIONS.items())
            raise FileFormatError(
                f"cannot tell what kind of recording {path} is (extension "
                f"{ext or 'none'!r}); bci-affect reads {known}"
            )
        ext = ".xdf"
    if ext in (".xdf", ".xdfz", ".xdf.gz"):
        from acquisition.xdf import XdfSource  # noqa: PLC0415

        kwargs = {} if chunk_s is None else {"chunk_s": chunk_s}
        return XdfSource(path, streams=streams, **kwargs)
    try:
        textfiles = importlib.import_module("acquisition.textfiles")
    except ModuleNotFoundError as exc:
        if exc.name != "acquisition.textfiles":
            raise
        raise FileFormatError(
            f"cannot read {path}: the reader for {RECORDING_EXTENSIONS[ext]}s "
            "(acquisition.textfiles) is not installed in this copy of bci-affect"
        ) from None
    cls = textfiles.OpenBciTextSource if ext == ".txt" else textfiles.BrainFlowCsvSource
    source = cls(path) if chunk_s is None else cls(path, chunk_s=chunk_s)
    return source if streams is None else SelectedStreams(source, streams)


class SelectedStreams:
    """A source that passes on only some streams of another source.

    Parameters
    ----------
    source : Source
        The source to filter; entered and stopped with this one.
    names : iterable of str
        Stream names to keep; a name the source does not have raises
        :class:`~bci_affect.core.errors.StreamNotFoundError` on entry.
    """

    def __init__(self, source: Source, names: Iterable[str]) -> None:
        self.source = source
        self.names = list(names)
        if not self.names:
            raise ConfigError("no stream names given; pass None for every stream")

    @property
    def streams(self) -> list[StreamInfo]:
        have = self.source.streams
        missing = [n for n in self.names if n not in {s.name for s in have}]
        if missing:
            from bci_affect.core.errors import StreamNotFoundError  # noqa: PLC0415

            listing = ", ".join(f"{s.name!r} (type {s.type!r})" for s in have)
            raise StreamNotFoundError(
                f"no stream named {', '.join(map(repr, missing))}; available: {listing or 'none'}"
            )
        return [s for s in have if s.name in self.names]

    def __enter__(self) -> SelectedStreams:
        self.source.__enter__()
        try:
            self.streams  # noqa: B018  (validates the names)
        except BaseException:
            self.source.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.__exit__(*exc)

    def __iter__(self) -> Iterator[Chunk]:
        keep = set(self.names)
        return (c for c in self.source if c.info.name in keep)

    def stop(self) -> None:
        self.source.stop()


# --------------------------------------------------------------------------------------------
# summaries


@dataclass(frozen=True)
class StreamSummary:
    """What a recording holds for one stream (the fields of ``bci-affect inspect --json``).

    Times are seconds on the recording's LSL clock; rates are Hz. ``None`` where a value does
    not apply (the effective rate of a stream with fewer than 2 samples, gaps of an irregular
    stream, markers of a numeric stream).
    """

    stream: str
    type: str
    source_id: str
    channel_format: str
    n_chans: int
    ch_names: list[str]
    units: list[str]
    nominal_srate: float
    effective_srate: float | None
    n_samples: int
    first_timestamp: float | None
    last_timestamp: float | None
    duration_s: float
    n_gaps: int | None
    gap_s: float | None
    nan_count: int | None
    backward_steps: int
    n_markers: int | None
    first_markers: list[str] | None

    def to_dict(self) -> dict:
        return asdict(self)


#: Field names of :class:`StreamSummary`, in order.
SUMMARY_FIELDS = tuple(StreamSummary.__dataclass_fields__)


class StreamStats:
    """Running statistics of one stream, updated chunk by chunk (order-independent of how the
    stream is cut into chunks).

    Parameters
    ----------
    info : StreamInfo
        The stream.
    """

    def __init__(self, info: StreamInfo) -> None:
        self.info = info
        self.n_samples = 0
        self.first: float | None = None
        self.last: float | None = None
        self.t_min = math.inf
        self.t_max = -math.inf
        self.n_gaps = 0
        self.gap_s = 0.0
        self.nan_count = 0
        self.backward_steps = 0
        self.first_markers: list[str] = []

    def update(self, chunk: Chunk) -> None:
        """Add the samples of ``chunk`` (a chunk of this stream)."""
        n = chunk.n_times
        if n == 0:
            return
        times = chunk.times
        steps = np.empty(n if self.last is not None else n - 1)
        if self.last is not None:
            steps[0] = times[0] - self.last
        np.subtract(times[1:], times[:-1], out=steps[steps.size - (n - 1) :])
        if self.info.sfreq > 0:
            period = 1.0 / self.info.sfreq
            big = steps[steps > 2.0 * period]
            self.n_gaps += int(big.size)
            self.gap_s += float(np.sum(big - period))
        self.backward_steps += int(np.count_nonzero(steps < 0))
        if self.first is None:
            self.first = float(times[0])
        self.last = float(times[-1])
        self.t_min = min(self.t_min, float(times.min()))
        self.t_max = max(self.t_max, float(times.max()))
        self.n_samples += n
        # A sum is NaN when any value is (or inf - inf): count only then.
        if chunk.data.dtype.kind == "f" and np.isnan(chunk.data.sum()):
            self.nan_count += int(np.count_nonzero(np.isnan(chunk.data)))
        if self.info.is_string and len(self.first_markers) < N_FIRST_MARKERS:
            for k in range(min(n, N_FIRST_MARKERS - len(self.first_markers))):
                values = [str(v) for v in chunk.data[:, k]]
                self.first_markers.append(values[0] if len(values) == 1 else " | ".join(values))

    def summary(self) -> StreamSummary:
        info = self.info
        duration = (self.t_max - self.t_min) if self.n_samples else 0.0
        regular = info.sfreq > 0
        # Rate while samples flowed: gaps count as one sample period each.
        active = duration - (self.gap_s if regular else 0.0)
        effective = (self.n_samples - 1) / active if self.n_samples > 1 and active > 0 else None
        return StreamSummary(
            stream=info.name,
            type=info.type,
            source_id=info.source_id,
            channel_format=info.channel_format,
            n_chans=info.n_chans,
            ch_names=list(info.ch_names),
            units=list(info.units),
            nominal_srate=info.sfreq,
            effective_srate=effective,
            n_samples=self.n_samples,
            first_timestamp=self.t_min if self.n_samples else None,
            last_timestamp=self.t_max if self.n_samples else None,
            duration_s=duration,
            n_gaps=self.n_gaps if regular else None,
            gap_s=self.gap_s if regular else None,
            nan_count=None if info.is_string else self.nan_count,
            backward_steps=self.backward_steps,
            n_markers=self.n_samples if info.is_string else None,
            first_markers=list(self.first_markers) if info.is_string else None,
        )


def summarize(source: Source, chunks: Iterable[Chunk] | None = None) -> list[StreamSummary]:
    """Read ``source`` to its end and summarise each of its streams.

    Parameters
    ----------
    source : Source
        An open source (inside its ``with`` block); its streams give the order of the result.
    chunks : iterable of Chunk, optional
        The chunks to count, when the caller iterates the source itself (e.g. to also feed a
        pipeline); default: iterate ``source``.

    Returns
    -------
    list of StreamSummary
        One per stream of ``source.streams`` (streams without samples included), then any
        stream met in the chunks that ``source.streams`` did not list.
    """
    stats = {info.name: StreamStats(info) for info in source.streams}
    for chunk in source if chunks is None else chunks:
        st = stats.get(chunk.info.name)
        if st is None:
            st = stats[chunk.info.name] = StreamStats(chunk.info)
        st.update(chunk)
    return [s.summary() for s in stats.values()]
