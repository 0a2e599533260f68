"""Aligned EEG + FaceFeatures windows on the LSL clock.

Windows end on a fixed grid, ``t_k = origin + k * hop_s``; by default ``origin`` is the first
EEG timestamp plus ``window_s`` (the first full window). The grid depends only on timestamps,
so a recording fed live, in chunks of any size, or from a file gives the same windows.

Window ``k`` holds the EEG samples and the FaceFeatures frames with ``t_k - window_s < t <=
t_k`` (for EEG, to half a sample period: regular timestamps fall exactly on the grid, and the
rounding of a clock offset must not decide which window such a sample joins). The EEG part always has ``n_times = round(window_s * sfreq)`` columns:

* when the interval has no pause longer than ``max_gap_s`` (timestamp jitter and clock drift
  are tolerated), it is the last ``n_times`` samples up to ``t_k``;
* otherwise the window is *incomplete*: samples are placed by their timestamps and the missing
  stretch stays NaN (never interpolated), ``eeg_gaps`` lists the pauses and ``eeg_coverage``
  the fraction of samples present.

A window is emitted once a sample *after* its end has arrived on the EEG stream and on the face
stream (timestamps may repeat, so reaching ``t_k`` is not enough), or, when the face stream lags
(or stopped), once the EEG is ``face_wait_s`` past ``t_k``: a face stream that
stops leaves windows without face frames, it never stalls the EEG. Buffers keep only what the
next windows need.

Live input needs two more rules, because streams arrive through separate readers:

* a face stream announced with :meth:`Windower.expect_face` is waited for from the first window
  on, before its first frame arrives (otherwise the windows ahead of the first face chunk would
  be cut without faces);
* with a ``clock`` (live sessions), a window also waits ``face_wait_s`` on that clock, counted
  from the arrival of the EEG that completed it. After a stall the EEG reader can deliver
  seconds of backlog in one go, before the face reader has run: stream time alone would then
  call frames "late" that are already waiting in the face inlet. Offline (no clock) the rule is
  stream time alone, so a file gives the same windows however it is chunked.

A face stream that stops does not cost every later window ``face_wait_s`` of delay. Its state
(:attr:`Windower.face_state`) is one of:

``"ok"``
    windows wait for late frames as above;
``"stalled"``
    a window waited the full ``face_wait_s`` (stream time, and on the clock when there is one)
    without a frame after its end: later windows are cut as soon as the EEG passes their end,
    without waiting for frames;
``"ended"`` / ``"lost"``
    the source said so (:meth:`Windower.face_stopped`: a video file that ended, an LSL inlet
    that lost its stream): from then on windows are cut at once, the first one included.

Frames that arrive again (no more than ``face_wait_s`` of stream time behind the EEG) put the
state back to ``"ok"``. Every change is logged as one line (a warning) and each window carries
the state it was cut in (``Window.face_state``). Windows cut without frames go on with the EEG
alone (no face frame, ``face_coverage`` 0).
"""

from __future__ import annotations

import collections
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, ShapeError

logger = logging.getLogger(__name__)

#: Stream type of the face pipeline's per-frame features.
FACE_TYPE = "FaceFeatures"

#: States of the face stream (see the module docstring).
FACE_STATES = ("ok", "stalled", "ended", "lost")

#: A change to a state warned about less than this long ago (seconds, stream time) is logged at
#: INFO instead of WARNING, so a flickering stream does not flood the log.
_QUIET_REPEAT_S = 10.0


@dataclass(frozen=True)
class WindowConfig:
    """Settings of :class:`Windower`.

    Parameters
    ----------
    window_s : float
        Window length in seconds.
    hop_s : float
        Spacing of window ends in seconds.
    max_gap_s : float
        A pause between EEG samples longer than this is a gap.
    face_wait_s : float
        How far (EEG time) a window waits for late face frames before it is emitted without
        them; a window that waited this long for nothing marks the face stream stalled (later
        windows no longer wait, until frames come again).
    face_hold_s : float
        How long one face frame covers when computing face coverage (frames further apart
        leave a gap).
    origin_s : float or None
        A point of the window-end grid on the LSL clock (windows then end at ``origin_s + k *
        hop_s``, from the first that can hold data); ``None``: the first EEG timestamp +
        ``window_s`` (the first full window).
    max_face_buffer_s : float
        Face frames further ahead of the EEG than this are dropped (with a warning) so the
        buffer stays bounded when the EEG stalls.
    """

    window_s: float = 4.0
    hop_s: float = 0.5
    max_gap_s: float = 0.1
    face_wait_s: float = 1.0
    face_hold_s: float = 0.25
    origin_s: float | None = None
    max_face_buffer_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("window_s", "hop_s", "max_gap_s", "face_hold_s", "max_face_buffer_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {v}")
        if not self.face_wait_s >= 0:
            raise ConfigError(f"face_wait_s must be >= 0 s, got {self.face_wait_s}")
        if self.origin_s is not None and not np.isfinite(self.origin_s):
            raise ConfigError(f"origin_s must be finite or None, got {self.origin_s}")


