"""Training over tensors: full training, incremental fine-tuning, prediction and evaluation.

These functions take a :class:`~bci_affect.models.transfer.WindowBatch` of windows and a label
tensor (``-1`` = unlabelled; unlabelled windows still feed InfoNCE and distillation). They run
on CUDA automatically when it is available.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
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
from bci_affect.uncertainty.fusion import FusionPool, pool_logits, select_pool

logger = logging.getLogger(__name__)

__all__ = [
    "FREEZE_MODES",
    "EpochCallback",
    "TrainConfig",
    "TrainHistory",
    "evaluate",
    "finetune",
    "fit",
    "fit_conformal",
    "fit_fusion",
    "predict",
    "resolve_device",
    "with_loss",
]


#: What :class:`TrainConfig` can keep fixed: nothing, the whole teacher, or the teacher's
#: encoder (frame and window encoders and its face input standardisation) while its task head
#: and gate keep learning.
FREEZE_MODES = ("none", "teacher", "teacher_encoder")

#: ``on_epoch(epoch_index, n_epochs, mean_terms)``: called after each epoch with the epoch's
#: index (from 0), the number of epochs and the mean loss terms of its steps (``total``,
#: ``task``, ``sim``, ``unc``, ``kd``).
EpochCallback = Callable[[int, int, dict[str, float]], None]


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
        Keep the teacher's parameters fixed (personalisation of the student and prototypes);
        the same as ``freeze="teacher"``.
    freeze : {"none", "teacher", "teacher_encoder"}
        What stays fixed: nothing (default), the whole teacher, or the teacher's encoder only
        (its frame and window encoders and face input standardisation), so that the teacher's
        task head and gate are personalised along with the student and the prototypes.
    fit_input_stats : bool
        Fit the input standardisation on these windows first (the student's only, when the
        teacher or its encoder is frozen).
    grad_clip : float
        Gradient-norm clipping (0 = off).
    anchor_l2 : float
        Pull towards the starting weights: ``anchor_l2 * sum ||theta - theta_0||^2`` over the
        trained parameters is added to every step's loss (personalisation: a few labels move
        the model only a little from where it started). 0 = off.
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
    freeze: str = "none"
    fit_input_stats: bool = True
    grad_clip: float = 5.0
    anchor_l2: float = 0.0
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(
                f"need epochs >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if (
            self.weight_decay < 0
            or self.grad_clip < 0
            or self.kl_anneal_epochs < 0
            or not self.anchor_l2 >= 0
        ):
            raise ConfigError(
                "weight_decay, grad_clip, kl_anneal_epochs and anchor_l2 must be >= 0"
            )
        if self.freeze not in FREEZE_MODES:
            raise ConfigError(
                f"unknown freeze mode {self.freeze!r}; valid: {', '.join(FREEZE_MODES)}"
            )
        if self.freeze_teacher and self.freeze not in ("none", "teacher"):
            raise ConfigError(
                f"freeze_teacher=True means freeze='teacher', but freeze={self.freeze!r} was "
                "given; set freeze_teacher=False"
            )

    @property
    def frozen(self) -> str:
        """The resolved freeze mode, one of :data:`FREEZE_MODES`."""
        return "teacher" if self.freeze_teacher else self.freeze


@dataclass
class TrainHistory:
    """What a training run did: mean loss terms per epoch and the run's facts."""

    epochs: list[dict[str, float]]
    n_windows: int
    n_labelled: int
    device: str
    seconds: float
    best_epoch: int | None = None
    """With a selection set: the epoch (from 0) whose weights were kept."""

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


def _frozen_parameters(model: AffectModel, mode: str) -> list[torch.nn.Parameter]:
    """The parameters that ``mode`` (one of :data:`FREEZE_MODES`) keeps fixed."""
    teacher = model.teacher
    if mode == "teacher":
        return list(teacher.parameters())
    if mode == "teacher_encoder":
        return [*teacher.frame_encoder.parameters(), *teacher.window_encoder.parameters()]
    return []


def fit(
    model: AffectModel,
    data: WindowBatch,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    select_on: tuple[WindowBatch, Any] | None = None,
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
    on_epoch : callable, optional
        ``on_epoch(epoch_index, n_epochs, mean_terms)`` after each epoch (see
        :data:`EpochCallback`), e.g. to show progress.
    select_on : (WindowBatch, labels), optional
        Held-out labelled windows (whole trials the training never sees): after every epoch
        the two heads' log-loss on them is measured and the weights of the best epoch are kept
        (early stopping; windows of one trial are strongly correlated, so a network can fit
        the training trials long after it stopped generalising).

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
    mode = cfg.frozen
    if cfg.fit_input_stats:
        if mode == "none":
            model.fit_input_stats(data_d)
        else:  # a frozen teacher encoder keeps the face standardisation it was trained with
            model.student.fit_input_stats(data_d.eeg_de, data_d.eeg_raw)
    frozen = [p for p in _frozen_parameters(model, mode) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params] if cfg.anchor_l2 > 0 else []
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict] | None = None
    sel = None
    if select_on is not None and len(select_on[0]):
        y_sel = _labels(select_on[1], len(select_on[0]), model.n_outputs)
        keep = y_sel >= 0
        if bool(keep.any()):
            sel = (select_on[0].index(keep).to(device), y_sel[keep].to(device))
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
                total = terms.total
                if anchors:
                    total = total + cfg.anchor_l2 * sum(
                        (p - a).pow(2).sum() for p, a in zip(params, anchors, strict=True)
                    )
                total.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                for k, v in terms.as_floats().items():
                    sums[k] = sums.get(k, 0.0) + v
                n_steps += 1
            history.append({k: v / max(n_steps, 1) for k, v in sums.items()})
            if sel is not None:
                score = _heads_log_loss(model, *sel)
                history[-1]["select_log_loss"] = score
                if best is None or score < best[0]:
                    best = (score, epoch, copy.deepcopy(model.state_dict()))
                model.train()
            logger.debug("epoch %d: %s", epoch, history[-1])
            if on_epoch is not None:
                on_epoch(epoch, cfg.epochs, dict(history[-1]))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
    if best is not None:
        model.load_state_dict(best[2])
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
        best_epoch=None if best is None else best[1],
    )


