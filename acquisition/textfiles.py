"""Sources that read EEG text files: OpenBCI GUI recordings and BrainFlow CSV files.

Both read the whole file when opened and then yield chunks of ``chunk_s`` seconds, in time
order, exactly like a live source. The streams are those of the live BrainFlow source
(:mod:`acquisition.brainflow_source`), so a converted file and a live session of the same
board look the same to the pipeline:

``EEG`` (type ``EEG``, microvolts, ``double64`` so the file's values survive unchanged)
    One channel per electrode. Labels: the ``montage`` argument when given (a sequence of
    labels or one comma-separated string); otherwise BrainFlow's default electrode names for
    the board when it has them (Cyton: Fp1, Fp2, C3, C4, P7, P8, O1, O2; Cyton-Daisy adds F7,
    F8, F3, F4, T7, T8, P3, P4); otherwise ``EEG1, EEG2, ...`` (an OpenBCI GUI file's ``EXG
    Channel 0`` is ``EEG1``). ``desc["montage"]`` says which applied: ``given``,
    ``board-default`` or ``generic``.
``EEG-accel`` (type ``Accelerometer``, g)
    ``AccX, AccY, AccZ`` at the EEG rate, when the file has accelerometer columns that are not
    all zero (the GUI repeats the 25 Hz accelerometer values, BrainFlow writes zeros between
    updates: both are kept as recorded).
``Markers`` (type ``Markers``, string)
    One JSON sample ``{"event": "marker", "value": v}`` per non-zero value of the marker
    column (GUI markers, BrainFlow ``insert_marker``), when there are any.
``EEG-events`` (type ``Markers``, string; always listed, empty when nothing was dropped)
    ``{"event": "dropped_samples", "stream": "EEG", "n": n, "t": t}`` for each gap of the
    board's sample counter, stamped at ``t``, the time the first missing sample should have
    had.

Timestamps are seconds since the Unix epoch on the clock of the computer that recorded the
file (files carry no LSL clock). Every row gets a position from the board's sample counter:
wrapping counters (Cyton's 0..255) are unwrapped, a gap in the counter advances the position
by the number of missing samples, and a loss of whole counter cycles is recognised from the
file's timestamps. Those timestamps (stamped on arrival, in bursts) are then fitted by a
straight line against the positions, so the times increase strictly, are evenly spaced at the
rate the recording computer measured (within 10 % of nominal, else at the nominal rate) and
skip exactly the dropped samples. A file without timestamps gets ``position / sfreq`` from 0 s.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, FileFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "BrainFlowCsvSource",
    "OpenBciTextSource",
    "regularise_times",
    "resolve_board",
    "sniff_format",
]

#: Suffix of the accelerometer stream's name and its channel labels (as the live BrainFlow
#: source names them, so converted files and live sessions look the same).
ACCEL_SUFFIX = "-accel"
ACCEL_LABELS = ("AccX", "AccY", "AccZ")

#: OpenBCI GUI ``%Board = OpenBCI_GUI$Board...`` names -> BrainFlow board names (first match).
_GUI_BOARDS = (
    ("daisy", "CYTON_DAISY_BOARD"),
    ("cyton", "CYTON_BOARD"),
    ("ganglion", "GANGLION_BOARD"),
    ("synthetic", "SYNTHETIC_BOARD"),
    ("galea", "GALEA_BOARD"),
)


# --------------------------------------------------------------------------------------------
# pure helpers


def _unwrap_counter(counter: np.ndarray, path: Path) -> tuple[np.ndarray, int | None, int]:
    """Samples elapsed between consecutive counter values.

    The counter's increment per sample (``step``: 1, or 2 on Cyton-Daisy) is the most common
    positive difference; a counter that ever goes down wraps, with modulus ``max - min +
    step`` (256 on Cyton and the synthetic board, 100 for Ganglion's 1..100). A repeated value
    counts as one sample (Ganglion sends two samples per counter value).

    Returns ``(steps, modulus, step)``: ``steps[i] >= 1`` samples from sample ``i`` to
    ``i + 1``, the modulus (``None`` when the counter never wraps) and the step.
    """
    diffs = np.diff(counter)
    forward = diffs[diffs > 0]
    step = 1
    if forward.size:
        values, counts = np.unique(forward, return_counts=True)
        step = int(values[np.argmax(counts)])
    modulus = None
    if np.any(diffs < 0):
        modulus = int(counter.max() - counter.min()) + step
        diffs = diffs % modulus
    irregular = np.count_nonzero(diffs % step) if step > 1 else 0
    if diffs.size and irregular > 0.1 * diffs.size:
        logger.warning(
            "%s: the sample counter does not advance regularly; dropped samples are not "
            "detected in this file",
            path,
        )
        return np.ones(diffs.shape, dtype=np.int64), modulus, step
    steps = np.maximum(np.rint(diffs / step).astype(np.int64), 1)
    n_repeat = int(np.count_nonzero(diffs == 0))
    if n_repeat:
        logger.info("%s: %d repeated sample-counter values (counted as 1 sample)", path, n_repeat)
    return steps, modulus, step


def _add_lost_cycles(
    pos: np.ndarray, unix_s: np.ndarray, sfreq: float, cycle: int, window: int
) -> np.ndarray:
    """Add whole counter cycles where the timestamps show more time lost than the counter.

    Samples arrive late, never early, so the smallest ``unix_s - pos / sfreq`` over a few
    seconds is a robust estimate of the clock offset; a gap that lost ``k`` full cycles raises
    it by ``k * cycle / sfreq``. A burst after a stall only raises the residuals of the burst.
    """
    period = cycle / sfreq
    pos = pos.copy()
    for k in np.flatnonzero(np.diff(unix_s) > 0.5 * period):
        lo, hi = max(0, k + 1 - window), min(pos.size, k + 1 + window)
        before = np.min(unix_s[lo : k + 1] - pos[lo : k + 1] / sfreq)
        after = np.min(unix_s[k + 1 : hi] - pos[k + 1 : hi] / sfreq)
        n_cycles = int(np.rint((after - before) / period))
        if n_cycles > 0:
            pos[k + 1 :] += n_cycles * cycle
    return pos


def _fit_line(x: np.ndarray, y: np.ndarray, n_iter: int = 3) -> tuple[float, float]:
    """Least-squares line ``y = intercept + slope * x`` that ignores late outliers.

    Arrival times are late in bursts (a stalled radio link, a busy computer), never early:
    points more than 4 robust standard deviations above the line are left out and the line
    refitted, a few times.
    """
    keep = np.ones(x.shape, dtype=bool)
    slope, intercept = np.polyfit(x, y, 1)
    for _ in range(n_iter):
        resid = y - (intercept + slope * x)
        med = np.median(resid[keep])
        mad = 1.4826 * np.median(np.abs(resid[keep] - med)) + 1e-9
        new_keep = resid <= med + 4.0 * mad
        if new_keep.sum() < 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
    return float(slope), float(intercept)


def regularise_times(
    counter: np.ndarray | None,
    unix_s: np.ndarray | None,
    sfreq: float,
    *,
    path: str | os.PathLike = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Sample times and positions from a board's sample counter and arrival timestamps.

    Parameters
    ----------
    counter : ndarray of int, shape (n_times,), optional
        The board's sample counter (may wrap, e.g. 0..255); ``None`` when the file has none.
    unix_s : ndarray of float, shape (n_times,), optional
        Arrival time of each sample, seconds since the Unix epoch; ``None`` when absent.
    sfreq : float
        Nominal sample rate in Hz.
    path : str, optional
        The file, for log messages.

    Returns
    -------
    times : ndarray of float64, shape (n_times,)
        Seconds: ``a + b * position`` with ``a, b`` the least-squares fit of ``unix_s`` (when
        given, and when the fitted rate is within 10 % of ``sfreq``), else
        ``position / sfreq`` (plus the median offset of ``unix_s`` when given). The fit
        leaves out samples that arrived late in bursts (more than 4 robust standard
        deviations above the line).
    positions : ndarray of int64, shape (n_times,)
        Sample number of each row counted from the first, dropped samples included.
    """
    path = Path(path)
    n = 0 if counter is None else len(counter)
    n = n or (0 if unix_s is None else len(unix_s))
    if n == 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    if counter is not None and n > 1:
        steps, modulus, step = _unwrap_counter(np.asarray(counter, dtype=np.int64), path)
        pos = np.concatenate([[0], np.cumsum(steps)])
        if modulus is not None and unix_s is not None:
            window = max(int(5 * sfreq), 1)
            pos = _add_lost_cycles(pos, unix_s, sfreq, max(modulus // step, 1), window)
    else:
        pos = np.arange(n, dtype=np.int64)
    if unix_s is None:
        return pos / sfreq, pos
    t0 = float(unix_s[0])
    rel = unix_s - t0
    if n > 1 and pos[-1] > 0:
        slope, intercept = _fit_line(pos.astype(np.float64), rel)
        if slope > 0 and abs(1.0 / (slope * sfreq) - 1.0) <= 0.1:
            return t0 + intercept + slope * pos, pos
        logger.warning(
            "%s: the file's timestamps run at %.4g Hz but the nominal rate is %g Hz; times "
            "follow the nominal rate (pass the right sfreq if the board was reconfigured)",
            path,
            1.0 / slope if slope > 0 else float("nan"),
            sfreq,
        )
    offset = float(np.median(rel - pos / sfreq))
    return t0 + offset + pos / sfreq, pos


def sniff_format(path: str | os.PathLike) -> str | None:
    """``"xdf"``, ``"openbci"`` (OpenBCI GUI text), ``"brainflow"`` (BrainFlow CSV) or
    ``None``, from the first bytes of the file (the extension is not trusted: the GUI writes
    ``.txt`` and ``.csv``, BrainFlow any name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"XDF:"):
        return "xdf"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if first.startswith("%") or first.lower().startswith("sample index"):
        return "openbci"
    if "\t" in first and re.fullmatch(r"[-+0-9.eE\tnaNinf ]+", first):
        return "brainflow"
    return None


def _board_shim():
    """``brainflow.board_shim``, imported on first use (its pkg_resources warning muted)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        from brainflow import board_shim  # noqa: PLC0415

    return board_shim


def _board_descr(board_id: int) -> dict:
    """BrainFlow's description of a board (its rows, rate, default EEG names)."""
    shim = _board_shim()
    with warnings.catch_warnings():  # the native library loads on first call
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        return shim.BoardShim.get_board_descr(board_id)


def resolve_board(board: str | int) -> tuple[int, str]:
    """BrainFlow board id and name from ``"cyton"``, ``"cyton_daisy"``, ``"synthetic"``,
    ``"SYNTHETIC_BOARD"``, ``"-1"`` or an int.

    Raises
    ------
    ConfigError
        Unknown board; the message lists the names accepted.
    """
    BoardIds = _board_shim().BoardIds  # noqa: N806

    if isinstance(board, int) or (isinstance(board, str) and re.fullmatch(r"-?\d+", board)):
        try:
            member = BoardIds(int(board))
        except ValueError:
            member = None
    else:
        key = str(board).strip().upper().replace("-", "_")
        member = BoardIds.__members__.get(key) or BoardIds.__members__.get(key + "_BOARD")
    if member is None or member.name in ("NO_BOARD", "PLAYBACK_FILE_BOARD", "STREAMING_BOARD"):
        names = ", ".join(
            m.name.removesuffix("_BOARD").lower()
            for m in BoardIds
            if m.name not in ("NO_BOARD", "PLAYBACK_FILE_BOARD", "STREAMING_BOARD")
        )
        raise ConfigError(f"unknown BrainFlow board {board!r}; valid: {names}")
    return int(member.value), member.name


def _eeg_labels(
    montage: Sequence[str] | str | None, n_chans: int, default_names: str | None
) -> tuple[tuple[str, ...], str]:
    """EEG channel labels and where they came from (``given``, ``board-default``, ``generic``)."""
    if montage is not None:
        labels = montage.split(",") if isinstance(montage, str) else list(montage)
        labels = [str(x).strip() for x in labels]
        if len(labels) != n_chans or not all(labels):
            raise ConfigError(
                f"montage gives {len(labels)} labels ({', '.join(labels)}) but the file has "
                f"{n_chans} EEG channels; give exactly {n_chans} non-empty labels"
            )
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"montage repeats the labels {', '.join(dup)}")
        return tuple(labels), "given"
    if default_names:
        names = [x.strip() for x in default_names.split(",")]
        if len(names) == n_chans:
            return tuple(names), "board-default"
    return tuple(f"EEG{i + 1}" for i in range(n_chans)), "generic"


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path}: is a folder, not a recording file") from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not raw.strip():
        raise FileFormatError(f"{path}: the file is empty")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise FileFormatError(f"{path}, line {line}: binary data (NUL bytes); not a text file")
    try:
        return raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FileFormatError(
            f"{path}, line {line}: not UTF-8/ASCII text (byte 0x{raw[exc.start]:02x})"
        ) from None


@dataclass
class _Table:
    """The numeric columns of a delimited text file, with file line numbers per row."""

    values: np.ndarray  # (n_rows, n_used) float64
    line_numbers: np.ndarray  # (n_rows,) 1-based
    names: list[str] = field(default_factory=list)  # one per used column


def _parse_table(
    path: Path,
    lines: list[str],
    first_line_no: int,
    *,
    delimiter: str,
    n_columns: int,
    usecols: Sequence[int],
    col_names: Sequence[str],
    what: str,
) -> _Table:
    """Parse data lines into floats with clear errors (file, line, column) for bad input."""
    line_no = np.arange(first_line_no, first_line_no + len(lines))
    keep = np.array([bool(ln.strip()) for ln in lines], dtype=bool)
    lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
    line_no = line_no[keep]
    if not lines:
        raise FileFormatError(f"{path}: no data rows after the header")
    n_fields = np.fromiter((ln.count(delimiter) + 1 for ln in lines), dtype=np.int64)
    bad = np.flatnonzero(n_fields != n_columns)
    if bad.size == 1 and bad[0] == len(lines) - 1 and n_fields[-1] < n_columns:
        logger.warning(
            "%s, line %d: last row is cut short (%d of %d values, the recording stopped "
            "mid-write); it is left out",
            path,
            line_no[-1],
            n_fields[-1],
            n_columns,
        )
        lines, line_no = lines[:-1], line_no[:-1]
    elif bad.size:
        i = bad[0]
        raise FileFormatError(
            f"{path}, line {line_no[i]}: {n_fields[i]} values, expected {n_columns} ({what})"
        )
    if not lines:
        raise FileFormatError(f"{path}: no complete data rows")
    usecols = list(usecols)
    try:
        values = np.loadtxt(
            io.StringIO("\n".join(lines)),
            delimiter=delimiter,
            usecols=usecols,
            dtype=np.float64,
            ndmin=2,
            comments=None,
        )
    except ValueError:
        values = None
    if values is None or values.shape != (len(lines), len(usecols)):
        for row, ln in enumerate(lines):
            fields = ln.split(delimiter)
            for c, name in zip(usecols, col_names, strict=True):
                try:
                    float(fields[c])
                except ValueError:
                    raise FileFormatError(
                        f"{path}, line {line_no[row]}: value {fields[c].strip()!r} in column "
                        f"{c + 1} ({name}) is not a number"
                    ) from None
        raise FileFormatError(f"{path}: could not parse the data rows ({what})")
    nan = ~np.isfinite(values)
    if nan.any():
        row, c = np.argwhere(nan)[0]
        raise FileFormatError(
            f"{path}, line {line_no[row]}: column {usecols[c] + 1} ({col_names[c]}) is "
            f"{lines[row].split(delimiter)[usecols[c]].strip()!r}; the file must hold finite "
            "numbers only"
        )
    return _Table(values, line_no, list(col_names))


# --------------------------------------------------------------------------------------------
# the sources


@dataclass
class _Recording:
    """What a text file holds, in memory (float64 arrays, time on the last axis)."""

    sfreq: float
    eeg: np.ndarray  # (n_chans, n_times) µV
    counter: np.ndarray | None
    unix_s: np.ndarray | None
    accel: np.ndarray | None  # (3, n_times) g
    marker: np.ndarray | None  # (n_times,)
    board_name: str
    default_names: str | None
    source_id: str
    desc: dict


class _TextFileSource:
    """Shared machinery: parse once on open, then yield time-ordered chunks."""

    manufacturer = ""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        chunk_s: float = 0.1,
        montage: Sequence[str] | str | None = None,
        sfreq: float | None = None,
        name: str = "EEG",
    ) -> None:
        self.path = Path(path)
        if not chunk_s > 0:
            raise ConfigError(f"chunk_s must be > 0 seconds, got {chunk_s}")
        if sfreq is not None and not (np.isfinite(sfreq) and sfreq > 0):
            raise ConfigError(f"sfreq must be > 0 Hz, got {sfreq}")
        if not name:
            raise ConfigError("name must be a non-empty stream name")
        self.chunk_s = float(chunk_s)
        self.montage = montage
        self.sfreq = sfreq
        self.name = name
        self._chunks: dict[str, Chunk] | None = None
        self._streams: list[StreamInfo] = []
        self._stop = threading.Event()

    # subclasses parse the file
    def _read(self) -> _Recording:
        raise NotImplementedError

    def open(self) -> None:
        """Read and check the whole file (done by ``with`` or on first use)."""
        if self._chunks is None:
            self._build(self._read())

    @property
    def streams(self) -> list[StreamInfo]:
        self.open()
        return list(self._streams)

    @property
    def n_dropped(self) -> int:
        """Samples missing from the file, from its sample counter."""
        self.open()
        return self._n_dropped

    def __enter__(self) -> _TextFileSource:
        self.open()
        self._stop.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End iteration after the current chunk (safe from another thread)."""
        self._stop.set()

    def __iter__(self) -> Iterator[Chunk]:
        self.open()
        eeg = self._chunks[self.name]
        others = [c for n, c in self._chunks.items() if n != self.name]
        n = eeg.n_times
        step = max(1, round(self.chunk_s * eeg.sfreq))
        for lo in range(0, n, step):
            if self._stop.is_set():
                return
            hi = min(lo + step, n)
            t_lo = eeg.times[lo]
            t_hi = eeg.times[hi] if hi < n else np.inf
            yield Chunk(eeg.data[:, lo:hi], eeg.times[lo:hi], eeg.info)
            for other in others:
                if other.info.sfreq > 0:  # accelerometer: the EEG's sample grid
                    if other.n_times:
                        yield Chunk(other.data[:, lo:hi], other.times[lo:hi], other.info)
                    continue
                piece = other.slice_times(t_lo if lo else -np.inf, t_hi)
                if piece.n_times:
                    yield piece

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _build(self, rec: _Recording) -> None:
        sfreq = float(self.sfreq or rec.sfreq)
        times, pos = regularise_times(rec.counter, rec.unix_s, sfreq, path=self.path)
        labels, montage_kind = _eeg_labels(self.montage, rec.eeg.shape[0], rec.default_names)
        desc = {
            "manufacturer": self.manufacturer,
            "board": rec.board_name,
            "source_file": self.path.name,
            "montage": montage_kind,
            **rec.desc,
        }
        chunks: dict[str, Chunk] = {}
        eeg_info = StreamInfo(
            self.name,
            "EEG",
            sfreq,
            labels,
            ("microvolts",) * len(labels),
            rec.source_id,
            "double64",
            desc=desc,
        )
        chunks[self.name] = Chunk(np.ascontiguousarray(rec.eeg), times, eeg_info)
        if rec.accel is not None and np.any(rec.accel):
            info = StreamInfo(
                f"{self.name}{ACCEL_SUFFIX}",
                "Accelerometer",
                sfreq,
                ACCEL_LABELS,
                ("g",) * 3,
                f"{rec.source_id}:accel",
                "double64",
                desc=desc,
            )
            chunks[info.name] = Chunk(np.ascontiguousarray(rec.accel), times, info)
        if rec.marker is not None and np.any(rec.marker):
            idx = np.flatnonzero(rec.marker)
            values = [_json_number(v) for v in rec.marker[idx]]
            info = StreamInfo(
                "Markers",
                "Markers",
                0.0,
                ("event",),
                ("",),
                f"{rec.source_id}:markers",
                "string",
                desc=desc,
            )
            data = np.array(
                [[json.dumps({"event": "marker", "value": v}) for v in values]], dtype=object
            )
            chunks[info.name] = Chunk(data, times[idx], info)
        gaps = np.flatnonzero(np.diff(pos) > 1)
        missing = np.diff(pos)[gaps] - 1
        self._n_dropped = int(missing.sum())
        dt = (times[-1] - times[0]) / pos[-1] if gaps.size else 0.0
        t_missing = times[gaps] + dt
        events = [
            json.dumps({"event": "dropped_samples", "stream": self.name, "n": int(n), "t": t})
            for n, t in zip(missing, t_missing.tolist(), strict=True)
        ]
        info = StreamInfo(
            f"{self.name}-events",
            "Markers",
            0.0,
            ("event",),
            ("",),
            f"{rec.source_id}:events",
            "string",
        )
        chunks[info.name] = Chunk(
            np.array([events], dtype=object).reshape(1, len(events)), t_missing, info
        )
        if gaps.size:
            logger.warning(
                "%s: %d samples dropped in %d gaps (reported on %s)",
                self.path,
                self._n_dropped,
                gaps.size,
                info.name,
            )
        self._chunks = chunks
        self._streams = [c.info for c in chunks.values()]


def _json_number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


class OpenBciTextSource(_TextFileSource):
    """An OpenBCI GUI text recording (``OpenBCI-RAW-*.txt``) as a source.

    Reads the GUI v5/v6 format (``%`` header lines, then a header row naming the columns:
    ``Sample Index, EXG Channel 0.., Accel Channel 0..2, ..., Timestamp, Marker Channel,
    Timestamp (Formatted)``) and the older headerless format (``Sample Index``, the EEG
    channels, optionally 3 accelerometer columns, a formatted time and/or a Unix time in ms).
    Digital, analog and "Other" columns are not imported. Streams and timestamps: see the
    module docstring.

    Parameters
    ----------
    path : str or Path
        The text file.
    chunk_s : float
        Seconds of EEG per chunk yielded.
    montage : sequence of str or str, optional
        EEG labels, one per channel (a comma-separated string works too).
    sfreq : float, optional
        Sample rate in Hz; overrides the ``%Sample Rate`` header (needed only when it is
        missing or wrong).
    name : str
        Name of the EEG stream; the others are ``<name>-accel`` and ``<name>-events``.

    Raises
    ------
    FileFormatError
        Missing, empty or garbled file; rows with the wrong number of values; values that are
        not finite numbers. The message names the file and the line.
    ConfigError
        A montage whose length does not match the channels.
    """

    manufacturer = "OpenBCI"

    def _read(self) -> _Recording:
        text = _read_text(self.path)
        lines = text.splitlines()
        header: dict[str, str] = {}
        i = 0
        while i < len(lines) and (lines[i].startswith("%") or not lines[i].strip()):
            m = re.match(r"%\s*([^=]+?)\s*=\s*(.*?)\s*$", lines[i])
            if m:
                header[m.group(1).lower()] = m.group(2)
            i += 1
        if i == len(lines):
            raise FileFormatError(f"{self.path}: only header lines, no data rows")
        if not header and not lines[i].lower().lstrip().startswith("sample index"):
            raise FileFormatError(
                f"{self.path}, line {i + 1}: not an OpenBCI GUI text file (no '%' header lines "
                "and no 'Sample Index, ...' column row)"
            )
        sfreq = self.sfreq or _header_rate(header.get("sample rate"))
        if sfreq is None:
            raise FileFormatError(
                f"{self.path}: no '%Sample Rate = ... Hz' header line; pass the sample rate "
                "(sfreq=..., or --sfreq on the command line)"
            )
        board_field = header.get("board", "")
        board_key = next((b for k, b in _GUI_BOARDS if k in board_field.lower()), None)
        if re.match(r"\s*[A-Za-z]", lines[i]):
            cols = self._named_columns(lines[i], i + 1)
            data_start = i + 1
        else:
            cols = self._positional_columns(lines[i], i + 1, header)
            data_start = i
        table = _parse_table(
            self.path,
            lines[data_start:],
            data_start + 1,
            delimiter=",",
            n_columns=cols["n_columns"],
            usecols=cols["usecols"],
            col_names=cols["names"],
            what="OpenBCI GUI rows",
        )
        v = table.values
        get = {name: v[:, k] for k, name in enumerate(cols["roles"])}
        eeg = np.stack([get[f"eeg{k}"] for k in range(cols["n_eeg"])])
        counter = get.get("index")
        if counter is not None:
            if np.any(counter != np.rint(counter)) or np.any(counter < 0):
                row = int(np.flatnonzero((counter != np.rint(counter)) | (counter < 0))[0])
                raise FileFormatError(
                    f"{self.path}, line {table.line_numbers[row]}: Sample Index "
                    f"{counter[row]!r} is not a non-negative integer"
                )
            counter = counter.astype(np.int64)
        unix_s = _unix_seconds(get.get("timestamp"), self.path)
        accel = np.stack([get[f"accel{k}"] for k in range(3)]) if "accel0" in get else None
        default_names, board_name = None, board_field.split("$")[-1] or "unknown"
        if board_key is not None:
            try:
                descr = _board_descr(_board_id(board_key))
                default_names = descr.get("eeg_names")
                board_name = descr.get("name", board_name)
            except Exception:  # noqa: BLE001 (BrainFlow missing or board unknown)
                logger.debug("no BrainFlow description for %s", board_key, exc_info=True)
        return _Recording(
            sfreq=float(sfreq),
            eeg=eeg,
            counter=counter,
            unix_s=unix_s,
            accel=accel,
            marker=get.get("marker"),
            board_name=board_name,
            default_names=default_names,
            source_id=f"OpenBCI_GUI:{board_name}:{self.path.name}",
            desc={"format": cols["format"]},
        )

    def _named_columns(self, row: str, line_no: int) -> dict:
        names = [c.strip() for c in row.split(",")]
        roles: list[str] = []
        usecols: list[int] = []
        n_eeg = 0
        for k, nm in enumerate(names):
            low = nm.lower()
            role = None
            if low == "sample index":
                role = "index"
            elif m := re.fullmatch(r"exg channel (\d+)", low):
                role = f"eeg{n_eeg}"
                n_eeg += 1
            elif m := re.fullmatch(r"accel channel ([0-2])", low):
                role = f"accel{m.group(1)}"
            elif low == "timestamp":
                role = "timestamp"
            elif low in ("marker channel", "marker") or (
                low == "other" and k > 0 and names[k - 1].lower() == "timestamp"
            ):
                role = "marker"
            if role is not None and role not in roles:
                roles.append(role)
                usecols.append(k)
        if n_eeg == 0:
            raise FileFormatError(
                f"{self.path}, line {line_no}: the column row names no 'EXG Channel N' columns"
            )
        if any(f"accel{k}" not in roles for k in range(3)):
            keep = [j for j, r in enumerate(roles) if not r.startswith("accel")]
            roles = [roles[j] for j in keep]
            usecols = [usecols[j] for j in keep]
        return {
            "n_columns": len(names),
            "usecols": usecols,
            "names": [names[k] for k in usecols],
            "roles": roles,
            "n_eeg": n_eeg,
            "format": "OpenBCI GUI v5+ (named columns)",
        }

    def _positional_columns(self, first_row: str, line_no: int, header: dict) -> dict:
        fields = [f.strip() for f in first_row.split(",")]
        numeric = [_is_number(f) for f in fields]
        is_unix_ms = [ok and float(f) > 1e11 for ok, f in zip(numeric, fields, strict=True)]
        n_eeg = _int_or_none(header.get("number of channels"))
        if n_eeg is None:
            # sample index, the EEG channels, maybe 3 accelerometer columns, then times
            body = sum(n and not u for n, u in zip(numeric[1:], is_unix_ms[1:], strict=True))
            n_eeg = next((n for n in (16, 8, 4) if body in (n, n + 3)), None)
            if n_eeg is None:
                raise FileFormatError(
                    f"{self.path}, line {line_no}: cannot tell how many of the {len(fields)} "
                    "columns are EEG channels; the '%Number of channels = N' header is missing"
                )
        if len(fields) < n_eeg + 1 or not all(numeric[: n_eeg + 1]):
            raise FileFormatError(
                f"{self.path}, line {line_no}: expected a sample index and {n_eeg} EEG values, "
                f"found {first_row.strip()[:80]!r}"
            )
        roles = ["index"] + [f"eeg{k}" for k in range(n_eeg)]
        usecols = list(range(n_eeg + 1))
        names = ["Sample Index"] + [f"EXG Channel {k}" for k in range(n_eeg)]
        k = n_eeg + 1
        if k + 3 <= len(fields) and all(numeric[k : k + 3]) and not any(is_unix_ms[k : k + 3]):
            roles += ["accel0", "accel1", "accel2"]
            usecols += [k, k + 1, k + 2]
            names += [f"Accel Channel {j}" for j in range(3)]
            k += 3
        unix_col = next((j for j in range(k, len(fields)) if is_unix_ms[j]), None)
        if unix_col is not None:
            roles.append("timestamp")
            usecols.append(unix_col)
            names.append("Timestamp")
        return {
            "n_columns": len(fields),
            "usecols": usecols,
            "names": names,
            "roles": roles,
            "n_eeg": n_eeg,
            "format": "OpenBCI GUI v4 or older (no column row)",
        }


class BrainFlowCsvSource(_TextFileSource):
    """A file written by BrainFlow's ``DataFilter.write_file`` (or the ``file://`` streamer)
    as a source.

    The file is tab-separated, one line per sample and one column per row of the board's data
    array, no header; the board description (``BoardShim.get_board_descr``) says which
    columns hold EEG (µV), the accelerometer (g), the package counter, the Unix timestamp (s)
    and markers. Streams and timestamps: see the module docstring.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    board : str or int, optional
        BrainFlow board: ``"cyton"``, ``"cyton_daisy"``, ``"ganglion"``, ``"synthetic"``, a
        ``BoardIds`` name or an id. When omitted, the board is inferred from the number of
        columns and the rate of the timestamps; an ambiguous file asks for it.
    chunk_s, montage, sfreq, name
        As for :class:`OpenBciTextSource` (``sfreq`` overrides the board's default rate).
    """

    manufacturer = "BrainFlow"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        board: str | int | None = None,
        chunk_s: float = 0.1,
        montage: Sequence[str] | str | None = None,
        sfreq: float | None = None,
        name: str = "EEG",
    ) -> None:
        super().__init__(path, chunk_s=chunk_s, montage=montage, sfreq=sfreq, name=name)
        self.board = board
        self._board_id = resolve_board(board)[0] if board is not None else None

    def _read(self) -> _Recording:
        text = _read_text(self.path)
        lines = text.splitlines()
        first = next((k for k, ln in enumerate(lines) if ln.strip()), 0)
        n_columns = lines[first].count("\t") + 1
        if n_columns < 2:
            raise FileFormatError(
                f"{self.path}, line {first + 1}: not a BrainFlow CSV file (expected "
                "tab-separated numbers, one column per board channel)"
            )
        if self._board_id is None:
            board_id, descr = self._infer_board(lines[first:], n_columns)
        else:
            board_id = self._board_id
            descr = _board_descr(board_id)
        n_rows = int(descr["num_rows"])
        if n_columns != n_rows:
            raise FileFormatError(
                f"{self.path}, line {first + 1}: {n_columns} tab-separated values per line, "
                f"but board {descr.get('name', board_id)!r} writes {n_rows}; pass the board "
                "the file was recorded with (--board)"
            )
        roles: list[tuple[str, int]] = [
            (f"eeg{k}", c) for k, c in enumerate(descr.get("eeg_channels") or [])
        ]
        if not roles:
            raise ConfigError(f"board {descr.get('name', board_id)!r} has no EEG channels")
        accel = descr.get("accel_channels") or []
        if len(accel) == 3:
            roles += [(f"accel{k}", c) for k, c in enumerate(accel)]
        for role, key in (
            ("index", "package_num_channel"),
            ("timestamp", "timestamp_channel"),
            ("marker", "marker_channel"),
        ):
            if descr.get(key) is not None:
                roles.append((role, int(descr[key])))
        table = _parse_table(
            self.path,
            lines[first:],
            first + 1,
            delimiter="\t",
            n_columns=n_columns,
            usecols=[c for _, c in roles],
            col_names=[r for r, _ in roles],
            what=f"BrainFlow {descr.get('name', board_id)} rows",
        )
        get = {r: table.values[:, k] for k, (r, _) in enumerate(roles)}
        n_eeg = len(descr["eeg_channels"])
        counter = get.get("index")
        if counter is not None:
            counter = np.rint(counter).astype(np.int64)
        unix = get.get("timestamp")
        if unix is not None and not np.any(unix):
            unix = None
        sfreq = float(descr["sampling_rate"])
        return _Recording(
            sfreq=sfreq,
            eeg=np.stack([get[f"eeg{k}"] for k in range(n_eeg)]),
            counter=counter,
            unix_s=unix,
            accel=np.stack([get[f"accel{k}"] for k in range(3)]) if "accel0" in get else None,
            marker=get.get("marker"),
            board_name=str(descr.get("name", board_id)),
            default_names=descr.get("eeg_names"),
            source_id=f"BrainFlow:{descr.get('name', board_id)}:{self.path.name}",
            desc={"format": "BrainFlow CSV", "board_id": int(board_id)},
        )

    def _infer_board(self, lines: list[str], n_columns: int) -> tuple[int, dict]:
        BoardIds = _board_shim().BoardIds  # noqa: N806

        candidates = []
        for member in BoardIds:
            try:
                descr = _board_descr(member.value)
            except Exception:  # noqa: BLE001 (boards without a description)
                continue
            if descr.get("num_rows") == n_columns:
                candidates.append((int(member.value), descr))
        if not candidates:
            raise FileFormatError(
                f"{self.path}: no BrainFlow board writes {n_columns} columns; pass the board "
                "the file was recorded with (--board)"
            )
        rated = []
        for board_id, descr in candidates:
            rate = _rate_from_lines(lines[:2000], descr.get("timestamp_channel"))
            if rate is not None and abs(rate / descr["sampling_rate"] - 1) < 0.1:
                rated.append((board_id, descr))
        candidates = rated or candidates

        def layout(d: dict) -> tuple:
            keys = (
                "sampling_rate",
                "eeg_channels",
                "accel_channels",
                "timestamp_channel",
                "package_num_channel",
                "marker_channel",
                "eeg_names",
            )
            return tuple(str(d.get(k)) for k in keys)

        if len({layout(d) for _, d in candidates}) > 1:
            names = ", ".join(
                resolve_board(b)[1].removesuffix("_BOARD").lower() for b, _ in candidates
            )
            raise ConfigError(
                f"{self.path}: {n_columns} columns fit several BrainFlow boards ({names}); "
                "pass the board the file was recorded with (--board)"
            )
        board_id, descr = candidates[0]
        logger.info("%s: BrainFlow board %s (from the column count)", self.path, descr["name"])
        return board_id, descr


# --------------------------------------------------------------------------------------------
# small parsing helpers


def _board_id(name: str) -> int:
    BoardIds = _board_shim().BoardIds  # noqa: N806

    return int(BoardIds[name].value)


def _rate_from_lines(lines: list[str], ts_col: int | None) -> float | None:
    if ts_col is None:
        return None
    try:
        ts = np.array([float(ln.split("\t")[ts_col]) for ln in lines if ln.strip()])
    except (ValueError, IndexError):
        return None
    if ts.size < 10 or ts[-1] <= ts[0]:
        return None
    return (ts.size - 1) / (ts[-1] - ts[0])


def _header_rate(value: str | None) -> float | None:
    if not value:
        return None
    m = re.match(r"([0-9]*\.?[0-9]+)", value)
    rate = float(m.group(1)) if m else None
    return rate if rate and rate > 0 else None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unix_seconds(ts: np.ndarray | None, path: Path) -> np.ndarray | None:
    """The timestamp column in seconds since the epoch (GUI v6 writes ms, v5 and BrainFlow s);
    ``None`` when absent or not a Unix time."""
    if ts is None or not np.any(ts):
        return None
    med = float(np.median(ts))
    if med > 1e11:
        return ts / 1000.0
    if med > 1e8:
        return ts
    logger.warning("%s: the Timestamp column is not a Unix time; times start at 0 s", path)
    return None
