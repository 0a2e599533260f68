"""Training and fine-tuning on a :class:`~bci_affect.training.dataset.WindowDataset`, with honest
metrics.

:func:`train_model` splits the windows by trial (or session, or subject:
:mod:`bci_affect.training.split`), trains an :class:`~bci_affect.models.transfer.AffectModel`
on the training side, attaches a conformal predictor fitted on the validation side, and
scores both sides. :func:`finetune_model` personalises an existing model on a calibration
session the same way (teacher frozen, a few epochs: seconds on a CPU), and reports the
validation scores before and after.

Every accuracy comes with its yardsticks, on the same windows: the majority class of the
training side, a multinomial logistic regression on the band features (differential entropy
per channel and band) fitted on the training side, and chance (uniform guessing). Each row
is also scored on the EMG-clean windows alone, which shows whether the EEG path learnt brain
activity or facial muscle leaking into the electrodes.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.models.finetune import (
    EpochCallback,
    TrainConfig,
    TrainHistory,
    finetune,
    fit,
    fit_conformal,
    fit_fusion,
    predict,
)
from bci_affect.models.student import LogisticBaseline
from bci_affect.models.transfer import AffectModel, ModelConfig
from bci_affect.training.dataset import WindowDataset
from bci_affect.training.split import SPLIT_UNITS, Split, split_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_ROWS",
    "FinetuneSettings",
    "TrainResult",
    "TrainSettings",
    "chance_scores",
    "classification_scores",
    "finetune_model",
    "fit_logistic_baseline",
    "format_metrics",
    "macro_f1",
    "model_config_for",
    "score_dataset",
    "train_model",
]

#: Rows of the metrics table: key -> label.
MODEL_ROWS = {
    "fused": "fused (face + EEG)",
    "teacher": "teacher only (face)",
    "student": "student only (EEG)",
    "student_via_teacher_head": "EEG via teacher head",
    "majority": "majority class",
    "logistic": "logistic regr. (band DE)",
    "chance": "chance (uniform guess)",
}

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`train_model` trains and validates.

    Parameters
    ----------
    eeg_inputs : {"sites", "de", "raw", "both"}
        Student input: differential entropy per band, the filtered window, or both.
    split : {"trial", "session", "subject"}
        What the validation split keeps whole.
    val_fraction : float
        Fraction of trials (sessions, subjects) held out for validation; 0: none.
    seed : int
        Seed of the split, the initialisation and the shuffling.
    train : TrainConfig
        Optimisation (epochs, batch size, learning rate, loss weights...); its ``seed`` is
        replaced by ``seed``.
    conformal_coverage : float or None
        Coverage of the conformal sets fitted on the calibration windows; ``None``: none.
    calibration_fraction : float
        Fraction of the training trials (sessions, subjects: the ``split`` unit) held out of
        the training itself to fit the fused output (how much each modality counts, and its
        temperature: :func:`~bci_affect.models.finetune.fit_fusion`) and the conformal sets on
        windows the heads did not train on; 0: the fusion stays as trained and the conformal
        sets are fitted on the validation windows.
    emg_clean_threshold : float
        EMG score below which a window counts as EMG-clean in the metrics.
    model_overrides : tuple of (str, value)
        Extra :class:`~bci_affect.models.transfer.ModelConfig` fields (sizes, temperatures).
    """

    eeg_inputs: str = "sites"
    split: str = "trial"
    val_fraction: float = 0.2
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30))
    conformal_coverage: float | None = 0.9
    calibration_fraction: float = 0.2
    emg_clean_threshold: float = 0.3
    model_overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.calibration_fraction) and 0 <= self.calibration_fraction < 1):
            raise ConfigError(
                f"calibration_fraction must be in [0, 1), got {self.calibration_fraction}"
            )
        if self.split not in SPLIT_UNITS:
            raise ConfigError(f"unknown split {self.split!r}; valid: {', '.join(SPLIT_UNITS)}")
        if not (math.isfinite(self.val_fraction) and 0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.conformal_coverage is not None and not 0.0 < self.conformal_coverage < 1.0:
            raise ConfigError(
                f"conformal_coverage must be in (0, 1) or None, got {self.conformal_coverage}"
            )
        if not 0.0 < self.emg_clean_threshold <= 1.0:
            raise ConfigError(
                f"emg_clean_threshold must be in (0, 1], got {self.emg_clean_threshold}"
            )
        object.__setattr__(self, "model_overrides", tuple(tuple(p) for p in self.model_overrides))
        reserved = {"face_ch_names", "eeg_ch_names", "label_scheme", "eeg_inputs", "sfreq"}
        clash = reserved & {k for k, _ in self.model_overrides}
        if clash:
            raise ConfigError(
                f"model_overrides cannot set {sorted(clash)}: they come from the dataset"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_overrides"] = dict(self.model_overrides)
        return d


@dataclass(frozen=True)
class FinetuneSettings:
    """How :func:`finetune_model` personalises a model on a calibration session.

    Parameters
    ----------
    split, val_fraction, seed, conformal_coverage, calibration_fraction, emg_clean_threshold
        As in :class:`TrainSettings`.
    train : TrainConfig
        Optimisation; default: 15 epochs, learning rate 1e-3, teacher frozen.
    refit_eeg_stats : bool
        Re-fit the student's input standardisation on the calibration training windows before
        fine-tuning: the subject's EEG amplitude differs from the training subjects'.
    tolerance : float
        The fine-tuned model replaces the starting one only when its fused log-loss on the
        held-out calibration windows is at most this much (nats per window) above the
        starting model's; otherwise the starting model is kept (and the result says so).
    """

    split: str = "trial"
    val_fraction: float = 0.3
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=15,
            lr=1e-3,
            freeze_teacher=True,
            fit_input_stats=False,
            kl_anneal_epochs=0,
        )
    )
    conformal_coverage: float | None = 0.9
    calibration_fraction: float = 0.25
    emg_clean_threshold: float = 0.3
    refit_eeg_stats: bool = True
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        TrainSettings(
            split=self.split,
            val_fraction=self.val_fraction,
            conformal_coverage=self.conformal_coverage,
            calibration_fraction=self.calibration_fraction,
            emg_clean_threshold=self.emg_clean_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class TrainResult:
    """What :func:`train_model` or :func:`finetune_model` produced.

    Attributes
    ----------
    model : AffectModel
        Trained, in eval mode, with a conformal predictor when there was a validation split.
    split : Split
    metrics : dict
        ``{"train": scores, "val": scores}`` (see :func:`score_dataset`); for fine-tuning also
        ``"val_before"`` / ``"train_before"``, the untouched model's scores.
    history : TrainHistory
    seconds : float
        Wall time of the whole call.
    fusion : dict
        How the fused output was fitted on held-out training windows
        (:func:`~bci_affect.models.finetune.fit_fusion`); empty when it was not.
    """

    model: AffectModel
    split: Split
    metrics: dict[str, Any]
    history: TrainHistory
    seconds: float
    fusion: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def macro_f1(predicted: Any, labels: Any, n_classes: int) -> float:
    """Unweighted mean over the classes present in ``labels`` of the F1 score.

    Classes absent from ``labels`` are left out of the mean (their F1 is undefined); NaN
    without any window.
    """
    p = np.asarray(predicted, dtype=np.int64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.size == 0:
        return float("nan")
    f1s = []
    for c in range(n_classes):
        true_c = y == c
        if not true_c.any():
            continue
        pred_c = p == c
        tp = float(np.sum(pred_c & true_c))
        denom = float(pred_c.sum() + true_c.sum())
        f1s.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))


