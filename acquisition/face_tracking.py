"""Face tracking with MediaPipe Face Mesh, and the geometric expression features of a face.

:class:`FaceTracker` runs MediaPipe's face mesh (``mediapipe==0.10.21``, its bundled models,
offline) on each frame, keeps the **largest** of up to ``max_num_faces`` faces, and returns a
:class:`FaceObservation`: 468 landmarks in pixels, the face box, the face-detection score, and a
hand-occlusion fraction (MediaPipe Hands, run every ``hand_check_every`` frames). No face gives
``None``; nothing raises on an empty, black or faceless frame.

The maths are plain functions of the landmarks:

:func:`head_pose`
    rotation of the head from frontal, as yaw / pitch / roll in degrees. The head frame is
    built from rigid landmarks (outer eye corners; subnasale to the forehead midline) and
    compared with the same construction on MediaPipe's canonical face model, so a frontal face
    gives (0, 0, 0). Yaw > 0: the face turns toward the image's right; pitch > 0: chin up;
    roll > 0: the head tilts counter-clockwise in the image.
:func:`geometric_features`
    :data:`GEOMETRY_NAMES`, measured in the head frame (pose removed) and in units of the
    outer-eye-corner distance (face size removed); the eye openings are ratios to eye width.
:func:`quality_score`
    in [0, 1]: detection score x face size x frontal pose x fraction in frame x (1 - occlusion).

Geometric features (left/right are the subject's):

=========================  ==================================================================
``mouth_open``             inner-lip gap (landmarks 13-14)
``mouth_width``            mouth-corner distance (61-291)
``mouth_corner_lift_left`` height of the left mouth corner (291) above the inner-lip midpoint;
                           rises in a smile, falls when the corners are pulled down
``mouth_corner_lift_right`` same for the right corner (61)
``upper_lip_to_nose``      subnasale (2) to upper-lip top (0); shrinks when the upper lip is
                           raised (disgust)
``jaw_drop``               subnasale (2) to chin (152)
``brow_raise_left``        height of the left mid-brow (334, 296, 293) above the left eye centre
``brow_raise_right``       same for the right brow (105, 66, 63)
``brow_inner_raise_left``  height of the inner left brow (336, 285) above the inner eye corner
                           (362); up for AU1 (sadness, surprise), down for AU4 (anger)
``brow_inner_raise_right`` same on the right (107, 55 over 133)
``brow_gap``               distance between the inner brow ends (55-285); AU4 pulls them together
``eye_open_left``          lid gap (386-374) / eye width (362-263)
``eye_open_right``         lid gap (159-145) / eye width (33-133)
=========================  ==================================================================
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError, ShapeError

logger = logging.getLogger(__name__)

__all__ = [
    "GEOMETRY_NAMES",
    "N_LANDMARKS",
    "FaceObservation",
    "FaceTracker",
    "FaceTrackerConfig",
    "geometric_features",
    "head_frame",
    "head_pose",
    "occlusion_fraction",
    "quality_score",
]

#: Landmarks of MediaPipe's face mesh (without the iris refinement).
N_LANDMARKS = 468

#: Names of :func:`geometric_features`, in order.
GEOMETRY_NAMES = (
    "mouth_open",
    "mouth_width",
    "mouth_corner_lift_left",
    "mouth_corner_lift_right",
    "upper_lip_to_nose",
    "jaw_drop",
    "brow_raise_left",
    "brow_raise_right",
    "brow_inner_raise_left",
    "brow_inner_raise_right",
    "brow_gap",
    "eye_open_left",
    "eye_open_right",
)

# Landmark indices of the face mesh (subject's left/right).
_R_EYE_OUT, _R_EYE_IN, _R_LID_UP, _R_LID_LO = 33, 133, 159, 145
_L_EYE_IN, _L_EYE_OUT, _L_LID_UP, _L_LID_LO = 362, 263, 386, 374
_LIP_IN_UP, _LIP_IN_LO, _LIP_OUT_UP = 13, 14, 0
_MOUTH_R, _MOUTH_L = 61, 291
_SUBNASALE, _CHIN = 2, 152
_UPPER_MIDLINE = (6, 8, 9, 10, 151)  # nose bridge to forehead: rigid
_R_BROW_MID, _L_BROW_MID = (105, 66, 63), (334, 296, 293)
_R_BROW_IN, _L_BROW_IN = (107, 55), (336, 285)

#: Landmarks whose cover by a hand counts as occlusion: brows, eyes, nose, mouth.
OCCLUSION_LANDMARKS = np.array(
    sorted(
        {
            *(70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
            *(300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
            *(33, 133, 159, 145, 160, 144, 158, 153),
            *(362, 263, 386, 374, 387, 373, 385, 380),
            *(1, 2, 4, 5, 6, 98, 327, 168, 197, 195),
            *(0, 13, 14, 17, 61, 291, 37, 267, 84, 314, 78, 308, 81, 311, 178, 402),
        }
    )
)

# The same head-frame construction on MediaPipe's canonical face model (centimetres, x to the
# subject's left, y up, z toward the viewer; mediapipe/modules/face_geometry/data/
# canonical_face_model.obj, Apache-2.0): outer eye corners at x = -/+4.445859, y = 2.663991,
# z = 3.173422; subnasale (2) at (0, -2.089024, 6.058267); the mean of the upper midline
# (6, 8, 9, 10, 151) at (0, 5.237, 5.194). The up axis leans back by atan(0.865 / 7.326).
_CANON_UP = np.array([0.0, 5.2370 - -2.089024, 5.1936 - 6.058267])
_CANON_FRAME = np.stack(
    [np.array([1.0, 0.0, 0.0]), _CANON_UP / np.linalg.norm(_CANON_UP)], axis=1
)  # (3, 2): x and up; z follows


def _as_landmarks(landmarks: NDArray) -> NDArray[np.float64]:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < N_LANDMARKS or lm.shape[1] != 3:
        raise ShapeError(f"landmarks must be ({N_LANDMARKS}, 3), got shape {lm.shape}")
    return lm


def _frame_from(x_axis: NDArray, up: NDArray) -> NDArray[np.float64]:
    """Orthonormal frame (3, 3), columns x, y (up), z = x cross y, by Gram-Schmidt."""
    x = x_axis / np.linalg.norm(x_axis)
    y = up - (up @ x) * x
    y = y / np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


_CANON_R = _frame_from(_CANON_FRAME[:, 0], _CANON_FRAME[:, 1])


def head_frame(landmarks: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """The head's axes, origin and scale from face-mesh landmarks.

    Parameters
    ----------
    landmarks : ndarray, shape (468, 3)
        Pixel coordinates ``(x right, y down, z away from the camera)``, z in the units of x
        (MediaPipe's normalised z times the image width).

    Returns
    -------
    axes : ndarray, shape (3, 3)
        Columns: the head's x (toward the subject's left eye), y (up), z (out of the face), in
        camera coordinates with y up and z toward the camera (``(x, -y, -z)`` of the input).
    origin : ndarray, shape (3,)
        Midpoint of the outer eye corners, same coordinates.
    scale : float
        Outer-eye-corner distance in pixels (3-D).
    """
    lm = _as_landmarks(landmarks)
    p = lm * np.array([1.0, -1.0, -1.0])  # y up, z toward the camera
    x_axis = p[_L_EYE_OUT] - p[_R_EYE_OUT]
    up = p[list(_UPPER_MIDLINE)].mean(axis=0) - p[_SUBNASALE]
    scale = float(np.linalg.norm(x_axis))
    if not scale > 0 or not np.linalg.norm(up) > 0:
        raise ShapeError("degenerate landmarks: eye corners or midline coincide")
    origin = 0.5 * (p[_L_EYE_OUT] + p[_R_EYE_OUT])
    return _frame_from(x_axis, up), origin, scale


def head_pose(landmarks: NDArray) -> tuple[float, float, float]:
    """Head rotation from frontal, degrees: ``(yaw, pitch, roll)``.

    ``R = axes @ canonical_axes.T`` is decomposed as ``Ry(yaw) Rx(-pitch) Rz(roll)`` about the
    camera's axes (x right, y up, z toward the camera). Yaw > 0: the face turns toward the
    image's right; pitch > 0: the chin goes up; roll > 0: counter-clockwise in the image.
    """
    axes, _, _ = head_frame(landmarks)
    r = axes @ _CANON_R.T
    yaw = math.degrees(math.atan2(r[0, 2], r[2, 2]))
    pitch = -math.degrees(math.asin(float(np.clip(-r[1, 2], -1.0, 1.0))))
    roll = math.degrees(math.atan2(r[1, 0], r[1, 1]))
    return yaw, pitch, roll


def geometric_features(landmarks: NDArray) -> NDArray[np.float32]:
    """The :data:`GEOMETRY_NAMES` features of one face, pose- and size-normalised.

    Parameters
    ----------
    landmarks : ndarray, shape (468, 3)
        Pixel coordinates, as for :func:`head_frame`.

    Returns
    -------
    ndarray of float32, shape (len(GEOMETRY_NAMES),)
        Distances in units of the outer-eye-corner distance, measured in the head frame; eye
        openings are lid gap / eye width.
    """
    axes, origin, scale = head_frame(landmarks)
    q = ((_as_landmarks(landmarks) * np.array([1.0, -1.0, -1.0])) - origin) @ axes / scale
    y = q[:, 1]

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b]))

    lip_mid_y = 0.5 * (y[_LIP_IN_UP] + y[_LIP_IN_LO])
    l_eye_y = y[[_L_EYE_IN, _L_EYE_OUT, _L_LID_UP, _L_LID_LO]].mean()
    r_eye_y = y[[_R_EYE_OUT, _R_EYE_IN, _R_LID_UP, _R_LID_LO]].mean()
    feats = (
        dist(_LIP_IN_UP, _LIP_IN_LO),
        dist(_MOUTH_R, _MOUTH_L),
        y[_MOUTH_L] - lip_mid_y,
        y[_MOUTH_R] - lip_mid_y,
        dist(_SUBNASALE, _LIP_OUT_UP),
        dist(_SUBNASALE, _CHIN),
        y[list(_L_BROW_MID)].mean() - l_eye_y,
        y[list(_R_BROW_MID)].mean() - r_eye_y,
        y[list(_L_BROW_IN)].mean() - y[_L_EYE_IN],
        y[list(_R_BROW_IN)].mean() - y[_R_EYE_IN],
        dist(_R_BROW_IN[1], _L_BROW_IN[1]),
        dist(_L_LID_UP, _L_LID_LO) / max(dist(_L_EYE_IN, _L_EYE_OUT), 1e-6),
        dist(_R_LID_UP, _R_LID_LO) / max(dist(_R_EYE_OUT, _R_EYE_IN), 1e-6),
    )
    return np.asarray(feats, dtype=np.float32)


def occlusion_fraction(landmarks: NDArray, hands: list[NDArray], dilate: float = 0.1) -> float:
    """Fraction of :data:`OCCLUSION_LANDMARKS` that lie inside a hand.

    Parameters
    ----------
    landmarks : ndarray, shape (468, 2 or 3)
        Face landmarks, pixels (only x, y are used).
    hands : list of ndarray, each shape (21, 2 or 3)
        Hand landmarks, pixels.
    dilate : float
        Each hand's convex hull is grown by this fraction around its centroid (the landmarks
        sit inside the fingers' outline).
    """
    import cv2  # noqa: PLC0415

    if not hands:
        return 0.0
    pts = np.asarray(landmarks, dtype=np.float32)[OCCLUSION_LANDMARKS, :2]
    covered = np.zeros(len(pts), dtype=bool)
    for hand in hands:
        h = np.asarray(hand, dtype=np.float32)[:, :2]
        c = h.mean(axis=0)
        hull = cv2.convexHull(((h - c) * (1.0 + dilate) + c).astype(np.float32))
        for i, (x, y) in enumerate(pts):
            if not covered[i] and cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0:
                covered[i] = True
    return float(covered.mean())


def quality_score(
    *,
    detection_score: float,
    face_px: float,
    yaw_deg: float,
    pitch_deg: float,
    in_frame: float,
    occlusion: float,
    full_quality_face_px: float = 96.0,
    max_pose_deg: float = 60.0,
) -> float:
    """Tracking quality in [0, 1], the product of five factors.

    ``detection_score`` (MediaPipe face detection, 0-1; NaN counts as 1) x
    ``min(face_px / full_quality_face_px, 1)`` (face box side, pixels) x
    ``clip((cos yaw cos pitch - cos max_pose) / (1 - cos max_pose), 0, 1)`` x ``in_frame``
    (fraction of landmarks inside the image) x ``(1 - occlusion)`` (NaN counts as 0).
    """
    det = 1.0 if not math.isfinite(detection_score) else min(max(detection_score, 0.0), 1.0)
    size = min(max(face_px / full_quality_face_px, 0.0), 1.0)
    c_max = math.cos(math.radians(max_pose_deg))
    frontal = math.cos(math.radians(yaw_deg)) * math.cos(math.radians(pitch_deg))
    pose = min(max((frontal - c_max) / (1.0 - c_max), 0.0), 1.0)
    occ = 0.0 if not math.isfinite(occlusion) else min(max(occlusion, 0.0), 1.0)
    return float(det * size * pose * min(max(in_frame, 0.0), 1.0) * (1.0 - occ))


@dataclass(frozen=True)
class FaceTrackerConfig:
    """Settings of :class:`FaceTracker`.

    Parameters
    ----------
    max_num_faces : int
        Faces the mesh tracks at once; the largest is reported. With fewer faces in view than
        this, MediaPipe runs its face detector on every frame (a few ms) to find new ones.
    static_image_mode : bool
        Treat every frame as unrelated (images); False tracks across video frames.
    min_detection_confidence, min_tracking_confidence : float
        MediaPipe thresholds, in (0, 1).
    hand_check_every : int
        Run MediaPipe Hands every this many frames to measure occlusion by hands (0: never;
        the occlusion channel is then NaN). Between checks the last value is held.
    occluded_threshold : float
        Occlusion fraction from which a face counts as occluded.
    full_quality_face_px : float
        Face box side (pixels) from which size no longer lowers the quality.
    max_pose_deg : float
        Head rotation at which the pose factor of the quality reaches 0.
    """

    max_num_faces: int = 2
    static_image_mode: bool = False
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    hand_check_every: int = 6
    occluded_threshold: float = 0.1
    full_quality_face_px: float = 96.0
    max_pose_deg: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_num_faces, int) or not 1 <= self.max_num_faces <= 10:
            raise ConfigError(f"max_num_faces must be 1..10, got {self.max_num_faces!r}")
        for key in ("min_detection_confidence", "min_tracking_confidence"):
            v = getattr(self, key)
            if not 0.0 < v < 1.0:
                raise ConfigError(f"{key} must be in (0, 1), got {v!r}")
        if not isinstance(self.hand_check_every, int) or self.hand_check_every < 0:
            raise ConfigError(
                f"hand_check_every must be an integer >= 0 (0 = off), got {self.hand_check_every!r}"
            )
        if not 0.0 < self.occluded_threshold <= 1.0:
            raise ConfigError(
                f"occluded_threshold must be in (0, 1], got {self.occluded_threshold}"
            )
        if not self.full_quality_face_px > 0:
            raise ConfigError(f"full_quality_face_px must be > 0, got {self.full_quality_face_px}")
        if not 0.0 < self.max_pose_deg < 90.0:
            raise ConfigError(f"max_pose_deg must be in (0, 90), got {self.max_pose_deg}")


@dataclass(frozen=True)
class FaceObservation:
    """The tracked (largest) face in one frame.

    Attributes
    ----------
    landmarks : ndarray of float32, shape (468, 3)
        Pixels: x right, y down, z away from the camera in x's units.
    box : tuple of float
        ``(x0, y0, x1, y1)``: the landmarks' bounding box, pixels.
    n_faces : int
        Faces found in the frame.
    detection_score : float
        MediaPipe face-detection score of this face (last one seen while it is tracked; NaN
        when none was seen yet).
    occlusion : float
        Fraction of the brow/eye/nose/mouth landmarks covered by a hand (last check; NaN when
        hand checks are off).
    in_frame : float
        Fraction of the landmarks inside the image.
    image_size : tuple of int
        ``(height, width)`` of the frame.
    """

    landmarks: NDArray[np.float32]
    box: tuple[float, float, float, float]
    n_faces: int
    detection_score: float
    occlusion: float
    in_frame: float
    image_size: tuple[int, int]

    @property
    def size_px(self) -> float:
        """Side of the face box (the larger of width and height), pixels."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))


