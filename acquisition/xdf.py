"""Read XDF recordings (LabRecorder format) as chunks on the LSL clock.

Two ways in:

- :func:`load_xdf` returns one whole :class:`~bci_affect.core.chunk.Chunk` per stream;
- :class:`XdfSource` is a :class:`~bci_affect.core.source.Source`: it yields chunks of
  ``chunk_s`` seconds from every stream, merged in time order, as fast as the consumer takes
  them, with the file's timestamps. The pipeline consumes it exactly like a live source.

Reading follows the XDF 1.0 specification (https://github.com/sccn/xdf/wiki/Specifications)
and the reference importers (pyxdf, load_xdf.m):

- samples are decoded with numpy, whole runs of ``Samples`` chunks at a time (pyxdf decodes
  them one sample at a time, 5-10 times slower on long EEG recordings); the result equals
  ``pyxdf.load_xdf`` on every file without clock resets (tested);
- clock offsets are applied (``synchronize_clocks``): a robust (Huber) linear fit of the
  recorded offsets against time, per clock segment, with the reference importers' solver
  (all streams' fits solved together in one batch);
- clock resets (``handle_clock_resets``): offsets are split into segments where the offset
  measurements jump in time and value, and each segment of samples gets its own fit. Samples
  are assigned to segments the way pyxdf >= 1.17 does; pyxdf 1.16 (the last release that
  supports numpy 1) applies the segment fits to the wrong samples, which leaves
  timestamps running backwards;
- dejittering (off by default): regularly sampled streams get timestamps from a linear fit of
  timestamp against sample index, per segment between breaks (> 1 s and > 500 samples).

Damaged files: a file that does not start with ``XDF:``, or that holds no readable stream,
raises :class:`~bci_affect.core.errors.FileFormatError`. A file cut off mid-recording (a
crashed recorder) loads what it holds, with a :class:`RecordingWarning` that says at which
byte it ends and how much of each stream was read. Corrupt chunks are skipped up to the next
``Boundary`` chunk, with a warning. NaNs in numeric streams are counted and reported, never
dropped or filled.
"""

from __future__ import annotations

import gzip
import heapq
import logging
import os
import struct
import sys
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

from acquisition.paths import check_recording_path
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, FileFormatError, StreamNotFoundError
from bci_affect.core.source import pick_stream

logger = logging.getLogger(__name__)

__all__ = [
    "RecordingWarning",
    "XdfSource",
    "clock_segments",
    "dejitter",
    "huber_line_fit",
    "huber_line_fits",
    "load_xdf",
    "select_eeg",
    "synchronize",
    "synchronize_streams",
]

_MAGIC = b"XDF:"
_BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
_TAG_FILE_HEADER = 1
_TAG_STREAM_HEADER = 2
_TAG_SAMPLES = 3
_TAG_CLOCK_OFFSET = 4
_TAG_BOUNDARY = 5
_TAG_STREAM_FOOTER = 6
_TAG_NAMES = {
    1: "FileHeader",
    2: "StreamHeader",
    3: "Samples",
    4: "ClockOffset",
    5: "Boundary",
    6: "StreamFooter",
}

#: numpy dtype (little-endian) of each numeric XDF channel format.
_NUMERIC_FORMATS = {
    "float32": np.dtype("<f4"),
    "double64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
}

#: More channels than this in a stream header means a damaged header.
_MAX_CHANNELS = 1 << 20

# Clock-synchronisation parameters of the reference importers.
_WINSOR_THRESHOLD_S = 1e-4
_RESET_THRESHOLD_STDS = 5.0
_RESET_THRESHOLD_S = 5.0
_RESET_THRESHOLD_OFFSET_STDS = 10.0
_RESET_THRESHOLD_OFFSET_S = 1.0
_HUBER_ITERATIONS = 1000
# Dejittering: a break between segments is a step longer than both of these.
_JITTER_BREAK_S = 1.0
_JITTER_BREAK_SAMPLES = 500


