"""Fusion of Dirichlet opinions: Dempster's rule (trusted multi-view classification), and the
learned, reliability-weighted pool the model fuses its two heads with (end of this module).

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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.uncertainty.dirichlet import MAX_EVIDENCE, sanitize_evidence

__all__ = [
    "FusionPool",
    "alpha_from_opinion",
    "combine_evidence",
    "ds_combine",
    "fit_pool",
    "fuse_alphas",
    "opinion_from_alpha",
    "opinion_from_probs",
    "pool_logits",
    "select_pool",
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


# --------------------------------------------------------------------------------------------
# Learned, reliability-weighted pooling of the two heads (the model's fused output)
# --------------------------------------------------------------------------------------------
#
# Dempster's reduced rule adds evidence even when the two opinions conflict, so an
# uninformative modality can only pull the fused decision away from the informative one. The
# model fuses by a weighted geometric pool of the two heads' class probabilities instead
# (a product of experts with learned exponents, as in confidence-aware weighting):
#
#     s_k = w_face * r_face * log p_face,k + w_eeg * r_eeg * log p_eeg,k + b_k
#     p   = softmax(s)
#
# ``r`` are the per-window reliabilities (face quality, EEG quality x EMG discount; 0 when a
# modality is missing), ``w >= 0`` and ``b`` are fitted on held-out windows
# (:func:`fit_pool`): a modality that does not help gets ``w`` near 0 and is ignored, and the
# fit is a temperature scaling of the fused output at the same time. The fused Dirichlet
# opinion then takes the pooled probabilities as its mean and sets its strength from them:
# ``u = (1 - max p) * K / (K - 1)`` (1 for a uniform ``p``, 0 for a certain one) and
# ``alpha = p * K / u``, so the uncertainty is the calibrated chance of an error, rescaled.


def pool_logits(
    log_p_face: Tensor,
    log_p_eeg: Tensor,
    rel_face: Tensor,
    rel_eeg: Tensor,
    weights: Tensor,
    bias: Tensor,
) -> Tensor:
    """Weighted geometric pool of two heads, as logits.

    Parameters
    ----------
    log_p_face, log_p_eeg : Tensor, shape (B, K)
        Log class probabilities of each head.
    rel_face, rel_eeg : Tensor, shape (B,)
        Reliabilities in [0, 1] (0: the modality is missing).
    weights : Tensor, shape (2,)
        Non-negative exponents ``(w_face, w_eeg)``.
    bias : Tensor, shape (K,)
        Class bias.

    Returns
    -------
    Tensor, shape (B, K)
    """
    a = (weights[0] * rel_face).unsqueeze(-1)  # (B, 1)
    c = (weights[1] * rel_eeg).unsqueeze(-1)  # (B, 1)
    return a * log_p_face + c * log_p_eeg + bias


def opinion_from_probs(probs: Tensor, min_uncertainty: float = 1e-3) -> tuple[Tensor, Tensor]:
    """The Dirichlet opinion with mean ``probs`` and uncertainty ``(1 - max p) K / (K - 1)``.

    Parameters
    ----------
    probs : Tensor, shape (B, K)
    min_uncertainty : float
        Floor of ``u`` (keeps the strength finite).

    Returns
    -------
    alpha : Tensor, shape (B, K)
    uncertainty : Tensor, shape (B,)
    """
    k = probs.shape[-1]
    u = ((1.0 - probs.amax(dim=-1)) * (k / (k - 1))).clamp(min_uncertainty, 1.0)  # (B,)
    return probs * (k / u).unsqueeze(-1), u


class FusionPool:
    """Namespace of the pool's parameterisation: ``w = softplus(raw)``."""

    #: raw value whose softplus is 1 (the untrained pool multiplies the two heads)
    RAW_ONE = math.log(math.e - 1.0)
    #: raw value whose softplus is 0 to float precision (a modality the pool leaves out)
    RAW_OFF = -40.0

    @staticmethod
    def weights(raw: Tensor) -> Tensor:
        return torch.nn.functional.softplus(raw)


