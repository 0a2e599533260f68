"""The models a benchmark trains on each fold, and their post-hoc calibration.

- :func:`train_affect`: the face-teacher / EEG-student :class:`~bci_affect.models.transfer.AffectModel`
  (any loss ablation; face only; labels ``-1`` for unlabelled windows);
- :func:`train_eeg_student`: the EEG student network alone (:class:`~bci_affect.models.student.EEGStudent`,
  differential-entropy branch), trained with cross-entropy: the EEG-only baseline, which also
  runs on a plain feature table;
- :func:`fit_logistic` / :func:`logistic_probs`: multinomial logistic regression on the band
  features (:func:`~bci_affect.training.train.fit_logistic_baseline`);
- :class:`Calibrator`: temperature scaling and a conformal predictor fitted on held-out
  calibration windows, applied unchanged to the test windows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.evaluation.data import EvalSet
from bci_affect.evaluation.metrics import apply_temperature, fit_temperature
from bci_affect.models.finetune import TrainConfig, fit, fit_fusion, predict, with_loss
from bci_affect.models.student import EEGStudent, LogisticBaseline
from bci_affect.models.transfer import AffectModel, AffectOutput, ModelConfig, WindowBatch
from bci_affect.training.train import fit_logistic_baseline, logistic_probs
from bci_affect.uncertainty.conformal import ConformalPredictor

logger = logging.getLogger(__name__)

__all__ = [
    "Calibrator",
    "ModelSettings",
    "StudentModel",
    "affect_output",
    "eval_batch",
    "fit_logistic",
    "logistic_probs",
    "student_probs",
    "train_affect",
    "train_eeg_student",
]


@dataclass(frozen=True)
class ModelSettings:
    """Optimisation of every network a benchmark trains.

    Parameters
    ----------
    epochs : int
        Passes over the training windows.
    batch_size : int
        Windows per step.
    lr : float
        AdamW learning rate.
    device : str, optional
        ``"cpu"``, ``"cuda"``... (default: CUDA when available).
    conformal_method : {"aps", "lac"}
        Score of the conformal sets (the model's default: APS).
    conformal_allow_empty : bool
        Allow empty conformal sets (the model's default: no, the top class is always in).
    """

    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    device: str | None = None
    conformal_method: str = "aps"
    conformal_allow_empty: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(
                f"need epochs >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    def train_config(self, seed: int, **loss_changes: Any) -> TrainConfig:
        cfg = TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=seed,
            device=self.device,
            kl_anneal_epochs=min(10, self.epochs),
        )
        return with_loss(cfg, **loss_changes) if loss_changes else cfg


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def eval_batch(
    es: EvalSet,
    idx: NDArray[np.int64],
    *,
    face: bool = True,
    eeg: bool = True,
    face_missing: NDArray[np.bool_] | None = None,
    eeg_corrupted: NDArray[np.bool_] | None = None,
) -> WindowBatch:
    """Model inputs of windows ``idx``.

    Parameters
    ----------
    es : EvalSet
    idx : ndarray of int
    face, eeg : bool
        Give the model the face frames / the EEG at all.
    face_missing : ndarray of bool, shape (len(idx),), optional
        Windows whose face is taken away (frames NaN, mask false: what the camera pipeline
        sends when it finds no face).
    eeg_corrupted : ndarray of bool, shape (len(idx),), optional
        Windows whose EEG features, EMG score and quality come from the corrupted sessions.
    """
    arrays: dict[str, Any] = {}
    if face and es.face is not None:
        f, m = es.face[idx], es.face_mask[idx]
        if face_missing is not None and face_missing.any():
            f, m = f.copy(), m.copy()
            f[face_missing] = np.nan
            m[face_missing] = False
        arrays["face"], arrays["face_mask"] = f, m
    if eeg:
        de = es.eeg_de[idx]
        emg = es.emg_score[idx] if es.emg_score is not None else None
        q = es.eeg_quality[idx] if es.eeg_quality is not None else None
        if eeg_corrupted is not None and eeg_corrupted.any():
            if not es.has_corrupted:
                raise ConfigError("no corrupted copy of the windows was built")
            sel = idx[eeg_corrupted]
            de = de.copy()
            de[eeg_corrupted] = es.corrupt_eeg_de[sel]
            emg = emg.copy()
            emg[eeg_corrupted] = es.corrupt_emg_score[sel]
            q = q.copy()
            q[eeg_corrupted] = es.corrupt_eeg_quality[sel]
        arrays.update(eeg_de=de, emg_score=emg, eeg_quality=q)
    if not arrays:
        raise ConfigError("a batch needs the face or the EEG")
    return WindowBatch.from_arrays(**arrays)


# --------------------------------------------------------------------------------------------
# The face-teacher / EEG-student model
# --------------------------------------------------------------------------------------------


def _model_config(es: EvalSet) -> ModelConfig:
    if es.label_scheme is None or not es.face_ch_names:
        raise ConfigError(
            "the face-teacher / EEG-student model needs recorded sessions with a FaceFeatures "
            "stream and a rating label scheme"
        )
    return ModelConfig(
        face_ch_names=es.face_ch_names,
        eeg_ch_names=es.ch_names,
        label_scheme=es.label_scheme,
        eeg_inputs="sites" if es.ch_names == VIRTUAL_SITES else "de",
        n_bands=len(es.bands),
    )


def train_affect(
    es: EvalSet,
    idx: NDArray[np.int64],
    labels: NDArray[np.int64],
    settings: ModelSettings,
    *,
    seed: int,
    face: bool = True,
    eeg: bool = True,
    calib: NDArray[np.int64] | None = None,
    **loss_changes: Any,
) -> AffectModel:
    """Train an :class:`AffectModel` from scratch on windows ``idx``.

    Parameters
    ----------
    es : EvalSet
    idx : ndarray of int, shape (n,)
    labels : ndarray of int, shape (n,)
        Class of each window, ``-1`` for unlabelled windows (they still feed InfoNCE and
        distillation).
    settings : ModelSettings
    seed : int
        Seed of the initialisation and the shuffling.
    face, eeg : bool
        Train with the face / the EEG (``eeg=False``: a face-only teacher).
    calib : ndarray of int, optional
        Held-out labelled windows: the epoch kept is the one whose heads do best on them, and
        the fused output (how much face and EEG count) is refitted on them
        (:func:`~bci_affect.models.finetune.fit_fusion`), as training does.
    **loss_changes
        :class:`~bci_affect.models.transfer.LossConfig` fields (e.g. ``use_kd=False``).
    """
    torch.manual_seed(seed)
    model = AffectModel.from_config(_model_config(es))
    batch = eval_batch(es, idx, face=face, eeg=eeg)
    held = None if calib is None or not calib.size else eval_batch(es, calib, face=face, eeg=eeg)
    select = None if held is None else (held, es.labels[calib])
    fit(model, batch, labels, settings.train_config(seed, **loss_changes), select_on=select)
    if held is not None:
        fit_fusion(model, held, es.labels[calib], groups=es.trial[calib])
    return model


def affect_output(
    model: AffectModel,
    es: EvalSet,
    idx: NDArray[np.int64],
    *,
    face: bool = True,
    eeg: bool = True,
    face_missing: NDArray[np.bool_] | None = None,
    eeg_corrupted: NDArray[np.bool_] | None = None,
) -> AffectOutput:
    """The model's output on windows ``idx`` (with the student-through-teacher-head logits)."""
    batch = eval_batch(
        es, idx, face=face, eeg=eeg, face_missing=face_missing, eeg_corrupted=eeg_corrupted
    )
    return predict(model, batch, with_injected=True)


# --------------------------------------------------------------------------------------------
# The EEG student alone
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class StudentModel:
    """An :class:`EEGStudent` trained alone, with the per-feature means that fill NaN inputs."""

    net: EEGStudent
    fill: NDArray[np.float32]


def _fill_nan(de: NDArray, fill: NDArray) -> NDArray[np.float32]:
    x = np.asarray(de, dtype=np.float32)
    return np.where(np.isfinite(x), x, fill[None]).astype(np.float32)


def train_eeg_student(
    de: NDArray,
    labels: NDArray[np.int64],
    n_classes: int,
    settings: ModelSettings,
    *,
    seed: int,
    ch_names: tuple[str, ...] | None = None,
) -> StudentModel:
    """Train the EEG student network alone with cross-entropy.

    Parameters
    ----------
    de : ndarray, shape (n, n_chans, n_bands)
        Band features of labelled windows (NaN is filled with the training mean).
    labels : ndarray of int, shape (n,)
    n_classes : int
    settings : ModelSettings
    seed : int
    ch_names : tuple of str, optional

    Returns
    -------
    StudentModel
        In eval mode, on the CPU.
    """
    x = np.asarray(de, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        fill = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0).astype(np.float32)
    xt = torch.as_tensor(_fill_nan(de, fill))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n, c, b = xt.shape
    torch.manual_seed(seed)
    net = EEGStudent(c, n_classes, ch_names=ch_names, inputs="de", n_bands=b)
    net.fit_input_stats(xt, None)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, settings.batch_size):
            sel = order[start : start + settings.batch_size]
            if sel.numel() < 2:
                continue
            loss = F.cross_entropy(net(xt[sel], None), y[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
    net.eval()
    return StudentModel(net, fill)


@torch.inference_mode()
def student_probs(model: StudentModel, de: NDArray) -> NDArray[np.float64]:
    """Class probabilities of the EEG student alone, shape ``(n, K)``."""
    x = torch.as_tensor(_fill_nan(de, model.fill))
    return torch.softmax(model.net(x, None), dim=-1).double().numpy()


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------


def fit_logistic(de: NDArray, labels: NDArray[np.int64], n_classes: int) -> LogisticBaseline:
    """Multinomial logistic regression on band features (NaN: the training mean)."""
    return fit_logistic_baseline(de, labels, n_classes)


# --------------------------------------------------------------------------------------------
# Post-hoc calibration
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Calibrator:
    """Temperature scaling then a conformal predictor, both fitted on calibration windows.

    Attributes
    ----------
    temperature : float
        1.0 without calibration windows.
    conformal : ConformalPredictor or None
        Fitted on the temperature-scaled calibration probabilities; ``None`` without
        calibration windows or when not asked for.
    """

    temperature: float = 1.0
    conformal: ConformalPredictor | None = None
    n_calibration: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        probs: NDArray,
        labels: NDArray,
        *,
        coverage: float | None = 0.9,
        settings: ModelSettings | None = None,
        seed: int = 0,
    ) -> Calibrator:
        """Fit on held-out windows (``probs`` ``(n, K)``, ``labels`` ``(n,)``; n may be 0)."""
        settings = settings or ModelSettings()
        y = np.asarray(labels, dtype=np.int64)
        if y.size == 0:
            return cls()
        t = fit_temperature(probs, y)
        cp = None
        if coverage is not None:
            cp = ConformalPredictor(
                method=settings.conformal_method,
                coverage=coverage,
                seed=seed,
                allow_empty=settings.conformal_allow_empty,
            ).fit(torch.as_tensor(apply_temperature(probs, t)), torch.as_tensor(y))
        return cls(temperature=t, conformal=cp, n_calibration=int(y.size))

    def apply(self, probs: NDArray) -> tuple[NDArray[np.float64], NDArray[np.bool_] | None]:
        """Calibrated probabilities ``(n, K)`` and conformal sets ``(n, K)`` (or ``None``)."""
        p = apply_temperature(probs, self.temperature)
        sets = None
        if self.conformal is not None and p.shape[0]:
            sets = self.conformal.predict_sets(torch.as_tensor(p)).cpu().numpy().astype(bool)
        return p, sets
