"""Webcam or video file as a source of frames stamped on the LSL clock.

:class:`CameraSource` opens an OpenCV capture (a device index or a video file) and yields

:class:`FrameChunk`
    one frame per chunk, ``frames`` of shape ``(1, height, width, 3)`` (uint8, BGR, OpenCV's
    order), on stream ``<name>`` (type ``VideoFrames``; default name ``Camera``). Frames stay
    in-process: the landmark step (:mod:`acquisition.face_features`) turns them into the
    ``FaceFeatures`` :class:`~bci_affect.core.chunk.Chunk` that is published and recorded.
``<name>-events``
    type ``Markers``, one string channel ``event``, JSON objects:
    ``{"event": "dropped_samples", "stream": "Camera", "n": 3, "t": t}`` (``t`` = the LSL time
    the first missing frame would have had), ``{"event": "stream_lost", "stream": "Camera",
    "t": t}``, ``{"event": "stream_recovered", "stream": "Camera", "t": t}`` and, when a file
    played in real time (a stand-in webcam) reaches its end, ``{"event": "stream_ended",
    "stream": "Camera", "t": t, "reason": "end of file", "last": t_last, "n_frames": n}``
    (``t``: when the end was found; ``last``: the last frame's time), so consumers stop waiting
    for frames at once. :attr:`CameraSource.end_reason` says why the iteration ended.

Timestamps
----------
Device
    ``pylsl.local_clock()`` when OpenCV's ``grab()`` returns the frame, minus
    ``latency_s`` (a constant the user may measure: USB webcams deliver frames 30-100 ms after
    exposure). A capture thread grabs continuously, so a slow consumer never makes frames
    stale; frames it cannot take are dropped from a small queue and reported.
File, ``realtime=True`` (default)
    the file plays at its own pace (its frame times, so variable-frame-rate files keep their
    timing) through the same capture thread: each frame is released when it is due and
    stamped with ``local_clock()`` then, like a webcam; a consumer slower than the video loses
    frames (reported).
File, ``realtime=False``
    as fast as the consumer takes them, nothing dropped: ``t = start_time + pts``, where
    ``pts`` is the frame's own presentation time in the file (seconds from the first frame) and
    ``start_time`` defaults to ``local_clock()`` when the source is opened.

Drops are found against the nominal rate: an interval between consecutive captured frames
longer than ``drop_factor`` frame periods (1.5 by default) counts ``round(interval * fps) - 1``
missing frames; frames discarded from the full queue are counted exactly.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.clock import local_clock
from bci_affect.core.errors import ConfigError, DeviceError, FileFormatError, ShapeError

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_FRAMES_TYPE",
    "CameraConfig",
    "CameraSource",
    "FrameChunk",
    "count_dropped",
    "events_info_for",
    "make_events_chunk",
]

#: Stream type of the in-process frame stream.
VIDEO_FRAMES_TYPE = "VideoFrames"

_FALLBACK_FPS = 30.0


@dataclass(frozen=True, slots=True)
class FrameChunk:
    """Video frames with their LSL-clock timestamps (the frame counterpart of ``Chunk``).

    Parameters
    ----------
    frames : ndarray of uint8, shape (n_times, height, width, 3)
        BGR images.
    times : ndarray of float64, shape (n_times,)
        Seconds on the LSL clock.
    info : StreamInfo
        The camera stream (type ``VideoFrames``, ``sfreq`` = nominal frame rate).
    indices : ndarray of int64, shape (n_times,)
        Frame numbers in the source, counted from 0 at the first captured frame (a file's
        frame number; for a device the count includes dropped frames).
    n_dropped : int
        Frames lost just before the first frame of this chunk.
    """

    frames: NDArray[np.uint8]
    times: NDArray[np.float64]
    info: StreamInfo
    indices: NDArray[np.int64]
    n_dropped: int = 0

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ShapeError(
                f"frames must be (n_times, height, width, 3), got shape {self.frames.shape}"
            )
        if self.times.ndim != 1 or self.times.shape[0] != self.frames.shape[0]:
            raise ShapeError(
                f"{self.frames.shape[0]} frames but times has shape {self.times.shape}; "
                "time must be the first axis of frames"
            )
        if self.indices.shape != self.times.shape:
            raise ShapeError(f"indices shape {self.indices.shape} != times {self.times.shape}")

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def sfreq(self) -> float:
        return self.info.sfreq

    @property
    def n_times(self) -> int:
        return int(self.times.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def __len__(self) -> int:
        return self.n_times


@dataclass(frozen=True)
class CameraConfig:
    """Where frames come from and how they are timed.

    Parameters
    ----------
    device : int, optional
        OpenCV device index (``0`` = first webcam). Exactly one of ``device`` and ``file``.
    file : str or Path, optional
        A video file OpenCV can decode (mp4, mov, avi, mkv...).
    realtime : bool
        Files only: play at the file's own pace (True) or as fast as consumed (False).
    width, height : int, optional
        Devices only: requested frame size in pixels (the driver may choose another).
    fps : float, optional
        Devices: requested frame rate; also the nominal rate when the driver reports none.
    name : str
        Name of the frame stream; events go to ``<name>-events``.
    start_s, stop_s : float
        Files only: the segment to play, seconds of file time (``stop_s=None``: to the end).
    every_n : int
        Files with ``realtime=False`` only: keep every n-th frame (the others are demuxed and
        decoded but not converted; not reported as drops).
    max_frames : int, optional
        Stop after this many frames.
    drop_factor : float
        An interval longer than ``drop_factor`` nominal frame periods counts as dropped frames.
    latency_s : float
        Devices only: subtracted from the capture time (exposure-to-grab latency).
    start_time : float, optional
        Files with ``realtime=False``: LSL time of the file's first frame; default
        ``local_clock()`` at open.
    queue_frames : int
        Capture thread: frames held for a slow consumer before the oldest is dropped.
    reconnect_s : float
        Devices: how long to keep trying to reopen a device that stopped delivering frames
        before raising :class:`DeviceError`.
    """

    device: int | None = None
    file: str | Path | None = None
    realtime: bool = True
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    name: str = "Camera"
    start_s: float = 0.0
    stop_s: float | None = None
    every_n: int = 1
    max_frames: int | None = None
    drop_factor: float = 1.5
    latency_s: float = 0.0
    start_time: float | None = None
    queue_frames: int = 4
    reconnect_s: float = 5.0
    source_id: str | None = field(default=None)

    def __post_init__(self) -> None:
        if (self.device is None) == (self.file is None):
            raise ConfigError(
                "give exactly one frame source: a camera device index (--device N) or a video "
                f"file (--file F); got device={self.device!r}, file={self.file!r}"
            )
        if self.device is not None and (
            isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0
        ):
            raise ConfigError(f"device must be a camera index >= 0, got {self.device!r}")
        if self.file is not None:
            object.__setattr__(self, "file", Path(self.file).expanduser())
        for key in ("width", "height"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"{key} must be a positive number of pixels, got {v!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"fps must be > 0, got {self.fps!r}")
        if not str(self.name).strip():
            raise ConfigError("the camera stream name must not be empty")
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ConfigError(f"start_s must be >= 0 seconds, got {self.start_s!r}")
        if self.stop_s is not None and not self.stop_s > self.start_s:
            raise ConfigError(f"stop_s ({self.stop_s}) must exceed start_s ({self.start_s})")
        if not isinstance(self.every_n, int) or self.every_n < 1:
            raise ConfigError(f"every_n must be an integer >= 1, got {self.every_n!r}")
        if self.every_n > 1 and (self.file is None or self.realtime):
            raise ConfigError(
                "every_n > 1 (frame subsampling) applies to files replayed with realtime=False"
            )
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames!r}")
        if not self.drop_factor > 1:
            raise ConfigError(f"drop_factor must be > 1 frame period, got {self.drop_factor!r}")
        if not (math.isfinite(self.latency_s) and 0 <= self.latency_s < 2):
            raise ConfigError(f"latency_s must be in [0, 2) seconds, got {self.latency_s!r}")
        if not isinstance(self.queue_frames, int) or self.queue_frames < 1:
            raise ConfigError(f"queue_frames must be >= 1, got {self.queue_frames!r}")
        if not self.reconnect_s >= 0:
            raise ConfigError(f"reconnect_s must be >= 0, got {self.reconnect_s!r}")

    @property
    def is_live(self) -> bool:
        """Whether frames are timed by the wall (device, or a file in real time)."""
        return self.device is not None or self.realtime


def count_dropped(interval_s: float, fps: float, drop_factor: float = 1.5) -> int:
    """Frames missing in an ``interval_s`` between two consecutive frames at nominal ``fps``.

    0 while ``interval_s <= drop_factor / fps``; otherwise ``round(interval_s * fps) - 1`` (at
    least 1).
    """
    if fps <= 0 or not math.isfinite(interval_s) or interval_s <= drop_factor / fps:
        return 0
    return max(int(round(interval_s * fps)) - 1, 1)


def events_info_for(name: str, source_id: str = "") -> StreamInfo:
    """The ``<name>-events`` Markers stream (one string channel ``event``)."""
    return StreamInfo(
        name=f"{name}-events",
        type="Markers",
        sfreq=0.0,
        ch_names=("event",),
        source_id=f"{source_id}:events" if source_id else "",
        channel_format="string",
    )


def make_events_chunk(
    info: StreamInfo, stream: str, events: list[tuple[str, float, dict]]
) -> Chunk:
    """An events chunk from ``(event, t, extra fields)`` triples; ``t`` in LSL seconds.

    Each sample is ``{"event": event, "stream": stream, **fields}`` with ``"t": t`` added unless
    the fields carry their own times.
    """
    payload, times = [], []
    for event, t, fields in sorted(events, key=lambda e: e[1]):
        body = {"event": event, "stream": stream, **fields}
        if "t" not in body and "start" not in body:
            body["t"] = float(t)
        payload.append(json.dumps(body))
        times.append(float(t))
    return Chunk(np.array([payload], dtype=object), np.asarray(times, np.float64), info)


@dataclass
class _Captured:
    frame: NDArray[np.uint8]
    t: float
    index: int
    n_dropped: int = 0


_END = object()


class _FrameBuffer:
    """Bounded hand-over from the capture thread: when ``max_frames`` frames wait, the oldest is
    dropped and its loss is added to the frame after it. Event chunks are never dropped."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self._items: deque = deque()
        self._n_frames = 0
        self._cond = threading.Condition()

    def put(self, item: object) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def put_frame(self, item: _Captured) -> None:
        with self._cond:
            if self._n_frames >= self.max_frames:
                frames = [i for i, x in enumerate(self._items) if isinstance(x, _Captured)]
                old = self._items[frames[0]]
                del self._items[frames[0]]
                self._n_frames -= 1
                heir = self._items[frames[1] - 1] if len(frames) > 1 else item
                heir.n_dropped += 1 + old.n_dropped
            self._items.append(item)
            self._n_frames += 1
            self._cond.notify()

    def get(self, timeout: float) -> object | None:
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            item = self._items.popleft()
            if isinstance(item, _Captured):
                self._n_frames -= 1
            return item


