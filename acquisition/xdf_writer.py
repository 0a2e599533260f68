"""A small XDF 1.0 writer for recordings made offline (simulated sessions, converted files).

Live recording uses LabRecorder; this writer produces the same layout, so pyxdf, MNE, EEGLAB
and every other XDF reader load the result like a LabRecorder file:

- the magic ``XDF:``, then chunks ``[NumLengthBytes][Length][Tag][Content]``, with
  variable-length integers of 1, 4 or 8 bytes (little-endian throughout);
- a ``FileHeader`` (tag 1) with ``<info><version>1.0</version><datetime>...``;
- one ``StreamHeader`` (tag 2) per stream, whose ``<info>`` XML carries ``name``, ``type``,
  ``channel_count``, ``channel_format``, ``source_id``, ``nominal_srate``, ``version``,
  ``created_at``, ``uid``, ``session_id`` and ``desc/channels/channel/{label,unit,type}``
  (the XDF meta-data layout LSL tools share), plus the scalar and nested entries of
  :attr:`StreamInfo.desc`;
- ``Samples`` chunks (tag 3), each sample with its own 8-byte timestamp;
- ``Boundary`` chunks (tag 5) about every 10 s of recording, so damaged files can be resynced;
- one ``ClockOffset`` chunk (tag 4) per stream with a zero offset: the timestamps written are
  already on the reader's clock;
- a ``StreamFooter`` (tag 6) per stream with ``first_timestamp``, ``last_timestamp``,
  ``sample_count`` and the clock offsets.

Files are written atomically: the data goes to ``<name>.<random>.partial`` beside the target
and is renamed onto it only once complete. An error or an interrupted writer never leaves a
half-written file under the target name; a hard crash leaves a ``.partial`` file whose name
says it is incomplete (pyxdf still reads what it holds).

Spec: https://github.com/sccn/xdf/wiki/Specifications
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import struct
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from bci_affect.core.chunk import Chunk, StreamInfo, concat
from bci_affect.core.errors import ConfigError, FileFormatError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CHUNK_SAMPLES", "StreamingXdfWriter", "write_xdf"]

#: Most samples written in one ``Samples`` chunk.
DEFAULT_CHUNK_SAMPLES = 512

#: Seconds of recording between two ``Boundary`` chunks (LabRecorder writes one every 10 s).
BOUNDARY_INTERVAL_S = 10.0

_TAG_FILE_HEADER = 1
_TAG_STREAM_HEADER = 2
_TAG_SAMPLES = 3
_TAG_CLOCK_OFFSET = 4
_TAG_BOUNDARY = 5
_TAG_STREAM_FOOTER = 6

_BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# encoding helpers (pure functions)


def varlen_int(n: int) -> bytes:
    """XDF variable-length unsigned integer: 1 byte giving the width (1, 4 or 8), then the
    value little-endian in that many bytes."""
    if n < 0:
        raise ValueError(f"variable-length integers are unsigned, got {n}")
    if n < 1 << 8:
        return b"\x01" + struct.pack("<B", n)
    if n < 1 << 32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk_bytes(tag: int, content: bytes) -> bytes:
    """One XDF chunk: ``[NumLengthBytes][Length][Tag][Content]``; Length counts Tag+Content."""
    return varlen_int(len(content) + 2) + struct.pack("<H", tag) + content


def _fmt_float(x: float) -> str:
    """Shortest text that reads back as exactly ``x``."""
    return repr(float(x))


def _xml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _fmt_float(value)
    return escape(str(value))


def _desc_xml(key: str, value: object, indent: int) -> list[str]:
    """XML lines of one ``desc`` entry: scalars become text, dicts nested elements, lists
    repeated elements of the same name (like ``channel`` under ``channels``)."""
    if not _XML_NAME.match(key) or key.lower().startswith("xml"):
        logger.warning("desc entry %r is not a valid XML element name; not written", key)
        return []
    pad = "\t" * indent
    if isinstance(value, list | tuple):
        return [line for item in value for line in _desc_xml(key, item, indent)]
    if isinstance(value, dict):
        if not value:
            return [f"{pad}<{key} />"]
        lines = [f"{pad}<{key}>"]
        for k, v in value.items():
            lines += _desc_xml(str(k), v, indent + 1)
        return lines + [f"{pad}</{key}>"]
    if value is None:
        return [f"{pad}<{key} />"]
    return [f"{pad}<{key}>{_xml_value(value)}</{key}>"]


def stream_header_xml(info: StreamInfo, *, created_at: float, uid: str | None = None) -> str:
    """The ``<info>`` XML of a stream header, laid out like LSL/LabRecorder write it.

    Parameters
    ----------
    info : StreamInfo
        The stream; its labels and units go to ``desc/channels/channel/{label,unit,type}`` (the
        channel type is the stream type) and the other entries of ``info.desc`` follow.
    created_at : float
        Seconds on the LSL clock at which the stream was created.
    uid : str, optional
        Unique id of this stream instance (a fresh UUID when omitted).
    """
    lines = [
        '<?xml version="1.0"?>',
        "<info>",
        f"\t<name>{escape(info.name)}</name>",
        f"\t<type>{escape(info.type)}</type>",
        f"\t<channel_count>{info.n_chans}</channel_count>",
        f"\t<channel_format>{info.channel_format}</channel_format>",
        f"\t<source_id>{escape(info.source_id)}</source_id>",
        f"\t<nominal_srate>{_fmt_float(info.sfreq)}</nominal_srate>",
        "\t<version>1.1000000000000001</version>",
        f"\t<created_at>{_fmt_float(created_at)}</created_at>",
        f"\t<uid>{escape(uid or str(uuid.uuid4()))}</uid>",
        "\t<session_id>default</session_id>",
        "\t<desc>",
        "\t\t<channels>",
    ]
    for label, unit in zip(info.ch_names, info.units, strict=True):
        lines += [
            "\t\t\t<channel>",
            f"\t\t\t\t<label>{escape(label)}</label>",
            f"\t\t\t\t<unit>{escape(unit)}</unit>",
            f"\t\t\t\t<type>{escape(info.type)}</type>",
            "\t\t\t</channel>",
        ]
    lines.append("\t\t</channels>")
    for key, value in info.desc.items():
        if key == "channels":
            logger.debug("stream %r: desc['channels'] is replaced by its labels/units", info.name)
            continue
        lines += _desc_xml(str(key), value, 2)
    lines += ["\t</desc>", "</info>", ""]
    return "\n".join(lines)


def _file_header_xml(header: dict | None) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
    entries = {"version": "1.0", "datetime": now}
    for key, value in (header or {}).items():
        if key == "version":
            raise ConfigError("header['version'] is fixed: this writer writes XDF 1.0")
        entries[str(key)] = value
    body = "".join(line.strip() for k, v in entries.items() for line in _desc_xml(k, v, 0))
    return f'<?xml version="1.0"?><info>{body}</info>'


def _footer_xml(first: float, last: float, count: int, offsets: list[tuple[float, float]]) -> str:
    offs = "".join(
        f"<offset><time>{_fmt_float(t)}</time><value>{_fmt_float(v)}</value></offset>"
        for t, v in offsets
    )
    return (
        '<?xml version="1.0"?><info>'
        f"<first_timestamp>{_fmt_float(first)}</first_timestamp>"
        f"<last_timestamp>{_fmt_float(last)}</last_timestamp>"
        f"<sample_count>{count}</sample_count>"
        f"<clock_offsets>{offs}</clock_offsets></info>"
    )


def _numeric_samples(data: np.ndarray, times: np.ndarray, dtype: np.dtype) -> bytes:
    """Samples of a numeric stream: per sample ``0x08``, float64 timestamp, the values."""
    n_chans, n_times = data.shape
    rec = np.dtype(
        [("nbytes", "u1"), ("t", "<f8"), ("v", dtype.newbyteorder("<"), (n_chans,))], align=False
    )
    out = np.empty(n_times, dtype=rec)
    out["nbytes"] = 8
    out["t"] = times
    out["v"] = data.T
    return out.tobytes()


def _string_samples(data: np.ndarray, times: np.ndarray) -> bytes:
    """Samples of a string stream: per sample ``0x08``, timestamp, then per channel a
    variable-length byte count and the UTF-8 bytes."""
    parts: list[bytes] = []
    for i in range(data.shape[1]):
        parts.append(b"\x08" + struct.pack("<d", times[i]))
        for value in data[:, i]:
            raw = _to_bytes(value)
            parts.append(varlen_int(len(raw)) + raw)
    return b"".join(parts)


def _to_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _as_format(data: np.ndarray, info: StreamInfo) -> np.ndarray:
    """``data`` in the dtype of ``info.channel_format``; refuses casts that would change
    values (fractions or out-of-range numbers into integer streams, text into numbers)."""
    if info.is_string:
        return np.asarray(data, dtype=object)
    dtype = info.dtype
    arr = np.asarray(data)
    if arr.dtype == dtype:
        return arr
    if np.issubdtype(dtype, np.integer):
        if arr.dtype.kind not in "biuf":
            raise ConfigError(
                f"stream {info.name!r} is {info.channel_format} but its data is {arr.dtype}"
            )
        lim = np.iinfo(dtype)
        bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
        if arr.size and arr.dtype.kind == "f":
            bad |= np.where(np.isfinite(arr), arr != np.round(arr), True)
        if arr.size:
            bad |= (arr < lim.min) | (arr > lim.max)
        if bad.any():
            ch, t = np.argwhere(bad)[0]
            raise ConfigError(
                f"stream {info.name!r} is {info.channel_format}, but sample {t} of channel "
                f"{info.ch_names[ch]!r} is {arr[ch, t]!r}; pass integers in "
                f"[{lim.min}, {lim.max}] or use a float channel_format"
            )
        return arr.astype(dtype)
    try:
        return arr.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"stream {info.name!r} is {info.channel_format} but its data ({arr.dtype}) "
            f"cannot be converted: {exc}"
        ) from None


# --------------------------------------------------------------------------------------------
# writers


class _StreamState:
    __slots__ = ("id", "info", "first", "last", "count")

    def __init__(self, stream_id: int, info: StreamInfo) -> None:
        self.id = stream_id
        self.info = info
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0


class StreamingXdfWriter:
    """Write an XDF file stream by stream and chunk by chunk.

    The file is built as ``<path>.<random>.partial`` beside ``path`` and renamed onto ``path``
    by :meth:`close`. Used as a context manager, an exception inside the block deletes the
    partial file (:meth:`abort`) and leaves any existing ``path`` untouched.

    Parameters
    ----------
    path : str or Path
        Target file; replaced when it exists.
    header : dict, optional
        Extra entries for the file header ``<info>`` (scalars or nested dicts).
    chunk_samples : int
        Most samples per ``Samples`` chunk; longer chunks are split.

    Examples
    --------
    >>> with StreamingXdfWriter("out.xdf") as w:          # doctest: +SKIP
    ...     w.add_stream(eeg_info)
    ...     for chunk in source:
    ...         w.write_chunk(chunk)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        header: dict | None = None,
        chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    ) -> None:
        if int(chunk_samples) < 1:
            raise ConfigError(f"chunk_samples must be >= 1, got {chunk_samples}")
        self.path = Path(path)
        self.chunk_samples = int(chunk_samples)
        self._streams: dict[StreamInfo, _StreamState] = {}
        self._next_boundary_t: float | None = None
        parent = self.path.parent
        if not parent.is_dir():
            raise ConfigError(f"cannot write {self.path}: folder {parent} does not exist")
        header_xml = _file_header_xml(header)
        fd, tmp = tempfile.mkstemp(prefix=f"{self.path.name}.", suffix=".partial", dir=parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._file.write(b"XDF:")
        self._file.write(_chunk_bytes(_TAG_FILE_HEADER, header_xml.encode("utf-8")))

    # -- public API ----------------------------------------------------------------------

    @property
    def partial_path(self) -> Path:
        """Where the file is being written until :meth:`close` renames it."""
        return self._tmp

    @property
    def closed(self) -> bool:
        return self._file is None

    def add_stream(
        self, info: StreamInfo, *, created_at: float | None = None, uid: str | None = None
    ) -> int:
        """Declare a stream (writes its header) and return its XDF stream id (1, 2, ...).

        Declaring the same :class:`StreamInfo` again returns the id it already has. ``uid``
        fixes the header's stream uid (default: a fresh UUID), for reproducible files.
        """
        self._check_open()
        state = self._streams.get(info)
        if state is not None:
            return state.id
        if any(s.info.name == info.name for s in self._streams.values()):
            logger.warning(
                "two different streams named %r go to %s; readers tell them apart by source_id",
                info.name,
                self.path,
            )
        state = _StreamState(len(self._streams) + 1, info)
        self._streams[info] = state
        xml = stream_header_xml(info, created_at=0.0 if created_at is None else created_at, uid=uid)
        self._write_chunk(_TAG_STREAM_HEADER, struct.pack("<I", state.id) + xml.encode("utf-8"))
        self._flush()
        return state.id

    def write_chunk(self, chunk: Chunk) -> None:
        """Append the samples of ``chunk`` to its stream (declared on first use)."""
        self._check_open()
        if chunk.info not in self._streams:
            t0 = float(chunk.times[0]) if chunk.n_times else 0.0
            self.add_stream(chunk.info, created_at=t0)
        state = self._streams[chunk.info]
        if chunk.n_times == 0:
            return
        times = np.asarray(chunk.times, dtype=np.float64)
        if not np.all(np.isfinite(times)):
            bad = int(np.flatnonzero(~np.isfinite(times))[0])
            raise ConfigError(
                f"stream {chunk.info.name!r}: timestamp {bad} of a chunk is {times[bad]}; "
                "every sample needs a finite timestamp (seconds)"
            )
        data = _as_format(chunk.data, chunk.info)
        for lo in range(0, chunk.n_times, self.chunk_samples):
            hi = min(lo + self.chunk_samples, chunk.n_times)
            self._write_samples(state, data[:, lo:hi], times[lo:hi])
        self._flush()

    def close(self) -> Path:
        """Write clock offsets and footers, then move the file to :attr:`path`. Returns it."""
        if self._file is None:
            return self.path
        try:
            for state in self._streams.values():
                offset_t = state.last if state.last is not None else 0.0
                self._write_chunk(_TAG_CLOCK_OFFSET, struct.pack("<Idd", state.id, offset_t, 0.0))
            for state in self._streams.values():
                xml = _footer_xml(
                    state.first if state.first is not None else 0.0,
                    state.last if state.last is not None else 0.0,
                    state.count,
                    [(state.last if state.last is not None else 0.0, 0.0)],
                )
                self._write_chunk(
                    _TAG_STREAM_FOOTER, struct.pack("<I", state.id) + xml.encode("utf-8")
                )
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        logger.info("wrote %s (%d streams)", self.path, len(self._streams))
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the partial file; ``path`` is left as it was."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> StreamingXdfWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # a writer dropped without close(): say so, keep the data
        if getattr(self, "_file", None) is not None:
            logger.warning(
                "XDF writer for %s was never closed; data left in %s", self.path, self._tmp
            )
            self._file.close()
            self._file = None

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._file is None:
            raise ConfigError(f"the XDF writer for {self.path} is already closed")

    def _flush(self) -> None:
        """Hand what is written to the OS, so a crash of this process leaves it on disk."""
        try:
            self._file.flush()
        except OSError as exc:
            raise FileFormatError(f"cannot write {self._tmp}: {exc.strerror or exc}") from exc

    def _write_chunk(self, tag: int, content: bytes) -> None:
        try:
            self._file.write(_chunk_bytes(tag, content))
        except OSError as exc:
            raise FileFormatError(f"cannot write {self._tmp}: {exc.strerror or exc}") from exc

    def _write_samples(self, state: _StreamState, data: np.ndarray, times: np.ndarray) -> None:
        n = times.shape[0]
        if state.info.is_string:
            payload = _string_samples(data, times)
        else:
            payload = _numeric_samples(data, times, state.info.dtype)
        head = struct.pack("<I", state.id) + b"\x04" + struct.pack("<I", n)
        self._write_chunk(_TAG_SAMPLES, head + payload)
        if state.first is None:
            state.first = float(times[0])
        state.last = float(times[-1])
        state.count += n
        t_max = float(times.max())
        if self._next_boundary_t is None:
            self._next_boundary_t = t_max + BOUNDARY_INTERVAL_S
        elif t_max >= self._next_boundary_t:
            self._write_chunk(_TAG_BOUNDARY, _BOUNDARY_UUID)
            self._next_boundary_t = t_max + BOUNDARY_INTERVAL_S


def _pieces(chunk: Chunk, size: int) -> Iterator[tuple[float, Chunk]]:
    for lo in range(0, chunk.n_times, size):
        piece = Chunk(chunk.data[:, lo : lo + size], chunk.times[lo : lo + size], chunk.info)
        yield float(piece.times[0]), piece


def write_xdf(
    path: str | os.PathLike,
    chunks: Iterable[Chunk],
    *,
    streams: Sequence[StreamInfo] = (),
    header: dict | None = None,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    uids: Mapping[str, str] | None = None,
) -> Path:
    """Write whole recordings to an XDF file, atomically.

    The chunks of each stream are joined in the order given, cut into ``Samples`` chunks of
    at most ``chunk_samples`` samples, and the streams are interleaved by time like a live
    recording (the order of samples within a stream is kept as given).

    Parameters
    ----------
    path : str or Path
        Target file; replaced when it exists (the replacement is atomic).
    chunks : iterable of Chunk
        Samples of any number of streams; a stream is identified by its :class:`StreamInfo`.
        An empty chunk (``Chunk.empty(info)``) declares a stream without samples.
    streams : sequence of StreamInfo, optional
        Streams to declare first, in this order, even when they have no samples.
    header : dict, optional
        Extra entries for the file header ``<info>``.
    chunk_samples : int
        Most samples per ``Samples`` chunk.
    uids : mapping of str to str, optional
        Stream name -> the uid written in its header (default: fresh UUIDs). Fixed uids make
        the same data give byte-identical files.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ConfigError
        Data that does not fit its stream's ``channel_format`` or non-finite timestamps.
    FileFormatError
        The file cannot be written (disk full, permissions).
    """
    per_stream: dict[StreamInfo, list[Chunk]] = {info: [] for info in streams}
    for chunk in chunks:
        per_stream.setdefault(chunk.info, []).append(chunk)
    with StreamingXdfWriter(path, header=header, chunk_samples=chunk_samples) as writer:
        merged_inputs = []
        for info, parts in per_stream.items():
            parts = [c for c in parts if c.n_times]
            whole = concat(parts) if parts else Chunk.empty(info)
            writer.add_stream(
                info,
                created_at=float(whole.times[0]) if whole.n_times else 0.0,
                uid=(uids or {}).get(info.name),
            )
            merged_inputs.append(_pieces(whole, writer.chunk_samples))
        for _, piece in heapq.merge(*merged_inputs, key=lambda p: p[0]):
            writer.write_chunk(piece)
    return Path(path)