class RecordingWarning(UserWarning):
    """A recording was read, but with a problem the user must know about: a truncated or
    corrupt file, NaN samples, timestamps that run backwards, clock offsets that cannot be
    used."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _warn(message: str) -> None:
    """Warn with the location of the first caller outside the acquisition package."""
    frame, level = sys._getframe(0), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RecordingWarning, stacklevel=level)


class _Corrupt(Exception):
    """Internal: bytes that do not decode as XDF."""


# --------------------------------------------------------------------------------------------
# reading the raw file


@dataclass
class _RawStream:
    """One stream while the file is read (timestamps still on the sender's clock)."""

    stream_id: int
    info: StreamInfo
    value_dtype: np.dtype | None  # None: string stream
    # Samples chunks as (first byte after the sample count, end, declared samples, cut off).
    parts: list[tuple[int, int, int, bool]] = field(default_factory=list)
    clock_times: list[float] = field(default_factory=list)
    clock_values: list[float] = field(default_factory=list)
    has_footer: bool = False
    last_timestamp: float = 0.0
    times: np.ndarray | None = None
    values: np.ndarray | list | None = None

    @property
    def tdiff(self) -> float:
        return 1.0 / self.info.sfreq if self.info.sfreq > 0 else 0.0

    @property
    def n_read(self) -> int:
        return 0 if self.times is None else int(self.times.size)


def _read_bytes(path: Path) -> bytes:
    check_recording_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".xdfz" or path.name.lower().endswith(".xdf.gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise FileFormatError(
                f"{path} is not a readable gzip-compressed XDF file ({exc}); "
                "rename it to .xdf if it is not compressed"
            ) from None
    return raw


def _varlen(buf: bytes, pos: int) -> tuple[int, int]:
    """An XDF variable-length integer at ``pos``: ``(value, position after it)``."""
    if pos >= len(buf):
        raise EOFError
    width = buf[pos]
    if width not in (1, 4, 8):
        raise _Corrupt(f"invalid length-field width {width} at byte {pos}")
    end = pos + 1 + width
    if end > len(buf):
        raise EOFError
    return int.from_bytes(buf[pos + 1 : end], "little"), end


def _xml_text(elem: ET.Element | None, tag: str, default: str = "") -> str:
    if elem is None:
        return default
    child = elem.find(tag)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def _parse_stream_header(stream_id: int, xml: bytes) -> tuple[StreamInfo, np.dtype | None]:
    try:
        root = ET.fromstring(xml.decode("utf-8", "replace"))
    except ET.ParseError as exc:
        raise _Corrupt(f"stream header {stream_id} is not valid XML ({exc})") from None
    name = _xml_text(root, "name") or f"stream{stream_id}"
    fmt = _xml_text(root, "channel_format", "float32")
    if fmt not in _NUMERIC_FORMATS and fmt != "string":
        raise _Corrupt(f"stream {name!r} has unknown channel_format {fmt!r}")
    try:
        n_chans = int(_xml_text(root, "channel_count", "1"))
        sfreq = float(_xml_text(root, "nominal_srate", "0"))
    except ValueError as exc:
        raise _Corrupt(f"stream {name!r}: unreadable header field ({exc})") from None
    if not 1 <= n_chans <= _MAX_CHANNELS:
        raise _Corrupt(f"stream {name!r} declares {n_chans} channels")
    if not np.isfinite(sfreq) or sfreq < 0:
        raise _Corrupt(f"stream {name!r} declares nominal_srate {sfreq}")
    desc = root.find("desc")
    labels: list[str] = []
    units: list[str] = []
    channels = desc.find("channels") if desc is not None else None
    if channels is not None:
        for ch in channels.findall("channel"):
            labels.append(_xml_text(ch, "label") or f"ch{len(labels)}")
            units.append(_xml_text(ch, "unit"))
    if labels and len(labels) != n_chans:
        logger.warning(
            "stream %r: header lists %d channel labels for %d channels; using ch<i> for the rest",
            name,
            len(labels),
            n_chans,
        )
    labels = (labels + [f"ch{i}" for i in range(len(labels), n_chans)])[:n_chans]
    units = (units + [""] * n_chans)[:n_chans]
    extra: dict = {}
    if desc is not None:
        for child in desc:
            if child.tag != "channels" and len(child) == 0 and child.text and child.text.strip():
                extra[child.tag] = child.text.strip()
    info = StreamInfo(
        name=name,
        type=_xml_text(root, "type"),
        sfreq=sfreq,
        ch_names=tuple(labels),
        units=tuple(units),
        source_id=_xml_text(root, "source_id"),
        channel_format=fmt,
        desc=extra,
    )
    return info, _NUMERIC_FORMATS.get(fmt)


def _sample_offsets(
    buf: bytes, pos: int, end: int, n: int, value_size: int, *, partial: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Where each numeric sample of a chunk starts, and whether it carries a timestamp.

    Needed when some samples carry a timestamp and some do not (LabRecorder leaves out the
    timestamps that equal the previous one + 1/srate): each sample's position depends on the
    flags before it. With ``partial``, returns the complete samples only.
    """
    small = 1 + value_size
    large = small + 8
    found: list[int] = []
    p = pos
    try:
        for _ in range(n):
            if p >= end:
                break
            found.append(p)
            p += large if buf[p] == 8 else small
    except IndexError:  # ran off the end of the file
        pass
    offsets = np.array(found, dtype=np.int64)
    flags = np.frombuffer(buf, np.uint8)[offsets]
    bad = np.flatnonzero((flags != 0) & (flags != 8))
    if bad.size:
        raise _Corrupt(f"invalid timestamp flag {flags[bad[0]]} at byte {offsets[bad[0]]}")
    stamped = flags == 8
    k = int(np.count_nonzero(offsets + small + 8 * stamped <= end))
    if not partial:
        if k < n:
            raise _Corrupt(f"chunk holds {k} of the {n} samples it declares")
        if p != end:
            raise _Corrupt(f"chunk has {end - p} bytes after its {n} samples")
    return offsets[:k], stamped[:k]


def _fill_times(stamps: np.ndarray, stamped: np.ndarray, last: float, tdiff: float) -> np.ndarray:
    """Timestamps of samples without one: the previous sample's + ``tdiff`` (XDF spec)."""
    index = np.arange(stamps.size)
    prev = np.maximum.accumulate(np.where(stamped, index, -1))
    anchor = np.where(prev >= 0, stamps[np.maximum(prev, 0)], last)
    out = anchor + tdiff * (index - prev)
    out[stamped] = stamps[stamped]
    return out


def _gather(
    buf: bytes, offsets: np.ndarray, stamped: np.ndarray, s: _RawStream
) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and values (n, n_chans) of samples at ``offsets`` (see _sample_offsets)."""
    u8 = np.frombuffer(buf, np.uint8)
    dtype, n_chans = s.value_dtype, s.info.n_chans
    value_size = dtype.itemsize * n_chans
    n = offsets.size
    values = np.empty((n, n_chans), dtype)
    stamps = np.zeros(n)
    block = max(1, (1 << 20) // max(value_size, 1))  # bounded index arrays
    cols = np.arange(value_size)
    for lo in range(0, n, block):
        off = offsets[lo : lo + block]
        st = stamped[lo : lo + block]
        starts = off + 1 + 8 * st
        values[lo : lo + block] = u8[starts[:, None] + cols].view(dtype).reshape(-1, n_chans)
        idx = np.flatnonzero(st)
        stamps[lo + idx] = u8[off[idx, None] + np.arange(1, 9)].view("<f8").ravel()
    return _fill_times(stamps, stamped, s.last_timestamp, s.tdiff), values


def _decode_numeric(buf: bytes, s: _RawStream, problems: list[str]) -> None:
    """Decode the Samples chunks of a numeric stream into ``s.times`` and ``s.values``.

    Chunks are read in groups of one layout: every sample with a timestamp (LabRecorder's and
    the project's writer's usual layout) or none, read in place as structured arrays; or
    mixed, located sample by sample and gathered. The final concatenation is the one copy.
    """
    n_chans = s.info.n_chans
    value_size = s.value_dtype.itemsize * n_chans
    with_ts = np.dtype([("f", "u1"), ("t", "<f8"), ("v", s.value_dtype, (n_chans,))])
    bare = np.dtype([("f", "u1"), ("v", s.value_dtype, (n_chans,))])
    ts_parts: list[np.ndarray] = []
    value_parts: list[np.ndarray] = []

    def add(stamps: np.ndarray, values: np.ndarray) -> None:
        if stamps.size:
            ts_parts.append(stamps)
            value_parts.append(values)
            s.last_timestamp = float(stamps[-1])

    def mixed(group: list[tuple[int, int, int, bool]]) -> None:
        offsets, stamped = [], []
        for pos, end, n, partial in group:
            try:
                off, st = _sample_offsets(buf, pos, end, n, value_size, partial=partial)
            except _Corrupt as exc:
                problems.append(
                    f"stream {s.info.name!r}: corrupt Samples chunk at byte {pos} ({exc}); "
                    f"its {n} samples are skipped"
                )
                continue
            offsets.append(off)
            stamped.append(st)
        if offsets:
            add(*_gather(buf, np.concatenate(offsets), np.concatenate(stamped), s))

    def uniform(group: list[tuple[int, int, int, bool]], layout: np.dtype) -> None:
        arrays = [np.frombuffer(buf, layout, count=n, offset=p) for p, _, n, _ in group]
        flags = np.concatenate([a["f"] for a in arrays])
        if not np.all(flags == (8 if layout is with_ts else 0)):
            mixed(group)  # a chunk lies about its layout: locate its samples one by one
            return
        values = np.concatenate([a["v"] for a in arrays])
        if layout is with_ts:
            stamps = np.concatenate([a["t"] for a in arrays])
        else:
            stamps = s.last_timestamp + s.tdiff * np.arange(1, values.shape[0] + 1)
        add(stamps, values)

    def flush(kind: str, group: list[tuple[int, int, int, bool]]) -> None:
        if kind == "stamped":
            uniform(group, with_ts)
        elif kind == "bare":
            uniform(group, bare)
        else:
            mixed(group)

    group: list[tuple[int, int, int, bool]] = []
    kind = "mixed"
    for part in s.parts:
        pos, end, n, partial = part
        size = end - pos
        if partial or n == 0:
            this = "mixed"
        elif size == n * with_ts.itemsize:
            this = "stamped"
        elif size == n * bare.itemsize:
            this = "bare"
        else:
            this = "mixed"
        if this != kind and group:
            flush(kind, group)
            group = []
        kind = this
        group.append(part)
    if group:
        flush(kind, group)
    if ts_parts:
        s.times = np.concatenate(ts_parts)
        s.values = np.concatenate(value_parts)
    else:
        s.times = np.empty(0)
        s.values = np.empty((0, n_chans), s.value_dtype)


def _string_samples(
    buf: bytes, pos: int, end: int, n: int, s: _RawStream, *, partial: bool
) -> tuple[np.ndarray, list[list[str]]]:
    if n > end - pos:  # every sample takes at least one byte
        if not partial:
            raise _Corrupt(f"chunk declares {n} samples in {end - pos} bytes")
        n = end - pos
    stamps = np.empty(n)
    values: list[list[str]] = []
    last = s.last_timestamp
    n_chans = s.info.n_chans
    try:
        for k in range(n):
            flag = buf[pos] if pos < end else -1
            if flag == 8:
                if pos + 9 > end:
                    raise EOFError
                t = struct.unpack_from("<d", buf, pos + 1)[0]
                pos += 9
            elif flag == 0:
                t = last + s.tdiff
                pos += 1
            elif flag == -1:
                raise EOFError
            else:
                raise _Corrupt(f"invalid timestamp flag {flag}")
            sample = []
            for _ in range(n_chans):
                length, pos = _varlen(buf, pos)
                if pos + length > end:
                    raise EOFError
                sample.append(buf[pos : pos + length].decode("utf-8", "replace"))
                pos += length
            last = t
            stamps[k] = t
            values.append(sample)
    except EOFError:
        if not partial:
            raise _Corrupt(f"chunk holds {len(values)} of the {n} samples it declares") from None
    return stamps[: len(values)], values


def _decode_strings(buf: bytes, s: _RawStream, problems: list[str]) -> None:
    ts_parts: list[np.ndarray] = []
    rows: list[list[str]] = []
    for pos, end, n, partial in s.parts:
        try:
            stamps, values = _string_samples(buf, pos, end, n, s, partial=partial)
        except (_Corrupt, EOFError, struct.error) as exc:
            problems.append(
                f"stream {s.info.name!r}: corrupt Samples chunk at byte {pos} ({exc}); "
                f"its {n} samples are skipped"
            )
            continue
        if len(stamps):
            s.last_timestamp = float(stamps[-1])
            ts_parts.append(stamps)
            rows.extend(values)
    s.times = np.concatenate(ts_parts) if ts_parts else np.empty(0)
    s.values = rows


def _decode(buf: bytes, s: _RawStream, problems: list[str]) -> None:
    """Decode every Samples chunk of ``s`` into ``s.times`` and ``s.values``."""
    if s.value_dtype is None:
        _decode_strings(buf, s, problems)
    else:
        _decode_numeric(buf, s, problems)


def _describe_read(streams: dict[int, _RawStream]) -> str:
    parts = []
    for s in streams.values():
        if s.n_read:
            last = float(s.times[-1])
            parts.append(f"{s.info.name!r} {s.n_read} samples (last at {last:.3f} s)")
        else:
            parts.append(f"{s.info.name!r} no samples")
    return "; ".join(parts) or "no streams"


def _read_xdf(path: Path, wanted: set[str] | None) -> tuple[list[_RawStream], list[str]]:
    """Parse every chunk of the file. Returns the streams in header order (all of them; the
    samples of streams not in ``wanted`` are skipped) and the names of every stream."""
    buf = _read_bytes(path)
    if buf[:4] != _MAGIC:
        raise FileFormatError(
            f"{path} is not an XDF file (it does not start with 'XDF:'); "
            "record with `bci-affect record` or LabRecorder, or convert with `bci-affect convert`"
        )
    streams: dict[int, _RawStream] = {}
    skipped: set[int] = set()
    problems: list[str] = []
    n = len(buf)
    pos = 4
    truncated_msg = None
    while pos < n:
        chunk_start = pos
        try:
            length, body = _varlen(buf, pos)
            if length < 2:
                raise _Corrupt(f"chunk length {length} at byte {chunk_start}")
            end = body + length
            if end > n:
                # Cut off, unless the length field itself is garbage and the file goes on.
                if buf.find(_BOUNDARY_UUID, body) >= 0:
                    raise _Corrupt(f"chunk at byte {chunk_start} claims {length} bytes")
                raise EOFError
            tag = struct.unpack_from("<H", buf, body)[0]
            if tag not in _TAG_NAMES:
                raise _Corrupt(f"unknown chunk tag {tag} at byte {chunk_start}")
            content = body + 2
            if tag in (_TAG_STREAM_HEADER, _TAG_SAMPLES, _TAG_CLOCK_OFFSET, _TAG_STREAM_FOOTER):
                if end - content < (20 if tag == _TAG_CLOCK_OFFSET else 4):
                    raise _Corrupt(f"{_TAG_NAMES[tag]} chunk at byte {chunk_start} is too short")
                stream_id = struct.unpack_from("<I", buf, content)[0]
                content += 4
                if tag == _TAG_STREAM_HEADER:
                    try:
                        info, dtype = _parse_stream_header(stream_id, buf[content:end])
                    except _Corrupt as exc:
                        problems.append(f"{exc}; its samples are skipped")
                        skipped.add(stream_id)
                    else:
                        streams[stream_id] = _RawStream(stream_id, info, dtype)
                elif stream_id in skipped:
                    pass
                elif stream_id not in streams:
                    raise _Corrupt(
                        f"{_TAG_NAMES[tag]} chunk at byte {chunk_start} for stream "
                        f"{stream_id}, which has no header"
                    )
                elif tag == _TAG_SAMPLES:
                    s = streams[stream_id]
                    if wanted is None or s.info.name in wanted:
                        count, first = _varlen(buf, content)
                        s.parts.append((first, end, count, False))
                elif tag == _TAG_CLOCK_OFFSET:
                    t, v = struct.unpack_from("<dd", buf, content)
                    streams[stream_id].clock_times.append(t)
                    streams[stream_id].clock_values.append(v)
                else:
                    streams[stream_id].has_footer = True
            pos = end
        except EOFError:
            truncated_msg = _truncation(buf, chunk_start, streams, wanted)
            break
        except (_Corrupt, struct.error) as exc:
            resume = buf.find(_BOUNDARY_UUID, chunk_start + 1)
            if resume < 0:
                problems.append(
                    f"corrupt data at byte {chunk_start} ({exc}); the remaining "
                    f"{n - chunk_start} bytes could not be read"
                )
                break
            problems.append(
                f"corrupt data at byte {chunk_start} ({exc}); skipped "
                f"{resume + len(_BOUNDARY_UUID) - chunk_start} bytes to the next boundary chunk"
            )
            pos = resume + len(_BOUNDARY_UUID)
    for s in streams.values():
        _decode(buf, s, problems)
    names = [s.info.name for s in streams.values()]
    if not streams:
        detail = f" ({problems[0]})" if problems else ""
        raise FileFormatError(
            f"{path} holds no readable XDF stream header{detail}; the file is empty, "
            "corrupt or was cut off before any stream was recorded"
        )
    if truncated_msg:
        _warn(f"{path} is truncated: {truncated_msg}; read: {_describe_read(streams)}")
    elif not any(s.has_footer for s in streams.values()):
        _warn(
            f"{path} is truncated: it ends at byte {n} without any stream footer (the "
            f"recorder stopped before closing the file); read: {_describe_read(streams)}"
        )
    for problem in problems:
        _warn(f"{path}: {problem}")
    return list(streams.values()), names


def _truncation(
    buf: bytes, chunk_start: int, streams: dict[int, _RawStream], wanted: set[str] | None
) -> str:
    """Describe where the file was cut off, salvaging the complete samples of a cut chunk."""
    n = len(buf)
    try:
        length, body = _varlen(buf, chunk_start)
        tag = struct.unpack_from("<H", buf, body)[0] if body + 2 <= n else None
    except (EOFError, _Corrupt):
        return f"it ends at byte {n} inside the length field of a chunk"
    what = _TAG_NAMES.get(tag, "unknown") if tag is not None else "unknown"
    msg = (
        f"it ends at byte {n}, inside a {what} chunk that starts at byte {chunk_start} and "
        f"declares {length} bytes ({n - body} present)"
    )
    if tag == _TAG_SAMPLES and body + 6 <= n:
        stream_id = struct.unpack_from("<I", buf, body + 2)[0]
        s = streams.get(stream_id)
        if s is not None and (wanted is None or s.info.name in wanted):
            try:
                count, first = _varlen(buf, body + 6)
            except (EOFError, _Corrupt):
                pass
            else:
                s.parts.append((first, n, count, True))
                msg += f"; the complete samples of {s.info.name!r} in it are kept"
    return msg


# --------------------------------------------------------------------------------------------
# clock synchronisation and dejittering (pure functions on arrays)


def _segment_glitches(diff: np.ndarray, thresh_stds: float, thresh_s: float) -> np.ndarray:
    shifted = diff - np.median(diff)
    mad = np.median(np.abs(shifted)) + np.finfo(float).eps
    return (np.abs(shifted / mad) > thresh_stds) & (np.abs(shifted) > thresh_s)


def clock_segments(clock_times: np.ndarray, clock_values: np.ndarray) -> list[tuple[int, int]]:
    """Split clock-offset measurements at clock resets.

    A reset is where the measurement time runs backwards, or where both the interval between
    measurements and the change of offset are outliers (more than 5 MADs and 5 s apart for
    the time, 10 MADs and 1 s for the value).

    Parameters
    ----------
    clock_times, clock_values : ndarray, shape (n_offsets,)
        When each offset was measured (seconds, sender clock) and the offset (seconds).

    Returns
    -------
    list of (int, int)
        Inclusive index ranges into the measurements, one per clock segment.
    """
    n = len(clock_times)
    if n <= 1:
        return [(0, max(n - 1, 0))]
    time_diff = np.diff(clock_times)
    value_diff = np.diff(clock_values)
    resets = (time_diff < 0) | (
        _segment_glitches(time_diff, _RESET_THRESHOLD_STDS, _RESET_THRESHOLD_S)
        & _segment_glitches(value_diff, _RESET_THRESHOLD_OFFSET_STDS, _RESET_THRESHOLD_OFFSET_S)
    )
    at = np.flatnonzero(resets)
    starts = np.concatenate(([0], at + 1))
    ends = np.concatenate((at, [n - 1]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def huber_line_fits(
    problems: Sequence[tuple[np.ndarray, np.ndarray]], threshold: float = _WINSOR_THRESHOLD_S
) -> list[tuple[float, float] | None]:
    """Robust fits ``values ≈ a + b * times`` with the Huber loss, as the XDF importers do.

    ADMM with rho = 1 and a fixed 1000 iterations, exactly the reference importers' solver;
    several problems (streams, clock segments) are solved together in one padded batch, which
    gives each the same result as alone.

    Parameters
    ----------
    problems : sequence of (times, values)
        Each a pair of arrays of shape (n,), in seconds, ``n >= 2``.
    threshold : float
        Residuals beyond this many seconds count linearly rather than quadratically.

    Returns
    -------
    list of (a, b) or None
        Intercept (seconds) and slope per problem; ``None`` where the times do not determine
        a line (all equal).
    """
    m = len(problems)
    if m == 0:
        return []
    n_max = max(len(t) for t, _ in problems)
    A = np.zeros((m, n_max, 2))  # padded rows stay zero and never move the fit
    y = np.zeros((m, n_max))
    origins = np.zeros(m)
    for i, (t, v) in enumerate(problems):
        x = np.asarray(t, dtype=np.float64) / threshold
        origins[i] = x.min()
        A[i, : x.size, 0] = 1.0
        A[i, : x.size, 1] = x - origins[i]
        y[i, : x.size] = np.asarray(v, dtype=np.float64) / threshold
    At = A.transpose(0, 2, 1)
    AtA = At @ A
    ok = np.ones(m, bool)
    for i in range(m):
        try:
            np.linalg.cholesky(AtA[i])
        except np.linalg.LinAlgError:
            ok[i] = False
            AtA[i] = np.eye(2)
    P = np.linalg.solve(AtA, At)  # (m, 2, n_max)
    q = P @ y[:, :, None]  # (m, 2, 1)
    # With w = z - u, the reference update z = d/2 + d/2 * max(0, 1 - 2/|d|) is
    # z = d - clip(d/2, -1, 1): u = clip(d/2, -1, 1) and w = d - 2u.
    u = np.zeros((m, n_max, 1))
    w = np.zeros((m, n_max, 1))
    y3 = y[:, :, None]
    coef = q
    for _ in range(_HUBER_ITERATIONS):
        coef = q + P @ w
        d = A @ coef
        d -= y3
        d += u
        u = np.maximum(np.minimum(d * 0.5, 1.0), -1.0)
        w = d - 2.0 * u
    out: list[tuple[float, float] | None] = []
    for i in range(m):
        if not ok[i]:
            out.append(None)
            continue
        slope = float(coef[i, 1, 0])
        out.append((float(coef[i, 0, 0] - slope * origins[i]) * threshold, slope))
    return out


def huber_line_fit(
    times: np.ndarray, values: np.ndarray, threshold: float = _WINSOR_THRESHOLD_S
) -> tuple[float, float]:
    """One robust line fit (see :func:`huber_line_fits`): ``(intercept_s, slope)``.

    Raises
    ------
    numpy.linalg.LinAlgError
        When the times do not determine a line.
    """
    (fit,) = huber_line_fits([(times, values)], threshold)
    if fit is None:
        raise np.linalg.LinAlgError("clock offset times do not determine a line")
    return fit


def synchronize_streams(
    streams: Sequence[tuple[np.ndarray, Sequence[float], Sequence[float]]],
    *,
    handle_clock_resets: bool = True,
    names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Map each stream's timestamps from its sender's clock onto the recorder's clock.

    Parameters
    ----------
    streams : sequence of (times, clock_times, clock_values)
        Per stream: timestamps as recorded (seconds, sender clock, recording order) and its
        ``ClockOffset`` measurements (when, and the offset to add). A stream without
        measurements keeps its timestamps.
    handle_clock_resets : bool
        Fit each clock segment separately (see :func:`clock_segments`).
    names : sequence of str, optional
        Stream names for messages.

    Returns
    -------
    list of ndarray
        Corrected timestamps per stream (new arrays).
    """
    names = list(names) if names is not None else [f"stream {i}" for i in range(len(streams))]
    plans = []  # per stream: (times, clock_times, ranges, first problem index)
    problems: list[tuple[np.ndarray, np.ndarray]] = []
    for times, clock_times, clock_values in streams:
        out = np.array(times, dtype=np.float64)
        ct = np.asarray(clock_times, dtype=np.float64)
        cv = np.asarray(clock_values, dtype=np.float64)
        if out.size == 0 or ct.size == 0:
            plans.append((out, ct, cv, [], 0))
            continue
        ranges = clock_segments(ct, cv) if handle_clock_resets else [(0, ct.size - 1)]
        plans.append((out, ct, cv, ranges, len(problems)))
        problems += [(ct[lo : hi + 1], cv[lo : hi + 1]) for lo, hi in ranges if lo != hi]
    fits = huber_line_fits(problems)
    results = []
    for (out, ct, cv, ranges, k), name in zip(plans, names, strict=True):
        coefs = []
        for lo, hi in ranges:
            if lo == hi:
                coefs.append((float(cv[lo]), 0.0))
                continue
            fit, k = fits[k], k + 1
            if fit is None:
                _warn(
                    f"stream {name!r}: clock offsets {lo}..{hi} do not determine a line; "
                    "timestamps of that segment are left uncorrected"
                )
                fit = (0.0, 0.0)
            coefs.append(fit)
        results.append(_apply_offsets(out, ct, ranges, coefs, name))
    return results


def _apply_offsets(
    out: np.ndarray,
    ct: np.ndarray,
    ranges: list[tuple[int, int]],
    coefs: list[tuple[float, float]],
    name: str,
) -> np.ndarray:
    if not ranges:
        return out
    if len(ranges) == 1:
        a, b = coefs[0]
        return out + (a + b * out)
    logger.info("stream %r: %d clock resets", name, len(ranges) - 1)
    start = 0
    for (a, b), (_, hi) in zip(coefs, ranges, strict=True):
        if hi + 1 < len(ct):
            # The segment ends at the first sample closer to the next segment's first
            # offset measurement than to this segment's last one.
            rest = out[start:]
            closer_here = np.abs(rest - ct[hi]) < np.abs(rest - ct[hi + 1])
            stop = start + (len(rest) if closer_here.all() else int(np.argmin(closer_here)))
        else:
            stop = len(out)
        if stop > start:
            out[start:stop] += a + b * out[start:stop]
        start = stop
    return out


def synchronize(
    times: np.ndarray,
    clock_times: Sequence[float],
    clock_values: Sequence[float],
    *,
    handle_clock_resets: bool = True,
    name: str = "",
) -> np.ndarray:
    """:func:`synchronize_streams` for one stream: corrected timestamps, shape (n_times,)."""
    (out,) = synchronize_streams(
        [(times, clock_times, clock_values)],
        handle_clock_resets=handle_clock_resets,
        names=[name],
    )
    return out


def dejitter(times: np.ndarray, sfreq: float) -> np.ndarray:
    """Regularise the timestamps of a regularly sampled stream.

    Each segment between breaks (steps longer than 1 s and than 500 samples) gets timestamps
    from a least-squares line of timestamp against sample index.

    Parameters
    ----------
    times : ndarray, shape (n_times,)
        Seconds.
    sfreq : float
        Nominal rate in Hz; irregular streams (0) are returned unchanged.

    Returns
    -------
    ndarray, shape (n_times,)
    """
    out = np.array(times, dtype=np.float64)
    if sfreq <= 0 or out.size < 2:
        return out
    threshold = max(_JITTER_BREAK_S, _JITTER_BREAK_SAMPLES / sfreq)
    breaks = np.flatnonzero(np.abs(np.diff(out)) > threshold)
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks + 1, [out.size]))
    for lo, hi in zip(starts, stops, strict=True):
        if hi - lo < 2:
            continue
        idx = np.arange(hi - lo, dtype=np.float64)
        seg = out[lo:hi]
        mi, mt = idx.mean(), seg.mean()
        slope = np.dot(idx - mi, seg - mt) / np.dot(idx - mi, idx - mi)
        out[lo:hi] = mt + slope * (idx - mi)
    return out