@dataclass(frozen=True, eq=False)
class Window:
    """One aligned window ``(t_end - window_s, t_end]``.

    Attributes
    ----------
    index : int
        Grid index ``k``.
    t_end : float
        End of the window, LSL clock seconds.
    window_s : float
        Length in seconds.
    sfreq : float
        EEG sample rate in Hz.
    ch_names : tuple of str
        EEG channels.
    eeg : ndarray, shape (n_chans, n_times)
        EEG (as pushed: usually filtered), NaN where samples are missing. Read-only.
    eeg_raw : ndarray, shape (n_chans, n_times), or None
        The unfiltered EEG at the same samples, when it was pushed. Read-only.
    first_index : int
        Position of ``eeg[:, 0]`` among all EEG samples pushed since the last reset; ``-1``
        for an incomplete window.
    eeg_coverage : float
        Fraction of the ``n_times`` samples present.
    eeg_gaps : tuple of (float, float)
        Pauses longer than ``max_gap_s`` inside the window, LSL clock seconds.
    face : ndarray, shape (n_frames, n_features), or None
        FaceFeatures frames in the window (``None`` when no face stream was pushed).
    face_times : ndarray, shape (n_frames,), or None
    face_mask : ndarray of bool, shape (n_frames,), or None
        Frames with a face (first channel ``face_present`` >= 0.5) and finite features.
    face_names : tuple of str
        FaceFeatures channels.
    face_coverage : float
        Fraction of the window covered by frames with a face (each frame covers up to
        ``face_hold_s``); 0 without a face stream.
    face_gap : bool
        The face stream itself left part of the window without frames.
    face_state : str
        State of the face stream when the window was cut (:data:`FACE_STATES`; ``"ok"`` also
        without a face stream): ``"stalled"``, ``"ended"`` or ``"lost"`` mean the window was
        cut without waiting for face frames.
    """

    index: int
    t_end: float
    window_s: float
    sfreq: float
    ch_names: tuple[str, ...]
    eeg: NDArray[np.float64]
    eeg_raw: NDArray | None
    first_index: int
    eeg_coverage: float
    eeg_gaps: tuple[tuple[float, float], ...] = ()
    face: NDArray | None = None
    face_times: NDArray | None = None
    face_mask: NDArray[np.bool_] | None = None
    face_names: tuple[str, ...] = ()
    face_coverage: float = 0.0
    face_gap: bool = False
    face_state: str = "ok"

    @property
    def t_start(self) -> float:
        return self.t_end - self.window_s

    @property
    def complete(self) -> bool:
        """Every EEG sample is present (no gap)."""
        return self.first_index >= 0

    @property
    def n_times(self) -> int:
        return int(self.eeg.shape[-1])