def classification_scores(
    predicted: Any, labels: Any, n_classes: int, emg_score: Any, emg_clean_threshold: float = 0.3
) -> dict[str, float | int]:
    """Accuracy and macro-F1 over all windows and over the EMG-clean ones.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``n``, ``accuracy_emg_clean``, ``macro_f1_emg_clean``,
        ``n_emg_clean`` (NaN scores where there is no window).
    """
    p = np.asarray(predicted, dtype=np.int64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    emg = np.asarray(emg_score, dtype=np.float64).ravel()
    clean = np.isfinite(emg) & (emg < emg_clean_threshold)

    def acc(m: NDArray[np.bool_]) -> float:
        return float(np.mean(p[m] == y[m])) if m.any() else float("nan")

    every = np.ones_like(y, dtype=bool)
    return {
        "accuracy": acc(every),
        "macro_f1": macro_f1(p, y, n_classes),
        "n": int(y.size),
        "accuracy_emg_clean": acc(clean),
        "macro_f1_emg_clean": macro_f1(p[clean], y[clean], n_classes),
        "n_emg_clean": int(clean.sum()),
    }


def chance_scores(
    labels: Any, n_classes: int, emg_score: Any, emg_clean_threshold: float = 0.3
) -> dict[str, float | int]:
    """Expected scores of guessing uniformly at random, on these windows.

    Accuracy ``1 / K``; for class ``c`` with share ``q_c`` of the windows, expected precision
    ``q_c`` and recall ``1 / K``, so F1 ``2 q_c / (1 + K q_c)``, averaged over the classes
    present.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    emg = np.asarray(emg_score, dtype=np.float64).ravel()
    clean = np.isfinite(emg) & (emg < emg_clean_threshold)

    def f1(m: NDArray[np.bool_]) -> float:
        if not m.any():
            return float("nan")
        q = np.bincount(y[m], minlength=n_classes) / m.sum()
        q = q[q > 0]
        return float(np.mean(2 * q / (1 + n_classes * q)))

    every = np.ones_like(y, dtype=bool)
    return {
        "accuracy": 1.0 / n_classes if y.size else float("nan"),
        "macro_f1": f1(every),
        "n": int(y.size),
        "accuracy_emg_clean": 1.0 / n_classes if clean.any() else float("nan"),
        "macro_f1_emg_clean": f1(clean),
        "n_emg_clean": int(clean.sum()),
    }


def _standardise(de: NDArray, mean: NDArray, std: NDArray) -> NDArray:
    z = (de - mean) / std
    return np.where(np.isfinite(z), z, 0.0)  # channels left out: the mean


def fit_logistic_baseline(
    de: NDArray, labels: NDArray, n_classes: int, *, l2: float = 1e-2, max_iter: int = 200
) -> LogisticBaseline:
    """Multinomial logistic regression on band features, fitted with L-BFGS.

    Parameters
    ----------
    de : ndarray, shape (N, n_chans, n_bands)
        Differential entropy per channel and band (NaN: channel left out, imputed by the mean).
    labels : ndarray of int, shape (N,)
    n_classes : int
    l2 : float
        Weight of the L2 penalty on the weights (the features are standardised).
    max_iter : int
        L-BFGS iterations.

    Returns
    -------
    LogisticBaseline
        In eval mode; its ``input_mean``/``input_std`` hold the standardisation.
    """
    x = np.asarray(de, dtype=np.float64)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n, c, b = x.shape
    model = LogisticBaseline(c, n_classes, n_bands=b)
    with warnings.catch_warnings():  # a channel left out in every window: all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
    model.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model.input_std.copy_(torch.as_tensor(std, dtype=torch.float32))
    z = torch.as_tensor(_standardise(x, mean, std).reshape(n, c * b), dtype=torch.float32)
    lin = model.linear
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
    opt = torch.optim.LBFGS(
        lin.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(z), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    model.eval()
    return model


def logistic_probs(model: LogisticBaseline, de: NDArray) -> NDArray[np.float64]:
    """Class probabilities of the logistic-regression baseline, shape ``(n, K)``.

    ``de`` has shape ``(n, n_chans, n_bands)``; channels left out (NaN) count as the mean.
    """
    x = np.asarray(de, dtype=np.float64)
    mean = model.input_mean.double().numpy()
    std = model.input_std.double().numpy()
    z = torch.as_tensor(_standardise(x, mean, std).reshape(x.shape[0], -1), dtype=torch.float32)
    with torch.no_grad():
        return torch.softmax(model.linear(z), dim=-1).double().numpy()


def _logistic_predict(model: LogisticBaseline, de: NDArray) -> NDArray:
    return logistic_probs(model, de).argmax(-1)


def score_dataset(
    model: AffectModel,
    data: WindowDataset,
    *,
    majority_class: int,
    logistic: LogisticBaseline | None,
    emg_clean_threshold: float = 0.3,
) -> dict[str, Any]:
    """Scores of the model's heads and of the baselines on the same windows.

    Parameters
    ----------
    model : AffectModel
    data : WindowDataset
    majority_class : int
        The most frequent class of the training windows.
    logistic : LogisticBaseline, optional
        Baseline fitted on the training windows.
    emg_clean_threshold : float

    Returns
    -------
    dict
        ``n``, ``n_emg_clean``, ``n_with_face`` and ``rows``: for each key of
        :data:`MODEL_ROWS`, :func:`classification_scores` (``teacher`` over every window: a
        window without a face gets the uniform prior's guess).
    """
    k = data.n_classes
    y, emg = data.labels, data.emg_score
    rows: dict[str, Any] = {}
    if len(data):
        out = predict(model, data.batch(), with_injected=True)
        preds = {
            "fused": out.predicted.numpy(),
            "teacher": out.teacher_probs.argmax(-1).numpy(),
            "student": out.student_probs.argmax(-1).numpy(),
            "student_via_teacher_head": out.injected_logits.argmax(-1).numpy(),
            "majority": np.full(len(data), majority_class),
        }
        if logistic is not None:
            preds["logistic"] = _logistic_predict(logistic, data.eeg_de)
        for key, p in preds.items():
            rows[key] = classification_scores(p, y, k, emg, emg_clean_threshold)
        mean_u = float(out.uncertainty.mean())
    else:
        mean_u = float("nan")
    rows["chance"] = chance_scores(y, k, emg, emg_clean_threshold)
    clean = np.isfinite(emg) & (emg < emg_clean_threshold)
    return {
        "n": len(data),
        "n_trials": data.n_trials,
        "n_emg_clean": int(clean.sum()),
        "n_with_face": int(data.face_mask.any(axis=1).sum()) if data.face_mask is not None else 0,
        "mean_uncertainty": mean_u,
        "rows": {key: rows[key] for key in MODEL_ROWS if key in rows},
    }


def format_metrics(metrics: dict[str, Any], *, splits: tuple[str, ...] | None = None) -> str:
    """The metrics as a plain-text table, one row per split and model.

    Parameters
    ----------
    metrics : dict
        ``{split name: score_dataset(...)}`` (other keys are ignored).
    splits : tuple of str, optional
        Which splits, in order (default: every split present).
    """
    names = splits or tuple(k for k, v in metrics.items() if isinstance(v, dict) and "rows" in v)
    head = f"{'split':<12} {'model':<26} {'windows':>7} {'acc':>6} {'macro-F1':>8}   {'EMG-clean acc':>13} {'(windows)':>9}"
    lines = [head, "-" * len(head)]

    def num(x: float) -> str:
        return "   n/a" if x is None or not math.isfinite(x) else f"{x:6.3f}"

    for split in names:
        m = metrics.get(split)
        if not m or "rows" not in m:
            continue
        for key, row in m["rows"].items():
            lines.append(
                f"{split:<12} {MODEL_ROWS.get(key, key):<26} {row['n']:>7d} {num(row['accuracy'])} "
                f"{num(row['macro_f1']):>8}   {num(row['accuracy_emg_clean']):>13} "
                f"{row['n_emg_clean']:>9d}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _epoch_reporter(progress: Progress | None) -> EpochCallback | None:
    """An ``on_epoch`` callback that writes one progress line per epoch (``None``: none)."""
    if progress is None:
        return None
    t0 = time.perf_counter()

    def on_epoch(epoch: int, n_epochs: int, terms: dict[str, float]) -> None:
        parts = " ".join(f"{k} {v:.3f}" for k, v in terms.items())
        progress(f"epoch {epoch + 1}/{n_epochs}: {parts} ({time.perf_counter() - t0:.1f} s)")

    return on_epoch


def model_config_for(
    dataset: WindowDataset, eeg_inputs: str = "de", **overrides: Any
) -> ModelConfig:
    """The :class:`ModelConfig` that fits a dataset's channels, rate, window and classes."""
    if not dataset.face_ch_names:
        raise ConfigError(
            "no session has a FaceFeatures stream: the model needs the face channel layout; "
            "record the sessions with a camera (bci-affect camera)"
        )
    if eeg_inputs in ("raw", "both") and dataset.eeg_raw is None:
        raise ConfigError(
            f"eeg_inputs={eeg_inputs!r} needs the filtered windows; build the dataset with "
            "FeatureConfig(tensor=True)"
        )
    free = eeg_inputs == "sites"
    return ModelConfig(
        face_ch_names=dataset.face_ch_names,
        eeg_ch_names=VIRTUAL_SITES if free else dataset.eeg_ch_names,
        label_scheme=dataset.label_scheme,
        eeg_inputs=eeg_inputs,
        n_bands=len(dataset.bands),
        n_times=None if free else dataset.n_times,
        sfreq=None if free else dataset.sfreq,
        **overrides,
    )


def _for_inputs(data: WindowDataset, eeg_inputs: str) -> WindowDataset:
    """The windows as the student reads them: the virtual-site features for ``"sites"``;
    without the filtered windows when the student does not read them (less memory)."""
    if eeg_inputs == "sites":
        return data if data.eeg_ch_names == VIRTUAL_SITES else data.montage_free()
    return replace(data, eeg_raw=None) if eeg_inputs == "de" else data


def _majority(labels: NDArray, k: int) -> int:
    return int(np.bincount(labels, minlength=k).argmax()) if labels.size else 0


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively (for strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _check_trainable(train: WindowDataset, what: str) -> None:
    present = np.unique(train.labels)
    if present.size < 2:
        names = [train.class_names[i] for i in present]
        raise ConfigError(
            f"the {what} windows hold only the class(es) {names}: training needs at least two "
            f"classes of the {train.label_scheme!r} scheme (check the ratings, or choose another "
            "--labels scheme)"
        )


def _baselines(train: WindowDataset) -> tuple[int, LogisticBaseline | None]:
    maj = _majority(train.labels, train.n_classes)
    logistic = None
    if len(train) >= 2 and np.unique(train.labels).size >= 2:
        logistic = fit_logistic_baseline(train.eeg_de, train.labels, train.n_classes)
    return maj, logistic


def _calibration_split(
    train: WindowDataset, unit: str, fraction: float, seed: int, say: Progress
) -> tuple[WindowDataset, WindowDataset]:
    """``train`` split into the windows to train on and held-out calibration windows (whole
    ``unit`` groups) that fit the fusion and the conformal sets; no calibration part when the
    training part would lose a class or ``fraction`` is 0."""
    cal = train.subset(np.zeros(len(train), bool))
    if fraction <= 0:
        return train, cal
    inner = split_dataset(train, unit=unit, val_fraction=fraction, seed=seed + 1)
    if len(inner.val) and np.unique(train.labels[inner.train]).size >= 2:
        say(
            f"calibration: {len(inner.val)} windows ({len(inner.val_groups)} {inner.unit}s) held "
            "out of training to fit the fusion and the conformal sets"
        )
        return train.subset(inner.train), train.subset(inner.val)
    return train, cal


def _fused_log_loss(model: AffectModel, data: WindowDataset) -> float:
    """Mean log-loss of the fused probabilities on labelled windows."""
    probs = predict(model, data.batch()).probs.double().clamp_min(1e-12)
    return float(torch.nn.functional.nll_loss(probs.log(), torch.as_tensor(data.labels)))


def _fit_fusion(model: AffectModel, cal: WindowDataset, say: Progress) -> dict[str, Any]:
    if not len(cal):
        return {}
    fusion = fit_fusion(model, cal.batch(), cal.labels, groups=cal.trial_keys)
    if fusion.get("n"):
        say(
            f"fusion fitted on {fusion['n']} held-out windows ({fusion['n_groups']} trials): "
            f"{fusion['choice']}, face x{fusion['w_face']:.2f}, EEG x{fusion['w_eeg']:.2f} "
            f"(log-loss {fusion['nll_before']:.3f} -> {fusion['nll_after']:.3f})"
        )
    return fusion


def train_model(
    dataset: WindowDataset,
    settings: TrainSettings | None = None,
    *,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a model on a dataset with a held-out validation split, and score it.

    Parameters
    ----------
    dataset : WindowDataset
        Labelled windows (see :func:`~bci_affect.training.dataset.build_dataset`).
    settings : TrainSettings
    progress : callable, optional
        Called with one line of text per step and per epoch.

    Returns
    -------
    TrainResult
    """
    settings = settings or TrainSettings()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    data = _for_inputs(dataset, settings.eeg_inputs)
    split = split_dataset(
        data, unit=settings.split, val_fraction=settings.val_fraction, seed=settings.seed
    )
    train, val = data.subset(split.train), data.subset(split.val)
    _check_trainable(train, "training")
    say(
        f"split by {split.unit}: {len(train)} training windows ({len(split.train_groups)} "
        f"{split.unit}s), {len(val)} validation windows ({len(split.val_groups)} {split.unit}s)"
    )
    train, cal = _calibration_split(
        train, settings.split, settings.calibration_fraction, settings.seed, say
    )
    torch.manual_seed(settings.seed)
    config = model_config_for(data, settings.eeg_inputs, **dict(settings.model_overrides))
    model = AffectModel.from_config(config)
    train_cfg = replace(settings.train, seed=settings.seed)
    say(f"training on {len(train)} windows, {train_cfg.epochs} epochs")
    history = fit(
        model,
        train.batch(),
        train.labels,
        train_cfg,
        on_epoch=_epoch_reporter(progress),
        select_on=(cal.batch(), cal.labels) if len(cal) else None,
    )
    kept = "" if history.best_epoch is None else f"; kept epoch {history.best_epoch + 1}"
    say(f"trained in {history.seconds:.1f} s on {history.device}{kept}")
    fusion = _fit_fusion(model, cal, say)
    conf_set = cal if len(cal) else val
    if len(conf_set) and settings.conformal_coverage is not None:
        fit_conformal(
            model, conf_set.batch(), conf_set.labels, coverage=settings.conformal_coverage
        )
    maj, logistic = _baselines(train)
    kw = {
        "majority_class": maj,
        "logistic": logistic,
        "emg_clean_threshold": settings.emg_clean_threshold,
    }
    metrics = {"train": score_dataset(model, train, **kw)}
    if len(val):
        metrics["val"] = score_dataset(model, val, **kw)
    return TrainResult(
        model, split, _finite(metrics), history, time.perf_counter() - t0, _finite(fusion)
    )


def finetune_model(
    model: AffectModel,
    dataset: WindowDataset,
    settings: FinetuneSettings | None = None,
    *,
    progress: Progress | None = None,
) -> TrainResult:
    """Personalise a trained model on a calibration session (hundreds of labels, seconds).

    The windows are split by trial (:class:`FinetuneSettings`); the model is scored on the
    validation trials before and after fine-tuning on the training trials, and the baselines
    are fitted on the same training trials. The given model is not modified.

    Parameters
    ----------
    model : AffectModel
        The starting point (e.g. the bundled default model); its channels, rate and classes
        must match the dataset.
    dataset : WindowDataset
        The calibration session(s).
    settings : FinetuneSettings
    progress : callable, optional

    Returns
    -------
    TrainResult
        A fine-tuned copy; ``metrics`` has ``train``, ``val`` and ``val_before``
        (``train_before`` too).
    """
    from bci_affect.models.checkpoint import check_compatible

    settings = settings or FinetuneSettings()
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    cfg = model.config
    check_compatible(
        cfg,
        eeg_ch_names=dataset.eeg_ch_names,
        face_ch_names=dataset.face_ch_names or None,
        sfreq=dataset.sfreq,
        n_times=dataset.n_times,
        label_scheme=dataset.label_scheme,
        source="the starting model",
    )
    data = _for_inputs(dataset, cfg.eeg_inputs)
    split = split_dataset(
        data, unit=settings.split, val_fraction=settings.val_fraction, seed=settings.seed
    )
    train, val = data.subset(split.train), data.subset(split.val)
    _check_trainable(train, "calibration")
    fit_part, cal = _calibration_split(
        train, settings.split, settings.calibration_fraction, settings.seed, say
    )
    tuned = copy.deepcopy(model).cpu()
    tuned.conformal = None
    maj, logistic = _baselines(train)
    kw = {
        "majority_class": maj,
        "logistic": logistic,
        "emg_clean_threshold": settings.emg_clean_threshold,
    }
    metrics: dict[str, Any] = {"train_before": score_dataset(model, train, **kw)}
    if len(val):
        metrics["val_before"] = score_dataset(model, val, **kw)
    if settings.refit_eeg_stats:  # the training trials' EEG only: validation stays unseen
        seen = fit_part.batch()
        tuned.student.fit_input_stats(seen.eeg_de, seen.eeg_raw)
    say(
        f"fine-tuning on {len(fit_part)} windows ({len(split.train_groups)} {split.unit}s "
        f"less the calibration part), {len(val)} held out ({len(split.val_groups)} {split.unit}s)"
    )
    train_cfg = replace(settings.train, seed=settings.seed)
    history = finetune(
        tuned, fit_part.batch(), fit_part.labels, train_cfg, on_epoch=_epoch_reporter(progress)
    )
    say(f"fine-tuned in {history.seconds:.1f} s")
    fusion = _fit_fusion(tuned, cal, say)
    if len(cal):  # never a worse model: the calibration trials judge, out of sample
        nll_start = _fused_log_loss(model, cal)
        nll_tuned = fusion["nll_after"] if fusion.get("n") else _fused_log_loss(tuned, cal)
        fusion["cal_log_loss_start"], fusion["cal_log_loss_tuned"] = nll_start, nll_tuned
        if nll_tuned > nll_start + settings.tolerance:
            say(
                f"kept the starting model: on {len(cal)} held-out calibration windows the "
                f"fine-tuned one is worse (log-loss {nll_tuned:.3f} vs {nll_start:.3f})"
            )
            tuned, fusion["kept"] = copy.deepcopy(model).cpu(), "start"
        else:
            fusion["kept"] = "tuned"
    conf_set = cal if len(cal) else val
    if len(conf_set) and settings.conformal_coverage is not None:
        fit_conformal(
            tuned, conf_set.batch(), conf_set.labels, coverage=settings.conformal_coverage
        )
    metrics["train"] = score_dataset(tuned, train, **kw)
    if len(val):
        metrics["val"] = score_dataset(tuned, val, **kw)
    return TrainResult(
        tuned, split, _finite(metrics), history, time.perf_counter() - t0, _finite(fusion)
    )
