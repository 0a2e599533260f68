"""Replay a recording in real time as LSL outlets, so any LSL tool sees a live session.

:class:`Player` re-publishes every stream of a source (an XDF file, an OpenBCI or BrainFlow
text recording, or any :class:`~bci_affect.core.source.Source`) as an LSL outlet with the
stream's name, type, rate, channel labels and units, and pushes the samples with their
original relative timing, paced against ``local_clock()``.

Timestamps are moved onto the current clock by one shift::

    t_published = t_file + offset_s,   offset_s = t_start - t_file_first

where ``t_start`` is ``local_clock()`` when the replay starts and ``t_file_first`` the
earliest timestamp of the recording. ``offset_s`` is :attr:`Player.offset_s` and is published
in each outlet's ``desc`` (``replay_offset_s``) with the file name (``replay_of``), the speed
(``replay_speed``) and the recorded ``source_id`` (``original_source_id``), so a consumer can
map every sample back to the recording.

``speed`` scales the pacing: at ``speed=2`` a 60 s recording plays in 30 s. Published
timestamps keep the recording's spacing (so they agree with the nominal rate) unless
``scale_times=True``, which compresses them by ``speed`` as well (they then track
``local_clock()``). Samples are never pushed before their time comes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from acquisition.lsl import Outlet
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.clock import local_clock
from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.core.source import Source

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SOURCE_ID_PREFIX", "Player"]

#: Prefix of the ``source_id`` of re-published streams: ``<prefix>:<recorded source_id>``.
DEFAULT_SOURCE_ID_PREFIX = "bci-affect-replay"


class Player:
    """Publish a recording as LSL outlets in (scaled) real time, from a background thread.

    Parameters
    ----------
    source_or_path : Source or str or Path
        A recording path (opened with :func:`acquisition.files.open_recording`) or a source.
    speed : float
        Playback speed: 1 = real time, 2 = twice as fast (> 0).
    source_id_prefix : str
        Re-published streams get ``source_id = f"{source_id_prefix}:{recorded source_id}"``
        (the stream name when the recording has no source id), so they never pass for the
        original device.
    loop : bool
        Start over when the recording ends, until :meth:`stop`. Each pass continues the
        timestamps where the previous one ended (no overlap). A source passed in must be
        iterable more than once (file sources are).
    streams : iterable of str, optional
        Names of the streams to publish (default: all).
    scale_times : bool
        Divide the recording's time axis by ``speed`` in the published timestamps too.
    push_interval_s : float
        Wall-clock seconds between pushes (samples due in that interval go out together).
    wait_for_consumers_s : float
        Before pushing, wait up to this long for every outlet to have a consumer. The clock
        starts at :meth:`start` regardless: samples that came due meanwhile go out at once
        with their own timestamps, so a consumer that connects late still gets everything.

    Examples
    --------
    >>> with Player("session.xdf", speed=1.0) as player:      # doctest: +SKIP
    ...     player.join()
    """

    def __init__(
        self,
        source_or_path: Source | str | os.PathLike,
        *,
        speed: float = 1.0,
        source_id_prefix: str = DEFAULT_SOURCE_ID_PREFIX,
        loop: bool = False,
        streams: Iterable[str] | None = None,
        scale_times: bool = False,
        push_interval_s: float = 0.02,
        wait_for_consumers_s: float = 0.0,
    ) -> None:
        speed = float(speed)
        if not (math.isfinite(speed) and speed > 0):
            raise ConfigError(f"speed must be a positive number (1 = real time), got {speed}")
        if not (math.isfinite(push_interval_s) and push_interval_s > 0):
            raise ConfigError(f"push_interval_s must be > 0 seconds, got {push_interval_s}")
        if not (math.isfinite(wait_for_consumers_s) and wait_for_consumers_s >= 0):
            raise ConfigError(
                f"wait_for_consumers_s must be >= 0 seconds, got {wait_for_consumers_s}"
            )
        if not source_id_prefix:
            raise ConfigError("source_id_prefix must not be empty")
        self.speed = speed
        self.loop = bool(loop)
        self.scale_times = bool(scale_times)
        self.push_interval_s = float(push_interval_s)
        self.wait_for_consumers_s = float(wait_for_consumers_s)
        self.source_id_prefix = source_id_prefix
        if isinstance(source_or_path, str | os.PathLike):
            from acquisition.files import open_recording  # noqa: PLC0415

            self.recording = str(Path(source_or_path).name)
            chunk_s = max(0.01, self.push_interval_s * speed)
            self._source: Source = open_recording(source_or_path, streams=streams, chunk_s=chunk_s)
        else:
            path = getattr(source_or_path, "path", None)
            self.recording = Path(path).name if path else type(source_or_path).__name__
            self._source = source_or_path
            if streams is not None:
                from acquisition.files import SelectedStreams  # noqa: PLC0415

                self._source = SelectedStreams(source_or_path, streams)
        self._outlets: dict[str, Outlet] = {}
        self._infos: list[StreamInfo] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._entered = False
        self._t_start = math.nan
        self._t_first = math.nan
        self.offset_s: float = math.nan
        """Seconds added to the recording's timestamps (``t_published = t_file + offset_s``)."""
        self.n_pushed: dict[str, int] = {}
        """Samples pushed so far, per stream name."""
        self.passes = 0
        """Completed passes through the recording."""

    # -- public API ----------------------------------------------------------------------

    @property
    def streams(self) -> list[StreamInfo]:
        """The published streams (their re-published ``source_id``), known after :meth:`start`."""
        return list(self._infos)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Player:
        """Open the source, create the outlets and start pushing. Returns ``self``."""
        if self._thread is not None:
            raise ConfigError("this Player was already started; create a new one to replay again")
        self._source.__enter__()
        self._entered = True
        try:
            infos = self._source.streams
            chunks = iter(self._source)
            first = next(chunks, None)
            t_first = getattr(self._source, "t_first", None)
            if t_first is None and first is not None:
                t_first = float(first.times.min())
            if t_first is None:
                raise FileFormatError(f"{self.recording} holds no samples; nothing to replay")
            self._t_first = float(t_first)
            self._t_start = local_clock()
            self.offset_s = self._t_start - self._t_first
            for info in infos:
                out_info = self._published_info(info)
                self._outlets[info.name] = Outlet(out_info)
                self._infos.append(out_info)
                self.n_pushed[info.name] = 0
        except BaseException:
            self._close()
            raise
        logger.info(
            "replaying %s: %d streams, offset %.6f s, speed %g",
            self.recording,
            len(infos),
            self.offset_s,
            self.speed,
        )
        self._thread = threading.Thread(
            target=self._run, args=(first, chunks), name="bci-affect-player", daemon=True
        )
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the recording has been pushed (or :meth:`stop`).

        Returns ``True`` when the replay is over, ``False`` on timeout. Re-raises an error
        of the replay thread.
        """
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop pushing, close the outlets and the source. Safe to call more than once."""
        self._stop.set()
        self._source.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._close()

    def __enter__(self) -> Player:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def published_time(self, t_file: np.ndarray | float) -> np.ndarray | float:
        """The timestamp a recording time is published with (seconds, LSL clock)."""
        if self.scale_times:
            return self._t_start + (np.asarray(t_file) - self._t_first) / self.speed
        return np.asarray(t_file) + self.offset_s

    # -- internals -----------------------------------------------------------------------

    def _published_info(self, info: StreamInfo) -> StreamInfo:
        desc = {k: v for k, v in info.desc.items() if isinstance(v, str | int | float)}
        desc.update(
            replay_of=self.recording,
            replay_offset_s=repr(self.offset_s),
            replay_speed=repr(self.speed),
            replay_scale_times=str(self.scale_times).lower(),
            original_source_id=info.source_id,
        )
        return StreamInfo(
            name=info.name,
            type=info.type,
            sfreq=info.sfreq,
            ch_names=info.ch_names,
            units=info.units,
            source_id=f"{self.source_id_prefix}:{info.source_id or info.name}",
            channel_format=info.channel_format,
            desc=desc,
        )

    def _close(self) -> None:
        for outlet in self._outlets.values():
            outlet.close()
        self._outlets.clear()
        if self._entered:
            self._entered = False
            self._source.__exit__(None, None, None)

    def _wait_until(self, t: float) -> bool:
        """Sleep until ``local_clock() >= t`` (interruptible). False when stopped."""
        delay = t - local_clock()
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()

    def _wait_for_consumers(self) -> None:
        """Wait (up to ``wait_for_consumers_s``, interruptible by stop) for every outlet to
        have a consumer."""
        if self.wait_for_consumers_s <= 0:
            return
        deadline = local_clock() + self.wait_for_consumers_s
        for name, outlet in self._outlets.items():
            while not outlet.wait_for_consumers(0.1):
                if self._stop.is_set():
                    return
                if local_clock() >= deadline:
                    logger.info(
                        "no consumer for %r after %.1f s; pushing anyway",
                        name,
                        self.wait_for_consumers_s,
                    )
                    return

    def _run(self, first: Chunk | None, chunks: Iterator[Chunk]) -> None:
        try:
            self._wait_for_consumers()
            shift_s = 0.0  # recording time added by earlier passes
            t_last = self._t_first
            # Between passes: one sample period of the fastest stream (1 ms if none is regular).
            top_rate = max((i.sfreq for i in self._infos), default=0.0)
            period_s = 1.0 / top_rate if top_rate > 0 else 1e-3
            pending: Chunk | None = first
            while not self._stop.is_set():
                n_pass = 0
                while pending is not None:
                    n_pass += pending.n_times
                    t_last = max(t_last, float(pending.times.max()))
                    if not self._push_paced(pending, shift_s):
                        return
                    pending = next(chunks, None)
                    if self._stop.is_set():
                        return
                self.passes += 1
                if not self.loop:
                    return
                if n_pass == 0:
                    logger.warning(
                        "%s yielded nothing on pass %d; stop looping", self.recording, self.passes
                    )
                    return
                shift_s += (t_last - self._t_first) + period_s
                chunks = iter(self._source)
                pending = next(chunks, None)
        except BaseException as exc:  # noqa: BLE001  (re-raised by join())
            logger.exception("replay of %s failed", self.recording)
            self._error = exc

    def _push_paced(self, chunk: Chunk, shift_s: float) -> bool:
        """Push ``chunk`` in pieces of about ``push_interval_s`` wall-clock seconds, each when
        its last sample is due. False when stopped."""
        outlet = self._outlets.get(chunk.info.name)
        if outlet is None or chunk.n_times == 0:
            return True
        times = chunk.times + shift_s
        mono = times if np.all(np.diff(times) >= 0) else np.maximum.accumulate(times)
        piece_s = self.push_interval_s * self.speed
        edges = np.searchsorted(mono, np.arange(mono[0], mono[-1], piece_s)[1:], side="left")
        bounds = np.unique(np.concatenate(([0], edges, [times.size])))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            due = self._t_start + (mono[hi - 1] - self._t_first) / self.speed
            if not self._wait_until(due):
                return False
            stamps = self.published_time(times[lo:hi])
            outlet.push(Chunk(chunk.data[:, lo:hi], np.asarray(stamps, float), outlet.info))
            self.n_pushed[chunk.info.name] += int(hi - lo)
        return True