def fit_pool(
    log_p_face: Tensor,
    log_p_eeg: Tensor,
    rel_face: Tensor,
    rel_eeg: Tensor,
    labels: Tensor,
    *,
    raw_init: Tensor,
    bias_init: Tensor,
    l2: float = 0.05,
    max_iter: int = 200,
    use: tuple[bool, bool] = (True, True),
) -> tuple[Tensor, Tensor]:
    """Fit the pool's exponents and bias by penalised log-loss on held-out windows.

    Parameters
    ----------
    log_p_face, log_p_eeg : Tensor, shape (N, K)
        Log probabilities of each head on windows the heads did not train on.
    rel_face, rel_eeg : Tensor, shape (N,)
    labels : Tensor of int, shape (N,)
    raw_init, bias_init : Tensor, shapes (2,) and (K,)
        Starting point, and the values the L2 penalty pulls towards (so a handful of windows
        moves the pool only a little).
    l2 : float
        Penalty weight (per window: ``l2 * ||theta - theta_0||^2`` is added to the mean
        log-loss).
    max_iter : int
        L-BFGS iterations.
    use : (bool, bool)
        Which modalities the pool may use (face, EEG); a modality not used gets the exponent 0.

    Returns
    -------
    raw, bias : Tensor
        Fitted parameters (detached).
    """
    n = int(labels.shape[0])
    keep = torch.tensor([bool(u) for u in use])
    r0 = raw_init.detach().double().clone()
    # a modality used again after it was left out restarts from exponent 1
    r0 = torch.where(keep & (r0 < FusionPool.RAW_OFF / 2), FusionPool.RAW_ONE, r0)
    r0 = torch.where(keep, r0, torch.full_like(r0, FusionPool.RAW_OFF))
    b0 = bias_init.detach().double()
    if n == 0:
        return r0.float(), b0.float().clone()
    lf, le = log_p_face.detach().double(), log_p_eeg.detach().double()
    rf, re_ = rel_face.detach().double(), rel_eeg.detach().double()
    y = labels.detach().long()
    free = r0.clone().requires_grad_(True)
    bias = b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([free, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def raw_of(x: Tensor) -> Tensor:
        return torch.where(keep, x, r0)  # a modality left out keeps its exponent 0

    def closure() -> Tensor:
        opt.zero_grad()
        s = pool_logits(lf, le, rf, re_, FusionPool.weights(raw_of(free)), bias)
        loss = torch.nn.functional.cross_entropy(s, y) + l2 * (
            (raw_of(free) - r0).pow(2).sum() + (bias - b0).pow(2).sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    return raw_of(free).detach().float(), bias.detach().float()


#: The pools :func:`select_pool` chooses between: both heads, the face alone, the EEG alone.
POOL_CHOICES = {"both": (True, True), "face": (True, False), "eeg": (False, True)}


def select_pool(
    log_p_face: Tensor,
    log_p_eeg: Tensor,
    rel_face: Tensor,
    rel_eeg: Tensor,
    labels: Tensor,
    groups: Any,
    *,
    raw_init: Tensor,
    bias_init: Tensor,
    prior_l2: float = 0.5,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Choose and fit the pool that does no harm: both heads, or one alone.

    The held-out windows come in ``groups`` (trials, answers) whose windows are strongly
    correlated, so the evidence is worth about one observation per group: the L2 pull towards
    ``raw_init`` / ``bias_init`` is ``prior_l2 / n_groups``. Each choice of
    :data:`POOL_CHOICES` is scored by its log-loss on groups left out of its fit (leave one
    group out, at most 10 folds). Pooling both heads is chosen only when it beats the better
    single head by more than one standard error of their paired per-group difference (the
    one-standard-error rule: an uninformative head that helps only by chance on a few groups
    is left out); the choice is refitted on every window. With fewer than three groups there
    is nothing to choose with: both heads are pooled.

    Parameters
    ----------
    log_p_face, log_p_eeg, rel_face, rel_eeg, labels
        As in :func:`fit_pool` (``N`` held-out windows).
    groups : array-like, shape (N,)
        Group (trial, answer) of each window.
    raw_init, bias_init : Tensor
        Starting point and prior of the pool.
    prior_l2 : float
        Strength of the pull towards the prior, in groups.

    Returns
    -------
    raw, bias : Tensor
        The chosen pool's parameters.
    info : dict
        ``choice`` (a key of :data:`POOL_CHOICES`), ``cv_log_loss`` per choice (NaN when not
        scored), ``n_groups``, ``l2``.
    """
    g = np.asarray(groups).astype(str)
    uniq = np.unique(g)
    n_groups = int(uniq.size)
    l2 = prior_l2 / max(n_groups, 1)
    args = (log_p_face, log_p_eeg, rel_face, rel_eeg)
    cv = {name: float("nan") for name in POOL_CHOICES}
    choice = "both"
    if n_groups >= 3:
        gi = np.searchsorted(uniq, g)  # group index of each window
        n_folds = min(10, n_groups)
        folds = [uniq[i::n_folds] for i in range(n_folds)]
        per_group = {}  # choice -> mean held-out log-loss of each group, shape (n_groups,)
        for name, use in POOL_CHOICES.items():
            loss = np.zeros(labels.shape[0])
            for held in folds:
                test = np.isin(g, held)
                t = torch.as_tensor(test)
                raw, bias = fit_pool(
                    *(a[~t] for a in args), labels[~t],
                    raw_init=raw_init, bias_init=bias_init, l2=l2, use=use,
                )  # fmt: skip
                s = pool_logits(
                    *(a[t].double() for a in args), FusionPool.weights(raw).double(),
                    bias.double(),
                )  # fmt: skip
                loss[test] = torch.nn.functional.cross_entropy(
                    s, labels[t].long(), reduction="none"
                ).numpy()
            cv[name] = float(loss.mean())
            per_group[name] = np.bincount(gi, loss, n_groups) / np.bincount(gi, None, n_groups)
        choice = min(cv, key=lambda k: cv[k])
        if choice == "both":
            # one-standard-error rule: a single modality unless pooling beats it clearly
            # (the groups' paired differences; a pool that is as good only by chance would
            # let an uninformative head add noise)
            for name in sorted(("face", "eeg"), key=lambda k: cv[k]):
                d = per_group[name] - per_group["both"]
                if d.mean() <= d.std(ddof=1) / np.sqrt(n_groups):
                    choice = name
                    break
    raw, bias = fit_pool(
        *args, labels, raw_init=raw_init, bias_init=bias_init, l2=l2, use=POOL_CHOICES[choice]
    )
    return raw, bias, {"choice": choice, "cv_log_loss": cv, "n_groups": n_groups, "l2": l2}