# --------------------------------------------------------------------------------------------
# whole streams


def _finish(
    raws: list[_RawStream],
    *,
    synchronize_clocks: bool,
    handle_clock_resets: bool,
    dejitter_: bool,
) -> list[Chunk]:
    """Whole chunks from decoded streams: clock offsets applied, optionally dejittered."""
    times = [r.times if r.times is not None else np.empty(0) for r in raws]
    if synchronize_clocks:
        times = synchronize_streams(
            [(t, r.clock_times, r.clock_values) for t, r in zip(times, raws, strict=True)],
            handle_clock_resets=handle_clock_resets,
            names=[r.info.name for r in raws],
        )
    chunks = []
    for raw, t in zip(raws, times, strict=True):
        info = raw.info
        if raw.value_dtype is None:
            rows = raw.values or []
            data = np.empty((len(rows), info.n_chans), dtype=object)
            if rows:
                data[:] = rows
            data = data.T
        else:
            # (n_times, n_chans) C-ordered -> (n_chans, n_times) view, no transposing copy.
            data = np.asarray(raw.values).T
        if dejitter_:
            t = dejitter(t, info.sfreq)
        chunks.append(Chunk(data, t, info))
    return chunks


def _check(chunk: Chunk, path: Path) -> None:
    """Warn about NaNs and timestamps that run backwards."""
    if chunk.n_times == 0:
        return
    if chunk.data.dtype.kind == "f":
        nan = np.isnan(chunk.data)
        n_nan = int(np.count_nonzero(nan))
        if n_nan:
            per_ch = nan.sum(axis=1)
            chans = ", ".join(
                f"{chunk.ch_names[i]} ({per_ch[i]})" for i in np.flatnonzero(per_ch)[:8]
            )
            first = float(chunk.times[int(np.flatnonzero(nan.any(axis=0))[0])])
            _warn(
                f"{path}: stream {chunk.name!r} has {n_nan} NaN values in "
                f"{int(nan.any(axis=0).sum())} of {chunk.n_times} samples (first at "
                f"{first:.3f} s; per channel: {chans}); they are kept as NaN"
            )
    # Marker streams may stamp events retroactively (a rating about the seconds before it).
    back = np.flatnonzero(np.diff(chunk.times) < 0) if not chunk.info.is_string else ()
    if len(back):
        i = int(back[0])
        _warn(
            f"{path}: stream {chunk.name!r} has {back.size} timestamps earlier than the one "
            f"before (first at sample {i + 1}: {chunk.times[i]:.6f} -> "
            f"{chunk.times[i + 1]:.6f} s); samples keep their recorded order"
        )


