"""Consistency-guided cross-modal transfer: the combined model, prototypes and the losses.

:class:`AffectModel` composes the visual teacher (:mod:`.teacher`), the EEG student
(:mod:`.student`) and a prototype module, and returns an :class:`AffectOutput` with the logits
and probabilities of each modality, their Dirichlet opinions and the fused opinion.

- **Injection.** The student feature ``f_s`` is projected to the width of the teacher head's
  layer ``l`` (default: the middle layer) and run through the rest of the teacher's head, whose
  parameters are detached on that path: the student has to speak the teacher head's language.
- **Prototypes.** Face and EEG features are projected to a shared, normalised space with ``K``
  learnable class prototypes. Cosine similarity to the prototypes gives Dirichlet evidence
  (:func:`~bci_affect.uncertainty.dirichlet.evidence_from_similarity`), ``alpha = e + 1`` and
  ``u = K / sum(alpha)``, scaled by each modality's reliability (face quality, EEG quality, EMG).
- **Fusion.** The fused output is a reliability-weighted geometric pool of the two heads with
  learned exponents and bias (``fusion_raw``, ``fusion_bias``; refitted on held-out windows by
  :func:`~bci_affect.models.finetune.fit_fusion`, see :mod:`bci_affect.uncertainty.fusion`): a
  window without a face, or with bad EEG, gets the other head's opinion, and a head that does
  not help can be left out. Its Dirichlet opinion keeps the pooled probabilities as its mean
  with uncertainty ``(1 - max p) K / (K - 1)``.
- **Zero-label mode.** Until the model has been trained with labels (buffer ``calibrated``), the
  fused output is the teacher's circumplex prior and the student's opinion is vacuous.

:func:`compute_losses` returns ``total = task + lambda_sim * sim + lambda_unc * unc +
lambda_kd * kd`` with every term switchable (:class:`LossConfig`): task cross-entropy of both
heads, symmetric InfoNCE between matched EEG and face windows, the evidential loss, and the
distillation ``KL(teacher || teacher head fed by the student)`` at temperature ``T``. Task and
distillation terms are reweighted per window by ``1 - u``; distillation and InfoNCE are
down-weighted on windows with a high EMG score (the muscle-leakage guard), so that facial muscle
activity leaking into the EEG cannot be learnt as "brain" signal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.models.fused import FusedWeights, fusable, fused_forward
from bci_affect.models.student import BANDS, STUDENT_INPUTS, EEGStudent
from bci_affect.models.teacher import DEFAULT_LABEL_SCHEME, FaceTeacher, class_names, n_classes
from bci_affect.uncertainty.conformal import ConformalPredictor
from bci_affect.uncertainty.dirichlet import (
    dirichlet_uncertainty,
    evidence_from_similarity,
    evidential_loss,
)
from bci_affect.uncertainty.fusion import FusionPool, opinion_from_probs, pool_logits

logger = logging.getLogger(__name__)

__all__ = [
    "AffectModel",
    "AffectOutput",
    "LossConfig",
    "LossTerms",
    "ModelConfig",
    "PrototypeModule",
    "WindowBatch",
    "accuracy_by_emg",
    "cat_outputs",
    "compute_losses",
    "distillation_loss",
    "emg_weights",
    "info_nce",
]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowBatch:
    """The model's input for ``B`` windows.

    Parameters
    ----------
    face : Tensor, shape (B, n_frames, n_face_chans), optional
        FaceFeatures frames inside each window (``None``: no camera at all).
    face_mask : Tensor of bool, shape (B, n_frames), optional
        Frames with a face (default: the ``face_present`` channel, else all frames).
    eeg_de : Tensor, shape (B, n_chans, n_bands), optional
        Differential entropy per channel and band.
    eeg_raw : Tensor, shape (B, n_chans, n_times), optional
        Filtered EEG window in µV.
    emg_score : Tensor, shape (B,), optional
        Muscle (EMG) contamination score in [0, 1] (default 0).
    eeg_quality : Tensor, shape (B,), optional
        EEG quality in [0, 1] (default 1).
    """

    face: Tensor | None = None
    face_mask: Tensor | None = None
    eeg_de: Tensor | None = None
    eeg_raw: Tensor | None = None
    emg_score: Tensor | None = None
    eeg_quality: Tensor | None = None

    def __post_init__(self) -> None:
        sizes = {
            f.name: getattr(self, f.name).shape[0]
            for f in fields(self)
            if getattr(self, f.name) is not None
        }
        if not sizes:
            raise ShapeError("a WindowBatch needs at least one of face, eeg_de, eeg_raw")
        if len(set(sizes.values())) != 1:
            raise ShapeError(
                f"all inputs of a WindowBatch need the same number of windows, got {sizes}"
            )
        for name in ("emg_score", "eeg_quality"):
            v = getattr(self, name)
            if v is not None and v.ndim != 1:
                raise ShapeError(f"{name} must have shape (B,), got {tuple(v.shape)}")

    def __len__(self) -> int:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                return int(v.shape[0])
        return 0  # pragma: no cover - __post_init__ forbids it

    def index(self, idx: Any) -> WindowBatch:
        """A sub-batch (``idx``: slice, index tensor or bool mask over windows)."""
        return WindowBatch(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx]
                for f in fields(self)
            }
        )

    def to(self, device: torch.device | str) -> WindowBatch:
        """The batch on ``device`` (floats as float32, the mask as bool)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = None
            elif f.name == "face_mask":
                out[f.name] = v.to(device=device, dtype=torch.bool)
            else:
                out[f.name] = v.to(device=device, dtype=torch.float32)
        return WindowBatch(**out)

    @classmethod
    def from_arrays(cls, **arrays: Any) -> WindowBatch:
        """Build from numpy arrays (or tensors) by field name; floats become float32."""
        names = {f.name for f in fields(cls)}
        unknown = set(arrays) - names
        if unknown:
            raise ConfigError(
                f"unknown WindowBatch fields {sorted(unknown)}; valid: {sorted(names)}"
            )
        out = {}
        for k, v in arrays.items():
            if v is None:
                out[k] = None
                continue
            t = torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v)
            out[k] = t.bool() if k == "face_mask" else t.float()
        return cls(**out)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an :class:`AffectModel` (stored as JSON in checkpoints).

    Parameters
    ----------
    face_ch_names : tuple of str
        FaceFeatures channel names, in stream order.
    eeg_ch_names : tuple of str
        EEG channel labels, in stream order.
    label_scheme : str
        ``"quadrant"`` (default), ``"valence"`` or ``"arousal"``.
    eeg_inputs : {"de", "raw", "both", "sites"}
        Student input branches. ``"sites"``: montage-free (``eeg_ch_names`` are then the
        virtual sites, and any stream with two or more electrodes at known scalp positions
        fits; see :mod:`bci_affect.processors.sites`).
    n_bands : int
        Bands of the differential-entropy input.
    n_times : int, optional
        Samples per filtered window (``"raw"``/``"both"``).
    sfreq : float, optional
        EEG sample rate in Hz.
    embed_dim, proto_dim : int
        Widths of ``f_t``/``f_s`` and of the shared prototype space.
    frame_hidden : int
        Width of the teacher's frame encoder.
    teacher_head_hidden : tuple of int
        Hidden widths of the teacher head (>= 2, so >= 3 layers).
    student_head_hidden, de_hidden, n_filters : int
        Student sizes.
    inject_layer : int, optional
        Teacher-head layer where the student feature enters (``1 .. n_layers - 1``; default the
        middle, ``n_layers // 2``).
    evidence_temperature : float
        Temperature of the similarity-to-evidence map.
    prior_evidence : float, optional
        Evidence of the zero-label prior opinion (default: ``K``, i.e. ``u = 0.5``).
    prior_sharpness : float
        Sharpness of the circumplex prior.
    use_prior : bool
        Use the circumplex prior in the teacher.
    emg_fusion_discount : float
        At inference the student's evidence is scaled by ``quality * (1 - d * emg)``.
    dropout : float
        Dropout of the heads.
    """

    face_ch_names: tuple[str, ...]
    eeg_ch_names: tuple[str, ...]
    label_scheme: str = DEFAULT_LABEL_SCHEME
    eeg_inputs: str = "de"
    n_bands: int = len(BANDS)
    n_times: int | None = None
    sfreq: float | None = None
    embed_dim: int = 32
    proto_dim: int = 16
    frame_hidden: int = 64
    teacher_head_hidden: tuple[int, ...] = (64, 32)
    student_head_hidden: int = 32
    de_hidden: int = 64
    n_filters: int = 8
    inject_layer: int | None = None
    evidence_temperature: float = 0.2
    prior_evidence: float | None = None
    prior_sharpness: float = 4.0
    use_prior: bool = True
    emg_fusion_discount: float = 0.5
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "face_ch_names", tuple(str(c) for c in self.face_ch_names))
        object.__setattr__(self, "eeg_ch_names", tuple(str(c) for c in self.eeg_ch_names))
        object.__setattr__(
            self, "teacher_head_hidden", tuple(int(h) for h in self.teacher_head_hidden)
        )
        class_names(self.label_scheme)
        if not self.face_ch_names or not self.eeg_ch_names:
            raise ConfigError("face_ch_names and eeg_ch_names must both be non-empty")
        if len(set(self.eeg_ch_names)) != len(self.eeg_ch_names):
            raise ConfigError(f"EEG channel names must be unique, got {list(self.eeg_ch_names)}")
        if self.eeg_inputs not in STUDENT_INPUTS:
            raise ConfigError(
                f"unknown eeg_inputs {self.eeg_inputs!r}; valid: {', '.join(STUDENT_INPUTS)}"
            )
        if self.eeg_inputs in ("raw", "both") and (self.n_times is None or self.n_times < 1):
            raise ConfigError(
                f"eeg_inputs={self.eeg_inputs!r} needs n_times >= 1, got {self.n_times}"
            )
        if len(self.teacher_head_hidden) < 2:
            raise ConfigError(
                f"teacher_head_hidden needs >= 2 widths (a head of >= 3 layers), got {self.teacher_head_hidden}"
            )
        n_layers = len(self.teacher_head_hidden) + 1
        if self.inject_layer is not None and not 1 <= self.inject_layer <= n_layers - 1:
            raise ConfigError(
                f"inject_layer must be an intermediate layer of the teacher head, 1..{n_layers - 1}, "
                f"got {self.inject_layer}"
            )
        if not self.evidence_temperature > 0:
            raise ConfigError(f"evidence_temperature must be > 0, got {self.evidence_temperature}")
        if self.prior_evidence is not None and not self.prior_evidence >= 0:
            raise ConfigError(f"prior_evidence must be >= 0, got {self.prior_evidence}")
        if not 0.0 <= self.emg_fusion_discount <= 1.0:
            raise ConfigError(
                f"emg_fusion_discount must be in [0, 1], got {self.emg_fusion_discount}"
            )
        for name in (
            "embed_dim",
            "proto_dim",
            "frame_hidden",
            "student_head_hidden",
            "de_hidden",
            "n_filters",
            "n_bands",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def n_outputs(self) -> int:
        return n_classes(self.label_scheme)

    @property
    def montage_free(self) -> bool:
        """The student reads virtual-site features: any montage with known positions fits."""
        return self.eeg_inputs == "sites"

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.label_scheme)

    @property
    def resolved_inject_layer(self) -> int:
        return (
            self.inject_layer
            if self.inject_layer is not None
            else (len(self.teacher_head_hidden) + 1) // 2
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(
                f"unknown model config keys {sorted(unknown)}; valid: {sorted(names)}"
            )
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid model config: {exc}") from None


@dataclass(frozen=True)
class LossConfig:
    """Weights, temperatures and switches of the training loss.

    ``total = task_weight * task + lambda_sim * sim + lambda_unc * unc + lambda_kd * kd``; a
    switched-off term is exactly 0 and gives no gradient.

    Parameters
    ----------
    use_task, use_sim, use_unc, use_kd : bool
        Switches of the four terms (ablations).
    task_weight, lambda_sim, lambda_unc, lambda_kd : float
        Weights of the terms.
    teacher_task_weight, student_task_weight : float
        Weights of the teacher's and the student's cross-entropy inside the task term.
    kd_temperature : float
        Distillation temperature ``T`` (the KL is scaled by ``T**2``).
    kd_via_injection : bool
        Distil into the teacher head fed by the student (default) or, as an ablation, into the
        student's own head (plain logit distillation).
    infonce_temperature : float
        InfoNCE temperature ``tau``.
    unc_kl_weight : float
        Weight of the KL regulariser inside the evidential loss (annealed by the trainer).
    reweight_by_uncertainty : bool
        Reweight task and distillation terms per window by ``1 - u`` (fused, detached).
    emg_guard : bool
        Down-weight distillation and InfoNCE on windows with a high EMG score.
    emg_low, emg_high : float
        The guard's weight is 1 below ``emg_low``, 0 above ``emg_high``, linear between.
    lambda_kd_student : float
        Weight of a second distillation term into the student's own head:
        ``KL(teacher || student)`` at temperature ``T`` on every window with a face, weighted
        by the face's reliability (and the EMG guard). Labels are not needed: a calibration
        session uses it on all its windows with a usable face, between the answers. 0 = off.
    """

    use_task: bool = True
    use_sim: bool = True
    use_unc: bool = True
    use_kd: bool = True
    task_weight: float = 1.0
    lambda_sim: float = 0.5
    lambda_unc: float = 0.5
    lambda_kd: float = 1.0
    teacher_task_weight: float = 1.0
    student_task_weight: float = 1.0
    kd_temperature: float = 2.0
    kd_via_injection: bool = True
    infonce_temperature: float = 0.1
    unc_kl_weight: float = 0.05
    reweight_by_uncertainty: bool = True
    emg_guard: bool = True
    emg_low: float = 0.3
    emg_high: float = 0.7
    lambda_kd_student: float = 0.0

    def __post_init__(self) -> None:
        if not (self.use_task or self.use_sim or self.use_unc or self.use_kd):
            raise ConfigError(
                "every loss term is switched off; switch on at least one of task, sim, unc, kd"
            )
        for name in (
            "task_weight",
            "lambda_sim",
            "lambda_unc",
            "lambda_kd",
            "teacher_task_weight",
            "student_task_weight",
            "unc_kl_weight",
            "lambda_kd_student",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}")
        for name in ("kd_temperature", "infonce_temperature"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be > 0, got {v}")
        if not 0.0 <= self.emg_low < self.emg_high <= 1.0:
            raise ConfigError(
                f"need 0 <= emg_low < emg_high <= 1, got {self.emg_low}, {self.emg_high}"
            )


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


@dataclass
class AffectOutput:
    """Everything the model says about ``B`` windows (``K`` classes, ``P`` prototype dims).

    ``probs``/``alpha``/``uncertainty`` are the fused opinion; ``*_teacher``/``*_student`` the
    per-modality ones. ``teacher_probs``/``student_probs`` are the softmax of each head.
    """

    teacher_logits: Tensor  # (B, K)
    student_logits: Tensor  # (B, K)
    teacher_probs: Tensor  # (B, K)
    student_probs: Tensor  # (B, K)
    probs: Tensor  # (B, K) fused Dirichlet mean
    alpha_teacher: Tensor  # (B, K)
    alpha_student: Tensor  # (B, K)
    alpha: Tensor  # (B, K) fused
    uncertainty_teacher: Tensor  # (B,)
    uncertainty_student: Tensor  # (B,)
    uncertainty: Tensor  # (B,) fused
    z_face: Tensor  # (B, P)
    z_eeg: Tensor  # (B, P)
    face_available: Tensor  # (B,) bool
    face_reliability: Tensor  # (B,)
    eeg_reliability: Tensor  # (B,)
    injected_logits: Tensor | None = None  # (B, K) teacher head fed by the student
    prediction_sets: Tensor | None = None  # (B, K) bool conformal sets

    @property
    def predicted(self) -> Tensor:
        """Fused class decision, shape ``(B,)``."""
        return self.probs.argmax(dim=-1)

    def detach(self) -> AffectOutput:
        """A copy with every tensor detached and on the CPU."""
        return AffectOutput(
            **{
                f.name: None
                if getattr(self, f.name) is None
                else getattr(self, f.name).detach().cpu()
                for f in fields(self)
            }
        )


def cat_outputs(outputs: Sequence[AffectOutput]) -> AffectOutput:
    """Concatenate outputs of consecutive batches along the window axis."""
    if not outputs:
        raise ConfigError("cat_outputs needs at least one output")
    out = {}
    for f in fields(AffectOutput):
        vals = [getattr(o, f.name) for o in outputs]
        out[f.name] = None if any(v is None for v in vals) else torch.cat(vals, dim=0)
    return AffectOutput(**out)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


def _unit(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)


class PrototypeModule(nn.Module):
    """Shared embedding space with learnable class prototypes.

    Parameters
    ----------
    face_dim, eeg_dim : int
        Widths of ``f_t`` and ``f_s``.
    n_outputs : int
        Classes (one prototype each).
    proto_dim : int
        Width of the shared space.
    temperature : float
        Temperature of :func:`~bci_affect.uncertainty.dirichlet.evidence_from_similarity`.
    """

    def __init__(
        self,
        face_dim: int,
        eeg_dim: int,
        n_outputs: int,
        *,
        proto_dim: int = 16,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.face_proj = nn.Linear(face_dim, proto_dim)
        self.eeg_proj = nn.Linear(eeg_dim, proto_dim)
        self.prototypes = nn.Parameter(torch.randn(n_outputs, proto_dim) / math.sqrt(proto_dim))
        self.temperature = temperature

    def embed_face(self, f_t: Tensor) -> Tensor:
        return _unit(F.linear(f_t, self.face_proj.weight, self.face_proj.bias))  # (B, P)

    def embed_eeg(self, f_s: Tensor) -> Tensor:
        return _unit(F.linear(f_s, self.eeg_proj.weight, self.eeg_proj.bias))  # (B, P)

    def unit_prototypes_t(self) -> Tensor:
        """Normalised prototypes, transposed, shape ``(P, K)``; cached outside training."""
        p = self.prototypes
        if self.training or torch.is_grad_enabled():
            return _unit(p).t()
        key = (p.data_ptr(), p._version, p.device)
        if getattr(self, "_proto_key", None) != key:
            self._proto_cache = _unit(p.detach()).t().contiguous()
            self._proto_key = key
        return self._proto_cache

    def similarity(self, z: Tensor) -> Tensor:
        """Cosine similarity to each prototype, shape ``(B, K)``."""
        return z @ self.unit_prototypes_t()

    def evidence(self, z: Tensor) -> Tensor:
        """Dirichlet evidence from prototype similarity, shape ``(B, K)``."""
        return evidence_from_similarity(self.similarity(z), self.temperature)


class AffectModel(nn.Module):
    """Face teacher + EEG student + prototypes, with Dirichlet fusion.

    Parameters
    ----------
    n_chans : int
        EEG channels.
    n_outputs : int
        Task classes (must match ``label_scheme``).
    face_ch_names : sequence of str
        FaceFeatures channel names.
    eeg_ch_names : sequence of str, optional
        EEG channel labels (default ``EEG1..EEGn``).
    **kwargs
        Any other :class:`ModelConfig` field (keyword-only).

    Attributes
    ----------
    config : ModelConfig
    conformal : ConformalPredictor or None
        When fitted, every output in eval mode carries ``prediction_sets``.
    fused_inference : bool
        In eval mode without autograd (``torch.inference_mode`` / ``torch.no_grad``), run the
        pass on folded copies of the weights (:mod:`bci_affect.models.fused`): the same outputs
        to float32 rounding with fewer tensor ops. Default ``True``; ``False`` always runs the
        eager pass.
    """

    def __init__(
        self,
        n_chans: int,
        n_outputs: int,
        *,
        face_ch_names: Sequence[str],
        eeg_ch_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        eeg_names = (
            tuple(eeg_ch_names)
            if eeg_ch_names is not None
            else tuple(f"EEG{i + 1}" for i in range(n_chans))
        )
        if len(eeg_names) != n_chans:
            raise ConfigError(f"eeg_ch_names has {len(eeg_names)} names but n_chans is {n_chans}")
        cfg = ModelConfig(face_ch_names=tuple(face_ch_names), eeg_ch_names=eeg_names, **kwargs)
        if cfg.n_outputs != n_outputs:
            raise ConfigError(
                f"label scheme {cfg.label_scheme!r} has {cfg.n_outputs} classes, but n_outputs is {n_outputs}"
            )
        self.config = cfg
        k = cfg.n_outputs
        self.teacher = FaceTeacher(
            len(cfg.face_ch_names),
            k,
            ch_names=cfg.face_ch_names,
            label_scheme=cfg.label_scheme,
            frame_hidden=cfg.frame_hidden,
            embed_dim=cfg.embed_dim,
            head_hidden=cfg.teacher_head_hidden,
            dropout=cfg.dropout,
            use_prior=cfg.use_prior,
            prior_sharpness=cfg.prior_sharpness,
        )
        self.student = EEGStudent(
            n_chans,
            k,
            n_times=cfg.n_times,
            ch_names=cfg.eeg_ch_names,
            sfreq=cfg.sfreq,
            inputs=cfg.eeg_inputs,
            n_bands=cfg.n_bands,
            embed_dim=cfg.embed_dim,
            de_hidden=cfg.de_hidden,
            n_filters=cfg.n_filters,
            head_hidden=cfg.student_head_hidden,
            dropout=cfg.dropout,
        )
        self.inject_layer = cfg.resolved_inject_layer
        self.inject_proj = nn.Linear(cfg.embed_dim, self.teacher.head.dims[self.inject_layer])
        self.prototypes = PrototypeModule(
            cfg.embed_dim,
            cfg.embed_dim,
            k,
            proto_dim=cfg.proto_dim,
            temperature=cfg.evidence_temperature,
        )
        # the fused output: a reliability-weighted pool of the two heads (see
        # bci_affect.uncertainty.fusion), refitted on held-out windows by fit_fusion
        self.fusion_raw = nn.Parameter(torch.full((2,), FusionPool.RAW_ONE))
        self.fusion_bias = nn.Parameter(torch.zeros(k))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.prior_evidence = (
            float(cfg.prior_evidence) if cfg.prior_evidence is not None else float(k)
        )
        self.conformal: ConformalPredictor | None = None
        self.fused_inference = True
        self._fused: FusedWeights | None = None

    # the folded weights are rebuilt after anything that may replace or change the weights
    # without bumping their version counters
    def train(self, mode: bool = True) -> AffectModel:
        self._fused = None
        return super().train(mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> AffectModel:
        self._fused = None
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._fused = None
        return super().load_state_dict(*args, **kwargs)

    @classmethod
    def from_config(cls, config: ModelConfig) -> AffectModel:
        """Build a fresh model from a :class:`ModelConfig`."""
        kwargs = {f.name: getattr(config, f.name) for f in fields(config)}
        face = kwargs.pop("face_ch_names")
        eeg = kwargs.pop("eeg_ch_names")
        return cls(len(eeg), config.n_outputs, face_ch_names=face, eeg_ch_names=eeg, **kwargs)

    @property
    def n_outputs(self) -> int:
        return self.config.n_outputs

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @torch.no_grad()
    def fit_input_stats(self, batch: WindowBatch) -> None:
        """Fit the input standardisation of both modalities on training windows."""
        if batch.face is not None:
            self.teacher.fit_input_stats(batch.face, batch.face_mask)
        self.student.fit_input_stats(batch.eeg_de, batch.eeg_raw)

    def _student_inputs(
        self, batch: WindowBatch, b: int, device: torch.device
    ) -> tuple[Tensor | None, Tensor | None, bool]:
        cfg = self.config
        de, raw, present = batch.eeg_de, batch.eeg_raw, True
        if self.student.de_encoder is not None and de is None:
            de, present = torch.zeros(b, len(cfg.eeg_ch_names), cfg.n_bands, device=device), False
        if self.student.raw_encoder is not None and raw is None:
            raw, present = (
                torch.zeros(b, len(cfg.eeg_ch_names), cfg.n_times or 1, device=device),
                False,
            )
        return de, raw, present

    def forward(self, batch: WindowBatch, *, with_injected: bool | None = None) -> AffectOutput:
        """Score ``B`` windows.

        Parameters
        ----------
        batch : WindowBatch
            Inputs; a missing modality (``face=None``, no EEG, all-NaN frames) is allowed.
        with_injected : bool, optional
            Also run the teacher head fed by the student (default: in training mode only).

        Returns
        -------
        AffectOutput
        """
        if (
            not self.training
            and self.fused_inference
            and not torch.is_grad_enabled()
            and fusable(self, batch)
        ):
            fused = self._fused
            if fused is None or fused.stale():
                fused = self._fused = FusedWeights(self)
            out = fused_forward(self, fused, batch, bool(with_injected))
            return AffectOutput(**out, prediction_sets=self._prediction_sets(out["probs"]))
        b = len(batch)
        ref = next(v for v in (batch.face, batch.eeg_de, batch.eeg_raw) if v is not None)
        device = ref.device
        k = self.config.n_outputs
        # --- teacher ----------------------------------------------------------------------------
        if batch.face is not None:
            f_t, prior_logits, face_avail, rel_t = self.teacher.encode(batch.face, batch.face_mask)
        else:
            f_t = torch.zeros(b, self.config.embed_dim, device=device)
            prior_logits = torch.full((b, k), -math.log(k), device=device)
            face_avail = torch.zeros(b, dtype=torch.bool, device=device)
            rel_t = torch.zeros(b, device=device)
        teacher_logits = self.teacher.logits(f_t, prior_logits)  # (B, K)
        # --- student ----------------------------------------------------------------------------
        de, raw, eeg_present = self._student_inputs(batch, b, device)
        f_s, finite = self.student.encode(de, raw)  # (B, D), (B,)
        student_logits = self.student.logits(f_s)  # (B, K)
        rel_s = finite.to(f_s.dtype)  # (B,)
        if not eeg_present:
            rel_s = torch.zeros_like(rel_s)
        if batch.eeg_quality is not None:
            rel_s = rel_s * torch.nan_to_num(batch.eeg_quality, nan=0.0).clamp(0.0, 1.0)
        if batch.emg_score is not None and self.config.emg_fusion_discount > 0:
            emg = torch.nan_to_num(batch.emg_score, nan=1.0).clamp(0.0, 1.0)
            rel_s = rel_s * (1.0 - self.config.emg_fusion_discount * emg)
        # --- prototypes and opinions ------------------------------------------------------------
        z_face = self.prototypes.embed_face(f_t)  # (B, P)
        z_eeg = self.prototypes.embed_eeg(f_s)  # (B, P)
        if self.training or bool(self.calibrated):
            e = self.prototypes.evidence(torch.cat([z_face, z_eeg]))  # (2B, K)
            e_t = e[:b] * rel_t.unsqueeze(-1)  # rel_t is 0 without a face
            e_s = e[b:] * rel_s.unsqueeze(-1)  # (B, K)
        else:  # zero-label mode: the circumplex prior speaks, the untrained student does not
            e_t = self.prior_evidence * torch.softmax(teacher_logits, dim=-1) * rel_t.unsqueeze(-1)
            e_s = torch.zeros_like(e_t)
        alpha_t, alpha_s = e_t + 1.0, e_s + 1.0  # (B, K)
        probs, alpha, u = self.fuse(teacher_logits, student_logits, rel_t, rel_s)
        injected = None
        if with_injected or (with_injected is None and self.training):
            h = F.relu(self.inject_proj(f_s))  # (B, dims[l])
            injected = self.teacher.head.forward_from(
                self.inject_layer, h, detach_params=True
            )  # (B, K)
        sets = None if self.training else self._prediction_sets(probs)
        return AffectOutput(
            teacher_logits=teacher_logits,
            student_logits=student_logits,
            teacher_probs=torch.softmax(teacher_logits, dim=-1),
            student_probs=torch.softmax(student_logits, dim=-1),
            probs=probs,
            alpha_teacher=alpha_t,
            alpha_student=alpha_s,
            alpha=alpha,
            uncertainty_teacher=dirichlet_uncertainty(alpha_t),
            uncertainty_student=dirichlet_uncertainty(alpha_s),
            uncertainty=u,
            z_face=z_face,
            z_eeg=z_eeg,
            face_available=face_avail,
            face_reliability=rel_t,
            eeg_reliability=rel_s,
            injected_logits=injected,
            prediction_sets=sets,
        )

    def fuse(
        self, teacher_logits: Tensor, student_logits: Tensor, rel_t: Tensor, rel_s: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The fused opinion of the two heads: probabilities ``(B, K)``, Dirichlet ``alpha``
        ``(B, K)`` and uncertainty ``(B,)`` (:func:`~bci_affect.uncertainty.fusion.pool_logits`).

        Before any label (zero-label mode) only the face's circumplex prior speaks."""
        log_t = torch.log_softmax(teacher_logits, dim=-1)
        if self.training or bool(self.calibrated):
            log_s = torch.log_softmax(student_logits, dim=-1)
            w = FusionPool.weights(self.fusion_raw)
            logits = pool_logits(log_t, log_s, rel_t, rel_s, w, self.fusion_bias)
        else:
            logits = rel_t.unsqueeze(-1) * log_t
        probs = torch.softmax(logits, dim=-1)
        alpha, u = opinion_from_probs(probs)
        return probs, alpha, u

    def _prediction_sets(self, probs: Tensor) -> Tensor | None:
        """Conformal sets ``(B, K)`` bool of the fused probabilities, or ``None`` unfitted."""
        if self.conformal is None or not self.conformal.fitted:
            return None
        sets = self.conformal.predict_sets(probs.detach() if probs.requires_grad else probs)
        return sets if sets.device == probs.device else sets.to(probs.device)


# --------------------------------------------------------------------------------------------
# Losses (pure functions)
# --------------------------------------------------------------------------------------------


def emg_weights(emg_score: Tensor, low: float = 0.3, high: float = 0.7) -> Tensor:
    """Muscle-leakage guard weights, shape ``(B,)``: 1 below ``low``, 0 above ``high``.

    Missing (NaN) scores count as contaminated (weight 0).
    """
    emg = torch.nan_to_num(emg_score, nan=1.0)
    return ((high - emg) / (high - low)).clamp(0.0, 1.0)


def _wmean(values: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """``sum(w v) / sum(w)`` over ``mask``; 0 (with a gradient path) when nothing is selected."""
    w = weights * mask.to(values.dtype)
    denom = w.sum()
    safe = torch.where(mask, values, torch.zeros_like(values))
    return (w * safe).sum() / denom.clamp_min(1e-8)


def distillation_loss(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """``KL(softmax(t / T) || softmax(s / T)) * T**2`` per window, shape ``(B,)``.

    The teacher side is detached: it is the target.
    """
    p_t = torch.softmax(teacher_logits.detach() / temperature, dim=-1)
    log_p_t = torch.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_q = torch.log_softmax(student_logits / temperature, dim=-1)
    return (p_t * (log_p_t - log_q)).sum(dim=-1) * temperature**2


def info_nce(z_a: Tensor, z_b: Tensor, temperature: float, weights: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between matched rows of two normalised embeddings.

    Parameters
    ----------
    z_a, z_b : Tensor, shape (N, P)
        Row ``i`` of ``z_a`` matches row ``i`` of ``z_b``.
    temperature : float
        ``tau``.
    weights : Tensor, shape (N,), optional
        Per-pair weights (e.g. the EMG guard).

    Returns
    -------
    Tensor, scalar
        ``(CE(a -> b) + CE(b -> a)) / 2``, weighted mean over pairs; 0 with fewer than 2 pairs.
    """
    n = z_a.shape[0]
    if n < 2:
        return (z_a.sum() + z_b.sum()) * 0.0
    logits = z_a @ z_b.t() / temperature  # (N, N)
    target = torch.arange(n, device=z_a.device)
    loss = 0.5 * (
        F.cross_entropy(logits, target, reduction="none")
        + F.cross_entropy(logits.t(), target, reduction="none")
    )
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp_min(1e-8)


@dataclass
class LossTerms:
    """The total loss and its terms (scalars; a switched-off term is 0)."""

    total: Tensor
    task: Tensor
    sim: Tensor
    unc: Tensor
    kd: Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "task", "sim", "unc", "kd")}


def compute_losses(
    out: AffectOutput,
    labels: Tensor,
    config: LossConfig = LossConfig(),
    *,
    emg_score: Tensor | None = None,
    kl_anneal: float = 1.0,
) -> LossTerms:
    """Training loss of a batch.

    Parameters
    ----------
    out : AffectOutput
        Output of :class:`AffectModel` in training mode (with ``injected_logits`` when
        ``config.kd_via_injection``).
    labels : Tensor of int, shape (B,)
        Class indices; ``-1`` marks unlabelled windows (they still feed sim and kd).
    config : LossConfig
        Weights and switches.
    emg_score : Tensor, shape (B,), optional
        EMG score per window for the muscle-leakage guard (default: clean).
    kl_anneal : float
        Factor in ``[0, 1]`` on the evidential KL regulariser (the trainer anneals it).

    Returns
    -------
    LossTerms
    """
    b = labels.shape[0]
    if out.teacher_logits.shape[0] != b:
        raise ShapeError(f"labels has {b} windows, the model output {out.teacher_logits.shape[0]}")
    device = out.teacher_logits.device
    labels = labels.to(device).long()
    zero = out.teacher_logits.sum() * 0.0
    labelled = labels >= 0
    face = out.face_available
    eeg_ok = out.eeg_reliability > 0
    w_u = (
        (1.0 - out.uncertainty.detach())
        if config.reweight_by_uncertainty
        else torch.ones(b, device=device)
    )
    if config.emg_guard and emg_score is not None:
        w_emg = emg_weights(emg_score.to(device), config.emg_low, config.emg_high)
    else:
        w_emg = torch.ones(b, device=device)
    safe_labels = labels.clamp_min(0)

    task = sim = unc = kd = zero
    if config.use_task:
        ce_t = F.cross_entropy(out.teacher_logits, safe_labels, reduction="none")
        ce_s = F.cross_entropy(out.student_logits, safe_labels, reduction="none")
        task = config.teacher_task_weight * _wmean(
            ce_t, w_u, labelled & face
        ) + config.student_task_weight * _wmean(ce_s, w_u, labelled)
    if config.use_sim:
        pair = face & eeg_ok
        sim = info_nce(out.z_eeg[pair], out.z_face[pair], config.infonce_temperature, w_emg[pair])
    if config.use_unc:
        kl_w = config.unc_kl_weight * float(kl_anneal)
        terms = [
            _wmean(
                evidential_loss(out.alpha_teacher, labels, kl_w),
                torch.ones(b, device=device),
                labelled & face,
            ),
            _wmean(
                evidential_loss(out.alpha_student, labels, kl_w),
                torch.ones(b, device=device),
                labelled & eeg_ok,
            ),
            _wmean(
                evidential_loss(out.alpha, labels, kl_w), torch.ones(b, device=device), labelled
            ),
        ]
        unc = sum(terms) / len(terms)
    if config.use_kd:
        if config.kd_via_injection:
            if out.injected_logits is None:
                raise ConfigError(
                    "kd_via_injection needs injected_logits: run the model in training mode"
                )
            student_side = out.injected_logits
        else:
            student_side = out.student_logits
        kl = distillation_loss(out.teacher_logits, student_side, config.kd_temperature)
        kd = _wmean(kl, w_u * w_emg, face & eeg_ok)
    kd_s = zero
    if config.lambda_kd_student > 0:  # the teacher's soft labels into the student's own head
        kl_s = distillation_loss(out.teacher_logits, out.student_logits, config.kd_temperature)
        w_face = out.face_reliability.detach().clamp(0.0, 1.0) * w_emg
        kd_s = _wmean(kl_s, w_face, face & eeg_ok)
    total = (
        config.task_weight * task
        + config.lambda_sim * sim
        + config.lambda_unc * unc
        + config.lambda_kd * kd
        + config.lambda_kd_student * kd_s
    )
    return LossTerms(total=total, task=task, sim=sim, unc=unc, kd=kd + kd_s)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def accuracy_by_emg(
    predicted: Any, labels: Any, emg_score: Any, threshold: float = 0.3
) -> dict[str, float | int]:
    """Accuracy on all labelled windows, on EMG-clean ones and on contaminated ones.

    A window is *clean* when its EMG score is below ``threshold``. Reporting the clean accuracy
    separately shows whether the EEG student learnt brain activity or facial muscle leakage.

    Parameters
    ----------
    predicted, labels : array-like of int, shape (N,)
        Decisions and true classes (labels < 0 are ignored).
    emg_score : array-like, shape (N,)
        EMG scores in [0, 1] (NaN counts as contaminated).
    threshold : float
        EMG score below which a window is clean.

    Returns
    -------
    dict
        ``accuracy``, ``accuracy_emg_clean``, ``accuracy_emg_contaminated`` (NaN where no
        window), ``n``, ``n_emg_clean``, ``n_emg_contaminated``.
    """
    pred = np.asarray(torch.as_tensor(predicted).cpu()).ravel()
    y = np.asarray(torch.as_tensor(labels).cpu()).ravel()
    emg = np.asarray(torch.as_tensor(emg_score).cpu(), dtype=float).ravel()
    if not (pred.shape == y.shape == emg.shape):
        raise ShapeError(
            f"predicted, labels and emg_score need the same length, got {pred.size}, {y.size}, {emg.size}"
        )
    ok = y >= 0
    clean = ok & np.isfinite(emg) & (emg < threshold)
    dirty = ok & ~clean

    def acc(m: np.ndarray) -> float:
        return float(np.mean(pred[m] == y[m])) if m.any() else float("nan")

    return {
        "accuracy": acc(ok),
        "accuracy_emg_clean": acc(clean),
        "accuracy_emg_contaminated": acc(dirty),
        "n": int(ok.sum()),
        "n_emg_clean": int(clean.sum()),
        "n_emg_contaminated": int(dirty.sum()),
    }
