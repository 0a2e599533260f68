"""BrainFlow boards (OpenBCI Cyton, Cyton-Daisy, Ganglion; synthetic; file playback) as a source.

:class:`BrainFlowSource` opens a board through BrainFlow and yields three streams as
:class:`~bci_affect.core.chunk.Chunk` objects on the LSL clock:

``EEG``
    type ``EEG``, microvolts, one channel per electrode (labels from the montage, else
    BrainFlow's default names for the board), at the board's sample rate.
``EEG-accel``
    type ``Accelerometer``, channels ``AccX, AccY, AccZ`` in g, at the same rate.
``EEG-events``
    type ``Markers``, one string channel ``event``; each sample is a JSON object:
    ``{"event": "dropped_samples", "stream": "EEG", "n": 3, "t": t}`` (``t`` = the LSL time the
    first missing sample would have had), ``{"event": "gap", "stream": "EEG", "start": t0,
    "end": t1}`` (arrival times jumped by more than ``max_jump_s`` with no counter evidence),
    ``{"event": "stream_lost", "stream": "EEG", "t": t}`` (no sample for ``stall_s``; ``t`` =
    last sample) and ``{"event": "stream_recovered", "stream": "EEG", "t": t}``.

(``EEG`` is the ``name`` argument; the others are ``<name>-accel`` and ``<name>-events``.)

Timestamps: from BrainFlow's host clock to regular LSL-clock stamps
--------------------------------------------------------------------
BrainFlow stamps each sample with the host's unix time (``time.time()``, i.e. the C++
``system_clock``) when the packet carrying it is read from the serial port or file. Those
stamps are mapped in three steps:

1. **Clock offset.** ``o = time.time() - pylsl.local_clock()`` is estimated from 8 bracketed
   readings ``(l0, u, l1)`` = (``local_clock()``, ``time.time()``, ``local_clock()``); the
   reading with the smallest bracket ``l1 - l0`` (typically a microsecond or two) gives
   ``o = u - (l0 + l1) / 2``. The estimate is refreshed whenever it is older than 1 s, so an NTP
   step of the wall clock is followed within a second. Arrival stamps on the LSL clock are
   ``s_i = ts_i - o``.
2. **Sample index.** Each sample gets an index ``n_i`` counted from the board's sample counter
   (BrainFlow's ``package_num_channel``): consecutive samples advance ``n`` by 1, and a gap in
   the counter advances it by 1 + the number of missing samples, so the missing samples keep
   their place in time. Without a counter, ``n_i`` is the arrival order.
3. **Regularisation.** A line ``s ~ b + T * n`` is fitted to the points ``(n_i, s_i)`` by
   exponentially weighted least squares (weights halve every ``half_life_s`` = 90 s of samples;
   the model of liblsl's dejitter post-processing). ``T`` stays at the nominal ``1 / sfreq``
   (only ``b`` is fitted) until 5 s of samples have been seen, and whenever the fitted rate is
   more than 0.2 % off nominal; otherwise it follows the board's real crystal rate, so stamps do
   not drift over hours. Each chunk is stamped by continuing the line already issued,
   ``t_i = t_last + T * (n_i - n_last)``, slewed towards the fit (updated with this chunk's
   points) by at most 0.2 % of the elapsed time, so sample intervals stay within 0.2 % of ``T``
   and the stamps are strictly increasing. The first chunk, and any chunk whose fit lies more
   than 20 ms from the issued line, is stamped with the fit itself (a step).
   If a whole chunk lies more than ``max_jump_s`` (0.5 s) off the fit (a dropout longer than the
   counter's period, e.g. more than 256 samples on a Cyton, or a wall-clock step), the fit
   restarts from that chunk and, when the samples came late, a ``gap`` event is emitted.

Dropped samples are found in the sample counter (:func:`find_dropped`, with wrap-around: 0..255
on Cyton and the synthetic board, even numbers 0..254 on Cyton-Daisy, packet ids 1..100 /
101..200 with two samples per packet on Ganglion); each drop is logged as a warning and emitted on
``EEG-events``. A loss of an exact multiple of the counter's period cannot be seen in the counter;
it is caught by step 3 as a ``gap``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
from numpy.typing import ArrayLike, NDArray

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, DeviceError, FileFormatError

logger = logging.getLogger(__name__)

#: Board names accepted by :class:`BrainFlowSource` and ``bci-affect stream --board``.
BOARD_NAMES = ("synthetic", "cyton", "cyton-daisy", "ganglion", "playback")

#: BrainFlow board ids (``brainflow.board_shim.BoardIds``) of :data:`BOARD_NAMES`.
BOARD_IDS = {"synthetic": -1, "cyton": 0, "cyton-daisy": 2, "ganglion": 1, "playback": -3}

#: Boards read through a serial port (the OpenBCI USB dongle, or the BLED112 for Ganglion).
SERIAL_BOARDS = ("cyton", "cyton-daisy", "ganglion")

_SERIAL_EXAMPLE = (
    "e.g. --serial-port /dev/ttyUSB0 (Linux), COM3 (Windows), /dev/cu.usbserial-XXXX (macOS)"
)


# ---------------------------------------------------------------------------------------------
# Sample counters and dropped samples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterSpec:
    """How a board's sample counter counts.

    Parameters
    ----------
    modulo : int
        Number of distinct counter positions before it wraps (256 for a byte counter).
    step : int
        Counter increment between consecutive samples (2 on Cyton-Daisy, which merges the
        board's even/odd packets into one sample and keeps the even number).
    samples_per_count : int
        Consecutive samples sharing one counter value (2 on Ganglion: one radio packet carries
        two samples).
    first, last : int
        Range of valid raw counter values; a raw value ``c`` in range is normalised to
        ``(c - first) % modulo``. Values outside (Ganglion's uncompressed or impedance packets)
        break the comparison: no drop is reported across them.
    """

    modulo: int = 256
    step: int = 1
    samples_per_count: int = 1
    first: int = 0
    last: int = 255

    def __post_init__(self) -> None:
        if self.modulo < 2 or self.step < 1 or self.samples_per_count < 1:
            raise ConfigError(
                f"CounterSpec needs modulo >= 2, step >= 1, samples_per_count >= 1; got {self}"
            )
        if self.last < self.first:
            raise ConfigError(f"CounterSpec needs first <= last, got {self.first}, {self.last}")

    def normalise(self, raw: ArrayLike) -> NDArray[np.float64]:
        """Raw counter values to positions ``0 .. modulo-1``; NaN where out of range."""
        raw = np.asarray(raw, dtype=np.float64)
        c = np.round(raw)
        ok = np.isfinite(c) & (c >= self.first) & (c <= self.last)
        out = np.full(c.shape, np.nan)
        out[ok] = (c[ok] - self.first) % self.modulo
        return out


#: Counter layout of each board (BrainFlow's ``package_num_channel``).
COUNTERS = {
    "synthetic": CounterSpec(256),
    "cyton": CounterSpec(256),
    "cyton-daisy": CounterSpec(256, step=2),
    "ganglion": CounterSpec(100, samples_per_count=2, first=1, last=200),
}


def find_dropped(counter: ArrayLike, modulo: int, step: int = 1) -> list[tuple[int, int]]:
    """Gaps in a wrapping sample counter.

    Parameters
    ----------
    counter : array_like, shape (n_times,)
        Counter value of each received sample, ``0 <= c < modulo``; NaN where unknown (no gap is
        reported next to a NaN).
    modulo : int
        The counter wraps from ``modulo - 1`` to 0 (256 for a byte counter).
    step : int
        Expected increment between consecutive samples.

    Returns
    -------
    list of (int, int)
        ``(index, n_missing)`` for each gap: ``index`` is the position in ``counter`` of the first
        sample after the gap; ``n_missing`` the number of samples lost before it. A repeated
        counter value is not a gap. Losses of whole multiples of ``modulo / step`` samples are
        invisible to a counter and not reported.
    """
    c = np.asarray(counter, dtype=np.float64)
    if c.ndim != 1:
        raise ConfigError(f"counter must be 1-D, got shape {c.shape}")
    if modulo < 2 or step < 1:
        raise ConfigError(f"need modulo >= 2 and step >= 1, got modulo={modulo}, step={step}")
    if c.size < 2:
        return []
    d = np.mod(np.diff(c), modulo)  # NaN stays NaN
    with np.errstate(invalid="ignore"):
        missing = np.round(d / step) - 1
        idx = np.flatnonzero(missing > 0)
    return [(int(i) + 1, int(missing[i])) for i in idx]


class DropDetector:
    """Streaming sample indices and dropped-sample detection from a board's counter.

    Call it with each chunk's raw counter values; it returns every sample's index ``n`` (counting
    the missing samples, so ``n`` keeps its place in time) and the drops found in the chunk,
    including one between the previous chunk's last sample and this chunk's first.
    """

    def __init__(self, spec: CounterSpec | None) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self._last: float = np.nan  # normalised counter of the last sample seen
        self._next_n = 0  # index the next sample gets when nothing is missing

    def __call__(self, raw: ArrayLike | None) -> tuple[NDArray[np.int64], list[tuple[int, int]]]:
        """Sample indices and drops of one chunk.

        Parameters
        ----------
        raw : array_like, shape (n_times,), or None
            Raw counter values (None: the board has no counter; samples are counted as they come).

        Returns
        -------
        n : ndarray of int64, shape (n_times,)
            Sample index of each sample since the start of the stream.
        drops : list of (int, int)
            ``(index in this chunk, n_missing)``.
        """
        if raw is None or self.spec is None:
            size = 0 if raw is None else np.asarray(raw).shape[0]
            n = self._next_n + np.arange(size, dtype=np.int64)
            self._next_n += size
            return n, []
        spec = self.spec
        c = spec.normalise(raw)
        size = c.shape[0]
        if size == 0:
            return np.empty(0, np.int64), []
        if spec.samples_per_count == 1:
            starts = np.arange(size)
            seq = np.concatenate([[self._last], c])
        else:
            prev = np.concatenate([[self._last], c[:-1]])
            # A new count starts where the value changes; NaN != NaN, so unknowns start one each.
            starts = np.flatnonzero(c != prev)
            seq = np.concatenate([[self._last], c[starts]])
        gaps = find_dropped(seq, spec.modulo, spec.step)
        increments = np.ones(size, dtype=np.int64)
        drops = []
        for k, missing in gaps:
            index = int(starts[k - 1])
            n_missing = missing * spec.samples_per_count
            increments[index] += n_missing
            drops.append((index, n_missing))
        n = self._next_n - 1 + np.cumsum(increments)
        self._next_n = int(n[-1]) + 1
        self._last = float(c[-1])
        return n, drops


# ---------------------------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------------------------


def clock_offset(n_pairs: int = 8) -> tuple[float, float]:
    """Offset of the unix clock over the LSL clock: ``time.time() - pylsl.local_clock()``.

    Parameters
    ----------
    n_pairs : int
        Bracketed readings taken; the one with the tightest bracket wins.

    Returns
    -------
    offset_s : float
        Seconds to subtract from a unix time to get LSL time.
    uncertainty_s : float
        Half the bracket of the reading used (seconds).
    """
    best_offset, best_width = 0.0, np.inf
    for _ in range(max(1, n_pairs)):
        l0 = pylsl.local_clock()
        u = time.time()
        l1 = pylsl.local_clock()
        if l1 - l0 < best_width:
            best_offset, best_width = u - 0.5 * (l0 + l1), l1 - l0
    return best_offset, 0.5 * best_width


class UnixToLslClock:
    """Maps unix times (``time.time()``) to the LSL clock, refreshing the offset when stale.

    Parameters
    ----------
    refresh_s : float
        The offset is re-estimated before a mapping when older than this (seconds).
    n_pairs : int
        Bracketed readings per estimate (see :func:`clock_offset`).
    """

    def __init__(self, refresh_s: float = 1.0, n_pairs: int = 8) -> None:
        self.refresh_s = refresh_s
        self.n_pairs = n_pairs
        self.offset_s, self.uncertainty_s = clock_offset(n_pairs)
        self._estimated_at = time.monotonic()

    def refresh(self) -> None:
        self.offset_s, self.uncertainty_s = clock_offset(self.n_pairs)
        self._estimated_at = time.monotonic()

    def __call__(self, unix_s: ArrayLike) -> NDArray[np.float64]:
        """LSL-clock seconds of ``unix_s`` (any shape)."""
        if time.monotonic() - self._estimated_at > self.refresh_s:
            self.refresh()
        return np.asarray(unix_s, dtype=np.float64) - self.offset_s


class StampRegulariser:
    """Regular stamps ``t = b + T * n`` from jittered arrival stamps (step 3 of the module doc).

    Parameters
    ----------
    sfreq : float
        Nominal sample rate (Hz).
    half_life_s : float
        Seconds of samples after which a point's weight in the fit has halved.
    min_fit_s : float
        Seconds of samples needed before the rate ``1 / T`` is fitted (before: nominal).
    max_rate_error : float
        Largest relative deviation of the fitted rate from nominal that is accepted.
    max_jump_s : float
        A chunk lying wholly further than this off the line restarts the fit.
    max_slew : float
        Largest relative change of a sample interval used to move the issued stamps towards a
        moved fit.
    max_step_s : float
        When the issued stamps are further than this from the fit (start-up), they step to it.
    """

    def __init__(
        self,
        sfreq: float,
        *,
        half_life_s: float = 90.0,
        min_fit_s: float = 5.0,
        max_rate_error: float = 2e-3,
        max_jump_s: float = 0.5,
        max_slew: float = 2e-3,
        max_step_s: float = 0.02,
    ) -> None:
        if not sfreq > 0:
            raise ConfigError(f"StampRegulariser needs sfreq > 0 Hz, got {sfreq}")
        if not half_life_s > 0 or not max_jump_s > 0:
            raise ConfigError(
                f"need half_life_s > 0 and max_jump_s > 0, got {half_life_s}, {max_jump_s}"
            )
        self.sfreq = float(sfreq)
        self.period = 1.0 / self.sfreq
        self.min_fit_samples = min_fit_s * self.sfreq
        self.max_rate_error = max_rate_error
        self.max_jump_s = max_jump_s
        self.max_slew = max_slew
        self.max_step_s = max_step_s
        self._decay = 0.5 ** (1.0 / (half_life_s * self.sfreq))  # weight factor per sample index
        self._last_n: int | None = None
        self._last_t = -np.inf
        self._restart()

    def reset(self) -> None:
        """Forget everything (a fresh instance)."""
        self._last_n = None
        self._last_t = -np.inf
        self._restart()

    def _restart(self) -> None:
        self._n_ref: int | None = None  # reference point of the sums
        self._s_ref = 0.0
        self._n_first = 0
        # Weighted sums over points (x = n - n_ref, y = s - s_ref): W, X, Y, XX, XY.
        self._sums = np.zeros(5)

    @property
    def last_t(self) -> float | None:
        """Stamp of the last sample stamped (seconds, LSL clock); None before the first."""
        return None if self._last_n is None else self._last_t

    @property
    def rate_hz(self) -> float:
        """The rate currently in use (nominal until fitted)."""
        return 1.0 / self._line()[1] if self._n_ref is not None else self.sfreq

    def _line(self) -> tuple[float, float]:
        """Intercept (at ``n_ref``, relative to ``s_ref``) and slope ``T`` of the fit."""
        w, x, y, xx, xy = self._sums
        slope = self.period
        if self._n_ref - self._n_first >= self.min_fit_samples:
            det = w * xx - x * x
            if det > 0:
                fitted = (w * xy - x * y) / det
                if abs(fitted * self.sfreq - 1.0) <= self.max_rate_error:
                    slope = fitted
        return (y - slope * x) / w, slope

    def _predict(self, n: NDArray[np.int64]) -> NDArray[np.float64]:
        b, slope = self._line()
        return self._s_ref + b + slope * (n - self._n_ref).astype(np.float64)

    def _add(self, n: NDArray[np.int64], s: NDArray[np.float64]) -> None:
        n_new, s_new = int(n[-1]), float(s[-1])
        if self._n_ref is None:
            self._n_ref, self._s_ref, self._n_first = n_new, s_new, int(n[0])
        w, x, y, xx, xy = self._sums
        dn, ds = float(n_new - self._n_ref), s_new - self._s_ref
        # Move the reference to the newest point (exact), then age the old points.
        xx, xy = xx - 2 * dn * x + dn * dn * w, xy - dn * y - ds * x + dn * ds * w
        x, y = x - dn * w, y - ds * w
        age = self._decay**dn
        w, x, y, xx, xy = w * age, x * age, y * age, xx * age, xy * age
        xn = (n - n_new).astype(np.float64)
        yn = s - s_new
        wn = self._decay ** (-xn)
        self._sums = np.array(
            [
                w + wn.sum(),
                x + (wn * xn).sum(),
                y + (wn * yn).sum(),
                xx + (wn * xn * xn).sum(),
                xy + (wn * xn * yn).sum(),
            ]
        )
        self._n_ref, self._s_ref = n_new, s_new

    def __call__(self, n: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.float64], float | None]:
        """Regular stamps of one chunk.

        Parameters
        ----------
        n : array_like of int, shape (n_times,)
            Strictly increasing sample indices (see :class:`DropDetector`).
        s : array_like of float, shape (n_times,)
            Arrival stamps on the LSL clock (seconds).

        Returns
        -------
        t : ndarray of float64, shape (n_times,)
            Regularised stamps (seconds, LSL clock), strictly increasing across calls.
        jump_s : float or None
            When the chunk lay wholly off the line and the fit restarted: the jump (seconds,
            positive when the samples came later than predicted); else None.
        """
        n = np.asarray(n, dtype=np.int64)
        s = np.asarray(s, dtype=np.float64)
        if n.shape != s.shape or n.ndim != 1:
            raise ConfigError(
                "sample indices n and arrival stamps s must be 1-D arrays of the same length, "
                f"got shapes {n.shape} and {s.shape}"
            )
        if n.size == 0:
            return np.empty(0), None
        jump = None
        if self._n_ref is not None:
            residual = s - self._predict(n)
            if residual.min() > self.max_jump_s:
                jump = float(residual.min())
            elif residual.max() < -self.max_jump_s:
                jump = float(residual.max())
            if jump is not None:
                self._restart()
        self._add(n, s)
        t = self._predict(n)
        if self._last_n is not None:
            _, slope = self._line()
            steps = (n - self._last_n).astype(np.float64)
            # The line already issued, continued, and how far the fit has moved from it.
            issued = self._last_t + slope * steps
            error = t[-1] - issued[-1]
            if jump is None and abs(error) <= self.max_step_s:
                # Slew towards the fit: intervals stay within max_slew of the period.
                limit = self.max_slew * slope * steps[-1]
                t = issued + np.clip(error, -limit, limit) * (steps / steps[-1])
            else:
                # Step (start-up or after a jump), still strictly increasing.
                t = np.maximum(t, self._last_t + 0.5 * slope * steps)
        self._last_n, self._last_t = int(n[-1]), float(t[-1])
        return t, jump


# ---------------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcquisitionStats:
    """Counts since the source was opened."""

    n_samples: int = 0  # EEG samples delivered
    n_dropped: int = 0  # samples missing according to the counter
    n_drops: int = 0  # dropped_samples events
    n_gaps: int = 0  # gap events


@functools.cache
def _brainflow() -> Any:
    """``brainflow.board_shim``, imported and its native library loaded.

    BrainFlow locates its library through the deprecated ``pkg_resources`` on first use, which
    warns on stderr; the warning is silenced here, once.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        from brainflow import board_shim  # noqa: PLC0415

        board_shim.BoardControllerDLL.get_instance()
    return board_shim


def board_id(board: str) -> int:
    """BrainFlow board id of a name in :data:`BOARD_NAMES`; ConfigError listing them otherwise."""
    try:
        return BOARD_IDS[board]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown board {board!r}; valid boards: {', '.join(BOARD_NAMES)}"
        ) from None


def board_description(board: str) -> dict:
    """BrainFlow's description of a (non-playback) board: channels, rate, names."""
    bs = _brainflow()
    return dict(bs.BoardShim.get_board_descr(board_id(board)))


def _count_rows(path: Path, n_cols: int, master: str) -> int:
    """Number of rows BrainFlow's playback board will emit (lines with ``n_cols`` fields)."""
    n_rows = 0
    with path.open("r", encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            sep = "\t" if "\t" in line else ","
            n = len(line.rstrip("\r\n").rstrip(sep).split(sep))
            if n == n_cols:
                n_rows += 1
            elif lineno == 1:
                raise FileFormatError(
                    f"{path}: rows have {n} columns but BrainFlow board {master!r} writes "
                    f"{n_cols}; pass the board that recorded the file as --master-board "
                    f"(one of {', '.join(b for b in BOARD_NAMES if b != 'playback')})"
                )
    if n_rows == 0:
        raise FileFormatError(
            f"{path}: no data rows; expected a BrainFlow CSV (DataFilter.write_file)"
        )
    return n_rows


class BrainFlowSource:
    """A BrainFlow board as a :class:`~bci_affect.core.source.Source` (see the module doc).

    Parameters
    ----------
    board : str
        One of :data:`BOARD_NAMES`.
    serial_port : str, optional
        Serial port of the dongle; required for cyton, cyton-daisy and ganglion.
    file : str or Path, optional
        BrainFlow CSV to play back in real time; required for ``board="playback"``.
    master_board : str
        For playback: the board that recorded ``file`` (its channel layout and rate).
    montage : sequence of str, optional
        EEG channel labels, one per EEG channel of the board; default BrainFlow's names.
    name : str
        Name of the EEG stream; the others are ``<name>-accel`` and ``<name>-events``.
    source_id : str, optional
        LSL source id of the EEG stream (the others get ``:accel`` / ``:events`` appended).
        Default ``bci-affect:<board>:<serial port | absolute file path | synthetic>``.
    poll_s : float
        Seconds between reads of BrainFlow's ring buffer.
    stall_s : float
        Seconds without samples before a ``stream_lost`` event.
    half_life_s : float
        Memory of the timestamp fit (see the module doc).

    Raises
    ------
    ConfigError
        Unknown board, missing or superfluous serial port or file, wrong montage.
    FileFormatError
        Playback file missing columns or empty.
    """

    def __init__(
        self,
        board: str = "synthetic",
        *,
        serial_port: str | None = None,
        file: str | os.PathLike | None = None,
        master_board: str = "synthetic",
        montage: Sequence[str] | None = None,
        name: str = "EEG",
        source_id: str | None = None,
        poll_s: float = 0.02,
        stall_s: float = 2.0,
        half_life_s: float = 90.0,
    ) -> None:
        board_id(board)  # validates
        if not name or not str(name).strip():
            raise ConfigError("the EEG stream name must not be empty (e.g. --name EEG)")
        if not 0 < poll_s <= 1:
            raise ConfigError(f"poll_s must be in (0, 1] seconds, got {poll_s}")
        if not stall_s > poll_s:
            raise ConfigError(f"stall_s must exceed poll_s ({poll_s} s), got {stall_s}")
        self.board = board
        self.name = str(name)
        self.poll_s = float(poll_s)
        self.stall_s = float(stall_s)
        self.half_life_s = float(half_life_s)
        self.serial_port = serial_port or None
        self.file = Path(file).expanduser() if file else None
        self.master_board = master_board if board == "playback" else board

        if board in SERIAL_BOARDS and not self.serial_port:
            raise ConfigError(
                f"board {board!r} needs --serial-port (serial_port=): the port of its USB dongle, "
                f"{_SERIAL_EXAMPLE}"
            )
        if board not in SERIAL_BOARDS and self.serial_port:
            raise ConfigError(
                f"board {board!r} does not use a serial port (got {self.serial_port!r}); only "
                f"{', '.join(SERIAL_BOARDS)} do"
            )
        if board == "playback":
            if self.file is None:
                raise ConfigError(
                    "board 'playback' needs --file (file=): a BrainFlow CSV to play back, "
                    "e.g. --board playback --file session.csv --master-board cyton"
                )
            if not self.file.is_file():
                raise ConfigError(f"playback file {str(self.file)!r} does not exist")
            if master_board == "playback" or master_board not in BOARD_IDS:
                raise ConfigError(
                    f"unknown master board {master_board!r} for playback; valid: "
                    f"{', '.join(b for b in BOARD_NAMES if b != 'playback')}"
                )
        elif self.file is not None:
            raise ConfigError(
                f"board {board!r} does not read a file (got {str(self.file)!r}); "
                "use --board playback --file F --master-board B"
            )

        descr = board_description(self.master_board)
        self._descr = descr
        self.sfreq = float(descr["sampling_rate"])
        self._eeg_rows = list(descr["eeg_channels"])
        self._accel_rows = list(descr.get("accel_channels", []))
        self._ts_row = int(descr["timestamp_channel"])
        self._counter_row = descr.get("package_num_channel")
        self._n_rows = int(descr["num_rows"])

        default_names = [c for c in str(descr.get("eeg_names", "")).split(",") if c]
        if len(default_names) != len(self._eeg_rows):
            default_names = [f"EEG{i + 1}" for i in range(len(self._eeg_rows))]
        if montage is None:
            labels = default_names
        else:
            labels = [str(c).strip() for c in montage]
            if len(labels) != len(self._eeg_rows):
                raise ConfigError(
                    f"montage has {len(labels)} labels but board {self.master_board!r} has "
                    f"{len(self._eeg_rows)} EEG channels (default {','.join(default_names)})"
                )
            bad = [c for c in labels if not c]
            dup = sorted({c for c in labels if labels.count(c) > 1})
            if bad or dup:
                raise ConfigError(
                    f"montage labels must be non-empty and unique; got {','.join(labels)}"
                )

        if not source_id:
            ident = self.serial_port or (str(self.file.resolve()) if self.file else "synthetic")
            source_id = f"bci-affect:{board}:{ident}"
        self.source_id = source_id
        desc = {"board": board, "device": str(descr.get("name", board))}
        if board == "playback":
            desc["master_board"] = self.master_board
        self.eeg_info = StreamInfo(
            name=self.name,
            type="EEG",
            sfreq=self.sfreq,
            ch_names=tuple(labels),
            units=("microvolts",) * len(labels),
            source_id=source_id,
            channel_format="float32",
            desc=desc,
        )
        self.accel_info = (
            StreamInfo(
                name=f"{self.name}-accel",
                type="Accelerometer",
                sfreq=self.sfreq,
                ch_names=("AccX", "AccY", "AccZ")[: len(self._accel_rows)],
                units=("g",) * min(3, len(self._accel_rows)),
                source_id=f"{source_id}:accel",
                channel_format="float32",
                desc=desc,
            )
            if self._accel_rows
            else None
        )
        self._accel_rows = self._accel_rows[:3]
        self.events_info = StreamInfo(
            name=f"{self.name}-events",
            type="Markers",
            sfreq=0.0,
            ch_names=("event",),
            source_id=f"{source_id}:events",
            channel_format="string",
            desc=desc,
        )
        self._playback_rows = (
            _count_rows(self.file, self._n_rows, self.master_board) if self.file else None
        )
        self._stop = threading.Event()
        self._shim = None
        self._stats = AcquisitionStats()

    # -- protocol ----------------------------------------------------------------------------

    @property
    def streams(self) -> list[StreamInfo]:
        return [s for s in (self.eeg_info, self.accel_info, self.events_info) if s is not None]

    @property
    def stats(self) -> AcquisitionStats:
        return self._stats

    def __enter__(self) -> BrainFlowSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """End iteration after the current poll (thread-safe)."""
        self._stop.set()

    def _where(self) -> str:
        if self.serial_port:
            return f"board {self.board!r} on serial port {self.serial_port!r}"
        if self.file:
            return f"board 'playback' of {str(self.file)!r} (master board {self.master_board!r})"
        return f"board {self.board!r}"

    def open(self) -> None:
        """Prepare the BrainFlow session and start streaming."""
        if self._shim is not None:
            return
        bs = _brainflow()
        if logger.isEnabledFor(logging.DEBUG):
            # BrainFlow logs from C++ straight to stderr; only wanted when debugging.
            bs.BoardShim.enable_dev_board_logger()
        else:
            bs.BoardShim.disable_board_logger()
        params = bs.BrainFlowInputParams()
        if self.serial_port:
            params.serial_port = self.serial_port
        if self.file:
            params.file = str(self.file)
            params.master_board = board_id(self.master_board)
        shim = bs.BoardShim(board_id(self.board), params)
        try:
            shim.prepare_session()
        except bs.BrainFlowError as exc:
            hint = ""
            if self.serial_port:
                hint = (
                    "; check the dongle is plugged in and switched on, the port is right, you "
                    "may open it (Linux: dialout group) and no other program (OpenBCI GUI) holds it"
                )
            raise DeviceError(f"cannot open {self._where()}: {exc}{hint}") from exc
        try:
            if self.file:
                shim.config_board("loopback_false")
                shim.config_board("new_timestamps")
            shim.start_stream()
        except bs.BrainFlowError as exc:
            with contextlib.suppress(bs.BrainFlowError):
                shim.release_session()
            raise DeviceError(f"cannot start streaming from {self._where()}: {exc}") from exc
        self._shim = shim
        self._bs = bs
        self._stop.clear()
        self._stats = AcquisitionStats()
        logger.info("streaming from %s at %g Hz", self._where(), self.sfreq)

    def close(self) -> None:
        """Stop streaming and release the board (idempotent)."""
        shim, self._shim = self._shim, None
        if shim is None:
            return
        for step in (shim.stop_stream, shim.release_session):
            try:
                step()
            except self._bs.BrainFlowError as exc:
                logger.warning("%s: %s failed: %s", self._where(), step.__name__, exc)

    def __iter__(self) -> Iterator[Chunk]:
        if self._shim is None:
            raise DeviceError(
                f"{self._where()} is not open; use `with BrainFlowSource(...) as source:`"
            )
        spec = COUNTERS.get(self.master_board) if self._counter_row is not None else None
        state = _StreamState(
            clock=UnixToLslClock(),
            drops=DropDetector(spec),
            stamps=StampRegulariser(self.sfreq, half_life_s=self.half_life_s),
            last_data=time.monotonic(),
        )
        remaining = self._playback_rows
        while True:
            stopping = self._stop.wait(self.poll_s)
            try:
                data = self._shim.get_board_data()
            except self._bs.BrainFlowError as exc:
                raise DeviceError(f"reading {self._where()} failed: {exc}") from exc
            if data.shape[1]:
                yield from self._process(data, state)
                if remaining is not None:
                    remaining -= data.shape[1]
                    if remaining <= 0:
                        logger.info("%s: end of file", self._where())
                        return
            elif not state.lost and time.monotonic() - state.last_data > self.stall_s:
                state.lost = True
                logger.warning(
                    "%s: no samples for %.1f s (stream lost)", self._where(), self.stall_s
                )
                t = state.stamps.last_t
                yield self._events(
                    [("stream_lost", t if t is not None else pylsl.local_clock(), {})]
                )
            if stopping:
                return

    # -- helpers -----------------------------------------------------------------------------

    def _process(self, data: NDArray[np.float64], state: _StreamState) -> Iterator[Chunk]:
        """Chunks (EEG, accel, events) of one block of BrainFlow rows, shape (num_rows, n)."""
        counter = data[self._counter_row] if self._counter_row is not None else None
        n, drops = state.drops(counter)
        arrival = state.clock(data[self._ts_row])
        previous_t = state.stamps.last_t
        t, jump = state.stamps(n, arrival)
        events: list[tuple[str, float, dict]] = []
        if state.lost:
            state.lost = False
            logger.warning("%s: samples again (stream recovered)", self._where())
            events.append(("stream_recovered", float(t[0]), {}))
        if jump is not None:
            logger.warning(
                "%s: sample arrival times jumped by %+.3f s beyond what the counter shows; "
                "timestamps re-anchored",
                self._where(),
                jump,
            )
            if jump > 0 and previous_t is not None:
                events.append(("gap", previous_t, {"start": previous_t, "end": float(t[0])}))
        period = 1.0 / state.stamps.rate_hz
        n_dropped = 0
        for index, n_missing in drops:
            t_missing = float(t[index] - n_missing * period)
            logger.warning(
                "%s: %d sample(s) dropped before t=%.3f (sample counter)",
                self._where(),
                n_missing,
                t_missing,
            )
            events.append(("dropped_samples", t_missing, {"n": n_missing, "t": t_missing}))
            n_dropped += n_missing
        state.last_data = time.monotonic()
        self._stats = AcquisitionStats(
            n_samples=self._stats.n_samples + n.size,
            n_dropped=self._stats.n_dropped + n_dropped,
            n_drops=self._stats.n_drops + len(drops),
            n_gaps=self._stats.n_gaps + sum(e[0] == "gap" for e in events),
        )
        yield Chunk(data[self._eeg_rows].astype(np.float32), t, self.eeg_info)
        if self.accel_info is not None:
            yield Chunk(data[self._accel_rows].astype(np.float32), t.copy(), self.accel_info)
        if events:
            events.sort(key=lambda e: e[1])
            yield self._events(events)

    def _events(self, events: list[tuple[str, float, dict]]) -> Chunk:
        """An events chunk from ``(event, stamp, fields)`` triples (stamp: LSL seconds)."""
        payload = []
        for event, stamp, fields in events:
            body = {"event": event, "stream": self.name, **fields}
            if event in ("stream_lost", "stream_recovered"):
                body["t"] = stamp
            payload.append(json.dumps(body))
        times = np.array([e[1] for e in events], dtype=np.float64)
        return Chunk(np.array([payload], dtype=object), times, self.events_info)


@dataclass
class _StreamState:
    """Per-iteration state of :meth:`BrainFlowSource.__iter__`."""

    clock: UnixToLslClock
    drops: DropDetector
    stamps: StampRegulariser
    last_data: float
    lost: bool = False