def _unique_names(chunks: list[Chunk], path: Path) -> list[Chunk]:
    """Rename repeated stream names (``EEG``, ``EEG #2``) so streams stay distinguishable."""
    seen: dict[str, int] = {}
    out = []
    for c in chunks:
        k = seen.get(c.name, 0) + 1
        seen[c.name] = k
        if k > 1:
            new = f"{c.name} #{k}"
            _warn(f"{path}: two streams are named {c.name!r}; the later one is read as {new!r}")
            info = StreamInfo(
                new,
                c.info.type,
                c.info.sfreq,
                c.info.ch_names,
                c.info.units,
                c.info.source_id,
                c.info.channel_format,
                dict(c.info.desc),
            )
            c = Chunk(c.data, c.times, info)
        out.append(c)
    return out


def _load(
    path: str | os.PathLike,
    streams: Iterable[str] | None,
    *,
    synchronize_clocks: bool,
    handle_clock_resets: bool,
    dejitter_: bool,
) -> list[Chunk]:
    path = Path(path)
    wanted = None if streams is None else set(streams)
    if wanted is not None and not wanted:
        raise ConfigError("streams=[] selects nothing; pass None for every stream")
    raw, _ = _read_xdf(path, wanted)
    chunks = _finish(
        raw,
        synchronize_clocks=synchronize_clocks,
        handle_clock_resets=handle_clock_resets,
        dejitter_=dejitter_,
    )
    chunks = _unique_names(chunks, path)
    if wanted is not None:
        names = {c.name for c in chunks}
        missing = sorted(wanted - names)
        if missing:
            have = ", ".join(
                f"{c.name!r} (type {c.info.type!r}, {c.info.n_chans} ch, {c.sfreq:g} Hz)"
                for c in chunks
            )
            raise StreamNotFoundError(
                f"{path} has no stream named {', '.join(map(repr, missing))}; available: {have}"
            )
        chunks = [c for c in chunks if c.name in wanted]
    for c in chunks:
        _check(c, path)
    return chunks


