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
    ``board-default`` or ``generic``; ``desc["time_base"]`` is ``unix`` or ``zero`` (below).
``EEG-accel`` (type ``Accelerometer``, g)
    ``AccX, AccY, AccZ`` at the EEG rate, when the file has accelerometer columns that are not
    all zero (the GUI repeats the 25 Hz accelerometer values, BrainFlow writes zeros between
    updates: both are kept as recorded).
``Markers`` (type ``Markers``, string)
    One JSON sample ``{"event": "marker", "value": v}`` per non-zero value of the marker
    column (GUI markers, BrainFlow ``insert_marker``), when there are any.
``EEG-events`` (type ``Markers``, string; always listed, empty when nothing was repaired)
    What the sample counter showed, one JSON string per event, stamped at ``t``:
    ``{"event": "dropped_samples", "stream": "EEG", "n": n, "t": t}`` for each gap (``t``:
    when the first missing sample was due; ``"lost_cycles": k`` added when the host clock
    showed ``k`` whole counter cycles in it), ``{"event": "duplicate_samples", "stream":
    "EEG", "n": n, "t": t}`` for each sample written more than once (``n`` copies dropped,
    ``t`` the sample's time) and ``{"event": "reordered_samples", "stream": "EEG", "n": n,
    "t": t}`` for each run of ``n`` rows written after later samples and moved back into
    place.

Time base, one rule for every format and GUI version (:func:`host_timestamps`): times are
seconds since the Unix epoch on the clock of the computer that recorded the file when the file
carries a usable timestamp column, else seconds from 0 (files carry no LSL clock). A column
is unusable when it is all zero, holds no Unix time, or fewer than half its rows carry a
usable stamp (one warning line says which); single rows with a stamp cut short, out of range
or stepped back are left to the sample counter (one warning line). The oldest GUI files have
no timestamp column and start at 0 s.

Sample positions (:func:`reconstruct_counter`): every row gets a sample number from the
board's sample counter (wrapping counters such as Cyton's 0..255 unwrapped), with the host
timestamps as a second witness. A repeated value is a repeated packet and is dropped; a short
step back is a packet written out of order (moved to its place) or written twice (dropped); a
step forward skips the missing samples; whole counter cycles lost in a gap, and long gaps the
counter would read as a step back, are decided by the host timestamps (the lowest arrival
delay before and after the break), never making the recording longer than its timestamps plus
one counter period. The timestamps (stamped on arrival, in bursts) are then fitted by a
straight line against the sample numbers, so the times increase strictly, are evenly spaced at
the rate the recording computer measured (within 10 % of nominal, else at the nominal rate,
with a warning giving the fitted and the row rate) and skip exactly the dropped samples.
Everything decided is summarised in one warning line and on ``EEG-events``.
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
    "CounterLayout",
    "CounterReconstruction",
    "OpenBciTextSource",
    "counter_layout",
    "host_timestamps",
    "reconstruct_counter",
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
# the sample counter and the host clock

#: Unix times a host timestamp may hold (2000-01-01 to 2100-01-01), seconds.
UNIX_RANGE_S = (946_684_800.0, 4_102_444_800.0)

#: A host timestamp this many seconds before one above it is not used (a clock stepped back,
#: a stamp cut short): host timestamps are taken on arrival, in file order.
_MAX_BACK_S = 0.1

#: Seconds of rows around a counter break that show the host clock's offset before and after.
_WITNESS_WINDOW_S = 5.0


