"""Real XDF sessions for the training tests: simulated, or written by hand.

:func:`write_session` writes a session with exactly the trials and ratings a test needs,
with the project's XDF writer; :func:`short_config` is a simulator configuration of short
sessions (8 trials of 9-11 s, about 100 s per subject).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acquisition.face_features import FACE_FEATURE_CHANNELS, face_features_info
from acquisition.xdf_writer import write_xdf
from bci_affect.core import Chunk, StreamInfo

#: Short sessions: 8 trials of 9-11 s, 2-3 s rests (about 100 s per subject).
SHORT_SESSION = {
    "n_trials": 8,
    "trial_s": [9.0, 11.0],
    "rest_s": [2.0, 3.0],
    "lead_in_s": 2.0,
    "tail_s": 1.0,
}
#: Tiny sessions: 8 trials of 6-7 s (with face at 5 frames/s, about 80 s per subject).
TINY_SESSION = {
    "n_trials": 8,
    "trial_s": [6.0, 7.0],
    "rest_s": [2.0, 2.5],
    "lead_in_s": 2.0,
    "tail_s": 1.0,
}
SIM_SEED = 3
N_SIM_SUBJECTS = 3
CYTON = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")


def short_config(**sections):
    """Simulator configuration of short sessions (``sections``: more changes)."""
    from acquisition.simulator import SimulatorConfig

    session = {**SHORT_SESSION, **sections.pop("session", {})}
    return SimulatorConfig().replace(session=session, **sections)


def eeg_info(
    ch_names: Sequence[str] = CYTON, sfreq: float = 250.0, name: str = "EEG"
) -> StreamInfo:
    return StreamInfo(
        name,
        "EEG",
        sfreq,
        tuple(ch_names),
        ("microvolts",) * len(ch_names),
        f"test:{name}",
        "float32",
    )


def markers_info(name: str = "Markers") -> StreamInfo:
    return StreamInfo(name, "Markers", 0.0, ("event",), ("",), f"test:{name}", "string")


def write_session(
    path: Path,
    markers: Sequence[tuple[float, dict | str]],
    *,
    t0: float = 100.0,
    duration_s: float = 45.0,
    sfreq: float = 250.0,
    face_fps: float = 10.0,
    ch_names: Sequence[str] = CYTON,
    seed: int = 0,
    extra: Sequence[Chunk] = (),
) -> Path:
    """Write a session: noisy EEG with an alpha rhythm from ``t0``, FaceFeatures frames, and
    the given markers (dicts become JSON strings)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sfreq))
    t = t0 + np.arange(n) / sfreq
    eeg = 8.0 * rng.standard_normal((len(ch_names), n)) + 20.0 * np.sin(2 * np.pi * 10.0 * t)
    eeg_chunk = Chunk(eeg.astype(np.float32), t, eeg_info(ch_names, sfreq))
    nf = int(duration_s * face_fps)
    tf = t0 + (np.arange(nf) + 0.5) / face_fps
    face = rng.standard_normal((len(FACE_FEATURE_CHANNELS), nf)).astype(np.float32)
    idx = {c: i for i, c in enumerate(FACE_FEATURE_CHANNELS)}
    face[idx["face_present"]] = 1.0
    face[idx["quality"]] = 0.9
    logits = rng.standard_normal((7, nf))
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    for k, name in enumerate(("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")):
        face[idx[f"expr_{name}"]] = probs[k]
    face_chunk = Chunk(face, tf, face_features_info())
    texts = [m if isinstance(m, str) else json.dumps(m) for _, m in markers]
    times = np.array([tm for tm, _ in markers], dtype=np.float64)
    marker_chunk = Chunk(np.array([texts], dtype=object), times, markers_info())
    events = Chunk.empty(markers_info("EEG-events"))
    write_xdf(path, [eeg_chunk, events, face_chunk, marker_chunk, *extra])
    return path


def trial_markers(
    trials: Sequence[tuple[int, float, float, dict | None]],
) -> list[tuple[float, dict]]:
    """``(trial, start, end, rating or None)`` -> start / rating (1 s before the end) / end."""
    out: list[tuple[float, dict]] = []
    for trial, start, end, rating in trials:
        out.append((start, {"event": "trial_start", "trial": trial}))
        if rating is not None:
            out.append((end - 1.0, {"event": "rating", "trial": trial, **rating}))
        out.append((end, {"event": "trial_end", "trial": trial}))
    return out


def load_streams(path: Path) -> dict[str, Chunk]:
    """Every stream of an XDF file by name (NaN face frames, the simulator's "no face", are
    expected: their warning is silenced)."""
    from acquisition.xdf import RecordingWarning, load_xdf

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*stream 'FaceFeatures' has .* NaN", RecordingWarning)
        return {c.name: c for c in load_xdf(path)}
