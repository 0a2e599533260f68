"""Dirichlet (evidential) opinions: evidence, concentration, uncertainty and the evidential loss.

A classifier that outputs non-negative *evidence* ``e`` of shape ``(B, K)`` defines a Dirichlet
distribution over the class probabilities with concentration ``alpha = e + 1``. Its strength is
``S = sum_k alpha_k``; the expected probabilities are ``alpha / S`` and the uncertainty mass is
``u = K / S`` in ``(0, 1]``: ``u = 1`` when there is no evidence at all (a vacuous opinion), and it
falls towards 0 as evidence accumulates (Sensoy, Kaplan & Kandemir 2018, "Evidential deep
learning to quantify classification uncertainty").

All functions are pure, work on ``torch`` tensors of any float dtype and device, and treat the
last axis as the class axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "MAX_EVIDENCE",
    "alpha_from_evidence",
    "dirichlet_mean",
    "dirichlet_uncertainty",
    "evidence_from_similarity",
    "evidential_loss",
    "kl_dirichlet_uniform",
    "sanitize_evidence",
]

#: Evidence is clipped to this value so that strengths stay finite in float32.
MAX_EVIDENCE = 1.0e6


def sanitize_evidence(evidence: Tensor) -> Tensor:
    """Replace NaN by 0 and clip evidence to ``[0, MAX_EVIDENCE]``.

    Parameters
    ----------
    evidence : Tensor, shape (..., K)
        Raw evidence; may hold NaN or infinities coming from a broken input.

    Returns
    -------
    Tensor, shape (..., K)
        Finite, non-negative evidence.
    """
    evidence = torch.nan_to_num(evidence, nan=0.0, posinf=MAX_EVIDENCE, neginf=0.0)
    return evidence.clamp(0.0, MAX_EVIDENCE)


def alpha_from_evidence(evidence: Tensor) -> Tensor:
    """Dirichlet concentration ``alpha = e + 1`` from (sanitised) evidence, shape ``(..., K)``."""
    return sanitize_evidence(evidence) + 1.0


def dirichlet_uncertainty(alpha: Tensor) -> Tensor:
    """Uncertainty mass ``u = K / sum(alpha)``, shape ``(...)``, in ``(0, 1]``."""
    k = alpha.shape[-1]
    return k / alpha.sum(dim=-1)


def dirichlet_mean(alpha: Tensor) -> Tensor:
    """Expected class probabilities ``alpha / sum(alpha)``, shape ``(..., K)``."""
    return alpha / alpha.sum(dim=-1, keepdim=True)


def evidence_from_similarity(similarity: Tensor, temperature: float) -> Tensor:
    """Evidence from cosine similarity to class prototypes.

    ``e_k = exp(s_k / T) - exp(-1 / T)``: zero for an embedding pointing away from prototype
    ``k`` (``s_k = -1``), about 1 for an unrelated one (``s_k = 0``), and ``2 sinh(1 / T)`` at
    most (``s_k = 1``). With ``T = 0.2`` the largest total evidence is about 148 per class, so
    the uncertainty of a single modality never falls below ``K / (K + 148)``.

    Parameters
    ----------
    similarity : Tensor, shape (..., K)
        Cosine similarities in ``[-1, 1]`` (values outside are clipped).
    temperature : float
        Positive temperature ``T``; smaller values give sharper, larger evidence.

    Returns
    -------
    Tensor, shape (..., K)
        Non-negative evidence.
    """
    s = similarity.clamp(-1.0, 1.0)
    return (torch.exp(s / temperature) - math.exp(-1.0 / temperature)).clamp_min(0.0)


def kl_dirichlet_uniform(alpha: Tensor) -> Tensor:
    """``KL(Dir(alpha) || Dir(1, ..., 1))`` per row, shape ``(...)``.

    Parameters
    ----------
    alpha : Tensor, shape (..., K)
        Concentrations, all ``> 0`` (``>= 1`` for an evidential opinion).
    """
    k = alpha.shape[-1]
    s = alpha.sum(dim=-1)
    log_norm = (
        torch.lgamma(s)
        - torch.lgamma(alpha).sum(dim=-1)
        - torch.lgamma(torch.tensor(float(k), dtype=alpha.dtype, device=alpha.device))
    )
    digamma_term = ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(s).unsqueeze(-1))).sum(
        dim=-1
    )
    return log_norm + digamma_term


def evidential_loss(alpha: Tensor, labels: Tensor, kl_weight: float = 0.0) -> Tensor:
    """Evidential classification loss per sample (Sensoy et al. 2018, eq. 4 + KL term).

    The expected cross-entropy under the Dirichlet, ``sum_k y_k (digamma(S) - digamma(alpha_k))``,
    plus ``kl_weight`` times the KL divergence from the uniform Dirichlet of the *misleading*
    evidence (the evidence on wrong classes, ``alpha~ = y + (1 - y) * alpha``), which teaches the
    model to say "I don't know" rather than to spread evidence over wrong classes.

    Parameters
    ----------
    alpha : Tensor, shape (B, K)
        Dirichlet concentrations (``>= 1``).
    labels : Tensor of int, shape (B,)
        Class indices in ``[0, K)``; rows with a negative label are unlabelled and get loss 0.
    kl_weight : float
        Weight of the KL regulariser; usually annealed from 0 over the first epochs.

    Returns
    -------
    Tensor, shape (B,)
        Non-negative loss per sample (0 for unlabelled rows).
    """
    k = alpha.shape[-1]
    labelled = labels >= 0
    y = torch.nn.functional.one_hot(labels.clamp_min(0), k).to(alpha.dtype)
    s = alpha.sum(dim=-1, keepdim=True)
    ce = (y * (torch.digamma(s) - torch.digamma(alpha))).sum(dim=-1)
    loss = ce
    if kl_weight > 0.0:
        alpha_tilde = y + (1.0 - y) * alpha
        loss = loss + kl_weight * kl_dirichlet_uniform(alpha_tilde)
    return torch.where(labelled, loss, torch.zeros_like(loss))