@dataclass(frozen=True)
class CounterLayout:
    """How a file's sample counter counts, inferred from its values by :func:`counter_layout`.

    Attributes
    ----------
    step : int
        Counter increment per sample (1; 2 on Cyton+Daisy, which merges two packets per
        sample and keeps the even number).
    modulus : int or None
        Counter values before it wraps (256 on Cyton, Cyton+Daisy and the synthetic board);
        ``None`` when the counter never wraps in the file.
    repeats : bool
        Every value comes twice on purpose (Ganglion: two samples per radio packet): a
        repeated value is then the next sample, not a duplicate.
    """

    step: int
    modulus: int | None
    repeats: bool = False

    @property
    def cycle(self) -> int | None:
        """Samples per counter cycle (``modulus / step``); ``None`` when it never wraps."""
        return None if self.modulus is None else max(self.modulus // self.step, 1)


def counter_layout(counter: np.ndarray) -> CounterLayout | None:
    """The :class:`CounterLayout` of a sample counter, or ``None`` when it is irregular.

    The step is the most common forward difference; a drop by more than half the counter's
    range is a wrap, with modulus ``max - min + step`` (rounded up to 256 for a byte counter
    whose top values never appear). Irregular: more than 10 % of the differences are not
    multiples of the step.

    Parameters
    ----------
    counter : ndarray of int, shape (n_rows,)
        The counter column, in file order.
    """
    c = np.asarray(counter, dtype=np.int64)
    d = np.diff(c)
    if d.size == 0:
        return CounterLayout(1, None)
    forward = d[d > 0]
    step = 1
    if forward.size:
        values, counts = np.unique(forward, return_counts=True)
        step = int(values[np.argmax(counts)])
    span = int(c.max() - c.min())
    modulus = None
    if span > 0 and np.any(d < -(span // 2)):
        modulus = span + step
        if 0.9 * 256 <= modulus < 256 and c.max() < 256:
            modulus = 256
    dm = d % modulus if modulus else d
    if step > 1 and np.count_nonzero(dm % step) > 0.1 * d.size:
        return None
    return CounterLayout(step, modulus, repeats=bool(np.count_nonzero(d == 0) > 0.3 * d.size))


def _counter_positions(counter: np.ndarray, layout: CounterLayout) -> np.ndarray:
    """Sample numbers from the counter alone, shape (n_rows,), int64, first row 0.

    Each step between rows is read as the shortest move the counter allows: forward by up to
    3/4 of a cycle, backward by up to 1/4 (a packet written late or twice; 0 repeats the
    sample). What the counter cannot show (whole cycles lost, a forward gap of more than 3/4
    of a cycle) is left to :func:`_host_cycles`.
    """
    d = np.diff(np.asarray(counter, dtype=np.int64))
    if layout.modulus:
        d = d % layout.modulus
    units = np.rint(d / layout.step).astype(np.int64)
    cycle = layout.cycle
    if cycle:
        units %= cycle
        units = np.where(units >= cycle - cycle // 4, units - cycle, units)
    if layout.repeats:
        units = np.maximum(units, 1)
    return np.concatenate([[0], np.cumsum(units)])


def _host_cycles(
    pos: np.ndarray, host: np.ndarray, cycle: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole counter cycles the host clock shows at breaks of the counter.

    Samples arrive late, never early, so the lowest ``host - pos`` over a few seconds is the
    clock offset; a break that lost ``k`` whole cycles raises it by ``k`` cycles from there
    on, a burst after a stall only for the burst. Rows examined: where ``host - pos`` jumps
    by more than half a cycle from the row before (either way), and the first of each run of
    rows more than half a cycle above the offset of the rows before them (a break right after
    a burst). Rounding: ``k >= 1`` from half a cycle up; ``k <= -1`` (a packet more than a
    quarter cycle late, read as a forward step) from 3/4 of a cycle down.

    Parameters
    ----------
    pos : ndarray of int64, shape (n_rows,)
        Sample numbers from the counter (:func:`_counter_positions`).
    host : ndarray of float, shape (n_rows,)
        Host timestamps in samples (seconds × nominal rate); NaN where unusable.
    cycle : int
        Samples per counter cycle.
    window : int
        Rows on each side of a break that show the offset.

    Returns
    -------
    cycles : ndarray of int64, shape (n_rows,)
        Cycles to add to the sample numbers from each row on (0 at most rows).
    evidence : ndarray of float, shape (n_rows,)
        The offset change in cycles behind each non-zero decision (NaN elsewhere).
    """
    from scipy.ndimage import minimum_filter1d  # noqa: PLC0415  (scipy is slow to import)

    n = pos.size
    resid = host - pos
    cycles = np.zeros(n, dtype=np.int64)
    evidence = np.full(n, np.nan)
    finite = np.isfinite(resid)
    if finite.sum() < 2:
        return cycles, evidence
    # carry the last finite value over rows without a usable timestamp
    filled = resid[np.maximum.accumulate(np.where(finite, np.arange(n), 0))]
    with np.errstate(invalid="ignore"):
        steps = np.abs(np.diff(filled)) > 0.5 * cycle
    lowest = np.where(finite, resid, np.inf)
    env = minimum_filter1d(lowest, size=window, origin=(window - 1) // 2, mode="nearest")
    above = np.zeros(n, dtype=bool)
    above[1:] = finite[1:] & (resid[1:] - env[:-1] > 0.5 * cycle)
    run_starts = above & ~np.concatenate([[False], above[:-1]])
    candidates = np.union1d(np.flatnonzero(steps) + 1, np.flatnonzero(run_starts))
    for k in candidates:
        before = lowest[max(0, k - window) : k].min()
        after = lowest[k : k + window].min()
        ratio = (after - before) / cycle
        if not np.isfinite(ratio):
            continue
        m = int(np.floor(ratio + 0.5)) if ratio >= 0 else -int(np.floor(0.25 - ratio))
        if m:
            cycles[k], evidence[k] = m, ratio
            lowest[k:] -= m * cycle
    return cycles, evidence


def _host_rate(pos: np.ndarray, host: np.ndarray, sfreq: float) -> float:
    """Samples per second of host time, Hz: the median over all pairs of rows 0.5 s apart of
    counter samples ÷ host seconds between them.

    Robust to the counter's unseen cycles (only the pairs around one are off) and to bursts
    (a pair's error is its two arrival delays over 0.5 s, the median averages them out);
    ``sfreq`` when there are too few pairs.
    """
    lag = min(max(int(0.5 * sfreq), 1), pos.size // 4)
    if lag < 1:
        return sfreq
    dpos = pos[lag:] - pos[:-lag]
    dhost = host[lag:] - host[:-lag]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(dhost) & (dhost > 0) & (dpos > 0)
    if np.count_nonzero(ok) < 10:
        return sfreq
    return float(np.median(dpos[ok] / dhost[ok]))


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


@dataclass(frozen=True)
class CounterReconstruction:
    """Where each row of a text recording goes in time: :func:`reconstruct_counter`'s result.

    Attributes
    ----------
    positions : ndarray of int64, shape (n_rows,)
        Sample number of each row, 0 at the first sample kept, dropped samples counted; a
        duplicate row has the number of the sample it repeats.
    order : ndarray of intp, shape (n_kept,)
        The rows kept, in time order (their positions increase strictly).
    duplicate : ndarray of bool, shape (n_rows,)
        Rows dropped because an earlier row of the file holds the same sample.
    reordered : ndarray of bool, shape (n_rows,)
        Kept rows written after a later sample (moved to their place in time).
    cycles : ndarray of int64, shape (n_rows,)
        Whole counter cycles added from each row on because the host clock showed them (taken
        away where negative); 0 at most rows.
    layout : CounterLayout or None
        How the counter counts; ``None`` without a (regular) counter: rows in file order.
    t0 : float
        Time of sample 0, seconds: Unix time (``time_base == "unix"``) or 0.
    dt : float
        Seconds per sample: fitted to the host timestamps, else ``1 / sfreq``.
    time_base : {"unix", "zero"}
        ``unix``: the file's host timestamps anchor the times; ``zero``: times from 0 s.
    host_span_s : float or None
        Last minus first usable host timestamp, seconds.
    fitted_rate_hz : float or None
        Rate of the line through the host timestamps against the positions, Hz (``1 /
        slope``), whether or not the times follow it.
    n_clamped : int
        Cycles taken back so the span stays within the host span plus one counter period.
    """

    positions: np.ndarray
    order: np.ndarray
    duplicate: np.ndarray
    reordered: np.ndarray
    cycles: np.ndarray
    layout: CounterLayout | None
    t0: float
    dt: float
    time_base: str
    host_span_s: float | None
    fitted_rate_hz: float | None = None
    n_clamped: int = 0

    def time_of(self, positions: np.ndarray) -> np.ndarray:
        """Seconds of sample numbers ``positions`` (any shape)."""
        return self.t0 + self.dt * np.asarray(positions, dtype=np.float64)

    @property
    def times(self) -> np.ndarray:
        """Time of each row's sample, shape (n_rows,), seconds."""
        return self.time_of(self.positions)

    @property
    def n_rows(self) -> int:
        return int(self.positions.size)

    @property
    def n_kept(self) -> int:
        return int(self.order.size)

    @property
    def n_duplicates(self) -> int:
        return int(np.count_nonzero(self.duplicate))

    @property
    def n_repeated(self) -> int:
        """Duplicate rows that repeat the row just before them (the counter stepped by 0)."""
        same = np.zeros(self.n_rows, dtype=bool)
        same[1:] = self.positions[1:] == self.positions[:-1]
        return int(np.count_nonzero(self.duplicate & same))

    @property
    def n_reordered(self) -> int:
        return int(np.count_nonzero(self.reordered))

    @property
    def span_s(self) -> float:
        """Seconds from the first to the last sample kept."""
        if self.n_kept == 0:
            return 0.0
        kept = self.positions[self.order]
        return float(self.dt * (kept[-1] - kept[0]))

    def gaps(self) -> list[tuple[int, int, int]]:
        """``(first missing position, n missing, whole cycles seen on the host clock)`` for
        each gap between consecutive kept samples, in time order."""
        kept = self.positions[self.order]
        step = np.diff(kept)
        at = np.flatnonzero(step > 1)
        lost_cycles = dict.fromkeys(at.tolist(), 0)
        for row in np.flatnonzero(self.cycles > 0):
            j = int(np.searchsorted(kept, self.positions[row])) - 1
            if j in lost_cycles:
                lost_cycles[j] += int(self.cycles[row])
        return [(int(kept[j] + 1), int(step[j] - 1), lost_cycles[j]) for j in at.tolist()]

    @property
    def n_dropped(self) -> int:
        """Samples missing between the first and the last sample kept."""
        return sum(n for _, n, _ in self.gaps())

    def summary(self) -> str:
        """One line: what was dropped, moved and found missing, and the spans (s)."""
        parts = [f"{self.n_rows} rows -> {self.n_kept} samples in time order"]
        if self.n_duplicates:
            rep = self.n_repeated
            parts.append(
                f"{self.n_duplicates} duplicate rows dropped ({rep} repeated in place, "
                f"{self.n_duplicates - rep} written again later)"
            )
        if self.n_reordered:
            parts.append(f"{self.n_reordered} out-of-order rows moved to their place")
        gaps = self.gaps()
        if gaps:
            with_cycles = [g for g in gaps if g[2]]
            text = f"{self.n_dropped} samples missing in {len(gaps)} gaps"
            if with_cycles:
                text += (
                    f" ({sum(g[2] for g in with_cycles)} whole counter cycles in "
                    f"{len(with_cycles)} of them, seen on the host timestamps)"
                )
            parts.append(text)
        back = int(-self.cycles[self.cycles < 0].sum())
        if back:
            parts.append(
                f"{back} counter cycles taken off where the host timestamps showed a packet "
                "more than a quarter cycle late"
            )
        if self.n_clamped:
            parts.append(f"{self.n_clamped} cycles taken back to fit the host timestamps")
        line = ", ".join(parts)
        if self.host_span_s is not None:
            line += f"; {self.span_s:.3f} s, host timestamps span {self.host_span_s:.3f} s"
        return line


def reconstruct_counter(
    counter: np.ndarray | None,
    unix_s: np.ndarray | None,
    sfreq: float,
    *,
    path: str | os.PathLike = "",
) -> CounterReconstruction:
    """Place every row of a text recording in time from its sample counter, with the host
    timestamps as a second witness.

    1. The counter gives each row a sample number (:func:`counter_layout`,
       :func:`_counter_positions`): a step of 0 repeats a sample, a small step back (up to a
       quarter of a counter cycle) is a packet written late or twice, a step forward skips
       the missing samples.
    2. The host timestamps add the whole counter cycles the counter cannot show, and correct
       a long forward gap the counter alone would read as a step back (:func:`_host_cycles`).
    3. Rows whose sample an earlier row already holds are dropped (duplicates); the others
       are put in time order (out-of-order rows moved to their place).
    4. Times: a straight line through the host timestamps against the sample numbers
       (:func:`_fit_line`; late bursts ignored), so they increase strictly, are evenly spaced
       at the rate the recording computer measured and skip exactly the missing samples. The
       nominal rate is used when the fitted one is more than 10 % off (with a warning giving
       both rates). Without host timestamps: ``position / sfreq`` from 0 s.

    The samples from the first to the last kept, at the rate the host clock measures
    (:func:`_host_rate`, independent of the cycles decided), never outlast the host
    timestamps' span by more than one counter period: cycles added on the weakest evidence
    are taken back until they fit (with a warning).

    Parameters
    ----------
    counter : ndarray of int, shape (n_rows,), optional
        The board's sample counter in file order (may wrap, e.g. 0..255); ``None`` when the
        file has none (rows are then consecutive samples in file order).
    unix_s : ndarray of float, shape (n_rows,), optional
        Host timestamp of each row, Unix seconds, NaN where unusable
        (:func:`host_timestamps`); ``None`` when the file has no usable ones.
    sfreq : float
        Nominal sample rate, Hz.
    path : str or Path, optional
        The file, for log messages.

    Returns
    -------
    CounterReconstruction
    """
    path = Path(path)
    n = len(counter) if counter is not None else (0 if unix_s is None else len(unix_s))
    host = None if unix_s is None else np.asarray(unix_s, dtype=np.float64)
    if host is not None and not np.isfinite(host).any():
        host = None
    layout = None
    if counter is not None and n > 1:
        layout = counter_layout(counter)
        if layout is None:
            logger.warning(
                "%s: the sample counter does not advance regularly; rows are taken as "
                "consecutive samples and dropped samples are not detected",
                path,
            )
    pos = np.arange(n, dtype=np.int64) if layout is None else _counter_positions(counter, layout)
    cycle = None if layout is None else layout.cycle
    cycles = np.zeros(n, dtype=np.int64)
    evidence = np.full(n, np.nan)
    t_ref, rate = 0.0, sfreq
    if host is not None:
        t_ref = float(np.nanmin(host))
        if cycle is not None and n > 1:
            # the host clock in samples at the rate it measures, so that a board running off
            # its nominal rate leaves no drift in the offsets compared across a break
            window = max(int(_WITNESS_WINDOW_S * sfreq), 1)
            rate = _host_rate(pos, host, sfreq)
            cycles, evidence = _host_cycles(pos, (host - t_ref) * rate, cycle, window)
    n_clamped = 0
    while True:
        rec = _place(pos, cycles, cycle, host, t_ref, sfreq, layout, n_clamped)
        if host is None or cycle is None or rec.host_span_s is None:
            break
        # samples spanned, at the rate the host clock measures independently of the cycles
        # decided (a line fitted to the positions would stretch with them)
        kept = rec.positions[rec.order]
        if (kept[-1] - kept[0] - cycle) / rate <= rec.host_span_s + 1e-9:
            break
        added = np.flatnonzero(cycles > 0)
        if added.size == 0:
            break
        k = added[np.argmin(evidence[added] - (cycles[added] - 0.5))]
        cycles[k] -= 1
        n_clamped += 1
    if n_clamped:
        logger.warning(
            "%s: %d counter cycles read from the host timestamps were taken back: with them "
            "the recording would outlast its timestamps by more than one counter period",
            path,
            n_clamped,
        )
    fitted = rec.fitted_rate_hz
    if fitted is not None and not abs(fitted / sfreq - 1.0) <= 0.1:
        span = rec.host_span_s or float("nan")
        logger.warning(
            "%s: the timestamps give %.4g Hz (host clock against the %d samples %s; %d rows "
            "over %.3f s of timestamps = %.4g Hz) but the nominal rate is %g Hz; times follow "
            "the nominal rate (pass --sfreq if the board was reconfigured)",
            path,
            fitted,
            int(np.ptp(rec.positions[rec.order])) + 1,
            "reconstructed from the counter" if layout is not None else "in file order",
            n,
            span,
            n / span if span > 0 else float("nan"),
            sfreq,
        )
    return rec


def _place(
    pos: np.ndarray,
    cycles: np.ndarray,
    cycle: int | None,
    host: np.ndarray | None,
    t_ref: float,
    sfreq: float,
    layout: CounterLayout | None,
    n_clamped: int,
) -> CounterReconstruction:
    """Steps 3 and 4 of :func:`reconstruct_counter` for given cycle decisions."""
    n = pos.size
    p = pos + cycle * np.cumsum(cycles) if cycle else pos.copy()
    rows = np.arange(n)
    by_time = np.lexsort((rows, p))  # by position, then file order: the first copy wins
    first = np.ones(n, dtype=bool)
    first[1:] = p[by_time][1:] != p[by_time][:-1]
    order = by_time[first]
    duplicate = np.ones(n, dtype=bool)
    duplicate[order] = False
    kept_rows = np.flatnonzero(~duplicate)
    pk = p[kept_rows]
    latest = np.maximum.accumulate(pk)
    reordered = np.zeros(n, dtype=bool)
    reordered[kept_rows[1:][pk[1:] < latest[:-1]]] = True
    if n:
        p = p - p[order[0]]
    dt, t0, time_base, host_span, rate = 1.0 / sfreq, 0.0, "zero", None, None
    if host is not None and n:
        time_base = "unix"
        ok = ~duplicate & np.isfinite(host)
        host_span = float(np.nanmax(host) - np.nanmin(host))
        x, y = p[ok].astype(np.float64), host[ok] - t_ref
        offset = float(np.median(y - x / sfreq))
        t0 = t_ref + offset
        if x.size > 1 and np.ptp(x) > 0:
            slope, intercept = _fit_line(x, y)
            rate = 1.0 / slope if slope > 0 else float("nan")
            if slope > 0 and abs(rate / sfreq - 1.0) <= 0.1:
                dt, t0 = slope, t_ref + intercept
    return CounterReconstruction(
        positions=p,
        order=order,
        duplicate=duplicate,
        reordered=reordered,
        cycles=cycles.copy(),
        layout=layout,
        t0=t0,
        dt=dt,
        time_base=time_base,
        host_span_s=host_span,
        fitted_rate_hz=rate,
        n_clamped=n_clamped,
    )


def regularise_times(
    counter: np.ndarray | None,
    unix_s: np.ndarray | None,
    sfreq: float,
    *,
    path: str | os.PathLike = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Sample times and positions of every row: :func:`reconstruct_counter`, shortened.

    Returns
    -------
    times : ndarray of float64, shape (n_rows,)
        Seconds of each row's sample (Unix time with ``unix_s``, else from 0 s).
    positions : ndarray of int64, shape (n_rows,)
        Sample number of each row, 0 at the first sample, dropped samples counted.
    """
    rec = reconstruct_counter(counter, unix_s, sfreq, path=path)
    return rec.times, rec.positions


def host_timestamps(
    column: np.ndarray | None,
    sfreq: float,
    *,
    path: str | os.PathLike = "",
    line_numbers: np.ndarray | None = None,
) -> np.ndarray | None:
    """A file's timestamp column as Unix seconds, or ``None`` when it is absent or unusable.

    The rule for every text format (OpenBCI GUI of any version, BrainFlow CSV): times are
    Unix time when the file carries a usable timestamp column, else they start at 0 s. The
    unit is milliseconds when the median stamp exceeds 1e11 (GUI v4 and v6), else seconds
    (GUI v5, BrainFlow). A row's stamp is usable when it is a Unix time between 2000 and 2100,
    within an hour (or four times the recording's length) of the median, and not more than
    0.1 s before a stamp above it; other rows (a stamp cut short, a clock stepped back) are
    NaN, placed by the sample counter, with one warning line. The column is unusable, with one
    warning line saying why, when it is all zero, holds no Unix time, or when fewer than half
    the rows have a usable stamp.

    Parameters
    ----------
    column : ndarray of float, shape (n_rows,), optional
        The timestamp column as parsed; ``None`` when the file has none (no warning).
    sfreq : float
        Nominal sample rate, Hz.
    path : str or Path, optional
        The file, for messages.
    line_numbers : ndarray of int, shape (n_rows,), optional
        File line of each row, for messages.

    Returns
    -------
    ndarray of float64, shape (n_rows,), or None
    """
    if column is None or len(column) == 0:
        return None
    ts = np.asarray(column, dtype=np.float64)
    n = ts.size
    path = Path(path)
    nonzero = ts[ts != 0]
    if nonzero.size == 0:
        logger.warning("%s: the timestamp column is all zero; times start at 0 s", path)
        return None
    unit = "ms" if np.median(nonzero) > 1e11 else "s"
    sec = ts / 1000.0 if unit == "ms" else ts.copy()
    ok = (sec >= UNIX_RANGE_S[0]) & (sec <= UNIX_RANGE_S[1])
    if not ok.any():
        logger.warning(
            "%s: the timestamp column is not a Unix time (median %.6g); times start at 0 s",
            path,
            float(np.median(ts)),
        )
        return None
    ok &= np.abs(sec - np.median(sec[ok])) <= max(3600.0, 4.0 * n / sfreq)
    idx = np.flatnonzero(ok)
    ok[idx[sec[idx] < np.maximum.accumulate(sec[idx]) - _MAX_BACK_S]] = False
    n_ok = int(np.count_nonzero(ok))
    if n_ok < max(2, n / 2):
        logger.warning(
            "%s: only %d of %d rows carry a usable Unix timestamp (the others are cut short, "
            "out of range or run back in time); times start at 0 s",
            path,
            n_ok,
            n,
        )
        return None
    if n_ok < n:
        bad = int(np.flatnonzero(~ok)[0])
        where = f"line {line_numbers[bad]}" if line_numbers is not None else f"row {bad + 1}"
        logger.warning(
            "%s: %d rows have a timestamp that is cut short, out of range or runs back in "
            "time (first: %s, %r %s); they are placed by the sample counter",
            path,
            n - n_ok,
            where,
            float(ts[bad]),
            unit,
        )
    sec[~ok] = np.nan
    return sec


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
    timestamps: np.ndarray | None  # (n_times,) the timestamp column as parsed (ms or s)
    accel: np.ndarray | None  # (3, n_times) g
    marker: np.ndarray | None  # (n_times,)
    board_name: str
    default_names: str | None
    source_id: str
    desc: dict
    line_numbers: np.ndarray | None = None  # (n_times,) file line of each row


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
        """Samples missing from the file, from its sample counter and timestamps."""
        return self.counter_report.n_dropped

    @property
    def counter_report(self) -> CounterReconstruction:
        """How the rows were placed in time: duplicates, reordered rows, gaps, time base."""
        self.open()
        return self._counter_report

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
        unix_s = host_timestamps(
            rec.timestamps, sfreq, path=self.path, line_numbers=rec.line_numbers
        )
        cr = reconstruct_counter(rec.counter, unix_s, sfreq, path=self.path)
        self._counter_report = cr
        order = cr.order
        times = cr.times[order]
        labels, montage_kind = _eeg_labels(self.montage, rec.eeg.shape[0], rec.default_names)
        desc = {
            "manufacturer": self.manufacturer,
            "board": rec.board_name,
            "source_file": self.path.name,
            "montage": montage_kind,
            "time_base": cr.time_base,
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
        chunks[self.name] = Chunk(np.ascontiguousarray(rec.eeg[:, order]), times, eeg_info)
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
            chunks[info.name] = Chunk(np.ascontiguousarray(rec.accel[:, order]), times, info)
        if rec.marker is not None and np.any(rec.marker):
            # every marker is kept, a duplicate row's too: at the time of its row's sample
            idx = np.flatnonzero(rec.marker)
            idx = idx[np.argsort(cr.positions[idx], kind="stable")]
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
            chunks[info.name] = Chunk(data, cr.times[idx], info)
        ev_times, events = _counter_events(cr, self.name)
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
            np.array([events], dtype=object).reshape(1, len(events)), ev_times, info
        )
        if events:
            logger.warning(
                "%s: sample counter: %s (reported on %s)", self.path, cr.summary(), info.name
            )
        self._chunks = chunks
        self._streams = [c.info for c in chunks.values()]


def _counter_events(cr: CounterReconstruction, stream: str) -> tuple[np.ndarray, list[str]]:
    """The ``<stream>-events`` of a reconstruction, in time order: ``(times (n,), JSON)``.

    ``dropped_samples`` per gap (``lost_cycles`` added when the host clock showed whole
    counter cycles in it), ``duplicate_samples`` per sample repeated (``n`` rows dropped,
    stamped at the sample's time), ``reordered_samples`` per run of consecutive rows moved
    (``n`` rows, stamped at the first one's time).
    """
    items: list[tuple[float, dict]] = []
    for first, n, lost_cycles in cr.gaps():
        t = float(cr.time_of(first))
        event = {"event": "dropped_samples", "stream": stream, "n": n, "t": t}
        if lost_cycles:
            event["lost_cycles"] = lost_cycles
        items.append((t, event))
    dup_pos, dup_n = np.unique(cr.positions[cr.duplicate], return_counts=True)
    for p, n in zip(dup_pos.tolist(), dup_n.tolist(), strict=True):
        t = float(cr.time_of(p))
        items.append((t, {"event": "duplicate_samples", "stream": stream, "n": n, "t": t}))
    moved = np.flatnonzero(cr.reordered)
    if moved.size:
        runs = np.split(moved, np.flatnonzero(np.diff(moved) > 1) + 1)
        for run in runs:
            t = float(cr.time_of(cr.positions[run].min()))
            items.append(
                (t, {"event": "reordered_samples", "stream": stream, "n": int(run.size), "t": t})
            )
    items.sort(key=lambda item: item[0])
    times = np.array([t for t, _ in items], dtype=np.float64)
    return times, [json.dumps(e) for _, e in items]


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
            cols = self._positional_columns(lines[i : i + 50], i + 1, header)
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
            timestamps=get.get("timestamp"),
            accel=accel,
            marker=get.get("marker"),
            board_name=board_name,
            default_names=default_names,
            source_id=f"OpenBCI_GUI:{board_name}:{self.path.name}",
            desc={"format": cols["format"]},
            line_numbers=table.line_numbers,
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

    def _positional_columns(self, rows: list[str], line_no: int, header: dict) -> dict:
        """Columns of a file without a column row, from its first rows (``rows[0]`` is at
        ``line_no``): a column is numeric, or a Unix time in ms, when most rows say so (the
        first rows may carry a timestamp cut short)."""
        first_row = rows[0]
        fields = [f.strip() for f in first_row.split(",")]
        sample = [
            [f.strip() for f in r.split(",")]
            for r in rows
            if r.strip() and r.count(",") == first_row.count(",")
        ]

        def most(test) -> list[bool]:  # noqa: ANN001
            return [2 * sum(test(r[j]) for r in sample) > len(sample) for j in range(len(fields))]

        numeric = most(_is_number)
        is_unix_ms = most(lambda f: _is_number(f) and float(f) > 1e11)
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
        sfreq = float(descr["sampling_rate"])
        return _Recording(
            sfreq=sfreq,
            eeg=np.stack([get[f"eeg{k}"] for k in range(n_eeg)]),
            counter=counter,
            timestamps=get.get("timestamp"),
            accel=np.stack([get[f"accel{k}"] for k in range(3)]) if "accel0" in get else None,
            marker=get.get("marker"),
            board_name=str(descr.get("name", board_id)),
            default_names=descr.get("eeg_names"),
            source_id=f"BrainFlow:{descr.get('name', board_id)}:{self.path.name}",
            desc={"format": "BrainFlow CSV", "board_id": int(board_id)},
            line_numbers=table.line_numbers,
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
