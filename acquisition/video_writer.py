"""Optional raw video: a compressed file plus a ``VideoFrameIndex`` stream to find frames later.

Raw video is **off by default**: faces are biometric data. When asked for (``bci-affect camera
--video F.avi``), :class:`VideoRecorder` writes every captured frame to a compressed video file
(MPEG-4 part 2, ``mp4v``, by default; put it beside the session's XDF) and, for every frame,
emits one sample on the ``VideoFrames`` stream (type ``VideoFrameIndex``, irregular rate, one
int32 channel ``frame``): the frame's number in the file (0, 1, 2, ...) stamped with the
frame's capture time on the LSL clock. Recorded with ``bci-affect record`` beside the EEG, it
maps any EEG time to the video frame shown then (:func:`match_frames`).

The container is the file name's: ``.avi`` is the one to use. An AVI cut short (``kill -9``, a
power cut) stays readable up to the cut, less the frames still in FFmpeg's 256 KiB output
buffer (a second or two); an MP4 (``.mp4``, ``.mov``) is readable only once closed, since its
index is written last, so a killed process leaves nothing readable. OpenCV's writer cannot
write fragmented MP4, so an MP4 name is accepted with a warning.

The same index is also written to a sidecar text file ``<video>.frames.csv`` (``frame,lsl_time``
per line, flushed frame by frame, before the frame is published), so the mapping survives even
when no recorder was running, and a killed process leaves a line for every frame it published.
The video file's own frame rate is the camera's nominal rate; the true timing is the index's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from acquisition.camera import FrameChunk
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, ShapeError

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_INDEX_TYPE",
    "VideoRecorder",
    "match_frames",
    "read_frame_index",
    "video_index_info",
]

#: Stream type of the frame index.
VIDEO_INDEX_TYPE = "VideoFrameIndex"
#: Containers whose index is written when the file is closed: unreadable if the writer is killed.
INDEX_AT_END = (".mp4", ".m4v", ".mov")


def video_index_info(
    name: str = "VideoFrames", source_id: str = "", video_file: str = ""
) -> StreamInfo:
    """The ``VideoFrameIndex`` stream: irregular rate, one int32 channel ``frame``."""
    return StreamInfo(
        name=name,
        type=VIDEO_INDEX_TYPE,
        sfreq=0.0,
        ch_names=("frame",),
        units=("index",),
        source_id=source_id,
        channel_format="int32",
        desc={"video_file": video_file} if video_file else {},
    )


class VideoRecorder:
    """Writes frames to a compressed video file and numbers them on the LSL clock.

    Parameters
    ----------
    path : str or Path
        Video file to create: ``.avi`` (readable up to the cut if the process is killed; any
        of ``mp4v``, ``MJPG``, ``XVID``) or ``.mp4`` (lost if the process is killed; a warning
        says so). Parent folders are created.
    fourcc : str
        Four-character OpenCV/FFmpeg codec code.
    name, source_id : str
        Of the ``VideoFrameIndex`` stream.
    overwrite : bool
        Replace an existing file (default: refuse, so no recording is lost).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fourcc: str = "mp4v",
        name: str = "VideoFrames",
        source_id: str = "",
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        if len(fourcc) != 4:
            raise ConfigError(
                f"fourcc must be a 4-character codec code (mp4v, MJPG), got {fourcc!r}"
            )
        if self.path.exists() and not overwrite:
            raise ConfigError(
                f"video file {str(self.path)!r} exists; choose a new name (nothing is overwritten)"
            )
        if self.path.is_dir():
            raise ConfigError(f"{str(self.path)!r} is a folder; give a video file name")
        self.fourcc = fourcc
        self.index_path = self.path.with_name(self.path.name + ".frames.csv")
        self.index_info = video_index_info(name, source_id, self.path.name)
        self._writer = None
        self._csv = None
        self._size: tuple[int, int] | None = None
        self._warned_resize = False
        self.n_written = 0

    def open(self, fps: float, frame_size: tuple[int, int]) -> None:
        """Create the file for frames of ``frame_size`` = (width, height) at nominal ``fps``."""
        import cv2  # noqa: PLC0415

        if self._writer is not None:
            return
        width, height = (int(v) for v in frame_size)
        if width <= 0 or height <= 0:
            raise ShapeError(f"frame size must be positive, got {frame_size}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(
            str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), float(fps), (width, height)
        )
        if not writer.isOpened():
            writer.release()
            raise ConfigError(
                f"cannot write {str(self.path)!r} with codec {self.fourcc!r}; use a .avi name with "
                "mp4v, MJPG or XVID"
            )
        self._writer = writer
        self._size = (width, height)
        self._csv = open(self.index_path, "w", encoding="utf-8")  # noqa: SIM115
        self._csv.write("frame,lsl_time\n")
        self.n_written = 0
        if self.path.suffix.lower() in INDEX_AT_END:
            logger.warning(
                "%s: an %s file is readable only once closed; if this program is killed, the "
                "whole video is lost (name it .avi to keep the video up to the cut)",
                self.path,
                self.path.suffix.lower().lstrip(".").upper(),
            )
        logger.info(
            "recording video to %s (%s, %dx%d, %g fps nominal)",
            self.path,
            self.fourcc,
            *self._size,
            fps,
        )

    def write(self, frames: FrameChunk) -> Chunk:
        """Append ``frames``; returns their ``VideoFrameIndex`` chunk (file frame numbers)."""
        import cv2  # noqa: PLC0415

        if self._writer is None:
            raise ConfigError("VideoRecorder is not open; call open(fps, frame_size) first")
        numbers = np.arange(self.n_written, self.n_written + frames.n_times, dtype=np.int32)
        for frame, t, k in zip(frames.frames, frames.times, numbers, strict=True):
            if (frame.shape[1], frame.shape[0]) != self._size:
                if not self._warned_resize:
                    logger.warning(
                        "frame size changed to %dx%d; resizing to the file's %dx%d",
                        frame.shape[1],
                        frame.shape[0],
                        *self._size,
                    )
                    self._warned_resize = True
                frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
            self._writer.write(np.ascontiguousarray(frame))
            self._csv.write(f"{int(k)},{float(t)!r}\n")
        self.n_written += frames.n_times
        self._csv.flush()  # before the frames are published: a kill keeps their index lines
        return Chunk(numbers[None, :], frames.times.astype(np.float64, copy=True), self.index_info)

    def close(self) -> None:
        """Finish the file (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
            logger.info("video %s: %d frames", self.path, self.n_written)
        csv, self._csv = self._csv, None
        if csv is not None:
            csv.close()

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frame_index(path: str | Path) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``(frames, lsl_times)`` from a ``<video>.frames.csv`` sidecar."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"frame index {str(path)!r} does not exist")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    return data[:, 0].astype(np.int64), data[:, 1].astype(np.float64)


def match_frames(
    index_times: ArrayLike, index_frames: ArrayLike, times: ArrayLike
) -> NDArray[np.int64]:
    """The video frame on screen at each of ``times``: the last frame stamped at or before it.

    Parameters
    ----------
    index_times : array, shape (n_frames,)
        LSL times of the ``VideoFrameIndex`` samples (increasing).
    index_frames : array, shape (n_frames,)
        Their frame numbers.
    times : array, shape (n,)
        Query times on the same clock (e.g. EEG sample times).

    Returns
    -------
    ndarray of int64, shape (n,)
        Frame numbers; -1 before the first frame.
    """
    it = np.asarray(index_times, dtype=np.float64)
    fr = np.asarray(index_frames, dtype=np.int64).ravel()
    if it.shape != fr.shape:
        raise ShapeError(f"index_times {it.shape} and index_frames {fr.shape} differ")
    pos = np.searchsorted(it, np.asarray(times, dtype=np.float64), side="right") - 1
    out = np.full(pos.shape, -1, dtype=np.int64)
    ok = pos >= 0
    out[ok] = fr[pos[ok]]
    return out
