"""The simulated FaceFeatures stream: what the live camera pipeline would emit.

Same stream as :mod:`acquisition.face_features` (name, type ``FaceFeatures``, the 160
channels and their units, float32, irregular rate), one sample per video frame, with frames
every ``1 / fps`` s plus a little timestamp jitter, and a few frames dropped (reported like
the camera reports them, on ``FaceFeatures-events``). Per frame:

status channels
    ``face_present`` 1 (0 in face-lost spans, where every channel but ``face_present``,
    ``quality`` and ``n_faces`` (all 0) is NaN, as live); ``quality`` by the live formula
    (:func:`acquisition.face_tracking.quality_score`, vectorised) from the detection score,
    face size, head pose and occlusion; ``occlusion`` 0 except in hand-over-face episodes
    (0.15-0.7, ``occluded`` = 1 when >= 0.1); head pose and face position drift slowly.
expression probabilities
    softmax of logits ``base_k + 5 * intensity_k(t) + noise``: neutral has a base of 2, the
    other classes a subject-specific base near -1 (disgust -2.5: FER2013 models rarely say
    it); the intensities are :class:`acquisition.simulator.latent.ExpressionTrack`'s (which
    already include the subject's expressivity, so a poker face stays mostly neutral);
    occlusions add noise and a pull toward fear/sad, as hands over a face do to FER2013
    models.
geometry
    subject-specific neutral values (anchored on the live pipeline's output for real faces)
    plus per-expression changes times the intensities (a smile lifts the mouth corners,
    widens and opens the mouth and narrows the eyes; surprise raises the brows and opens eyes
    and jaw; anger lowers and draws the brows together; ...), blinks close the eyes, plus
    smooth noise.
embedding (stand-in)
    NOT the network's embedding: ``mean + sum_k p_k * prototype_k + identity + U z(t) + e``.
    ``mean`` and the seven class prototypes are fixed vectors (the same for every subject and
    seed, like a fixed network), ``identity`` a per-subject offset, ``U z(t)`` slow noise in a
    fixed 8-dimensional subspace, ``e`` small white noise. Magnitudes match the real
    network's embeddings of real faces (per-dimension mean about 0.07, SD about 0.12).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from acquisition.simulator.config import SimulatorConfig
from acquisition.simulator.latent import EXPRESSIONS, Blinks, ExpressionTrack
from acquisition.simulator.protocol import Schedule
from acquisition.simulator.subject import SubjectParams
from bci_affect.core.chunk import StreamInfo

__all__ = ["FaceResult", "face_stream_infos", "simulate_face", "spans"]

#: Seed of the fixed embedding prototypes (independent of the session seed, like a network).
PROTOTYPE_SEED = 20_240_501

#: Dimension of the slow embedding-noise subspace.
EMBEDDING_LATENT_DIM = 8

#: The FER2013 classes, in the live stream's order (``expr_<class>``).
FER_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Neutral geometry: (mean, subject SD) per channel, from the live pipeline on real faces.
_NEUTRAL_GEOMETRY = {
    "mouth_open": (0.03, 0.01),
    "mouth_width": (0.62, 0.04),
    "mouth_corner_lift_left": (0.04, 0.015),
    "mouth_corner_lift_right": (0.04, 0.015),
    "upper_lip_to_nose": (0.14, 0.015),
    "jaw_drop": (0.75, 0.04),
    "brow_raise_left": (0.22, 0.02),
    "brow_raise_right": (0.22, 0.02),
    "brow_inner_raise_left": (0.19, 0.02),
    "brow_inner_raise_right": (0.19, 0.02),
    "brow_gap": (0.28, 0.015),
    "eye_open_left": (0.28, 0.03),
    "eye_open_right": (0.28, 0.03),
}

# Change of each geometry channel at full intensity of each expression (eye_span units).
_G = {
    "happy": {"mouth_open": 0.12, "mouth_width": 0.12, "mouth_corner_lift_left": 0.06,
              "mouth_corner_lift_right": 0.06, "upper_lip_to_nose": -0.01, "jaw_drop": 0.05,
              "eye_open_left": -0.04, "eye_open_right": -0.04},
    "surprise": {"mouth_open": 0.18, "mouth_width": -0.12, "mouth_corner_lift_left": -0.01,
                 "mouth_corner_lift_right": -0.01, "jaw_drop": 0.12, "brow_raise_left": 0.06,
                 "brow_raise_right": 0.06, "brow_inner_raise_left": 0.05,
                 "brow_inner_raise_right": 0.05, "brow_gap": 0.01, "eye_open_left": 0.08,
                 "eye_open_right": 0.08},
    "fear": {"mouth_open": 0.06, "mouth_width": 0.05, "mouth_corner_lift_left": -0.02,
             "mouth_corner_lift_right": -0.02, "brow_raise_left": 0.04, "brow_raise_right": 0.04,
             "brow_inner_raise_left": 0.05, "brow_inner_raise_right": 0.05, "brow_gap": -0.015,
             "eye_open_left": 0.06, "eye_open_right": 0.06},
    "sad": {"mouth_width": -0.03, "mouth_corner_lift_left": -0.04,
            "mouth_corner_lift_right": -0.04, "brow_raise_left": -0.01, "brow_raise_right": -0.01,
            "brow_inner_raise_left": 0.04, "brow_inner_raise_right": 0.04, "brow_gap": -0.01,
            "eye_open_left": -0.04, "eye_open_right": -0.04},
    "angry": {"mouth_open": -0.01, "mouth_width": -0.04, "mouth_corner_lift_left": -0.02,
              "mouth_corner_lift_right": -0.02, "upper_lip_to_nose": -0.01,
              "brow_raise_left": -0.04, "brow_raise_right": -0.04,
              "brow_inner_raise_left": -0.05, "brow_inner_raise_right": -0.05,
              "brow_gap": -0.04, "eye_open_left": -0.03, "eye_open_right": -0.03},
    "disgust": {"mouth_width": -0.03, "mouth_corner_lift_left": -0.02,
                "mouth_corner_lift_right": -0.02, "upper_lip_to_nose": -0.05,
                "brow_inner_raise_left": -0.03, "brow_inner_raise_right": -0.03,
                "brow_gap": -0.03, "eye_open_left": -0.05, "eye_open_right": -0.05},
}  # fmt: skip

# Base logits of the FER2013 classes (before the subject's own offsets).
_BASE_LOGITS = {"angry": -0.8, "disgust": -2.5, "fear": -1.2, "happy": -1.0, "sad": -0.6,
                "surprise": -1.2, "neutral": 2.0}  # fmt: skip
_INTENSITY_GAIN = 5.0


def face_stream_infos(config: SimulatorConfig, source_id: str) -> tuple[StreamInfo, StreamInfo]:
    """The FaceFeatures and FaceFeatures-events :class:`StreamInfo` (the live layout; only
    ``desc`` says the features are simulated)."""
    from acquisition.camera import events_info_for  # noqa: PLC0415
    from acquisition.face_features import face_features_info  # noqa: PLC0415

    info = face_features_info(config.face.name, source_id)
    info = replace(
        info,
        desc={
            "expression_model": "simulated (bci-affect simulate: prototype embeddings)",
            "landmarks": "simulated",
        },
    )
    return info, events_info_for(info.name, source_id)


def spans(
    rate_per_min: float,
    length_s: tuple[float, float],
    start: float,
    stop: float,
    rng: np.random.Generator,
) -> list[tuple[float, float]]:
    """Random non-overlapping ``(start, end)`` spans: a Poisson number, uniform placement,
    overlapping ones merged."""
    duration = stop - start
    n = rng.poisson(rate_per_min / 60.0 * duration)
    t0 = np.sort(rng.uniform(start, stop, size=n))
    d = rng.uniform(*length_s, size=n)
    out: list[list[float]] = []
    for a, b in zip(t0, np.minimum(t0 + d, stop), strict=True):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([float(a), float(b)])
    return [(round(a, 6), round(b, 6)) for a, b in out]


def _in_spans(times: NDArray, sp: list[tuple[float, float]]) -> NDArray[np.bool_]:
    mask = np.zeros(times.size, dtype=bool)
    for a, b in sp:
        lo, hi = np.searchsorted(times, [a, b])
        mask[lo:hi] = True
    return mask


def _ar_noise(times: NDArray, tau: float, sd: float, rng: np.random.Generator, n: int) -> NDArray:
    """Smooth noise with SD ``sd``: AR(1) over the frames with time constant ``tau`` s (at the
    mean frame interval), shape (n, n_times)."""
    if times.size < 2:
        return rng.standard_normal((n, times.size)) * sd
    dt = (times[-1] - times[0]) / (times.size - 1)
    a = float(np.exp(-dt / tau))
    e = rng.standard_normal((n, times.size)) * sd * np.sqrt(1.0 - a * a)
    e[:, 0] /= np.sqrt(1.0 - a * a)
    return signal.lfilter([1.0], [1.0, -a], e, axis=-1)


def _prototypes(dim: int) -> tuple[NDArray, NDArray, NDArray]:
    """Fixed mean vector (dim,), class prototypes (7, dim) and noise basis (dim, 8)."""
    rng = np.random.default_rng(PROTOTYPE_SEED)
    mean = rng.normal(0.07, 0.12, size=dim)
    protos = rng.normal(0.0, 0.12, size=(len(FER_ORDER), dim))
    basis, _ = np.linalg.qr(rng.standard_normal((dim, EMBEDDING_LATENT_DIM)))
    return mean, protos, basis


@dataclass
class FaceResult:
    """What :func:`simulate_face` produced.

    Attributes
    ----------
    data : ndarray of float32, shape (n_chans, n_frames)
        FaceFeatures samples.
    times : ndarray of float64, shape (n_frames,)
        Frame timestamps, LSL seconds.
    events : list of (event, t, fields)
        ``dropped_samples``, ``face_lost``, ``face_found`` for the events stream.
    truth : dict
        Ground truth: face-lost spans, occlusion spans, dropped frames, expression episodes.
    """

    data: NDArray[np.float32]
    times: NDArray[np.float64]
    events: list = field(default_factory=list)
    truth: dict = field(default_factory=dict)


def simulate_face(
    config: SimulatorConfig,
    subject: SubjectParams,
    schedule: Schedule,
    ch_names: tuple[str, ...],
    expressions: ExpressionTrack,
    blinks: Blinks,
    rng: np.random.Generator,
) -> FaceResult:
    """Simulate the FaceFeatures frames of one session (``ch_names``: the live layout)."""
    fc = config.face
    idx = {c: i for i, c in enumerate(ch_names)}
    expr_idx = [idx[f"expr_{c}"] for c in FER_ORDER]
    emb_idx = [i for i, c in enumerate(ch_names) if c.startswith("emb_")]
    geom_names = [c for c in _NEUTRAL_GEOMETRY if c in idx]

    # -- frame times: nominal grid + jitter, some frames dropped
    period = 1.0 / fc.fps
    n_nominal = int(np.floor(schedule.duration_s * fc.fps + 1e-9)) + 1
    nominal = schedule.start + np.arange(n_nominal) * period
    jitter = np.clip(rng.normal(0.0, fc.jitter_s, n_nominal), -0.45 * period, 0.45 * period)
    jitter[0] = 0.0
    dropped = rng.random(n_nominal) < fc.drop_prob
    dropped[0] = False
    times = (nominal + jitter)[~dropped]
    n = times.size
    events: list[tuple[str, float, dict]] = []
    drop_idx = np.flatnonzero(dropped)
    if drop_idx.size:
        runs = np.split(drop_idx, np.flatnonzero(np.diff(drop_idx) > 1) + 1)
        for run in runs:
            t = float(nominal[run[0]])
            events.append(("dropped_samples", t, {"n": int(run.size), "t": t}))

    # -- episodes without a face, occlusions
    lost = spans(fc.face_lost_rate_per_min, fc.face_lost_s, schedule.start, schedule.stop, rng)
    occl = spans(fc.occlusion_rate_per_min, fc.occlusion_s, schedule.start, schedule.stop, rng)
    present = ~_in_spans(times, lost)
    occlusion = np.zeros(n)
    for a, b in occl:
        lo, hi = np.searchsorted(times, [a, b])
        level = rng.uniform(0.15, 0.7)
        occlusion[lo:hi] = np.clip(level + 0.05 * rng.standard_normal(hi - lo), 0.1, 0.95)

    # -- subject traits of the face (drawn in a fixed order)
    base = np.array([_BASE_LOGITS[c] for c in FER_ORDER]) + rng.normal(0.0, 0.4, len(FER_ORDER))
    base[FER_ORDER.index("neutral")] = _BASE_LOGITS["neutral"]
    neutral_geom = np.array([rng.normal(m, s) for m, s in _NEUTRAL_GEOMETRY.values()])
    pose_mean = rng.normal([0.0, -3.0, 0.0], [5.0, 4.0, 3.0])
    pos_mean = np.array([rng.normal(0.5, 0.05), rng.normal(0.45, 0.04), rng.normal(0.35, 0.05)])
    det_mean = rng.uniform(0.9, 0.98)
    identity = rng.normal(0.0, 0.05, size=len(emb_idx))

    # -- expressions -> probabilities
    intensity = expressions.intensity(times)  # (6, n)
    logits = np.tile(base[:, None], (1, n))
    for k, name in enumerate(EXPRESSIONS):
        logits[FER_ORDER.index(name)] += _INTENSITY_GAIN * intensity[k]
    logits[FER_ORDER.index("neutral")] -= 1.0 * intensity.sum(axis=0)
    logits += _ar_noise(times, 0.3, fc.logit_noise_sd, rng, len(FER_ORDER))
    logits += rng.normal(0.0, 0.3 * fc.logit_noise_sd, logits.shape)
    occ_on = occlusion > 0
    if occ_on.any():
        extra = rng.normal(0.0, 1.0, (len(FER_ORDER), int(occ_on.sum())))
        extra[FER_ORDER.index("fear")] += 1.0
        extra[FER_ORDER.index("sad")] += 1.0
        logits[:, occ_on] += extra * occlusion[occ_on] * 2.0
    logits -= logits.max(axis=0, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=0, keepdims=True)

    # -- geometry
    geom = np.tile(neutral_geom[:, None], (1, n))
    gpos = {g: i for i, g in enumerate(_NEUTRAL_GEOMETRY)}
    for k, name in enumerate(EXPRESSIONS):
        for g, delta in _G[name].items():
            geom[gpos[g]] += delta * intensity[k]
    closure = blinks.closure(times)
    for g in ("eye_open_left", "eye_open_right"):
        geom[gpos[g]] *= 1.0 - 0.85 * closure
    noise_scale = np.where(occ_on, 3.0, 1.0)
    geom += _ar_noise(times, 0.2, fc.geometry_noise_sd, rng, geom.shape[0]) * noise_scale
    for g in ("mouth_open", "eye_open_left", "eye_open_right", "mouth_width", "jaw_drop"):
        geom[gpos[g]] = np.maximum(geom[gpos[g]], 0.0)

    # -- pose, position, detection, quality
    pose = pose_mean[:, None] + _ar_noise(times, 3.0, fc.head_motion_deg, rng, 3)
    position = pos_mean[:, None] + _ar_noise(times, 5.0, 0.015, rng, 3)
    det = np.clip(det_mean + 0.01 * rng.standard_normal(n) - 0.3 * occlusion, 0.5, 1.0)
    c_max = np.cos(np.radians(60.0))
    frontal = np.cos(np.radians(pose[0])) * np.cos(np.radians(pose[1]))
    pose_factor = np.clip((frontal - c_max) / (1.0 - c_max), 0.0, 1.0)
    face_px = position[2] * 480.0  # face side on a 640x480 camera
    size_factor = np.clip(face_px / 96.0, 0.0, 1.0)
    quality = det * size_factor * pose_factor * (1.0 - occlusion)

    # -- embedding stand-in
    mean, protos, basis = _prototypes(len(emb_idx))
    latent_sd = fc.embedding_noise_sd * np.sqrt(len(emb_idx) / EMBEDDING_LATENT_DIM)
    z = _ar_noise(times, 1.0, latent_sd, rng, EMBEDDING_LATENT_DIM)
    emb = (
        mean[:, None]
        + protos.T @ probs
        + identity[:, None]
        + basis @ z
        + rng.normal(0.0, 0.5 * fc.embedding_noise_sd, (len(emb_idx), n)) * noise_scale
    )

    # -- assemble the frames
    data = np.full((len(ch_names), n), np.nan, dtype=np.float64)
    data[idx["face_present"]] = 1.0
    data[idx["quality"]] = quality
    data[idx["occluded"]] = (occlusion >= 0.1).astype(np.float64)
    data[idx["occlusion"]] = occlusion
    data[idx["n_faces"]] = 1.0
    data[idx["detection_score"]] = det
    data[idx["face_x"]], data[idx["face_y"]], data[idx["face_size"]] = position
    data[idx["head_yaw_deg"]], data[idx["head_pitch_deg"]], data[idx["head_roll_deg"]] = pose
    for g in geom_names:
        data[idx[g]] = geom[gpos[g]]
    data[expr_idx] = probs
    data[emb_idx] = emb
    data[:, ~present] = np.nan
    for c in ("face_present", "quality", "n_faces"):
        data[idx[c], ~present] = 0.0

    # face_lost / face_found at the frames where presence changes
    change = np.flatnonzero(np.diff(present.astype(np.int8)) != 0) + 1
    for i in change:
        events.append(("face_found" if present[i] else "face_lost", float(times[i]), {}))
    if n and not present[0]:
        events.append(("face_lost", float(times[0]), {}))

    truth = {
        "face_lost": [list(s) for s in lost],
        "occlusions": [list(s) for s in occl],
        "dropped_frames": int(dropped.sum()),
        "expression_episodes": expressions.episodes(),
    }
    return FaceResult(data=data.astype(np.float32), times=times, events=events, truth=truth)