class CameraSource:
    """A webcam or a video file as a :class:`~bci_affect.core.source.Source` of frames.

    See the module docstring for streams and timing. Iteration yields :class:`FrameChunk`
    objects (one frame each) and, when something happened, ``<name>-events`` chunks.

    Raises
    ------
    DeviceError
        The device cannot be opened, or stops delivering frames for longer than
        ``reconnect_s``.
    FileFormatError
        The file cannot be opened or decoded by OpenCV.
    ConfigError
        The file does not exist.
    """

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        if config.file is not None and not Path(config.file).is_file():
            raise ConfigError(f"video file {str(config.file)!r} does not exist")
        self.name = str(config.name)
        if config.source_id is not None:
            self.source_id = config.source_id
        elif config.device is not None:
            self.source_id = f"bci-affect:camera:{config.device}"
        else:
            self.source_id = f"bci-affect:video:{Path(config.file).resolve()}"
        self._cap = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = _FrameBuffer(config.queue_frames)
        self._error: BaseException | None = None
        self.fps = 0.0
        self.frame_size: tuple[int, int] = (0, 0)  # (width, height)
        self.n_file_frames = 0
        self.frames_info: StreamInfo | None = None
        self.events_info = events_info_for(self.name, self.source_id)
        self.n_frames = 0
        self.n_dropped = 0
        #: Why the last iteration ended: ``None`` while frames may come; ``"end of file"``,
        #: ``"stop_s"``, ``"max_frames"``, ``"stopped"`` (:meth:`stop`) or ``"error"``.
        self.end_reason: str | None = None

    # -- protocol ----------------------------------------------------------------------------

    @property
    def streams(self) -> list[StreamInfo]:
        """The frame stream (known once open) and the events stream."""
        return [s for s in (self.frames_info, self.events_info) if s is not None]

    def __enter__(self) -> CameraSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """End iteration after the current frame (thread-safe). Called before :meth:`open`,
        the next iteration ends at once."""
        self._stop.set()

    def _where(self) -> str:
        if self.config.device is not None:
            return f"camera device {self.config.device}"
        return f"video file {str(self.config.file)!r}"

    # -- opening -----------------------------------------------------------------------------

    def _open_capture(self):
        import cv2  # noqa: PLC0415

        cfg = self.config
        if cfg.device is not None:
            cap = cv2.VideoCapture(cfg.device)
            if not cap.isOpened():
                cap.release()
                raise DeviceError(
                    f"cannot open camera device {cfg.device}: no such device, or it is busy or "
                    "not permitted (Linux: is /dev/video* readable, video group?); try another "
                    "--device index"
                )
            if cfg.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            if cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            with_buffer = cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frames, not stale ones
            logger.debug("%s: buffer size 1 accepted: %s", self._where(), with_buffer)
        else:
            cap = cv2.VideoCapture(str(cfg.file))
            if not cap.isOpened():
                cap.release()
                raise FileFormatError(
                    f"{str(cfg.file)!r} is not a video OpenCV can read (mp4, mov, avi, mkv... "
                    "with a codec FFmpeg knows)"
                )
        return cap

    def open(self) -> None:
        """Open the capture and, for live timing, start the capture thread."""
        import cv2  # noqa: PLC0415

        if self._cap is not None:
            return
        cfg = self.config
        cap = self._open_capture()
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(fps) and 0 < fps < 1000):
            fps = float(cfg.fps or _FALLBACK_FPS)
            logger.info("%s reports no frame rate; assuming %g fps", self._where(), fps)
        self.fps = fps
        self.frame_size = (
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self.n_file_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cfg.file else 0
        if cfg.file is not None and self.n_file_frames <= 0:
            ok = cap.grab()
            if not ok:
                cap.release()
                raise FileFormatError(f"{str(cfg.file)!r} holds no decodable video frame")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._cap = cap
        desc = {
            "width": str(self.frame_size[0]),
            "height": str(self.frame_size[1]),
            "origin": f"device {cfg.device}" if cfg.device is not None else str(cfg.file),
        }
        self.frames_info = StreamInfo(
            name=self.name,
            type=VIDEO_FRAMES_TYPE,
            sfreq=fps,
            ch_names=("frame",),
            source_id=self.source_id,
            channel_format="int64",
            desc=desc,
        )
        self._error = None
        self.n_frames = 0
        self.n_dropped = 0
        self.end_reason = None
        logger.info(
            "%s open: %dx%d at %g fps (%s)",
            self._where(),
            *self.frame_size,
            fps,
            "real time" if cfg.is_live else "as fast as possible",
        )
        if cfg.is_live:
            self._buffer = _FrameBuffer(cfg.queue_frames)
            self._thread = threading.Thread(
                target=self._capture_loop, name=f"camera-{self.name}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the capture thread and release the capture (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                logger.warning("%s: capture thread did not stop within 5 s", self._where())
            self._thread = None
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._stop.clear()  # a later open() starts afresh

    # -- reading -----------------------------------------------------------------------------

    def _file_pts(self, cap, index: int, last_pts: float | None) -> float:
        """Presentation time (s) of the frame just grabbed; falls back to ``index / fps``."""
        import cv2  # noqa: PLC0415

        pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if math.isfinite(pts) and pts < 0:  # some containers start slightly before 0
            pts = 0.0
        if not math.isfinite(pts) or (last_pts is not None and pts <= last_pts):
            pts = index / self.fps if last_pts is None else last_pts + 1.0 / self.fps
        return pts

    def _skip_to_start(self, cap) -> tuple[int, float | None]:
        """Grab (without decoding to BGR) until the frame at ``start_s``; returns index, pts."""
        index, pts = -1, None
        if self.config.start_s <= 0:
            return index, pts
        while True:
            if not cap.grab():
                raise ConfigError(
                    f"start_s={self.config.start_s} s is past the end of {self._where()}"
                )
            index += 1
            pts = self._file_pts(cap, index, pts)
            if pts >= self.config.start_s - 0.5 / self.fps:
                return index, pts

    def _frame_chunk(self, frame: NDArray, t: float, index: int, n_dropped: int) -> FrameChunk:
        return FrameChunk(
            frame[None],
            np.array([t], dtype=np.float64),
            self.frames_info,
            np.array([index], dtype=np.int64),
            n_dropped,
        )

    def _drop_events(self, t_prev: float | None, n: int) -> Chunk:
        t_missing = (t_prev + 1.0 / self.fps) if t_prev is not None else local_clock()
        logger.warning("%s: %d frame(s) dropped after t=%.3f", self._where(), n, t_missing)
        return make_events_chunk(
            self.events_info, self.name, [("dropped_samples", t_missing, {"n": n, "t": t_missing})]
        )

    def __iter__(self) -> Iterator[FrameChunk | Chunk]:
        if self._cap is None:
            raise DeviceError(f"{self._where()} is not open; use `with CameraSource(...) as src:`")
        if self.config.is_live:
            yield from self._iter_live()
        else:
            yield from self._iter_file_fast()

    def _iter_file_fast(self) -> Iterator[FrameChunk | Chunk]:
        cfg, cap = self.config, self._cap
        start_time = cfg.start_time if cfg.start_time is not None else local_clock()
        index, pts = self._skip_to_start(cap)
        first = True
        while not self._stop.is_set():
            if first and index >= 0:
                ok = True  # the frame at start_s is grabbed already
            else:
                ok = cap.grab()
                if ok:
                    index += 1
                    pts = self._file_pts(cap, index, pts)
            first = False
            if not ok:
                self.end_reason = "end of file"
                return
            if cfg.stop_s is not None and pts >= cfg.stop_s:
                self.end_reason = "stop_s"
                return
            if index % cfg.every_n:
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                self.end_reason = "error"
                raise FileFormatError(f"{self._where()}: frame {index} could not be decoded")
            self.n_frames += 1
            yield self._frame_chunk(frame, start_time + pts, index, 0)
            if cfg.max_frames is not None and self.n_frames >= cfg.max_frames:
                self.end_reason = "max_frames"
                return
        self.end_reason = "stopped"

    def _iter_live(self) -> Iterator[FrameChunk | Chunk]:
        t_prev = None
        while True:
            item = self._buffer.get(timeout=0.25)
            if item is None:
                if self._thread is None or not self._thread.is_alive():
                    item = self._buffer.get(timeout=0.0) or _END
                else:
                    continue
            if item is _END:
                if self._error is not None:
                    self.end_reason = "error"
                    raise self._error
                if self.end_reason is None:
                    self.end_reason = "stopped"
                return
            if isinstance(item, Chunk):  # stream_lost / stream_recovered
                yield item
                continue
            if item.n_dropped:
                self.n_dropped += item.n_dropped
                yield self._drop_events(t_prev, item.n_dropped)
            self.n_frames += 1
            t_prev = item.t
            yield self._frame_chunk(item.frame, item.t, item.index, item.n_dropped)
            if self.config.max_frames is not None and self.n_frames >= self.config.max_frames:
                self.end_reason = "max_frames"
                self._stop.set()
                return
            if self._stop.is_set():
                self.end_reason = self.end_reason or "stopped"
                return

    # -- capture thread ----------------------------------------------------------------------

    def _capture_loop(self) -> None:
        try:
            if self.config.device is not None:
                self._capture_device()
            else:
                self._capture_file_realtime()
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer)
            logger.exception("%s: capture failed", self._where())
            self._error = exc
        finally:
            self._buffer.put(_END)

    def _emit(self, frame: NDArray, t: float, index: int, n_dropped: int) -> None:
        self._buffer.put_frame(_Captured(frame, t, index, n_dropped))

    def _capture_device(self) -> None:
        cfg = self.config
        cap = self._cap
        index, t_prev = -1, None
        while not self._stop.is_set():
            ok = cap.grab()
            t = local_clock() - cfg.latency_s
            if ok:
                ok, frame = cap.retrieve()
            if not ok or frame is None:
                cap = self._reconnect(t_prev)
                if cap is None:
                    return
                t_prev = None  # no drop count across an outage; the events say what happened
                continue
            n_drop = count_dropped(t - t_prev, self.fps, cfg.drop_factor) if t_prev else 0
            index += 1 + n_drop
            t_prev = t
            self._emit(frame, t, index, n_drop)

    def _reconnect(self, t_last: float | None):
        """Reopen the device after a failed read; None when stopped; raises after the limit."""
        cfg = self.config
        t_lost = t_last if t_last is not None else local_clock()
        logger.warning("%s: no frame (stream lost); reopening", self._where())
        self._buffer.put(
            make_events_chunk(self.events_info, self.name, [("stream_lost", t_lost, {})])
        )
        deadline = time.monotonic() + cfg.reconnect_s
        while not self._stop.is_set():
            if self._cap is not None:
                self._cap.release()
            try:
                cap = self._open_capture()
                ok = cap.grab()
            except DeviceError:
                cap, ok = None, False
            if ok:
                self._cap = cap
                t = local_clock()
                logger.warning("%s: frames again (stream recovered)", self._where())
                self._buffer.put(
                    make_events_chunk(self.events_info, self.name, [("stream_recovered", t, {})])
                )
                return cap
            if cap is not None:
                cap.release()
            if time.monotonic() > deadline:
                raise DeviceError(
                    f"{self._where()} stopped delivering frames and could not be reopened "
                    f"within {cfg.reconnect_s:g} s; check the cable / that no other program "
                    "took the camera"
                )
            self._stop.wait(0.5)
        return None

    def _capture_file_realtime(self) -> None:
        cfg = self.config
        cap = self._cap
        index, pts = self._skip_to_start(cap)
        pts0 = pts
        t0 = None
        n_released = 0
        n_skipped = 0
        pending_grabbed = index >= 0
        t_last: float | None = None
        while not self._stop.is_set():
            if pending_grabbed:
                pending_grabbed = False
            else:
                if not cap.grab():
                    self._file_ended(t_last, n_released)
                    return
                index += 1
                pts = self._file_pts(cap, index, pts)
            if pts0 is None:
                pts0 = pts
            if cfg.stop_s is not None and pts >= cfg.stop_s:
                self.end_reason = "stop_s"
                return
            if t0 is None:
                t0 = local_clock()
            due = t0 + (pts - pts0)
            lag = local_clock() - due
            if lag > cfg.drop_factor / self.fps:  # behind: skip this frame like a camera would
                n_skipped += 1
                continue
            if lag < 0 and self._stop.wait(-lag):  # pacing the playback, not synchronisation
                return
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                raise FileFormatError(f"{self._where()}: frame {index} could not be decoded")
            t_last = local_clock()
            self._emit(frame, t_last, index, n_skipped)
            n_skipped = 0
            n_released += 1
            if cfg.max_frames is not None and n_released >= cfg.max_frames:
                self.end_reason = "max_frames"
                return

    def _file_ended(self, t_last: float | None, n_frames: int) -> None:
        """A file played in real time reached its end: say so on the events stream."""
        t = local_clock()
        self.end_reason = "end of file"
        logger.info("%s ended after %d frames", self._where(), n_frames)
        fields = {"t": t, "reason": "end of file", "n_frames": n_frames}
        if t_last is not None:
            fields["last"] = t_last
        self._buffer.put(
            make_events_chunk(self.events_info, self.name, [("stream_ended", t, fields)])
        )