@torch.no_grad()
def _heads_log_loss(model: AffectModel, data: WindowBatch, y: torch.Tensor) -> float:
    """Mean log-loss of the teacher and the student heads (eval mode) on labelled windows."""
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(data), 512):
        sub = data.index(slice(start, start + 512))
        out = model(sub)
        yy = y[start : start + 512]
        total += float(
            torch.nn.functional.cross_entropy(out.teacher_logits, yy, reduction="sum")
            + torch.nn.functional.cross_entropy(out.student_logits, yy, reduction="sum")
        )
        n += int(yy.numel())
    return total / max(2 * n, 1)


def finetune(
    model: AffectModel,
    data: WindowBatch,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    on_epoch: EpochCallback | None = None,
) -> TrainHistory:
    """Incremental fine-tuning (personalisation) on a few new labelled windows.

    Defaults differ from :func:`fit`: a lower learning rate, fewer epochs, the teacher frozen,
    and the input standardisation kept from the original training. To personalise the
    teacher's task head too, pass a config with ``freeze="teacher_encoder"``. ``on_epoch`` is
    passed to :func:`fit`.
    """
    cfg = config or TrainConfig(
        epochs=15, lr=1e-3, freeze_teacher=True, fit_input_stats=False, kl_anneal_epochs=0
    )
    return fit(model, data, labels, cfg, on_epoch=on_epoch)


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


def fit_fusion(
    model: AffectModel,
    data: WindowBatch,
    labels: Any,
    *,
    groups: Any = None,
    prior_l2: float = 0.5,
) -> dict[str, Any]:
    """Refit the fused output (the pool of the two heads) on held-out labelled windows.

    The pool's exponents say how much each modality counts; fitted on windows the heads did
    not train on, an uninformative or overconfident modality gets a small exponent, and the
    fused probabilities are temperature-scaled at the same time. Which pool (both heads, the
    face alone, the EEG alone) is chosen by its log-loss on held-out groups, so the fusion
    does no harm where one modality carries nothing (see
    :func:`~bci_affect.uncertainty.fusion.select_pool`).

    Parameters
    ----------
    groups : array-like, shape (N,), optional
        Trial (or answer) of each window: the windows of one trial are one piece of evidence.
        Default: every window its own group.
    prior_l2 : float
        Pull towards the current pool, in groups.

    Returns
    -------
    dict
        ``w_face``, ``w_eeg`` (the fitted exponents), ``choice``, ``n`` (windows used),
        ``n_groups``, and the held-out log-loss ``nll_before`` / ``nll_after``.
    """
    y = _labels(labels, len(data), model.n_outputs)
    keep = y >= 0
    if not bool(model.calibrated) or int(keep.sum()) == 0:
        return {"n": 0}
    out = predict(model, data.index(keep))
    y = y[keep].cpu()
    g = np.arange(int(keep.sum())) if groups is None else np.asarray(groups)[keep.numpy()]
    log_t = torch.log_softmax(out.teacher_logits, dim=-1)
    log_s = torch.log_softmax(out.student_logits, dim=-1)
    before = float(torch.nn.functional.nll_loss(out.probs.clamp_min(1e-12).log(), y))
    raw, bias, info = select_pool(
        log_t,
        log_s,
        out.face_reliability,
        out.eeg_reliability,
        y,
        g,
        raw_init=model.fusion_raw.detach().cpu(),
        bias_init=model.fusion_bias.detach().cpu(),
        prior_l2=prior_l2,
    )
    with torch.no_grad():
        model.fusion_raw.copy_(raw.to(model.fusion_raw.device))
        model.fusion_bias.copy_(bias.to(model.fusion_bias.device))
    w = FusionPool.weights(raw)
    rel_t, rel_s = out.face_reliability, out.eeg_reliability
    after = torch.softmax(pool_logits(log_t, log_s, rel_t, rel_s, w, bias), dim=-1)
    return {
        "w_face": float(w[0]),
        "w_eeg": float(w[1]),
        "choice": info["choice"],
        "n": int(y.numel()),
        "n_groups": info["n_groups"],
        "nll_before": before,
        "nll_after": float(torch.nn.functional.nll_loss(after.clamp_min(1e-12).log(), y)),
    }


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
