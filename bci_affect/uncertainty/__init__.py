"""Uncertainty maths: Dirichlet opinions, their fusion, conformal sets and active learning."""

from bci_affect.uncertainty.active import (
    ACQUISITION_METHODS,
    acquisition_scores,
    cross_modal_reliability_scores,
    entropy,
    js_divergence,
    random_scores,
    select_batch,
)
from bci_affect.uncertainty.conformal import (
    CONFORMAL_METHODS,
    ConformalPredictor,
    aps_scores,
    aps_sets,
    conformal_quantile,
    coverage_of,
    lac_scores,
    lac_sets,
)
from bci_affect.uncertainty.dirichlet import (
    alpha_from_evidence,
    dirichlet_mean,
    dirichlet_uncertainty,
    evidence_from_similarity,
    evidential_loss,
    kl_dirichlet_uniform,
    sanitize_evidence,
)
from bci_affect.uncertainty.fusion import (
    alpha_from_opinion,
    combine_evidence,
    ds_combine,
    fuse_alphas,
    opinion_from_alpha,
)

__all__ = [
    "ACQUISITION_METHODS",
    "CONFORMAL_METHODS",
    "ConformalPredictor",
    "acquisition_scores",
    "alpha_from_evidence",
    "alpha_from_opinion",
    "aps_scores",
    "combine_evidence",
    "aps_sets",
    "conformal_quantile",
    "coverage_of",
    "cross_modal_reliability_scores",
    "dirichlet_mean",
    "dirichlet_uncertainty",
    "ds_combine",
    "entropy",
    "evidence_from_similarity",
    "evidential_loss",
    "fuse_alphas",
    "js_divergence",
    "kl_dirichlet_uniform",
    "lac_scores",
    "lac_sets",
    "opinion_from_alpha",
    "random_scores",
    "sanitize_evidence",
    "select_batch",
]