class _Buffer:
    """Append-only buffer of samples (time on the last axis) that hands out read-only views.

    Holds one or more sample arrays (the filtered and the raw EEG, say) that share one time
    axis. Views handed out earlier stay valid: when the buffer is full it moves its live samples
    to the front in place only while no view of it exists, and otherwise allocates new arrays.
    ``base`` counts the samples dropped from the front since the last reset.
    """

    def __init__(self, n_chans: int, dtypes: tuple[np.dtype, ...], capacity: int = 1024) -> None:
        self.data = [np.empty((n_chans, capacity), dtype=dt) for dt in dtypes]
        self.times = np.empty(capacity)
        self.start = 0
        self.end = 0
        self.base = 0

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def t(self) -> NDArray[np.float64]:
        return self.times[self.start : self.end]

    def append(self, times: NDArray, *data: NDArray) -> None:
        """Add samples: ``times`` (n,) and one (n_chans, n) array per sample array."""
        n = times.shape[0]
        if self.end + n > self.times.shape[0]:
            self._make_room(n)
        end = self.end
        for buf, x in zip(self.data, data, strict=True):
            buf[:, end : end + n] = x
        self.times[end : end + n] = times
        self.end = end + n

    def _make_room(self, n: int) -> None:
        live, start, cap = self.end - self.start, self.start, self.times.shape[0]
        # sys.getrefcount counts the list's reference and its own argument: 2 = no view out.
        if live + n <= cap // 2 and all(
            sys.getrefcount(self.data[i]) == 2 for i in range(len(self.data))
        ):
            for buf in self.data:
                buf[:, :live] = buf[:, start : start + live]  # overlapping moves are safe
            self.times[:live] = self.times[start : start + live]
        else:
            cap = max(4 * (live + n), 1024)
            for i, buf in enumerate(self.data):
                new = np.empty((buf.shape[0], cap), dtype=buf.dtype)
                new[:, :live] = buf[:, start : start + live]
                self.data[i] = new
            times = np.empty(cap)
            times[:live] = self.times[start : start + live]
            self.times = times
        self.start, self.end = 0, live

    def drop_before(self, t: float) -> None:
        """Forget samples with time < ``t``."""
        k = int(np.searchsorted(self.t, t, side="left"))
        self.start += k
        self.base += k

    def drop_first(self, k: int) -> None:
        k = min(k, len(self))
        self.start += k
        self.base += k

    def view(self, lo: int, hi: int, i: int = 0) -> NDArray:
        """Read-only view of samples ``lo:hi`` (positions relative to ``start``) of array ``i``."""
        v = self.data[i][:, self.start + lo : self.start + hi]
        v.flags.writeable = False
        return v


