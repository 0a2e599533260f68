"""Open any recording bci-affect reads, and summarise its streams.

:func:`open_recording` picks the source for a file by its extension and, for text files, its
first line (``format=`` forces a reader):

================================  ===============================================
``.xdf``, ``.xdfz``, ``.xdf.gz``  :class:`acquisition.xdf.XdfSource` (LabRecorder, ``bci-affect record``)
``.txt``, ``.csv``                ``acquisition.textfiles.OpenBciTextSource`` (OpenBCI GUI: ``%``
                                  header or ``Sample Index`` column row) or
                                  ``acquisition.textfiles.BrainFlowCsvSource`` (BrainFlow:
                                  tab-separated numbers); by default ``.txt`` is the GUI's,
                                  ``.csv`` BrainFlow's
no extension                      XDF when the file starts with ``XDF:``
================================  ===============================================

The import options of text files (``board``, ``montage``, ``sfreq``) are passed through; every
command that reads a file offers them (:mod:`bci_affect.cli._import_options`).

:func:`summarize` reads a source to its end and returns one :class:`StreamSummary` per
stream (samples, duration, rates, gaps, NaNs, markers): what ``bci-affect inspect`` and
``bci-affect replay`` print.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from acquisition.paths import (
    FORMATS,
    RECORDING_EXTENSIONS,
    RecordingNotFoundError,
    check_recording_path,
    recording_extension,
)
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.core.source import Source

__all__ = [
    "FORMATS",
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

#: How many markers of a string stream a summary quotes.
N_FIRST_MARKERS = 5

_XDF_EXTENSIONS = (".xdf", ".xdfz", ".xdf.gz")


def open_recording(
    path: str | os.PathLike,
    *,
    streams: Iterable[str] | None = None,
    chunk_s: float | None = None,
    format: str = "auto",  # noqa: A002  (the command-line option's name)
    board: str | int | None = None,
    montage: Sequence[str] | str | None = None,
    sfreq: float | None = None,
) -> Source:
    """The :class:`~bci_affect.core.source.Source` that replays a recording file.

    Parameters
    ----------
    path : str or Path
        ``.xdf``/``.xdfz``/``.xdf.gz`` (XDF), ``.txt`` or ``.csv`` (OpenBCI GUI text or
        BrainFlow CSV, told apart by their first line). A file without a known extension is
        read as XDF when it starts with ``XDF:``, else by its content.
    streams : iterable of str, optional
        Names of the streams to replay (default: all).
    chunk_s : float, optional
        Seconds of recording per chunk (default: the reader's, 0.1 s).
    format : {"auto", "openbci", "brainflow", "xdf"}
        Force a reader instead of choosing it from the extension and the content.
    board : str or int, optional
        BrainFlow board that wrote a BrainFlow CSV (``"cyton-daisy"``, ...); needed when its
        column count fits several boards. Text files only.
    montage : sequence of str or str, optional
        EEG channel labels of a text file (one per channel, or one comma-separated string).
    sfreq : float, optional
        Sample rate of a text file in Hz, when its header lacks it or the board was
        reconfigured.

    Raises
    ------
    RecordingNotFoundError
        The file does not exist.
    FileFormatError
        Unknown extension or content, or the reader for it is not installed.
    ConfigError
        An unknown ``format``, or text-file options (``board``, ``montage``, ``sfreq``) for a
        file that is not one (``board`` also for an OpenBCI GUI file).
    """
    path = check_recording_path(path)
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    kind = _recording_kind(path) if format == "auto" else format
    if board is not None and kind != "brainflow":
        raise ConfigError(
            f"--board applies to BrainFlow CSV files; {path} is {_KIND_NAMES[kind]} "
            "(pass --format brainflow if it is a BrainFlow CSV)"
        )
    if sfreq is not None and not (math.isfinite(sfreq) and sfreq > 0):
        raise ConfigError(f"--sfreq must be > 0 Hz, got {sfreq}")
    kwargs = {} if chunk_s is None else {"chunk_s": chunk_s}
    if kind == "xdf":
        if montage is not None or sfreq is not None:
            raise ConfigError(
                "--montage and --sfreq apply to text files; an XDF file carries its own "
                "labels and rates"
            )
        from acquisition.xdf import XdfSource  # noqa: PLC0415  (pyxdf-free, but large)

        return XdfSource(path, streams=streams, **kwargs)
    textfiles = _textfiles(path, kind)
    if kind == "openbci":
        source = textfiles.OpenBciTextSource(path, montage=montage, sfreq=sfreq, **kwargs)
    else:
        source = textfiles.BrainFlowCsvSource(
            path, board=board, montage=montage, sfreq=sfreq, **kwargs
        )
    return source if streams is None else SelectedStreams(source, streams)


_KIND_NAMES = {
    "xdf": "an XDF file",
    "openbci": "an OpenBCI GUI text file",
    "brainflow": "a BrainFlow CSV",
}


def _recording_kind(path: Path) -> str:
    """``"xdf"``, ``"openbci"`` or ``"brainflow"``, from the extension and the first bytes."""
    ext = recording_extension(path)
    if ext in _XDF_EXTENSIONS:
        return "xdf"
    with open(path, "rb") as f:
        if f.read(4) == b"XDF:":
            return "xdf"
    if ext in (".txt", ".csv"):
        # the GUI writes .txt and .csv, BrainFlow any name: the first line decides; a file
        # neither reader recognises goes to the extension's reader, whose error names the line
        sniffed = _textfiles(path, "openbci" if ext == ".txt" else "brainflow").sniff_format(path)
        if sniffed in ("openbci", "brainflow"):
            return sniffed
        return "openbci" if ext == ".txt" else "brainflow"
    known = ", ".join(f"{e} ({what})" for e, what in RECORDING_EXTENSIONS.items())
    raise FileFormatError(
        f"cannot tell what kind of recording {path} is (extension {ext or 'none'!r}); "
        f"bci-affect reads {known}"
    )


def _textfiles(path: Path, kind: str):  # noqa: ANN202  (a module)
    """:mod:`acquisition.textfiles`, or a clear error when this copy lacks it."""
    try:
        return importlib.import_module("acquisition.textfiles")
    except ModuleNotFoundError as exc:
        if exc.name != "acquisition.textfiles":
            raise
        what = RECORDING_EXTENSIONS[".txt" if kind == "openbci" else ".csv"]
        raise FileFormatError(
            f"cannot read {path}: the reader for {what}s (acquisition.textfiles) is not "
            "installed in this copy of bci-affect"
        ) from None


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
