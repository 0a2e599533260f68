"""The visual teacher, the label schemes and the zero-label circumplex prior.

The teacher reads the FaceFeatures frames of one window, ``(B, n_frames, n_chans)`` with a mask
``(B, n_frames)`` of the frames that hold a face, encodes every frame, pools over the frames
with the mask (mean and max), and sends the window feature ``f_t`` through a task head of at
least three linear layers. The channel names are configuration: the seven FER2013 expression
probabilities are found by name (:data:`EXPRESSION_CHANNELS`), as are ``face_present`` and
``quality`` when present.

Before any label exists the teacher already predicts sensibly: its logits are the gated head
output plus ``log`` of a fixed *circumplex prior*, which maps the window's mean expression
probabilities to the task classes through each expression's valence and arousal
(:func:`expression_prior_matrix`). The gate starts at zero, so an untrained teacher outputs
exactly the prior; training learns a correction on top of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bci_affect.core.errors import ConfigError, ShapeError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LABEL_SCHEME",
    "EXPRESSIONS",
    "EXPRESSION_CHANNELS",
    "EXPRESSION_VALENCE_AROUSAL",
    "LABEL_SCHEMES",
    "FaceTeacher",
    "TaskHead",
    "class_names",
    "expression_prior_matrix",
    "masked_frame_pool",
    "n_classes",
    "rating_to_label",
    "ratings_to_labels",
]

# --------------------------------------------------------------------------------------------
# Label schemes: 1-9 self-assessment ratings -> class indices
# --------------------------------------------------------------------------------------------

#: Class names of each label scheme, in class-index order. Quadrants: L/H = low/high,
#: V/A = valence/arousal, index ``2 * high_valence + high_arousal``.
LABEL_SCHEMES: dict[str, tuple[str, ...]] = {
    "quadrant": ("LVLA", "LVHA", "HVLA", "HVHA"),
    "valence": ("low_valence", "high_valence"),
    "arousal": ("low_arousal", "high_arousal"),
}

#: The scheme used when none is given: the four valence-arousal quadrants.
DEFAULT_LABEL_SCHEME = "quadrant"

RATING_MIN, RATING_MAX = 1.0, 9.0


def class_names(scheme: str = DEFAULT_LABEL_SCHEME) -> tuple[str, ...]:
    """Class names of a label scheme, in class-index order."""
    try:
        return LABEL_SCHEMES[scheme]
    except KeyError:
        raise ConfigError(
            f"unknown label scheme {scheme!r}; valid: {', '.join(LABEL_SCHEMES)}"
        ) from None


def n_classes(scheme: str = DEFAULT_LABEL_SCHEME) -> int:
    """Number of classes of a label scheme."""
    return len(class_names(scheme))


def _check_ratings(name: str, r: Any) -> np.ndarray:
    arr = np.asarray(r, dtype=float)
    bad = ~np.isfinite(arr) | (arr < RATING_MIN) | (arr > RATING_MAX)
    if np.any(bad):
        first = arr[bad].ravel()[0]
        raise ConfigError(
            f"{name} ratings must be finite and within [{RATING_MIN:g}, {RATING_MAX:g}] "
            f"(self-assessment scale), got {first!r}"
        )
    return arr


def ratings_to_labels(
    valence: Any = None,
    arousal: Any = None,
    *,
    scheme: str = DEFAULT_LABEL_SCHEME,
    threshold: float = 5.0,
) -> np.ndarray:
    """Class labels from 1–9 valence/arousal ratings.

    A rating is *high* when it is strictly above ``threshold`` (so the midpoint 5 counts as
    low, the common convention of DEAP-style studies).

    Parameters
    ----------
    valence, arousal : float or array-like
        Ratings on the 1–9 scale; the ``"valence"`` scheme needs only ``valence``, the
        ``"arousal"`` scheme only ``arousal``, ``"quadrant"`` both (broadcast together).
    scheme : {"quadrant", "valence", "arousal"}
        Label scheme (see :data:`LABEL_SCHEMES`).
    threshold : float
        Boundary between low and high, within the rating scale.

    Returns
    -------
    ndarray of int64
        Class indices, with the broadcast shape of the ratings.
    """
    class_names(scheme)
    if not RATING_MIN <= threshold < RATING_MAX:
        raise ConfigError(f"threshold must be in [{RATING_MIN:g}, {RATING_MAX:g}), got {threshold}")
    need_v = scheme in ("quadrant", "valence")
    need_a = scheme in ("quadrant", "arousal")
    if need_v and valence is None:
        raise ConfigError(f"label scheme {scheme!r} needs valence ratings")
    if need_a and arousal is None:
        raise ConfigError(f"label scheme {scheme!r} needs arousal ratings")
    hv = _check_ratings("valence", valence) > threshold if need_v else None
    ha = _check_ratings("arousal", arousal) > threshold if need_a else None
    if scheme == "valence":
        return hv.astype(np.int64)
    if scheme == "arousal":
        return ha.astype(np.int64)
    try:
        hv, ha = np.broadcast_arrays(hv, ha)
    except ValueError:
        raise ShapeError(
            f"valence {np.shape(valence)} and arousal {np.shape(arousal)} ratings do not broadcast"
        ) from None
    return (2 * hv.astype(np.int64) + ha.astype(np.int64)).astype(np.int64)


def rating_to_label(
    valence: float | None = None,
    arousal: float | None = None,
    *,
    scheme: str = DEFAULT_LABEL_SCHEME,
    threshold: float = 5.0,
) -> int:
    """One label from one rating pair (see :func:`ratings_to_labels`)."""
    return int(ratings_to_labels(valence, arousal, scheme=scheme, threshold=threshold))


# --------------------------------------------------------------------------------------------
# The circumplex prior: FER2013 expressions -> task classes
# --------------------------------------------------------------------------------------------

#: The seven FER2013 expressions, in the dataset's class order.
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: FaceFeatures channel names of the expression probabilities.
EXPRESSION_CHANNELS = tuple(f"expr_{e}" for e in EXPRESSIONS)

#: (valence, arousal) of each expression in [-1, 1]: the pleasure and arousal values of the
#: basic emotions in Mehrabian's PAD model (as tabulated in Gebhard 2005, "ALMA"); neutral at
#: the origin.
EXPRESSION_VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.0, 0.0),
}


def expression_prior_matrix(
    scheme: str = DEFAULT_LABEL_SCHEME, sharpness: float = 4.0
) -> np.ndarray:
    """``P(class | expression)`` through the valence/arousal circumplex.

    ``P(high valence | e) = sigmoid(sharpness * v_e)`` and likewise for arousal; a quadrant's
    probability is the product of its valence and arousal probabilities. Neutral maps to the
    uniform distribution.

    Parameters
    ----------
    scheme : str
        Label scheme.
    sharpness : float
        Slope of the sigmoids; larger = more confident prior.

    Returns
    -------
    ndarray, shape (7, n_classes)
        Rows (in :data:`EXPRESSIONS` order) sum to 1.
    """
    class_names(scheme)
    if not sharpness > 0:
        raise ConfigError(f"sharpness must be > 0, got {sharpness}")
    va = np.array([EXPRESSION_VALENCE_AROUSAL[e] for e in EXPRESSIONS])
    p_hv = 1.0 / (1.0 + np.exp(-sharpness * va[:, 0]))
    p_ha = 1.0 / (1.0 + np.exp(-sharpness * va[:, 1]))
    if scheme == "valence":
        return np.stack([1 - p_hv, p_hv], axis=1)
    if scheme == "arousal":
        return np.stack([1 - p_ha, p_ha], axis=1)
    return np.stack(
        [(1 - p_hv) * (1 - p_ha), (1 - p_hv) * p_ha, p_hv * (1 - p_ha), p_hv * p_ha], axis=1
    )


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class TaskHead(nn.Module):
    """An MLP task head whose intermediate layers can be entered from outside.

    ``forward_from(layer, x)`` runs layers ``layer, layer + 1, ...`` on ``x``: the student's
    projected features enter the teacher's head there (cross-modal injection).

    Parameters
    ----------
    in_features : int
        Width of the input feature.
    n_outputs : int
        Number of classes.
    hidden : sequence of int
        Widths of the hidden layers (at least two: the head has ``len(hidden) + 1 >= 3``
        linear layers).
    dropout : float
        Dropout after each hidden activation (training only).
    """

    def __init__(
        self,
        in_features: int,
        n_outputs: int,
        *,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if len(hidden) < 2 or min(hidden) < 1:
            raise ConfigError(f"a task head needs >= 2 hidden layers of width >= 1, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.dims = (int(in_features), *hidden, int(n_outputs))
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(self.dims[:-1], self.dims[1:], strict=True)
        )
        self.dropout = dropout

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from(0, x)  # (B, n_outputs)

    def forward_from(self, layer: int, x: Tensor, *, detach_params: bool = False) -> Tensor:
        """Run layers ``layer..`` on ``x`` of shape ``(B, dims[layer])``; returns ``(B, K)``.

        With ``detach_params`` the head's parameters get no gradient from this call (the
        gradient still flows into ``x``).
        """
        n = len(self.layers)
        for i in range(layer, n):
            lin = self.layers[i]
            w, b = lin.weight, lin.bias
            if detach_params:
                w, b = w.detach(), b.detach()
            x = F.linear(x, w, b)  # (B, dims[i + 1])
            if i < n - 1:
                x = F.relu(x)
                if self.training and self.dropout > 0:
                    x = F.dropout(x, self.dropout, True)
        return x


def masked_frame_pool(h: Tensor, mask: Tensor) -> Tensor:
    """Mean and max over the frames with a face, for non-negative features (after a ReLU).

    Parameters
    ----------
    h : Tensor, shape (B, T, H)
        Per-frame features, all ``>= 0``.
    mask : Tensor of bool, shape (B, T)
        Frames with a face.

    Returns
    -------
    Tensor, shape (B, 2H)
        ``[mean, max]``; zeros for windows without any face.
    """
    m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    hm = h * m  # (B, T, H): masked frames are 0, never above a valid frame since h >= 0
    count = m.sum(dim=1).clamp_min(1.0)  # (B, 1)
    return torch.cat([hm.sum(dim=1) / count, hm.amax(dim=1)], dim=-1)  # (B, 2H)


class FaceTeacher(nn.Module):
    """Visual teacher over the FaceFeatures frames of a window.

    Parameters
    ----------
    n_chans : int
        Number of FaceFeatures channels per frame.
    n_outputs : int
        Number of task classes (must match ``label_scheme``).
    ch_names : sequence of str, optional
        FaceFeatures channel names (length ``n_chans``). The expression channels
        :data:`EXPRESSION_CHANNELS`, ``face_present`` and ``quality`` are looked up by name.
    label_scheme : str
        Label scheme of the outputs (fixes the circumplex prior).
    frame_hidden : int
        Width of the per-frame encoder.
    embed_dim : int
        Width of the pooled window feature ``f_t``.
    head_hidden : sequence of int
        Hidden widths of the task head (>= 2, so >= 3 layers).
    dropout : float
        Dropout in the head.
    use_prior : bool
        Add the circumplex prior to the logits (needs the expression channels).
    prior_sharpness : float
        Sharpness of the circumplex prior (see :func:`expression_prior_matrix`).
    """

    def __init__(
        self,
        n_chans: int,
        n_outputs: int,
        *,
        ch_names: Sequence[str] | None = None,
        label_scheme: str = DEFAULT_LABEL_SCHEME,
        frame_hidden: int = 64,
        embed_dim: int = 32,
        head_hidden: Sequence[int] = (64, 32),
        dropout: float = 0.1,
        use_prior: bool = True,
        prior_sharpness: float = 4.0,
    ) -> None:
        super().__init__()
        if n_chans < 1:
            raise ConfigError(f"n_chans must be >= 1, got {n_chans}")
        names = tuple(ch_names) if ch_names is not None else tuple(f"ch{i}" for i in range(n_chans))
        if len(names) != n_chans:
            raise ConfigError(f"ch_names has {len(names)} names but n_chans is {n_chans}")
        if len(set(names)) != len(names):
            raise ConfigError("FaceFeatures channel names must be unique")
        if n_outputs != n_classes(label_scheme):
            raise ConfigError(
                f"label scheme {label_scheme!r} has {n_classes(label_scheme)} classes, "
                f"but n_outputs is {n_outputs}"
            )
        self.ch_names = names
        self.label_scheme = label_scheme
        self.n_chans = n_chans
        self.n_outputs = n_outputs
        self.embed_dim = embed_dim
        idx = {n: i for i, n in enumerate(names)}
        missing = [c for c in EXPRESSION_CHANNELS if c not in idx]
        if use_prior and missing:
            raise ConfigError(
                f"the circumplex prior needs the expression channels {', '.join(EXPRESSION_CHANNELS)}; "
                f"missing from the FaceFeatures channels: {', '.join(missing)}. "
                "Pass use_prior=False to train without it."
            )
        self.use_prior = use_prior
        self._expr_idx = [idx[c] for c in EXPRESSION_CHANNELS] if not missing else []
        self._present_idx = idx.get("face_present")
        self._quality_idx = idx.get("quality")
        self.register_buffer("input_mean", torch.zeros(n_chans))
        self.register_buffer("input_std", torch.ones(n_chans))
        self.register_buffer("expr_index", torch.tensor(self._expr_idx, dtype=torch.long))
        prior = expression_prior_matrix(label_scheme, prior_sharpness)
        self.register_buffer("prior_matrix", torch.tensor(prior, dtype=torch.float32))
        self.frame_encoder = nn.Linear(n_chans, frame_hidden)
        self.window_encoder = nn.Linear(2 * frame_hidden, embed_dim)
        self.head = TaskHead(embed_dim, n_outputs, hidden=head_hidden, dropout=dropout)
        # logits = gate * head(f_t) + log prior, the gate starting at 0 (ReZero-style): an
        # untrained teacher outputs exactly the prior, while the head keeps a normal
        # initialisation so the student's injected path gets gradients from the start
        self.head_gate = nn.Parameter(torch.zeros(())) if use_prior else None

    # -- inputs --------------------------------------------------------------------------------

    def frame_mask(self, face: Tensor, mask: Tensor | None) -> Tensor:
        """Frames with a face, shape ``(B, T)``: ``mask``, else ``face_present > 0.5``, else all."""
        if mask is not None:
            if mask.shape != face.shape[:2]:
                raise ShapeError(
                    f"face mask has shape {tuple(mask.shape)}, expected {tuple(face.shape[:2])} "
                    "(B, n_frames)"
                )
            return mask.bool()
        if self._present_idx is not None:
            return torch.nan_to_num(face[..., self._present_idx]) > 0.5
        return torch.ones(face.shape[:2], dtype=torch.bool, device=face.device)

    def _check(self, face: Tensor) -> None:
        if face.ndim != 3 or face.shape[-1] != self.n_chans:
            raise ShapeError(
                f"face frames must have shape (B, n_frames, {self.n_chans}), got {tuple(face.shape)}"
            )

    @torch.no_grad()
    def fit_input_stats(self, face: Tensor, mask: Tensor | None = None) -> None:
        """Set the per-channel standardisation from training frames (frames with a face only).

        Parameters
        ----------
        face : Tensor, shape (N, T, n_chans)
        mask : Tensor of bool, shape (N, T), optional
        """
        self._check(face)
        m = self.frame_mask(face, mask)
        x = torch.nan_to_num(face.float())[m]  # (n_valid, C)
        if x.shape[0] < 2:
            logger.warning("fewer than 2 frames with a face: keeping the identity standardisation")
            return
        mean, std = x.mean(dim=0), x.std(dim=0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    # -- forward -------------------------------------------------------------------------------

    def encode(
        self, face: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Window feature, prior, face availability and face reliability.

        Parameters
        ----------
        face : Tensor, shape (B, T, n_chans)
            FaceFeatures frames of each window (NaN allowed in frames without a face).
        mask : Tensor of bool, shape (B, T), optional
            Frames with a face.

        Returns
        -------
        f_t : Tensor, shape (B, embed_dim)
        prior_logits : Tensor, shape (B, K)
            ``log`` of the circumplex prior (uniform without a face or without the prior).
        available : Tensor of bool, shape (B,)
            Windows with at least one face frame.
        reliability : Tensor, shape (B,)
            Mean of ``quality`` (clipped to [0, 1]) over the frames with a face, 1 without a
            quality channel; 0 without a face. Frames whose mask is false (no face, or
            padding up to the batch's frame count) take no part, so padding a window with
            masked frames changes nothing.
        """
        self._check(face)
        m = self.frame_mask(face, mask)  # (B, T)
        raw = torch.where(
            m.unsqueeze(-1), torch.nan_to_num(face, nan=0.0, posinf=0.0, neginf=0.0), 0.0
        )
        available = m.any(dim=1)  # (B,)
        x = (raw - self.input_mean) / self.input_std  # (B, T, C)
        # F.linear on the layers' tensors: a module call costs more than the op at this size
        h = F.relu(F.linear(x, self.frame_encoder.weight, self.frame_encoder.bias))  # (B, T, H)
        pooled = masked_frame_pool(h, m)  # (B, 2H)
        f_t = F.relu(
            F.linear(pooled, self.window_encoder.weight, self.window_encoder.bias)
        )  # (B, D)
        if self._quality_idx is not None:  # frames without a face are 0 in `raw`
            count = m.sum(dim=1).clamp_min(1).to(raw.dtype)  # (B,) frames with a face
            reliability = raw[..., self._quality_idx].clamp(0.0, 1.0).sum(dim=1) / count  # (B,)
        else:
            reliability = available.to(raw.dtype)  # (B,)
        k = self.n_outputs
        if self.use_prior:
            expr = raw.index_select(-1, self.expr_index).clamp_min(0.0).sum(dim=1)  # (B, 7)
            # rows of the prior matrix sum to 1, so (expr @ M) / sum(expr) is the mean-expression
            # prior; the epsilon makes a window without a face uniform
            num = expr @ self.prior_matrix + 1e-6  # (B, K)
            prior_logits = torch.log(num / num.sum(dim=-1, keepdim=True))
        else:
            prior_logits = torch.full(
                (face.shape[0], k), -math.log(k), dtype=raw.dtype, device=raw.device
            )
        return f_t, prior_logits, available, reliability

    def logits(self, f_t: Tensor, prior_logits: Tensor) -> Tensor:
        """Task logits ``gate * head(f_t) + log prior``, shape ``(B, K)``."""
        if self.head_gate is None:
            return self.head(f_t) + prior_logits
        return self.head_gate * self.head(f_t) + prior_logits

    def forward(self, face: Tensor, mask: Tensor | None = None) -> Tensor:
        """Task logits of each window, shape ``(B, K)``."""
        f_t, prior_logits, _, _ = self.encode(face, mask)
        return self.logits(f_t, prior_logits)