def _face_mesh_class():
    """MediaPipe's face-mesh solution, also observing its face detections (for their scores)."""
    from mediapipe.python.solution_base import SolutionBase  # noqa: PLC0415
    from mediapipe.python.solutions import face_mesh  # noqa: PLC0415, F401  (registers protos)

    class _FaceMesh(SolutionBase):
        def __init__(self, config: FaceTrackerConfig) -> None:
            super().__init__(
                binary_graph_path="mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb",
                side_inputs={
                    "num_faces": config.max_num_faces,
                    "with_attention": False,
                    "use_prev_landmarks": not config.static_image_mode,
                },
                calculator_params={
                    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                    "TensorsToDetectionsCalculator.min_score_thresh": config.min_detection_confidence,
                    "facelandmarkcpu__ThresholdingCalculator.threshold": (
                        config.min_tracking_confidence
                    ),
                },
                outputs=["multi_face_landmarks", "face_detections"],
            )

    return _FaceMesh


class FaceTracker:
    """MediaPipe face mesh on BGR frames; the largest face as a :class:`FaceObservation`.

    Use as a context manager (or call :meth:`close`); :meth:`reset` forgets the tracked face.
    """

    def __init__(self, config: FaceTrackerConfig | None = None) -> None:
        self.config = config or FaceTrackerConfig()
        self._mesh = _face_mesh_class()(self.config)
        self._hands = None
        if self.config.hand_check_every:
            import mediapipe as mp  # noqa: PLC0415

            self._hands = mp.solutions.hands.Hands(
                static_image_mode=self.config.static_image_mode,
                max_num_hands=2,
                model_complexity=0,
                min_detection_confidence=0.5,
                min_tracking_confidence=0.5,
            )
        self.reset()

    def reset(self) -> None:
        """Forget the tracked face: detection score, occlusion and hand-check phase."""
        self._det_score = math.nan
        self._occlusion = math.nan if not self.config.hand_check_every else 0.0
        self._frames_since_check = None

    def close(self) -> None:
        for sol in (self._mesh, self._hands):
            if sol is not None:
                sol.close()
        self._mesh = self._hands = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process(self, frame: NDArray[np.uint8], *, rgb: bool = False) -> FaceObservation | None:
        """Track the face in one frame.

        Parameters
        ----------
        frame : ndarray of uint8, shape (height, width, 3)
            BGR (OpenCV's order), or RGB with ``rgb=True``.

        Returns
        -------
        FaceObservation or None
            None when no face is found.
        """
        import cv2  # noqa: PLC0415

        if self._mesh is None:
            raise ConfigError("this FaceTracker is closed")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
            raise ShapeError(
                f"frame must be (height, width, 3) uint8, got {frame.shape} {frame.dtype}"
            )
        image = frame if rgb else cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        out = self._mesh.process(image)
        faces = out.multi_face_landmarks or []
        if not faces:
            self.reset()
            return None
        to_px = np.array([w, h, w], np.float32)
        arrays = [
            np.array([(p.x, p.y, p.z) for p in f.landmark[:N_LANDMARKS]], np.float32) * to_px
            for f in faces
        ]
        boxes = [(a[:, 0].min(), a[:, 1].min(), a[:, 0].max(), a[:, 1].max()) for a in arrays]
        areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes]
        best = int(np.argmax(areas))
        lm, box = arrays[best], tuple(float(v) for v in boxes[best])
        self._update_detection_score(out.face_detections, box, w, h)
        self._update_occlusion(image, lm, w, h)
        inside = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
        return FaceObservation(
            landmarks=lm,
            box=box,
            n_faces=len(faces),
            detection_score=self._det_score,
            occlusion=self._occlusion,
            in_frame=float(inside.mean()),
            image_size=(h, w),
        )

    def _update_detection_score(self, detections, box: tuple, w: int, h: int) -> None:
        """Score of the detection whose box centre lies in the tracked face's box, if any."""
        x0, y0, x1, y1 = box
        for det in detections or []:
            bb = det.location_data.relative_bounding_box
            cx, cy = (bb.xmin + bb.width / 2) * w, (bb.ymin + bb.height / 2) * h
            if x0 <= cx <= x1 and y0 <= cy <= y1:
                self._det_score = float(det.score[0])
                return

    def _update_occlusion(self, image: NDArray, lm: NDArray, w: int, h: int) -> None:
        every = self.config.hand_check_every
        if not every or self._hands is None:
            return
        if self._frames_since_check is not None and self._frames_since_check + 1 < every:
            self._frames_since_check += 1
            return
        self._frames_since_check = 0
        res = self._hands.process(image)
        hands = [
            np.array([(p.x * w, p.y * h) for p in hand.landmark], np.float32)
            for hand in (res.multi_hand_landmarks or [])
        ]
        self._occlusion = occlusion_fraction(lm, hands)