def load_xdf(
    path: str | os.PathLike,
    *,
    streams: Iterable[str] | None = None,
    synchronize_clocks: bool = True,
    handle_clock_resets: bool = True,
    dejitter: bool = False,
) -> list[Chunk]:
    """Load every stream of an XDF file, each as one whole chunk.

    Parameters
    ----------
    path : str or Path
        ``.xdf`` file (``.xdfz`` / ``.xdf.gz``: gzip-compressed).
    streams : iterable of str, optional
        Names of the streams to load (default: all).
    synchronize_clocks : bool
        Apply the recorded clock offsets (timestamps on the recorder's LSL clock).
    handle_clock_resets : bool
        Fit clock offsets per clock segment when a sender's clock was reset.
    dejitter : bool
        Replace timestamps of regular streams by a linear fit (default off: keep the
        recorded timestamps).

    Returns
    -------
    list of Chunk
        In the file's stream order. ``data`` is ``(n_chans, n_times)`` in the stream's
        ``channel_format`` (``object`` arrays of ``str`` for string streams); ``times`` in
        seconds. Streams without samples come as empty chunks.

    Raises
    ------
    FileFormatError
        The file is missing, not XDF, or holds no readable stream.
    StreamNotFoundError
        A name in ``streams`` is not in the file (the message lists those that are).

    Warns
    -----
    RecordingWarning
        Truncated or corrupt file (what was read), NaN values, timestamps running backwards.
    """
    return _load(
        path,
        streams,
        synchronize_clocks=synchronize_clocks,
        handle_clock_resets=handle_clock_resets,
        dejitter_=dejitter,
    )


