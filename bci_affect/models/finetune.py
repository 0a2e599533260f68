"""Training over tensors: full training, incremental fine-tuning, prediction and evaluation.

These functions take a :class:`~bci_affect.models.transfer.WindowBatch` of windows and a label
tensor (``-1`` = unlabelled; unlabelled windows still feed InfoNCE and distillation). They run
on CUDA automatically when it is available.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from bci_affect.core.errors import ConfigError, ShapeError
from bci_affect.models.transfer import (
    AffectModel,
    AffectOutput,
    LossConfig,
    WindowBatch,
    accuracy_by_emg,
    cat_outputs,
    compute_losses,
)
from bci_affect.uncertainty.conformal import ConformalPredictor, coverage_of

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "TrainHistory",
    "evaluate",
    "finetune",
    "fit",
    "fit_conformal",
    "predict",
    "resolve_device",
    "with_loss",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Parameters
    ----------
    epochs : int
        Passes over the windows.
    batch_size : int
        Windows per step.
    lr, weight_decay : float
        AdamW learning rate and weight decay.
    seed : int
        Seed of the shuffling and the initialisation-independent randomness.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; ``None`` picks CUDA when available.
    kl_anneal_epochs : int
        Epochs over which the evidential KL regulariser ramps from 0 to its weight.
    freeze_teacher : bool
        Keep the teacher's parameters fixed (personalisation of the student and prototypes).
    fit_input_stats : bool
        Fit the input standardisation on these windows first.
    grad_clip : float
        Gradient-norm clipping (0 = off).
    loss : LossConfig
        Loss weights and switches.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str | None = None
    kl_anneal_epochs: int = 10
    freeze_teacher: bool = False
    fit_input_stats: bool = True
    grad_clip: float = 5.0
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(
                f"need epochs >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.kl_anneal_epochs < 0:
            raise ConfigError("weight_decay, grad_clip and kl_anneal_epochs must be >= 0")


@dataclass
class TrainHistory:
    """What a training run did: mean loss terms per epoch and the run's facts."""

    epochs: list[dict[str, float]]
    n_windows: int
    n_labelled: int
    device: str
    seconds: float

    @property
    def final(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"invalid device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use 'cpu'")
    return dev


