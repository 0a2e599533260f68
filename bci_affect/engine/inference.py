"""Scored windows -> model inputs -> forward pass -> :class:`Prediction` records.

:func:`infer` runs one model on any number of windows. Windows are grouped by their number of
face frames and each group is one forward pass, so that a window's inputs are exactly the
ones it has alone (no padding frames), whichever windows shared its batch. The
inputs themselves are built by :func:`bci_affect.training.inputs.window_arrays`, the function
training uses, so a model sees live exactly the inputs it was trained on.

Conformal sets are computed per window (:func:`conformal_sets`): randomised APS uses one
uniform per window that is a function of the window's grid index, so the sets, too, do not
depend on batching (a replay gives the same sets live and offline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import torch

from bci_affect.core.errors import ConfigError
from bci_affect.engine.models import LoadedModel
from bci_affect.engine.prediction import Prediction
from bci_affect.models.transfer import AffectOutput, WindowBatch
from bci_affect.processors.signals import WindowResult
from bci_affect.uncertainty.active import acquisition_scores
from bci_affect.uncertainty.conformal import ConformalPredictor, aps_sets

__all__ = [
    "ScoredWindows",
    "conformal_sets",
    "infer",
    "make_predictions",
    "window_quality",
    "window_uniforms",
]

_EVIDENCE_EPS = 1e-6


def _group_key(result: WindowResult) -> tuple[int, tuple[str, ...]]:
    w = result.window
    if w.face is None:  # no face stream at all: face=None for the model
        return (-1, ())
    return (int(w.face.shape[0]), w.face_names)


def window_inputs(loaded: LoadedModel, results: Sequence[WindowResult]) -> WindowBatch:
    """The :class:`WindowBatch` of windows that share a frame count and face layout."""
    from bci_affect.training.inputs import window_arrays  # noqa: PLC0415

    key = _group_key(results[0])
    arrays = window_arrays(
        results,
        n_frames=max(key[0], 1) if key[0] >= 0 else None,
        eeg_raw=loaded.needs_raw,
        sites=loaded.model.config.montage_free,
    )
    n_bands = loaded.model.config.n_bands
    if arrays["eeg_de"].shape[-1] != n_bands:
        raise ConfigError(
            f"model {loaded.name} reads {n_bands} frequency bands, the signals chain computes "
            f"{arrays['eeg_de'].shape[-1]} ({', '.join(results[0].features.bands)}); use the "
            "feature bands the model was trained with"
        )
    if arrays["face"] is not None:
        cols = loaded.face_columns(key[1])
        if cols is not None:
            arrays["face"] = np.ascontiguousarray(arrays["face"][:, :, cols])
    return WindowBatch.from_arrays(**arrays)


def infer(loaded: LoadedModel, results: Sequence[WindowResult]) -> AffectOutput:
    """Score windows with ``loaded``; the output is on the CPU, in the order of ``results``."""
    groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for i, r in enumerate(results):
        groups.setdefault(_group_key(r), []).append(i)
    outs: list[AffectOutput] = []
    order: list[int] = []
    with torch.inference_mode():
        for idx in groups.values():
            batch = window_inputs(loaded, [results[i] for i in idx]).to(loaded.device)
            outs.append(loaded.model(batch).detach())
            order += idx
    if len(outs) == 1:
        return outs[0]
    inverse = torch.as_tensor(np.argsort(np.asarray(order)))
    merged = {}
    for f in fields(AffectOutput):
        vals = [getattr(o, f.name) for o in outs]
        merged[f.name] = None if any(v is None for v in vals) else torch.cat(vals)[inverse]
    return AffectOutput(**merged)


def window_uniforms(seed: int, keys: Sequence[int]) -> np.ndarray:
    """One uniform in [0, 1) per window, a pure function of ``(seed, key)`` (SplitMix64).

    Parameters
    ----------
    seed : int
        The conformal predictor's seed.
    keys : sequence of int
        Window grid indices.

    Returns
    -------
    ndarray of float64, shape (len(keys),)
    """
    with np.errstate(over="ignore"):
        z = np.asarray(keys, dtype=np.uint64) + np.uint64(int(seed) % 2**32) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def conformal_sets(
    conformal: ConformalPredictor | None, probs: torch.Tensor, keys: Sequence[int]
) -> np.ndarray | None:
    """Conformal sets, shape ``(N, K)`` bool, or ``None`` without a fitted predictor.

    Randomised APS gives each window the uniform :func:`window_uniforms` draws from the
    predictor's seed and the window's grid index, so a window's set does not depend on which
    windows shared its batch or on how many were scored before it.
    """
    if conformal is None or not conformal.fitted:
        return None
    if conformal.method != "aps" or not conformal.randomized:
        return conformal.predict_sets(probs).numpy()
    u = torch.from_numpy(window_uniforms(conformal.seed, keys))
    return aps_sets(
        probs, float(conformal.threshold), allow_empty=conformal.allow_empty, u=u
    ).numpy()


def _f(x: object) -> float:
    x = float(x)
    return x if math.isfinite(x) else math.nan


def window_quality(result: WindowResult) -> dict:
    """The quality part of a prediction record for one scored window."""
    w, q = result.window, result.quality
    bad = np.flatnonzero(np.asarray(q.bad))
    return {
        "eeg_quality": _f(q.quality),
        "eeg_coverage": _f(w.eeg_coverage),
        "complete": bool(w.complete),
        "blink": bool(q.blink),
        "blink_score": _f(q.blink_score),
        "muscle": bool(q.muscle),
        "muscle_score": _f(q.muscle_score),
        "bad_channels": tuple(w.ch_names[i] for i in bad),
        "face_frames": int(w.face.shape[0]) if w.face is not None else 0,
        "face_coverage": _f(w.face_coverage),
        "face_gap": bool(w.face_gap),
    }


class ScoredWindows:
    """The per-window numbers of one :class:`AffectOutput`, as numpy arrays (float64)."""

    def __init__(self, out: AffectOutput, loaded: LoadedModel, keys: Sequence[int]) -> None:
        def np64(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        self.probs = np64(out.probs)
        self.probs_teacher = np64(out.teacher_probs)
        self.probs_student = np64(out.student_probs)
        self.uncertainty = np64(out.uncertainty)
        self.uncertainty_teacher = np64(out.uncertainty_teacher)
        self.uncertainty_student = np64(out.uncertainty_student)
        self.disagreement = np64(acquisition_scores(out, "disagreement"))
        self.face_available = out.face_available.cpu().numpy().astype(bool)
        self.face_reliability = np64(out.face_reliability)
        self.eeg_reliability = np64(out.eeg_reliability)
        self.face_used = np64((out.alpha_teacher - 1.0).sum(dim=-1)) > _EVIDENCE_EPS
        self.eeg_used = np64((out.alpha_student - 1.0).sum(dim=-1)) > _EVIDENCE_EPS
        self.sets = conformal_sets(loaded.conformal, out.probs.detach().cpu(), keys)


def make_predictions(
    session: str,
    results: Sequence[WindowResult],
    scored: ScoredWindows,
    loaded: LoadedModel,
    *,
    n_skipped: Sequence[int],
    latency_ms: Sequence[dict],
    lag_ms: Sequence[float | None],
) -> list[Prediction]:
    """One :class:`Prediction` per window of ``results`` (same order as ``scored``)."""
    classes = loaded.classes
    out = []
    for i, r in enumerate(results):
        out.append(
            Prediction(
                session=session,
                index=int(r.window.index),
                t_window_end=float(r.window.t_end),
                window_s=float(r.window.window_s),
                classes=classes,
                probs=scored.probs[i],
                probs_teacher=scored.probs_teacher[i],
                probs_student=scored.probs_student[i],
                uncertainty=float(scored.uncertainty[i]),
                uncertainty_teacher=float(scored.uncertainty_teacher[i]),
                uncertainty_student=float(scored.uncertainty_student[i]),
                disagreement=float(scored.disagreement[i]),
                conformal_set=None if scored.sets is None else scored.sets[i],
                face_available=bool(scored.face_available[i]),
                eeg_available=bool(scored.eeg_reliability[i] > 0),
                face_used=bool(scored.face_used[i]),
                eeg_used=bool(scored.eeg_used[i]),
                face_reliability=float(scored.face_reliability[i]),
                eeg_reliability=float(scored.eeg_reliability[i]),
                quality=window_quality(r),
                n_skipped=int(n_skipped[i]),
                latency_ms=latency_ms[i],
                lag_ms=lag_ms[i],
                model=loaded.name,
            )
        )
    return out