@overload
def select_eeg(
    streams: Sequence[Chunk], name: str | None = ..., type: str | None = ...
) -> Chunk: ...
@overload
def select_eeg(
    streams: Sequence[StreamInfo], name: str | None = ..., type: str | None = ...
) -> StreamInfo: ...
def select_eeg(streams, name=None, type="EEG"):  # noqa: A002  (LSL's field name)
    """Pick the EEG stream of a recording.

    Parameters
    ----------
    streams : sequence of Chunk or of StreamInfo
        E.g. the result of :func:`load_xdf`, or ``source.streams``.
    name : str, optional
        Stream name to match exactly.
    type : str, optional
        Stream type to match (case-insensitive); ``None`` matches any.

    Returns
    -------
    Chunk or StreamInfo
        The first match, of the kind given.

    Raises
    ------
    StreamNotFoundError
        When nothing matches, or the match holds strings; the message lists every stream.
    """
    items = list(streams)
    infos = [s.info if isinstance(s, Chunk) else s for s in items]
    numeric = [i for i in infos if not i.is_string]
    try:
        picked = pick_stream(numeric, name=name, type=type)
    except StreamNotFoundError:
        have = ", ".join(
            f"{i.name!r} (type {i.type!r}, {i.n_chans} ch, {i.sfreq:g} Hz, {i.channel_format})"
            for i in infos
        )
        want = " and ".join(
            f"{k} {v!r}" for k, v in (("name", name), ("type", type)) if v is not None
        )
        raise StreamNotFoundError(
            f"no numeric stream with {want or 'any name'}; the recording has: {have or 'none'}"
            "; choose one by name"
        ) from None
    return items[infos.index(picked)]