def _labels(labels: Any, n: int, k: int) -> torch.Tensor:
    y = (
        torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        .long()
        .flatten()
    )
    if y.shape[0] != n:
        raise ShapeError(
            f"{y.shape[0]} labels for {n} windows; give one label per window (-1 = unlabelled)"
        )
    if n and (y.max() >= k or y.min() < -1):
        raise ConfigError(
            f"labels must be -1 (unlabelled) or in [0, {k}), got values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


def fit(
    model: AffectModel, data: WindowBatch, labels: Any, config: TrainConfig | None = None
) -> TrainHistory:
    """Train ``model`` in place on windows and labels.

    Parameters
    ----------
    model : AffectModel
    data : WindowBatch
        ``N`` training windows.
    labels : array-like of int, shape (N,)
        Class indices; ``-1`` for unlabelled windows.
    config : TrainConfig, optional

    Returns
    -------
    TrainHistory
        The model is left in eval mode; ``model.calibrated`` is set when any label was given.
    """
    cfg = config or TrainConfig()
    n = len(data)
    y_all = _labels(labels, n, model.n_outputs)
    if n < 2:
        raise ConfigError(f"need at least 2 windows to train, got {n}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    data_d = data.to(device)
    y_all = y_all.to(device)
    if cfg.fit_input_stats:
        model.fit_input_stats(data_d)
    frozen: list[torch.nn.Parameter] = []
    if cfg.freeze_teacher:
        frozen = [p for p in model.teacher.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    model.train()
    try:
        for epoch in range(cfg.epochs):
            anneal = (
                1.0 if cfg.kl_anneal_epochs == 0 else min(1.0, (epoch + 1) / cfg.kl_anneal_epochs)
            )
            order = torch.randperm(n, generator=gen).to(device)
            sums: dict[str, float] = {}
            n_steps = 0
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if idx.numel() < 2:
                    continue  # batch norm and InfoNCE need at least two windows
                sub = data_d.index(idx)
                out = model(sub, with_injected=cfg.loss.use_kd and cfg.loss.kd_via_injection)
                terms = compute_losses(
                    out, y_all[idx], cfg.loss, emg_score=sub.emg_score, kl_anneal=anneal
                )
                if not torch.isfinite(terms.total):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch}: {terms.as_floats()}"
                    )
                opt.zero_grad(set_to_none=True)
                terms.total.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                for k, v in terms.as_floats().items():
                    sums[k] = sums.get(k, 0.0) + v
                n_steps += 1
            history.append({k: v / max(n_steps, 1) for k, v in sums.items()})
            logger.debug("epoch %d: %s", epoch, history[-1])
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
    n_labelled = int((y_all >= 0).sum())
    if n_labelled:
        model.calibrated.fill_(True)
    return TrainHistory(
        epochs=history,
        n_windows=n,
        n_labelled=n_labelled,
        device=str(device),
        seconds=time.perf_counter() - t0,
    )


def finetune(
    model: AffectModel, data: WindowBatch, labels: Any, config: TrainConfig | None = None
) -> TrainHistory:
    """Incremental fine-tuning (personalisation) on a few new labelled windows.

    Defaults differ from :func:`fit`: a lower learning rate, fewer epochs, the teacher frozen,
    and the input standardisation kept from the original training.
    """
    cfg = config or TrainConfig(
        epochs=15, lr=1e-3, freeze_teacher=True, fit_input_stats=False, kl_anneal_epochs=0
    )
    return fit(model, data, labels, cfg)


@torch.inference_mode()
def predict(
    model: AffectModel,
    data: WindowBatch,
    *,
    batch_size: int = 512,
    device: str | None = None,
    with_injected: bool = False,
) -> AffectOutput:
    """Score windows in eval mode, in batches; the output lives on the CPU.

    ``with_injected`` also returns ``injected_logits``: the teacher head fed by the student,
    the EEG-only prediction that distillation trains (also without labels).
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    try:
        for start in range(0, len(data), batch_size):
            sub = data.index(slice(start, start + batch_size)).to(dev)
            outs.append(model(sub, with_injected=with_injected).detach())
    finally:
        model.train(was_training)
    return cat_outputs(outs)


def fit_conformal(
    model: AffectModel,
    data: WindowBatch,
    labels: Any,
    *,
    coverage: float = 0.9,
    method: str = "aps",
    seed: int = 0,
    allow_empty: bool = False,
) -> ConformalPredictor:
    """Fit a conformal predictor on held-out labelled windows and attach it to ``model``.

    Use windows the model did not train on, or the coverage guarantee does not hold. See
    :class:`~bci_affect.uncertainty.conformal.ConformalPredictor` for the parameters.
    """
    y = _labels(labels, len(data), model.n_outputs)
    keep = y >= 0
    if not bool(keep.any()):
        raise ConfigError("conformal calibration needs labelled windows; all labels are -1")
    model.conformal = None
    out = predict(model, data.index(keep))
    cp = ConformalPredictor(
        method=method, coverage=coverage, seed=seed, allow_empty=allow_empty
    ).fit(out.probs, y[keep])
    if not math.isfinite(cp.threshold):
        logger.warning(
            "only %d calibration windows: too few for %.0f %% coverage, every set will hold all classes",
            cp.n_calibration,
            100 * coverage,
        )
    model.conformal = cp
    return cp


def evaluate(
    model: AffectModel, data: WindowBatch, labels: Any, *, emg_clean_threshold: float = 0.3
) -> dict[str, Any]:
    """Accuracy of each modality and of the fusion, with EMG-clean windows reported separately.

    Returns
    -------
    dict
        ``teacher``, ``student``, ``student_via_teacher_head`` (the student's features through the
        teacher's head, the path distillation trains), ``fused``: each
        :func:`~bci_affect.models.transfer.accuracy_by_emg` (teacher over windows with a face
        only); ``mean_uncertainty``; and, when a conformal
        predictor is attached, ``coverage`` and ``mean_set_size``.
    """
    y = _labels(labels, len(data), model.n_outputs)
    out = predict(model, data, with_injected=True)
    emg = data.emg_score.cpu() if data.emg_score is not None else torch.zeros(len(data))
    y_face = torch.where(out.face_available, y, torch.full_like(y, -1))
    report: dict[str, Any] = {
        "teacher": accuracy_by_emg(out.teacher_probs.argmax(-1), y_face, emg, emg_clean_threshold),
        "student": accuracy_by_emg(out.student_probs.argmax(-1), y, emg, emg_clean_threshold),
        "student_via_teacher_head": accuracy_by_emg(
            out.injected_logits.argmax(-1), y, emg, emg_clean_threshold
        ),
        "fused": accuracy_by_emg(out.predicted, y, emg, emg_clean_threshold),
        "mean_uncertainty": float(out.uncertainty.mean()),
    }
    if out.prediction_sets is not None:
        keep = y >= 0
        report["coverage"] = coverage_of(out.prediction_sets[keep], y[keep])
        report["mean_set_size"] = float(out.prediction_sets[keep].sum(-1).float().mean())
    return report


def with_loss(config: TrainConfig, **loss_changes: Any) -> TrainConfig:
    """A copy of ``config`` whose :class:`LossConfig` has ``loss_changes`` applied (ablations)."""
    return replace(config, loss=replace(config.loss, **loss_changes))