class Windower:
    """Cuts EEG (and optionally FaceFeatures) into aligned windows; see the module docstring.

    Push EEG with :meth:`push_eeg` (filtered samples and, optionally, the raw samples they came
    from, for signal quality) and face frames with :meth:`push_face`; each returns the windows
    that became ready. ``__call__(chunk)`` routes a chunk by its stream type. :meth:`flush` emits
    what is left at the end of a recording.

    Parameters
    ----------
    config : WindowConfig, optional
    clock : callable, optional
        Live sessions: a monotonic clock in seconds (e.g. ``time.monotonic``); a window then
        also waits ``face_wait_s`` on it for late face frames (see the module docstring).
        ``None`` (replays as fast as possible): stream time alone decides.
    """

    def __init__(
        self, config: WindowConfig | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config or WindowConfig()
        self.clock = clock
        self._expected_face: StreamInfo | None = None
        self.reset()

    def expect_face(self, info: StreamInfo) -> None:
        """Announce a face stream before its first frame: windows wait for it from the start.

        Parameters
        ----------
        info : StreamInfo
            The FaceFeatures stream (numeric, first channel ``face_present``).
        """
        self._check_face_info(info)
        self._expected_face = info
        if self._face_info is None:
            self._set_face(info)

    def reset(self) -> None:
        """Forget buffers and the grid; the next EEG chunk starts a new grid."""
        #: Counts restarts (this method, and restarts on a changed stream or on timestamps
        #: going back); ``Window.first_index`` counts from 0 again after each.
        self.epoch: int = getattr(self, "epoch", -1) + 1
        self._eeg: _Buffer | None = None  # filtered EEG, and the raw samples when pushed
        self._has_raw = False
        self._eeg_info: StreamInfo | None = None
        self._face: _Buffer | None = None
        self._face_info: StreamInfo | None = None
        if self._expected_face is not None:
            self._set_face(self._expected_face)
        # (stream time of the last EEG sample, clock) per EEG push: when each window completed
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque()
        self._origin: float | None = self.config.origin_s
        self._k = 0
        self._eeg_last = -math.inf
        self._face_last = -math.inf
        self._n_times = 0
        self._n_tol = 0
        self._hop_n = 1
        self._half = 0.0
        self._gap_at: list[int] = []  # stream positions i with a pause before sample i
        self._warned_face_overflow = False
        self._empty: dict[tuple[int, int], NDArray] = {}
        self._face_state = "ok"
        self._t_warned: dict[str, float] = {}  # stream time of the last warning, per state

    @property
    def face_name(self) -> str | None:
        """Name of the face stream (pushed or announced); ``None`` without one."""
        return self._face_info.name if self._face_info is not None else None

    @property
    def face_state(self) -> str:
        """State of the face stream: ``"ok"``, ``"stalled"``, ``"ended"`` or ``"lost"``."""
        return self._face_state

    def face_stopped(self, reason: str = "ended", t: float | None = None) -> list[Window]:
        """The face stream's source says no frame will come: windows stop waiting for it.

        Windows cut from now on (the waiting ones included) go out as soon as the EEG passes
        their end, without face frames after the last one received. Frames that arrive again
        put the state back to ``"ok"``.

        Parameters
        ----------
        reason : {"ended", "lost"}
            ``"ended"``: the source ended (a video file played to its end); ``"lost"``: it
            vanished (an LSL stream lost, a camera that stopped delivering frames).
        t : float, optional
            When it happened, seconds on the LSL clock (for the log line).

        Returns
        -------
        list of Window
            The windows that became ready.
        """
        if reason not in ("ended", "lost"):
            raise ConfigError(f"reason must be 'ended' or 'lost', got {reason!r}")
        self._set_face_state(reason, self._face_last if t is None else float(t))
        return self._emit() if self._eeg is not None else []

    def _set_face_state(self, state: str, t: float) -> None:
        """Change the face stream's state, with one log line (see the module docstring)."""
        if state == self._face_state:
            return
        self._face_state = state
        name = self._face_info.name if self._face_info is not None else "FaceFeatures"
        at = f"t={t:.3f} s" if math.isfinite(t) else "before its first frame"
        if state == "ok":
            text = f"face stream {name!r} resumed at {at}; windows wait for its frames again"
        elif state == "stalled":
            text = (
                f"face stream {name!r} stalled: no frame after {at} for "
                f"{self.config.face_wait_s:g} s; windows go on without the face (EEG only) "
                "until frames come again"
            )
        else:
            text = f"face stream {name!r} {state} ({at}); windows go on without the face (EEG only)"
        when = self._eeg_last if math.isfinite(self._eeg_last) else t
        quiet = when - self._t_warned.get(state, -math.inf) < _QUIET_REPEAT_S
        logger.log(logging.INFO if quiet else logging.WARNING, "%s", text)
        if not quiet and math.isfinite(when):
            self._t_warned[state] = when

    @property
    def buffered(self) -> tuple[int, int]:
        """EEG samples and face frames held in the buffers now."""
        return (len(self._eeg) if self._eeg else 0, len(self._face) if self._face else 0)

    # -- input ------------------------------------------------------------------------------

    def __call__(self, chunk: Chunk) -> list[Window]:
        if chunk.info.type == FACE_TYPE:
            return self.push_face(chunk)
        return self.push_eeg(chunk)

    def push_eeg(self, chunk: Chunk, raw: Chunk | None = None) -> list[Window]:
        """Add EEG samples; returns the windows that became ready.

        Parameters
        ----------
        chunk : Chunk
            EEG samples (usually the output of :class:`~bci_affect.processors.Preprocess`).
        raw : Chunk, optional
            The unfiltered samples at the same timestamps, kept for signal quality.
        """
        if raw is not None and (
            raw.n_times != chunk.n_times or raw.data.shape[0] != chunk.data.shape[0]
        ):
            raise ShapeError(
                f"raw chunk has shape {raw.data.shape}, filtered chunk {chunk.data.shape}; "
                "push the raw samples the filtered ones came from"
            )
        if chunk.n_times == 0:
            return []
        self._check_eeg(chunk, raw)
        if chunk.times[0] < self._eeg_last:
            logger.warning(
                "EEG timestamps went back from %.3f to %.3f s; windows restart",
                self._eeg_last,
                chunk.times[0],
            )
            self.reset()
            self._check_eeg(chunk, raw)
        if (raw is not None) != self._has_raw:
            raise ConfigError(
                "push the raw samples with every EEG chunk or with none (the first chunk "
                f"{'had' if self._has_raw else 'had no'} raw samples); call reset() to change"
            )
        if self._origin is None:
            self._origin = float(chunk.times[0]) + self.config.window_s
        elif self._k == 0 and self._eeg_last == -math.inf:
            # A given origin: start at the first grid point whose window can hold this data.
            first = float(chunk.times[0]) + self.config.window_s - self._half
            self._k = max(0, math.ceil((first - self._origin) / self.config.hop_s - 1e-9))
        if self.clock is not None:
            self._arrivals.append((float(chunk.times[-1]), self.clock()))
        # Append one hop at a time so the buffer never holds much more than a window.
        out: list[Window] = []
        step, n_new, max_gap = self._hop_n, chunk.n_times, self.config.max_gap_s
        for a in range(0, n_new, step):
            b = min(a + step, n_new)
            t = chunk.times[a:b]
            # Pauses are found once, as samples arrive (a window checks the list).
            if float(t[0]) - self._eeg_last > max_gap or (
                b - a > 1 and np.count_nonzero(t[1:] - t[:-1] > max_gap) > 0
            ):
                self._note_gaps(t)
            if self._has_raw:
                self._eeg.append(t, chunk.data[:, a:b], raw.data[:, a:b])
            else:
                self._eeg.append(t, chunk.data[:, a:b])
            self._eeg_last = float(t[-1])
            out += self._emit()
        return out

    def _note_gaps(self, t: NDArray) -> None:
        """Record the pauses before samples ``t`` (about to be appended)."""
        steps = np.diff(t, prepend=self._eeg_last)
        pos = self._eeg.base + len(self._eeg)  # stream position of t[0]
        self._gap_at += (pos + np.flatnonzero(steps > self.config.max_gap_s)).tolist()

    @staticmethod
    def _check_face_info(info: StreamInfo) -> None:
        if info.is_string or info.n_chans < 1:
            raise ConfigError(
                f"stream {info.name!r} is not a FaceFeatures stream (numeric, first channel "
                "face_present)"
            )

    def _set_face(self, info: StreamInfo) -> None:
        self._face_info = info
        self._face = _Buffer(info.n_chans, (np.dtype(np.float64),), 256)
        self._face_last = -math.inf

    def push_face(self, chunk: Chunk) -> list[Window]:
        """Add FaceFeatures frames; returns the windows that became ready."""
        self._check_face_info(chunk.info)
        if self._face_info is None or chunk.info.ch_names != self._face_info.ch_names:
            if self._face_info is not None:
                logger.warning("face stream %r changed channels; face buffer restarts", chunk.name)
            self._set_face(chunk.info)
        if chunk.n_times == 0:
            return []
        keep = chunk.times >= self._face_last
        if not keep.all():
            logger.warning("face frames with timestamps going back were dropped")
        self._face.append(chunk.times[keep], np.asarray(chunk.data[:, keep], np.float64))
        if keep.any():
            self._face_last = float(chunk.times[keep][-1])
            # Frames again, and not hopelessly behind the EEG: wait for them again.
            if self._face_state != "ok" and not (
                self._eeg_last - self._face_last > self.config.face_wait_s
            ):
                self._set_face_state("ok", float(chunk.times[keep][0]))
        self._bound_face()
        return self._emit() if self._eeg is not None else []

    def flush(self) -> list[Window]:
        """End of the recording: emit every window whose end the EEG has reached."""
        out = []
        while self._eeg is not None and self._next_end() - self._half <= self._eeg_last:
            out.append(self._make(self._next_end()))
            self._advance()
        return out

    # -- internals --------------------------------------------------------------------------

    def _check_eeg(self, chunk: Chunk, raw: Chunk | None) -> None:
        if self._eeg_info is not None and (
            chunk.sfreq != self._eeg_info.sfreq or chunk.ch_names != self._eeg_info.ch_names
        ):
            logger.warning("EEG stream %r changed (rate or channels); windows restart", chunk.name)
            self.reset()
        if self._eeg_info is not None:
            return
        if chunk.sfreq <= 0:
            raise ConfigError(
                f"stream {chunk.name!r} has no nominal sample rate; EEG windows need a regular "
                "stream (push irregular face frames with push_face)"
            )
        n = int(round(self.config.window_s * chunk.sfreq))
        if n < 2:
            raise ConfigError(
                f"window_s={self.config.window_s} s holds {n} sample(s) at {chunk.sfreq:g} Hz"
            )
        self._n_times = n
        self._n_tol = int(math.ceil(self.config.max_gap_s * chunk.sfreq))
        self._hop_n = max(1, int(round(self.config.hop_s * chunk.sfreq)))
        self._half = 0.5 / chunk.sfreq
        self._eeg_info = chunk.info
        self._has_raw = raw is not None
        dtypes = (np.dtype(np.float64),) + ((np.dtype(raw.data.dtype),) if raw is not None else ())
        self._eeg = _Buffer(chunk.info.n_chans, dtypes, 4 * n)

    def _next_end(self) -> float:
        return self._origin + self._k * self.config.hop_s

    def _ready(self, t: float) -> bool:
        # Strictly past the window's end: a later sample can share the last one's timestamp.
        if not self._eeg_last > t + self._half:
            return False
        if self._face_info is None or self._face_last > t:
            return True
        if self._face_state != "ok":  # stalled, ended or lost: no waiting
            return True
        wait = self.config.face_wait_s
        if not self._eeg_last > t + wait:
            return False
        if self.clock is not None:
            # Live: also face_wait_s on the clock since the EEG that completed this window
            # arrived.
            done = next((a for t_last, a in self._arrivals if t_last > t + self._half), None)
            if done is not None and self.clock() - done < wait:
                return False
        # This window waited the full face_wait_s for nothing: the stream stalled.
        self._set_face_state("stalled", self._face_last)
        return True

    def _emit(self) -> list[Window]:
        out = []
        while self._ready(self._next_end()):
            out.append(self._make(self._next_end()))
            self._advance()
        return out

    def _advance(self) -> None:
        self._k += 1
        t_next = self._next_end()
        cfg = self.config
        # Keep a margin before the next window for clock drift (complete windows take the last
        # n_times samples, which may start slightly before t - window_s).
        keep_from = t_next - cfg.window_s - max(1.0, 2 * cfg.max_gap_s)
        buf = self._eeg
        n_drop = int(buf.t.searchsorted(keep_from, side="left"))
        n_drop = min(n_drop, max(0, len(buf) - self._n_times))
        buf.drop_first(n_drop)
        if self._gap_at and self._gap_at[0] <= buf.base:
            self._gap_at = [g for g in self._gap_at if g > buf.base]
        if self._face is not None:
            self._face.drop_before(t_next - cfg.window_s - cfg.face_hold_s)
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] <= t_next + self._half:
            arrivals.popleft()  # the EEG of those pushes ended before the next window did

    def _bound_face(self) -> None:
        buf = self._face
        if len(buf) and buf.t[-1] - buf.t[0] > self.config.max_face_buffer_s:
            if not self._warned_face_overflow:
                logger.warning(
                    "face frames are more than %.0f s ahead of the EEG; dropping the oldest",
                    self.config.max_face_buffer_s,
                )
                self._warned_face_overflow = True
            buf.drop_before(buf.t[-1] - self.config.max_face_buffer_s)

    def _make(self, t: float) -> Window:
        cfg, n = self.config, self._n_times
        sfreq = self._eeg_info.sfreq
        buf = self._eeg
        times = buf.t
        # Half a sample of slack: regular timestamps fall exactly on the grid, and rounding
        # of the clock offset must not decide which side a sample lands on.
        t_lo, t_hi = t - cfg.window_s + self._half, t + self._half
        lo = int(times.searchsorted(t_lo, side="right"))
        hi = int(times.searchsorted(t_hi, side="right"))
        # A pause inside the window: between samples lo..hi-1 (stream positions), or one that
        # the last n samples would reach back across when the window holds fewer than n.
        reach = buf.base + min(lo, hi - n)
        inner = bool(self._gap_at) and any(reach < g < buf.base + hi for g in self._gap_at)
        if hi > lo and (
            float(times[lo]) - t_lo <= cfg.max_gap_s
            and t_hi - float(times[hi - 1]) <= cfg.max_gap_s
            and not inner
        ):
            gaps = ()
        else:
            sel = times[lo:hi]
            edges = np.concatenate([[t_lo], sel, [t_hi]])
            where = np.flatnonzero(edges[1:] - edges[:-1] > cfg.max_gap_s)
            gaps = tuple((float(edges[i]), float(edges[i + 1])) for i in where)
            if inner and not gaps:  # the pause ended less than max_gap_s into the window
                gaps = ((float(t_lo), float(times[lo])),)
        raw = None
        if not gaps and hi >= n and hi - lo >= n - self._n_tol:
            eeg = buf.view(hi - n, hi)
            if self._has_raw:
                raw = buf.view(hi - n, hi, 1)
            first, coverage = buf.base + hi - n, 1.0
        else:
            eeg = self._place(buf, 0, lo, hi, t, sfreq, n)
            if self._has_raw:
                raw = self._place(buf, 1, lo, hi, t, sfreq, n)
            first = -1
            coverage = min(1.0, float(np.isfinite(eeg[0]).sum()) / n) if eeg.shape[0] else 0.0
            if not gaps:  # too few samples without a visible pause: the rate is off
                gaps = ((float(t_lo), float(t_hi)),)
        face = self._face_part(t) if self._face_info is not None else {}
        return Window(
            index=self._k,
            t_end=float(t),
            window_s=cfg.window_s,
            sfreq=sfreq,
            ch_names=self._eeg_info.ch_names,
            eeg=eeg,
            eeg_raw=raw,
            first_index=int(first),
            eeg_coverage=coverage,
            eeg_gaps=gaps,
            face_state=self._face_state,
            **face,
        )

    def _place(
        self, buf: _Buffer, i: int, lo: int, hi: int, t: float, sfreq: float, n: int
    ) -> NDArray:
        """Samples ``lo:hi`` placed by timestamp into ``n`` slots ending at ``t``; NaN elsewhere.

        Runs of samples without a pause keep their order; each run is anchored by its last
        timestamp, later runs overwrite earlier ones where they collide.
        """
        if hi <= lo:  # nothing at all: one shared array, however long the pause
            key = (buf.data[i].shape[0], n)
            if key not in self._empty:
                empty = np.full(key, np.nan)
                empty.flags.writeable = False
                self._empty[key] = empty
            return self._empty[key]
        out = np.full((buf.data[i].shape[0], n), np.nan)
        times = buf.t[lo:hi]
        data = buf.view(lo, hi, i)
        breaks = np.flatnonzero(times[1:] - times[:-1] > self.config.max_gap_s) + 1
        for a, b in zip([0, *breaks], [*breaks, hi - lo], strict=True):
            end_slot = n - 1 - int(round((t - times[b - 1]) * sfreq))
            start_slot = end_slot - (b - a) + 1
            s0 = max(start_slot, 0)
            if end_slot < 0:
                continue
            out[:, s0 : end_slot + 1] = data[:, a + (s0 - start_slot) : b]
        out.flags.writeable = False
        return out

    def _face_part(self, t: float) -> dict:
        if self._face_info is None:
            return {}
        cfg = self.config
        buf = self._face
        ft = buf.t
        lo = int(np.searchsorted(ft, t - cfg.window_s, side="right"))
        hi = int(np.searchsorted(ft, t, side="right"))
        data = buf.data[0]
        frames = np.ascontiguousarray(data[:, buf.start + lo : buf.start + hi].T)
        times = ft[lo:hi].copy()
        present = (frames[:, 0] >= 0.5) & np.isfinite(frames).all(axis=1)
        # Coverage also counts frames just before the window (they cover its first moments).
        c0 = int(np.searchsorted(ft, t - cfg.window_s - cfg.face_hold_s, side="right"))
        ct = ft[c0:hi]
        cp = np.r_[
            (data[0, buf.start + c0 : buf.start + lo] >= 0.5)
            & np.isfinite(data[:, buf.start + c0 : buf.start + lo]).all(axis=0),
            present,
        ]
        stream_cov = _coverage(ct, np.ones(ct.shape, bool), t, cfg.window_s, cfg.face_hold_s)
        face_cov = _coverage(ct, cp, t, cfg.window_s, cfg.face_hold_s)
        return {
            "face": frames,
            "face_times": times,
            "face_mask": present,
            "face_names": self._face_info.ch_names,
            "face_coverage": face_cov,
            "face_gap": bool(stream_cov < 1.0 - 1e-9),
        }


def _coverage(times: NDArray, on: NDArray, t: float, length: float, hold: float) -> float:
    """Fraction of ``(t - length, t]`` covered by frames flagged ``on``.

    Each frame covers from its timestamp until the next frame or ``hold`` seconds, whichever
    comes first.
    """
    if times.shape[0] == 0:
        return 0.0
    nxt = np.r_[times[1:], np.inf]
    ends = np.minimum(np.minimum(times + hold, nxt), t)
    starts = np.maximum(times, t - length)
    covered = np.clip(ends - starts, 0.0, None)
    return float(covered[on].sum() / length)
