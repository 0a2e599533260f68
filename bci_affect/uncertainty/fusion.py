"""Fusion of Dirichlet opinions by Dempster's rule (trusted multi-view classification).

Each modality gives a subjective opinion over ``K`` classes: beliefs ``b_k = e_k / S`` and an
uncertainty mass ``u = K / S`` with ``sum_k b_k + u = 1`` (see :mod:`.dirichlet`). Two opinions
are combined with the reduced Dempster–Shafer rule used by trusted multi-view classification
(Han, Zhang, Fu & Zhou, ICLR 2021)::

    C   = sum_{i != j} b1_i b2_j                    (conflict)
    b_k = (b1_k b2_k + b1_k u2 + b2_k u1) / (1 - C)
    u   = u1 u2 / (1 - C)

and ``S = K / u``, ``e = b S``. Substituting ``b_i = e_i / S_i`` and ``u_i = K / S_i`` the
conflict cancels and the rule becomes a closed form in evidence::

    e = e1 + e2 + e1 * e2 / K

which is what :func:`ds_combine` computes (no division, so no overflow or 0/0 however strong
or conflicting the opinions). Properties the tests check:

- a vacuous opinion (``e = 0``, ``u = 1``: a missing modality) is the identity;
- combining never raises the uncertainty: ``e >= e1`` and ``e >= e2`` element-wise, so
  ``u <= min(u1, u2)`` (exactly, also in floating point);
- the rule is commutative and associative, and every output is finite for any input
  (evidence is sanitised first and clipped at ``MAX_EVIDENCE``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.uncertainty.dirichlet import MAX_EVIDENCE, sanitize_evidence

__all__ = [
    "alpha_from_opinion",
    "combine_evidence",
    "ds_combine",
    "fuse_alphas",
    "opinion_from_alpha",
]


def opinion_from_alpha(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Beliefs and uncertainty of a Dirichlet opinion.

    Parameters
    ----------
    alpha : Tensor, shape (..., K)
        Concentrations ``>= 1``.

    Returns
    -------
    belief : Tensor, shape (..., K)
        ``(alpha - 1) / S``.
    uncertainty : Tensor, shape (...)
        ``K / S``.
    """
    k = alpha.shape[-1]
    s = alpha.sum(dim=-1, keepdim=True)
    return (alpha - 1.0) / s, (k / s).squeeze(-1)


def alpha_from_opinion(belief: Tensor, uncertainty: Tensor) -> Tensor:
    """Concentrations from an opinion: ``S = K / u``, ``alpha = b S + 1``, shape ``(..., K)``."""
    k = belief.shape[-1]
    u = uncertainty.clamp_min(k / (k + k * MAX_EVIDENCE)).unsqueeze(-1)
    s = k / u
    return sanitize_evidence(belief * s) + 1.0


def ds_combine(alpha1: Tensor, alpha2: Tensor) -> Tensor:
    """Combine two Dirichlet opinions by the reduced Dempster–Shafer rule.

    Parameters
    ----------
    alpha1, alpha2 : Tensor, shape (..., K)
        Concentrations of the two opinions (``alpha = evidence + 1``). Non-finite or negative
        evidence is sanitised (NaN counts as no evidence).

    Returns
    -------
    Tensor, shape (..., K)
        Concentrations of the combined opinion.
    """
    if alpha1.shape != alpha2.shape:
        raise ShapeError(
            f"cannot combine opinions of shapes {tuple(alpha1.shape)} and {tuple(alpha2.shape)}; "
            "both must be (..., K) with the same classes"
        )
    return combine_evidence(sanitize_evidence(alpha1 - 1.0), sanitize_evidence(alpha2 - 1.0)) + 1.0


def combine_evidence(e1: Tensor, e2: Tensor) -> Tensor:
    """Dempster's rule on evidence: ``e1 + e2 + e1 * e2 / K``, clipped at ``MAX_EVIDENCE``.

    Parameters
    ----------
    e1, e2 : Tensor, shape (..., K)
        Finite, non-negative evidence (use :func:`ds_combine` for unchecked input).

    Returns
    -------
    Tensor, shape (..., K)
        Evidence of the combined opinion.
    """
    k = e1.shape[-1]
    return (e1 + e2 + e1 * e2 / k).clamp_max(MAX_EVIDENCE)


def fuse_alphas(alphas: Sequence[Tensor]) -> Tensor:
    """Combine any number of opinions, left to right, with :func:`ds_combine`.

    Parameters
    ----------
    alphas : sequence of Tensor, each shape (..., K)
        At least one opinion.

    Returns
    -------
    Tensor, shape (..., K)
    """
    if len(alphas) == 0:
        raise ConfigError("fuse_alphas needs at least one opinion, got none")
    fused = sanitize_evidence(alphas[0] - 1.0) + 1.0
    for alpha in alphas[1:]:
        fused = ds_combine(fused, alpha)
    return fused