# --------------------------------------------------------------------------------------------
# the source


def _window_bounds(times: np.ndarray, t0: float, chunk_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Window index and sample boundaries of each non-empty ``chunk_s`` window of a stream."""
    mono = times if np.all(np.diff(times) >= 0) else np.maximum.accumulate(times)
    k = np.floor((mono - t0) / chunk_s).astype(np.int64)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(k)) + 1))
    return k[starts], np.concatenate((starts, [times.size]))


class XdfSource:
    """Replay an XDF recording as a :class:`~bci_affect.core.source.Source`, as fast as the
    consumer reads.

    Chunks cover ``chunk_s`` seconds of recording; windows are aligned across streams
    (``[t0 + k*chunk_s, t0 + (k+1)*chunk_s)`` with ``t0`` the earliest sample of the file),
    and are yielded window by window, and within a window by the time of their first sample,
    so the chunks of all streams arrive in time order. Timestamps are the file's (after clock
    synchronisation). Streams without samples appear in :attr:`streams` but yield nothing.

    The whole file is read (into memory) when the source is opened; chunks are views of it.
    The source can be iterated more than once (each pass starts at the beginning).

    Parameters
    ----------
    path : str or Path
        The XDF file.
    streams : iterable of str, optional
        Names of the streams to replay (default: all).
    chunk_s : float
        Seconds of recording per chunk (> 0).
    synchronize_clocks, handle_clock_resets, dejitter : bool
        As in :func:`load_xdf`.

    Examples
    --------
    >>> with XdfSource("session.xdf") as source:      # doctest: +SKIP
    ...     for chunk in source:
    ...         process(chunk)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        streams: Iterable[str] | None = None,
        chunk_s: float = 0.1,
        synchronize_clocks: bool = True,
        handle_clock_resets: bool = True,
        dejitter: bool = False,
    ) -> None:
        chunk_s = float(chunk_s)
        if not np.isfinite(chunk_s) or chunk_s <= 0:
            raise ConfigError(f"chunk_s must be a positive number of seconds, got {chunk_s}")
        self.path = Path(path)
        self.chunk_s = chunk_s
        self._wanted = None if streams is None else list(streams)
        self._options = dict(
            synchronize_clocks=synchronize_clocks,
            handle_clock_resets=handle_clock_resets,
            dejitter_=dejitter,
        )
        self._chunks: list[Chunk] | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"XdfSource({str(self.path)!r}, chunk_s={self.chunk_s})"

    # -- Source protocol -------------------------------------------------------------------

    @property
    def streams(self) -> list[StreamInfo]:
        """Every stream replayed (read from the file on first access)."""
        return [c.info for c in self.load()]

    def __enter__(self) -> XdfSource:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._chunks = None

    def stop(self) -> None:
        """End the current iteration after the chunk being yielded (thread-safe)."""
        self._stopped = True

    def __iter__(self) -> Iterator[Chunk]:
        chunks = self.load()
        self._stopped = False
        return self._iterate(chunks)

    # -- extras ----------------------------------------------------------------------------

    def load(self) -> list[Chunk]:
        """One whole chunk per stream (cached)."""
        if self._chunks is None:
            self._chunks = _load(self.path, self._wanted, **self._options)
        return self._chunks

    @property
    def t_first(self) -> float | None:
        """Earliest timestamp of the recording (seconds), ``None`` when it holds no sample."""
        firsts = [float(c.times.min()) for c in self.load() if c.n_times]
        return min(firsts) if firsts else None

    @property
    def t_last(self) -> float | None:
        """Latest timestamp of the recording (seconds), ``None`` when it holds no sample."""
        lasts = [float(c.times.max()) for c in self.load() if c.n_times]
        return max(lasts) if lasts else None

    def _iterate(self, chunks: list[Chunk]) -> Iterator[Chunk]:
        t0 = self.t_first
        if t0 is None:
            return

        def windows(i: int, whole: Chunk) -> Iterator[tuple[int, float, int, int, int]]:
            ks, bounds = _window_bounds(whole.times, t0, self.chunk_s)
            firsts = whole.times[bounds[:-1]]
            for j in range(ks.size):
                yield int(ks[j]), float(firsts[j]), i, int(bounds[j]), int(bounds[j + 1])

        merged = heapq.merge(*(windows(i, c) for i, c in enumerate(chunks) if c.n_times))
        for _, _, i, lo, hi in merged:
            if self._stopped:
                return
            whole = chunks[i]
            yield Chunk(whole.data[:, lo:hi], whole.times[lo:hi], whole.info)
