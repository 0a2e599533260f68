"""Active-learning scores for unlabelled windows and a batch selection spread out in time.

Scores (higher = more worth a label):

- ``"disagreement"``: Jensen–Shannon divergence between the teacher's and the student's class
  probabilities (cross-modal consistency, the main criterion of consistency-guided transfer);
- ``"uncertainty"``: the fused Dirichlet uncertainty ``u = K / S``;
- ``"reliability"``: cross-modal (un)reliability, the mean cosine similarity of a window's EEG
  embedding to the face embeddings of the *other* windows: an EEG embedding that resembles
  every face is not specific to its own window;
- baselines ``"random"`` and ``"entropy"`` (entropy of the student's probabilities).

:func:`select_batch` then takes the best-scored windows such that no two chosen windows overlap
in time, so one query per moment of the session.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bci_affect.core.errors import ConfigError, ShapeError

__all__ = [
    "ACQUISITION_METHODS",
    "acquisition_scores",
    "cross_modal_reliability_scores",
    "entropy",
    "js_divergence",
    "random_scores",
    "select_batch",
]

#: Names accepted by :func:`acquisition_scores`.
ACQUISITION_METHODS = ("disagreement", "uncertainty", "reliability", "random", "entropy")

_EPS = 1.0e-12


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats along the last axis, shape ``(...)``."""
    p = probs.clamp_min(0.0)
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=-1)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence in nats along the last axis, shape ``(...)``, in ``[0, ln 2]``.

    Parameters
    ----------
    p, q : Tensor, shape (..., K)
        Probability vectors (rows summing to 1).
    """
    if p.shape != q.shape:
        raise ShapeError(
            f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    m = 0.5 * (p + q)
    return (entropy(m) - 0.5 * (entropy(p) + entropy(q))).clamp_min(0.0)


def cross_modal_reliability_scores(
    z_eeg: Tensor, z_face: Tensor, face_available: Tensor | None = None
) -> Tensor:
    """Mean cosine similarity of each EEG embedding to the non-matched face embeddings.

    Computed in ``O(N)`` from the sum of the face embeddings. Windows without a face do not
    serve as non-matched faces; if fewer than two windows have a face the score is 0.

    Parameters
    ----------
    z_eeg, z_face : Tensor, shape (N, P)
        Embeddings in the shared space (normalised here).
    face_available : Tensor of bool, shape (N,), optional
        Windows whose face embedding is valid.

    Returns
    -------
    Tensor, shape (N,)
        Higher = the EEG embedding is less specific to its own window (less reliable).
    """
    if z_eeg.shape != z_face.shape or z_eeg.ndim != 2:
        raise ShapeError(
            f"z_eeg and z_face must both be (N, P), got {tuple(z_eeg.shape)} and {tuple(z_face.shape)}"
        )
    n = z_eeg.shape[0]
    avail = (
        torch.ones(n, dtype=torch.bool, device=z_eeg.device)
        if face_available is None
        else face_available.bool()
    )
    zs = torch.nn.functional.normalize(torch.nan_to_num(z_eeg), dim=-1)
    zt = torch.nn.functional.normalize(torch.nan_to_num(z_face), dim=-1) * avail[:, None]
    total = zt.sum(dim=0)  # (P,)
    n_other = avail.sum() - avail.long()  # (N,) face windows other than this one
    sims = (zs * (total[None, :] - zt)).sum(dim=-1)  # (N,)
    return torch.where(n_other > 0, sims / n_other.clamp_min(1), torch.zeros_like(sims))


def random_scores(n: int, seed: int | None = None) -> Tensor:
    """Uniform random scores, shape ``(n,)`` (the random-sampling baseline)."""
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return torch.rand(n, generator=gen)


def acquisition_scores(
    output: Any, method: str = "disagreement", *, seed: int | None = None
) -> Tensor:
    """Scores of unlabelled windows from a model output.

    Parameters
    ----------
    output : AffectOutput
        The model's output on the pool (needs ``teacher_probs``, ``student_probs``,
        ``uncertainty``, ``z_eeg``, ``z_face`` and ``face_available``).
    method : str
        One of :data:`ACQUISITION_METHODS`.
    seed : int, optional
        Seed of the ``"random"`` baseline.

    Returns
    -------
    Tensor, shape (N,)
        Higher = query first.
    """
    if method == "disagreement":
        js = js_divergence(output.teacher_probs, output.student_probs)
        # without a face there is no teacher to disagree with
        return torch.where(output.face_available, js, torch.zeros_like(js))
    if method == "uncertainty":
        return output.uncertainty.clone()
    if method == "reliability":
        return cross_modal_reliability_scores(output.z_eeg, output.z_face, output.face_available)
    if method == "random":
        return random_scores(output.student_probs.shape[0], seed)
    if method == "entropy":
        return entropy(output.student_probs)
    raise ConfigError(
        f"unknown acquisition method {method!r}; valid: {', '.join(ACQUISITION_METHODS)}"
    )


def select_batch(
    scores: Any,
    starts_s: Any,
    ends_s: Any,
    n: int,
    *,
    min_gap_s: float = 0.0,
    exclude: Any = None,
) -> np.ndarray:
    """Greedy top-``n`` selection with no two chosen windows overlapping in time.

    Windows are taken by decreasing score; a window is skipped when its interval
    ``[start - min_gap_s, end + min_gap_s]`` overlaps a window already chosen. Non-finite scores
    rank last.

    Parameters
    ----------
    scores : array-like, shape (N,)
        Acquisition scores (higher first).
    starts_s, ends_s : array-like, shape (N,)
        Window start and end times in seconds (LSL clock).
    n : int
        Number of windows to choose (fewer are returned when not enough fit).
    min_gap_s : float
        Extra gap in seconds required between chosen windows.
    exclude : array-like of bool, shape (N,), optional
        Windows that must not be chosen (e.g. already labelled).

    Returns
    -------
    ndarray of int, shape (n_chosen,)
        Indices of the chosen windows, best first.
    """
    s = np.asarray(torch.as_tensor(scores).detach().cpu().double().numpy(), dtype=float).ravel()
    t0 = np.asarray(starts_s, dtype=float).ravel()
    t1 = np.asarray(ends_s, dtype=float).ravel()
    if not (s.shape == t0.shape == t1.shape):
        raise ShapeError(
            f"scores, starts_s and ends_s must have the same length, got {s.size}, {t0.size}, {t1.size}"
        )
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if min_gap_s < 0:
        raise ConfigError(f"min_gap_s must be >= 0, got {min_gap_s}")
    if np.any(t1 < t0):
        raise ConfigError("every window needs ends_s >= starts_s")
    s = np.where(np.isfinite(s), s, -np.inf)
    blocked = np.zeros(s.size, dtype=bool)
    if exclude is not None:
        blocked |= np.asarray(exclude, dtype=bool).ravel()
    order = np.argsort(-s, kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= n:
            break
        if blocked[i]:
            continue
        chosen.append(int(i))
        # block every window that overlaps [t0 - gap, t1 + gap] of the chosen one
        blocked |= (t0 < t1[i] + min_gap_s) & (t1 > t0[i] - min_gap_s)
    return np.asarray(chosen, dtype=np.int64)
