"""Synthetic windows with real class structure, for the model tests and benchmarks.

Four valence-arousal quadrant classes. The face carries the class through expression
probabilities whose typical expression matches the class on the circumplex (so the zero-label
prior is right more often than chance), class-dependent geometry and embedding; the EEG carries
it through class-dependent differential-entropy patterns (and, for the raw branch, a
class-dependent oscillation). A fraction of windows have no face (NaN frames), and a fraction are
EMG-contaminated: on those the EEG's gamma band leaks the face's class (the muscle artefact a
guard must not learn as brain activity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bci_affect.models.teacher import EXPRESSION_CHANNELS, EXPRESSIONS
from bci_affect.models.transfer import WindowBatch

N_EMB = 16
GEOMETRY = ("mouth_open", "brow_raise", "eye_open")
FACE_CH_NAMES = (
    "face_present",
    "quality",
    *GEOMETRY,
    *EXPRESSION_CHANNELS,
    *(f"emb_{i}" for i in range(N_EMB)),
)
EEG_CH_NAMES = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2")
N_BANDS = 5

# typical expression of each quadrant class: LVLA sad, LVHA angry/fear, HVLA neutral, HVHA happy
_CLASS_EXPR = {
    0: {"sad": 2.5},
    1: {"angry": 1.8, "fear": 1.8},
    2: {"neutral": 1.5, "happy": 1.0},
    3: {"happy": 2.5, "surprise": 1.0},
}


@dataclass
class Synthetic:
    batch: WindowBatch
    labels: np.ndarray  # (N,)
    starts_s: np.ndarray  # (N,)
    ends_s: np.ndarray  # (N,)


def make_windows(
    n: int,
    *,
    seed: int = 0,
    n_frames: int = 15,
    face_missing: float = 0.1,
    emg_fraction: float = 0.2,
    eeg_separation: float = 0.25,
    face_separation: float = 0.4,
    raw: bool = False,
    sfreq: float = 128.0,
    n_times: int = 256,
    n_chans: int = len(EEG_CH_NAMES),
    leak: float = 0.0,
    subject: int = 0,
) -> Synthetic:
    """``n`` windows of 2 s every 1 s (consecutive windows overlap).

    The class structure depends on ``subject`` only (not on ``seed``); another subject has the
    same face structure but other EEG class patterns.
    """
    structure = np.random.default_rng(1234)
    emb_means = structure.normal(size=(4, N_EMB))
    geo_means = structure.normal(size=(4, len(GEOMETRY)))
    de_means = structure.normal(size=(4, n_chans, N_BANDS))
    if subject:
        de_means = np.random.default_rng(1234 + subject).normal(size=(4, n_chans, N_BANDS))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)

    expr_logits = np.zeros((4, len(EXPRESSIONS)))
    for c, d in _CLASS_EXPR.items():
        for e, v in d.items():
            expr_logits[c, EXPRESSIONS.index(e)] = v
    face = np.zeros((n, n_frames, len(FACE_CH_NAMES)), dtype=np.float32)
    mask = rng.random((n, n_frames)) > 0.15
    mask[rng.random(n) < face_missing] = False
    logits = face_separation * expr_logits[y][:, None, :] + rng.normal(
        0, 1.0, (n, n_frames, len(EXPRESSIONS))
    )
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    geo = face_separation * geo_means[y][:, None, :] + rng.normal(
        0, 1.0, (n, n_frames, len(GEOMETRY))
    )
    emb = face_separation * emb_means[y][:, None, :] + rng.normal(0, 1.5, (n, n_frames, N_EMB))
    face[..., 0] = 1.0
    face[..., 1] = rng.uniform(0.6, 1.0, (n, n_frames))
    face[..., 2 : 2 + len(GEOMETRY)] = geo
    o = 2 + len(GEOMETRY)
    face[..., o : o + len(EXPRESSIONS)] = probs
    face[..., o + len(EXPRESSIONS) :] = emb
    face[~mask] = np.nan
    face[..., 0][~mask] = 0.0

    emg = np.where(rng.random(n) < emg_fraction, rng.uniform(0.7, 1.0, n), rng.uniform(0.0, 0.2, n))
    de = eeg_separation * de_means[y] + rng.normal(0, 1.0, (n, n_chans, N_BANDS))
    if leak:
        dirty = emg > 0.5
        # muscle leakage: the gamma band of contaminated windows carries the face's class
        de[dirty, :, -1] += leak * (2.0 * geo_means[y[dirty]][:, :1] - 1.0)
    quality = rng.uniform(0.7, 1.0, n)
    fields = dict(
        face=torch.from_numpy(face),
        face_mask=torch.from_numpy(mask),
        eeg_de=torch.from_numpy(de.astype(np.float32)),
        emg_score=torch.from_numpy(emg.astype(np.float32)),
        eeg_quality=torch.from_numpy(quality.astype(np.float32)),
    )
    if raw:
        t = np.arange(n_times) / sfreq
        freqs = np.array([6.0, 10.0, 18.0, 25.0])[y]  # class-dependent rhythm
        phase = rng.uniform(0, 2 * np.pi, n)
        topo = structure.normal(size=(4, n_chans))
        sig = np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phase[:, None])  # (n, T)
        x = 10.0 * topo[y][:, :, None] * sig[:, None, :] + rng.normal(
            0, 10.0, (n, n_chans, n_times)
        )
        fields["eeg_raw"] = torch.from_numpy(x.astype(np.float32))
    starts = np.arange(n, dtype=float)
    return Synthetic(WindowBatch(**fields), y.astype(np.int64), starts, starts + 2.0)
