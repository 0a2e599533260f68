"""The benchmark: every table of the evaluation, on trial-level folds, with baselines and chance.

:func:`run_benchmark` trains, on each fold of the protocol (:mod:`.protocols`) and each seed,
the models the requested tables need, scores the held-out trials, and summarises each score as
mean ± sd over subjects (each subject's test windows pooled over its folds; with several seeds
a subject's scores are first averaged over seeds) and over all test windows pooled.

Tables (:data:`TABLES`):

- ``main``: the face-teacher / EEG-student model (fused output, and each of its heads), the
  teacher trained on the face only, the EEG student trained alone, logistic regression on the
  band features, the majority class and chance: accuracy, macro-F1, ECE before and after
  temperature scaling, NLL, conformal coverage and mean set size, AUROC of the uncertainty for
  errors;
- ``ablation``: the loss terms L_sim, L_unc, L_kd alone and in combination (the task loss is
  always on);
- ``active-learning``: accuracy at fractions of the label budget (the training trials'
  windows) for the query policies :data:`POLICIES`;
- ``label-noise``: a fraction of the training trials relabelled with a wrong class;
- ``missing-face``: the face taken away in a fraction of the test windows;
- ``corrupted-eeg``: the EEG of a fraction of the test windows replaced by the same windows cut
  from sessions with broadband noise added (:class:`~.data.CorruptionConfig`);
- ``muscle``: accuracy on EMG-clean test windows against all test windows;
- ``realism``: EEG-only accuracy on binary valence and arousal labels.

Calibration (temperature, conformal threshold) is always fitted on the calibration trials of
the fold and applied unchanged to the test windows, also when the test windows are degraded.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.evaluation.arms import (
    Calibrator,
    ModelSettings,
    affect_output,
    fit_logistic,
    logistic_probs,
    student_probs,
    train_affect,
    train_eeg_student,
)
from bci_affect.evaluation.data import EvalSet
from bci_affect.evaluation.metrics import (
    expected_calibration_error,
    negative_log_likelihood,
    prediction_metrics,
)
from bci_affect.evaluation.protocols import PROTOCOLS, Fold, make_folds
from bci_affect.training.train import chance_scores
from bci_affect.uncertainty.active import acquisition_scores, random_scores, select_batch

logger = logging.getLogger(__name__)

__all__ = [
    "ABLATIONS",
    "POLICIES",
    "ROWS",
    "TABLES",
    "BenchmarkConfig",
    "consistency_scores",
    "flip_trial_labels",
    "policy_scores",
    "run_benchmark",
    "spread_query",
]

#: Tables :func:`run_benchmark` can make, in report order.
TABLES = (
    "main",
    "ablation",
    "active-learning",
    "label-noise",
    "missing-face",
    "corrupted-eeg",
    "muscle",
    "realism",
)

#: Tables that need the face-teacher / EEG-student model (recorded sessions with a face).
FACE_TABLES = ("ablation", "missing-face")

#: Active-learning query policies.
POLICIES = ("random", "entropy", "disagreement", "consistency")

#: Loss ablations: name -> LossConfig switches (the task loss is always on).
ABLATIONS: dict[str, dict[str, bool]] = {
    "task only": {"use_sim": False, "use_unc": False, "use_kd": False},
    "+ L_sim": {"use_unc": False, "use_kd": False},
    "+ L_unc": {"use_sim": False, "use_kd": False},
    "+ L_kd": {"use_sim": False, "use_unc": False},
    "+ L_sim + L_unc": {"use_kd": False},
    "+ L_sim + L_kd": {"use_unc": False},
    "+ L_unc + L_kd": {"use_sim": False},
    "full (all terms)": {},
}

#: Row key -> label of every classifier the tables may show.
ROWS = {
    "fused": "model: fused (face + EEG)",
    "teacher_head": "model: teacher head (face)",
    "student_head": "model: student head (EEG)",
    "student_via_teacher_head": "model: EEG via teacher head",
    "teacher_only": "teacher only (face)",
    "eeg_student": "EEG-only student",
    "logistic": "logistic regr. (band features)",
    "majority": "majority class",
    "chance": "chance (uniform guess)",
}

#: Rows that read the EEG, the face, or neither.
_EEG_ROWS = ("fused", "student_head", "student_via_teacher_head", "eeg_student", "logistic")
_MODEL_ROWS = ("fused", "teacher_head", "student_head", "student_via_teacher_head")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchmarkConfig:
    """What :func:`run_benchmark` runs.

    Parameters
    ----------
    protocol : {"within-subject", "cross-subject"}
    n_folds : int
        Folds per subject (within-subject) or subject folds (cross-subject).
    seeds : tuple of int
        One full run per seed (folds, initialisation, queries, corruptions).
    calib_fraction : float
        Fraction of each fold's training trials (subjects, cross-subject) held out for
        temperature scaling and the conformal predictor.
    coverage : float
        Target coverage of the conformal sets.
    tables : tuple of str
        Tables to make (see :data:`TABLES`).
    budgets : tuple of float
        Label budgets of the active-learning curves, fractions of the training windows.
    policies : tuple of str
        Active-learning policies (see :data:`POLICIES`).
    noise_levels, missing_levels, corrupt_levels : tuple of float
        Fractions of wrong training trials, of test windows without a face, of test windows
        with corrupted EEG.
    emg_clean_threshold : float
        EMG score below which a window counts as EMG-clean.
    ece_bins : int
        Bins of the expected calibration error.
    models : ModelSettings
        Optimisation of every network.
    """

    protocol: str = "within-subject"
    n_folds: int = 4
    seeds: tuple[int, ...] = (0,)
    calib_fraction: float = 0.25
    coverage: float = 0.9
    tables: tuple[str, ...] = TABLES
    budgets: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 1.0)
    policies: tuple[str, ...] = POLICIES
    noise_levels: tuple[float, ...] = (0.0, 0.2, 0.4)
    missing_levels: tuple[float, ...] = (0.0, 0.5, 1.0)
    corrupt_levels: tuple[float, ...] = (0.0, 0.5, 1.0)
    emg_clean_threshold: float = 0.3
    ece_bins: int = 10
    models: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown or not self.tables:
            raise ConfigError(f"unknown tables {unknown or '(none)'}; valid: {', '.join(TABLES)}")
        bad = [p for p in self.policies if p not in POLICIES]
        if bad or not self.policies:
            raise ConfigError(f"unknown policies {bad or '(none)'}; valid: {', '.join(POLICIES)}")
        if not self.seeds:
            raise ConfigError("give at least one seed")
        if not 0.0 < self.coverage < 1.0:
            raise ConfigError(f"coverage must be in (0, 1), got {self.coverage}")
        for name in ("budgets",):
            v = getattr(self, name)
            if not v or any(not (0.0 < b <= 1.0) for b in v) or list(v) != sorted(set(v)):
                raise ConfigError(f"{name} must be increasing fractions in (0, 1], got {v}")
        for name in ("noise_levels", "missing_levels", "corrupt_levels"):
            v = getattr(self, name)
            if any(not (0.0 <= b <= 1.0) for b in v):
                raise ConfigError(f"{name} must be fractions in [0, 1], got {v}")
        if self.n_folds < 2:
            raise ConfigError(f"n_folds must be >= 2, got {self.n_folds}")
        if not 0.0 < self.emg_clean_threshold <= 1.0:
            raise ConfigError(
                f"emg_clean_threshold must be in (0, 1], got {self.emg_clean_threshold}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Label noise, query policies
# --------------------------------------------------------------------------------------------


def flip_trial_labels(
    labels: NDArray[np.int64],
    trial_keys: NDArray,
    idx: NDArray[np.int64],
    fraction: float,
    n_classes: int,
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """Labels with ``round(fraction * n_trials)`` of the trials of ``idx`` given a wrong class.

    A self-report is per trial, so a wrong one mislabels every window of its trial. Each chosen
    trial gets a class drawn uniformly from the other classes.

    Returns
    -------
    ndarray of int64, shape like ``labels``
        A copy; windows outside ``idx`` keep their label.
    """
    out = np.array(labels, dtype=np.int64, copy=True)
    keys = np.asarray(trial_keys)[idx]
    uniq = np.unique(keys)
    n_flip = int(round(fraction * uniq.size))
    for key in rng.permutation(uniq)[:n_flip]:
        sel = idx[keys == key]
        true = out[sel[0]]
        wrong = int(rng.integers(n_classes - 1))
        out[sel] = wrong if wrong < true else wrong + 1
    return out


def _ranks01(x: NDArray) -> NDArray[np.float64]:
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, -np.inf)
    return rankdata(x) / max(x.size, 1)


def consistency_scores(output: Any) -> NDArray[np.float64]:
    """The consistency-guided acquisition score of each window, shape ``(N,)``.

    The three signals of consistency-guided cross-modal transfer, each turned into its rank
    percentile over the pool (the signals have unrelated scales) and averaged with equal
    weights: teacher–student disagreement (Jensen–Shannon divergence), the fused Dirichlet
    uncertainty, and the cross-modal unreliability of the EEG embedding (its mean similarity
    to the face embeddings of the other windows). Higher = query first.
    """
    parts = [
        acquisition_scores(output, m).detach().cpu().numpy()
        for m in ("disagreement", "uncertainty", "reliability")
    ]
    return np.mean([_ranks01(p) for p in parts], axis=0)


def policy_scores(policy: str, output: Any, n: int, seed: int) -> NDArray[np.float64]:
    """Acquisition scores of ``n`` pool windows for a policy (``output``: the model's output
    on the pool, ``None`` for the random policy)."""
    if policy == "random":
        return random_scores(n, seed).numpy().astype(np.float64)
    if policy == "consistency":
        return consistency_scores(output)
    if policy in ("entropy", "disagreement"):
        return acquisition_scores(output, policy).detach().cpu().double().numpy()
    raise ConfigError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}")


def spread_query(
    scores: NDArray, starts: NDArray, ends: NDArray, n: int, labelled: NDArray[np.bool_]
) -> NDArray[np.int64]:
    """Choose ``n`` unlabelled windows by score, spread in time.

    Passes of :func:`~bci_affect.uncertainty.active.select_batch` (best first, no two windows
    of one pass overlapping in time) until ``n`` are chosen or none is left.
    """
    chosen: list[int] = []
    excluded = np.asarray(labelled, dtype=bool).copy()
    while len(chosen) < n and not excluded.all():
        got = select_batch(scores, starts, ends, n - len(chosen), exclude=excluded)
        if got.size == 0:
            break
        chosen.extend(got.tolist())
        excluded[got] = True
    return np.asarray(chosen, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Prediction store
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Part:
    seed: int
    idx: NDArray[np.int64]
    raw: NDArray[np.float64]
    cal: NDArray[np.float64]
    unc: NDArray[np.float64] | None
    sets: NDArray[np.bool_] | None


class _Store:
    """Test-window predictions by (table, variant, row)."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str, str], list[_Part]] = defaultdict(list)

    def add(
        self,
        key: tuple[str, str, str],
        seed: int,
        idx: NDArray[np.int64],
        raw: NDArray,
        cal: NDArray | None = None,
        unc: NDArray | None = None,
        sets: NDArray | None = None,
    ) -> None:
        raw = np.asarray(raw, dtype=np.float64)
        self.parts[key].append(
            _Part(
                seed,
                np.asarray(idx, dtype=np.int64),
                raw,
                raw if cal is None else np.asarray(cal, dtype=np.float64),
                None if unc is None else np.asarray(unc, dtype=np.float64),
                sets,
            )
        )

    def keys(self, table: str) -> list[tuple[str, str, str]]:
        return [k for k in self.parts if k[0] == table]


def _cat(parts: list[_Part], attr: str) -> NDArray | None:
    vals = [getattr(p, attr) for p in parts]
    if any(v is None for v in vals):
        return None
    return np.concatenate(vals)


def _metrics_of(
    parts: list[_Part], es: EvalSet, labels: NDArray, bins: int, mask_fn: Any = None
) -> dict[str, float]:
    idx = _cat(parts, "idx")
    y = labels[idx]
    raw, cal = _cat(parts, "raw"), _cat(parts, "cal")
    unc, sets = _cat(parts, "unc"), _cat(parts, "sets")
    if mask_fn is not None:
        m = mask_fn(idx)
        idx, y, raw, cal = idx[m], y[m], raw[m], cal[m]
        unc = None if unc is None else unc[m]
        sets = None if sets is None else sets[m]
    out = prediction_metrics(cal, y, uncertainty=unc, sets=sets, n_bins=bins)
    out["ece_raw"] = expected_calibration_error(raw, y, bins)
    out["nll_raw"] = negative_log_likelihood(raw, y)
    return out


def _chance_metrics(y: NDArray, k: int) -> dict[str, float]:
    cs = chance_scores(y, k, np.zeros(y.size))
    return {
        "n": int(y.size),
        "accuracy": cs["accuracy"],
        "macro_f1": cs["macro_f1"],
        "ece": 0.0,
        "ece_raw": 0.0,
        "nll": math.log(k),
        "nll_raw": math.log(k),
        "auroc_error": 0.5,
        "auroc_error_maxp": 0.5,
    }


def _mean_sd(per_subject: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    names = sorted({m for d in per_subject.values() for m in d})
    mean, sd = {}, {}
    for m in names:
        v = np.array([d.get(m, np.nan) for d in per_subject.values()], dtype=np.float64)
        v = v[np.isfinite(v)]
        mean[m] = float(v.mean()) if v.size else float("nan")
        sd[m] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return mean, sd


def _summarise(
    parts: list[_Part],
    es: EvalSet,
    labels: NDArray,
    bins: int,
    *,
    chance: bool = False,
    mask_fn: Any = None,
) -> dict[str, Any]:
    """Per-subject scores (pooled over folds, averaged over seeds), their mean ± sd, and the
    scores of all test windows pooled (averaged over seeds)."""
    by_seed: dict[int, list[_Part]] = defaultdict(list)
    for p in parts:
        by_seed[p.seed].append(p)
    subj = es.subject
    per_subject: dict[str, list[dict[str, float]]] = defaultdict(list)
    pooled: list[dict[str, float]] = []
    k = es.n_classes

    def score(ps: list[_Part], sel: Any) -> dict[str, float]:
        if chance:
            idx = _cat(ps, "idx")
            m = sel(idx)
            if mask_fn is not None:
                m &= mask_fn(idx)
            return _chance_metrics(labels[idx[m]], k)
        both = (lambda i: sel(i) & mask_fn(i)) if mask_fn is not None else sel
        return _metrics_of(ps, es, labels, bins, both)

    for seed_parts in by_seed.values():
        idx_all = _cat(seed_parts, "idx")
        for s in np.unique(subj[idx_all]):
            m = score(seed_parts, lambda i, s=s: subj[i] == s)
            if m["n"]:
                per_subject[str(s)].append(m)
        pooled.append(score(seed_parts, lambda i: np.ones(i.size, bool)))
    avg = {s: _avg_dicts(v) for s, v in per_subject.items()}
    mean, sd = _mean_sd(avg)
    return {
        "mean": mean,
        "sd": sd,
        "pooled": _avg_dicts(pooled),
        "n_subjects": len(avg),
        "per_subject": {s: {"accuracy": d["accuracy"], "n": d["n"]} for s, d in avg.items()},
    }


def _avg_dicts(ds: Sequence[dict[str, float]]) -> dict[str, float]:
    if not ds:
        return {}
    out = {}
    for key in ds[0]:
        v = np.array([d.get(key, np.nan) for d in ds], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[key] = float(v.mean()) if v.size else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# One fold
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Ctx:
    es: EvalSet
    cfg: BenchmarkConfig
    store: _Store
    seconds: dict[str, float]
    say: Progress

    @property
    def face(self) -> bool:
        return self.es.has_face and self.es.label_scheme is not None

    def timed(self, table: str, t0: float) -> None:
        self.seconds[table] = self.seconds.get(table, 0.0) + time.perf_counter() - t0


def _majority_probs(y_train: NDArray, k: int) -> NDArray[np.float64]:
    counts = np.bincount(y_train, minlength=k).astype(np.float64)
    p = counts + 1e-3  # never exactly 0: NLL stays finite
    return p / p.sum()


def _row_probs_affect(out: Any) -> dict[str, tuple[NDArray, NDArray | None]]:
    import torch

    return {
        "fused": (out.probs.double().numpy(), out.uncertainty.double().numpy()),
        "teacher_head": (out.teacher_probs.double().numpy(), None),
        "student_head": (out.student_probs.double().numpy(), None),
        "student_via_teacher_head": (
            torch.softmax(out.injected_logits, dim=-1).double().numpy(),
            None,
        ),
    }


class _Fitted:
    """The baselines and models of one fold, each row with its calibrator."""

    def __init__(self) -> None:
        self.affect: Any = None  # full AffectModel
        self.face_only: Any = None
        self.student: Any = None
        self.logistic: Any = None
        self.prior: NDArray | None = None
        self.calibrators: dict[str, Calibrator] = {}


def _fit_baselines(ctx: _Ctx, idx: NDArray, labels: NDArray, seed: int, fitted: _Fitted) -> None:
    es, k = ctx.es, ctx.es.n_classes
    fitted.prior = _majority_probs(labels[idx], k)
    if np.unique(labels[idx]).size >= 2:
        fitted.logistic = fit_logistic(es.eeg_de[idx], labels[idx], k)
    fitted.student = train_eeg_student(
        es.eeg_de[idx], labels[idx], k, ctx.cfg.models, seed=seed, ch_names=None
    )


def _predict_rows(
    ctx: _Ctx,
    fitted: _Fitted,
    idx: NDArray,
    *,
    face_missing: NDArray | None = None,
    eeg_corrupted: NDArray | None = None,
) -> dict[str, tuple[NDArray, NDArray | None]]:
    """Raw probabilities (and native uncertainty) of every fitted row on windows ``idx``."""
    es = ctx.es
    de = es.eeg_de[idx]
    if eeg_corrupted is not None and eeg_corrupted.any():
        de = de.copy()
        de[eeg_corrupted] = es.corrupt_eeg_de[idx[eeg_corrupted]]
    rows: dict[str, tuple[NDArray, NDArray | None]] = {}
    if fitted.affect is not None:
        out = affect_output(
            fitted.affect, es, idx, face_missing=face_missing, eeg_corrupted=eeg_corrupted
        )
        rows.update(_row_probs_affect(out))
    if fitted.face_only is not None:
        out = affect_output(fitted.face_only, es, idx, eeg=False, face_missing=face_missing)
        rows["teacher_only"] = (out.teacher_probs.double().numpy(), None)
    if fitted.student is not None:
        rows["eeg_student"] = (student_probs(fitted.student, de), None)
    if fitted.logistic is not None:
        rows["logistic"] = (logistic_probs(fitted.logistic, de), None)
    if fitted.prior is not None:
        rows["majority"] = (np.tile(fitted.prior, (idx.size, 1)), None)
    return rows


def _calibrate_and_store(
    ctx: _Ctx,
    fitted: _Fitted,
    table: str,
    variant: str,
    fold: Fold,
    labels_cal: NDArray,
    seed: int,
    rows: dict[str, tuple[NDArray, NDArray | None]],
) -> None:
    """Fit each row's calibrator on the calibration windows (the first ``fold.calib.size``
    rows of ``rows``), store its test predictions, and keep the calibrators."""
    nc = fold.calib.size
    for name, (p, u) in rows.items():
        cal = Calibrator.fit(
            p[:nc], labels_cal, coverage=ctx.cfg.coverage, settings=ctx.cfg.models, seed=seed
        )
        fitted.calibrators[name] = cal
        pc, sets = cal.apply(p[nc:])
        ctx.store.add(
            (table, variant, name), seed, fold.test, p[nc:], pc, None if u is None else u[nc:], sets
        )
    ctx.store.add((table, variant, "chance"), seed, fold.test, _uniform(fold.test.size, ctx))


def _uniform(n: int, ctx: _Ctx) -> NDArray:
    k = ctx.es.n_classes
    return np.full((n, k), 1.0 / k)


def _store_test(
    ctx: _Ctx,
    fitted: _Fitted,
    table: str,
    variant: str,
    fold: Fold,
    seed: int,
    rows: dict[str, tuple[NDArray, NDArray | None]],
) -> None:
    """Store test predictions calibrated with the rows' clean calibrators."""
    for name, (p, u) in rows.items():
        pc, sets = fitted.calibrators[name].apply(p)
        ctx.store.add((table, variant, name), seed, fold.test, p, pc, u, sets)
    ctx.store.add((table, variant, "chance"), seed, fold.test, _uniform(fold.test.size, ctx))


def _level_name(x: float) -> str:
    return f"{100 * x:.0f} %"


def _fraction_mask(n: int, fraction: float, rng: np.random.Generator) -> NDArray[np.bool_]:
    m = np.zeros(n, bool)
    m[rng.permutation(n)[: int(round(fraction * n))]] = True
    return m


def _run_fold(ctx: _Ctx, fold: Fold, fold_no: int, seed: int) -> None:
    es, cfg = ctx.es, ctx.cfg
    y = es.labels
    tables = set(cfg.tables)
    ct = np.concatenate([fold.calib, fold.test])
    fseed = seed * 10007 + fold_no
    need_main = bool(tables & {"main", "label-noise", "missing-face", "corrupted-eeg", "muscle"})
    fitted = _Fitted()
    if not need_main and "ablation" in tables and ctx.face:  # the ablation's full model only
        t0 = time.perf_counter()
        fitted.affect = train_affect(
            es, fold.train, y[fold.train], cfg.models, seed=fseed, calib=fold.calib
        )
        ctx.timed("ablation", t0)
    if need_main:
        t0 = time.perf_counter()
        _fit_baselines(ctx, fold.train, y, fseed, fitted)
        if ctx.face:
            fitted.affect = train_affect(
                es, fold.train, y[fold.train], cfg.models, seed=fseed, calib=fold.calib
            )
            fitted.face_only = train_affect(
                es, fold.train, y[fold.train], cfg.models, seed=fseed, eeg=False, calib=fold.calib
            )
        rows = _predict_rows(ctx, fitted, ct)
        _calibrate_and_store(ctx, fitted, "main", "", fold, y[fold.calib], seed, rows)
        ctx.timed("main", t0)

    if "ablation" in tables and ctx.face:
        t0 = time.perf_counter()
        for name, switches in ABLATIONS.items():
            if not switches:
                model = fitted.affect
            else:
                model = train_affect(
                    es,
                    fold.train,
                    y[fold.train],
                    cfg.models,
                    seed=fseed,
                    calib=fold.calib,
                    **switches,
                )
            rows = _row_probs_affect(affect_output(model, es, ct))
            _calibrate_and_store(ctx, _Fitted(), "ablation", name, fold, y[fold.calib], seed, rows)
        ctx.timed("ablation", t0)

    if "missing-face" in tables and ctx.face:
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, fold_no, 101])
        for level in cfg.missing_levels:
            m = _fraction_mask(fold.test.size, level, rng)
            rows = _predict_rows(ctx, fitted, fold.test, face_missing=m)
            _store_test(ctx, fitted, "missing-face", _level_name(level), fold, seed, rows)
        ctx.timed("missing-face", t0)

    if "corrupted-eeg" in tables and es.has_corrupted:
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, fold_no, 202])
        for level in cfg.corrupt_levels:
            m = _fraction_mask(fold.test.size, level, rng)
            rows = _predict_rows(ctx, fitted, fold.test, eeg_corrupted=m)
            _store_test(ctx, fitted, "corrupted-eeg", _level_name(level), fold, seed, rows)
        ctx.timed("corrupted-eeg", t0)

    if "label-noise" in tables:
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, fold_no, 303])
        keys = es.trial_keys
        for level in cfg.noise_levels:
            if level == 0:  # the main table's models
                continue
            y_noisy = flip_trial_labels(y, keys, fold.pool, level, es.n_classes, rng)
            noisy = _Fitted()
            _fit_baselines(ctx, fold.train, y_noisy, fseed, noisy)
            if ctx.face:
                noisy.affect = train_affect(
                    es, fold.train, y_noisy[fold.train], cfg.models, seed=fseed, calib=fold.calib
                )
            rows = _predict_rows(ctx, noisy, ct)
            _calibrate_and_store(
                ctx, noisy, "label-noise", _level_name(level), fold, y_noisy[fold.calib], seed, rows
            )
        ctx.timed("label-noise", t0)

    if "active-learning" in tables:
        t0 = time.perf_counter()
        _active_learning(ctx, fold, fold_no, seed, fseed)
        ctx.timed("active-learning", t0)


def _active_learning(ctx: _Ctx, fold: Fold, fold_no: int, seed: int, fseed: int) -> None:
    """Learning curves. At each budget the model is trained from scratch on the whole pool:
    the windows chosen so far labelled, the others unlabelled (-1; the face-teacher model still
    learns InfoNCE and distillation from them). The windows to add are chosen with the model
    of the previous budget; the first ones with a model trained without any label (the face
    teacher's prior distilled into the student)."""
    es, cfg = ctx.es, ctx.cfg
    pool, test = fold.pool, fold.test
    y_pool = es.labels[pool]
    starts, ends = (a[pool] for a in es.spread_times())
    targets = [max(1, int(round(b * pool.size))) for b in cfg.budgets]
    arms = ["model", "eeg_only"] if ctx.face else ["eeg_only"]
    for arm in arms:
        policies = [p for p in cfg.policies if arm == "model" or p in ("random", "entropy")]
        if not policies:
            continue
        if cfg.budgets[-1] >= 1.0:
            _al_train_and_store(ctx, arm, f"{arm}|full", pool, y_pool, test, seed, fseed)
        start = None
        if arm == "model" and any(p != "random" for p in policies):
            m0 = train_affect(es, pool, np.full(pool.size, -1), cfg.models, seed=fseed)
            start = affect_output(m0, es, pool)
        for policy in policies:
            labelled = np.zeros(pool.size, bool)
            current = start
            for b, n_target in zip(cfg.budgets, targets, strict=True):
                if b >= 1.0:
                    continue
                n_new = n_target - int(labelled.sum())
                if n_new > 0:
                    qseed = fseed + 31 * n_target
                    if policy == "random":
                        scores = policy_scores("random", None, pool.size, qseed)
                    elif arm == "model":
                        scores = policy_scores(policy, current, pool.size, qseed)
                    elif current is None:  # no label yet: entropy of nothing is a coin toss
                        scores = policy_scores("random", None, pool.size, qseed)
                    else:
                        p = student_probs(current, es.eeg_de[pool])
                        scores = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1)
                    chosen = spread_query(scores, starts, ends, n_new, labelled)
                    labelled[chosen] = True
                y_lab = np.where(labelled, y_pool, -1)
                trained = _al_train_and_store(
                    ctx, arm, f"{arm}|{policy}|{b:g}", pool, y_lab, test, seed, fseed
                )
                current = affect_output(trained, es, pool) if arm == "model" else trained


def _al_train_and_store(
    ctx: _Ctx,
    arm: str,
    variant: str,
    pool: NDArray,
    y_lab: NDArray,
    test: NDArray,
    seed: int,
    fseed: int,
) -> Any:
    es, cfg = ctx.es, ctx.cfg
    if arm == "model":
        model = train_affect(es, pool, y_lab, cfg.models, seed=fseed)
        rows = _row_probs_affect(affect_output(model, es, test))
        for name in ("fused", "student_head", "student_via_teacher_head", "teacher_head"):
            p, u = rows[name]
            ctx.store.add(("active-learning", variant, name), seed, test, p, p, u)
        return model
    lab = y_lab >= 0
    student = train_eeg_student(
        es.eeg_de[pool][lab], y_lab[lab], es.n_classes, cfg.models, seed=fseed
    )
    p = student_probs(student, es.eeg_de[test])
    ctx.store.add(("active-learning", variant, "eeg_student"), seed, test, p, p)
    return student


# --------------------------------------------------------------------------------------------
# Realism: EEG-only accuracy on binary labels
# --------------------------------------------------------------------------------------------


def _realism(ctx: _Ctx, store: _Store) -> dict[str, Any]:
    es, cfg = ctx.es, ctx.cfg
    out: dict[str, Any] = {}
    for scheme in ("valence", "arousal"):
        sub = es.relabel(scheme)
        if np.unique(sub.labels).size < 2:
            continue
        sub_store = _Store()
        for seed in cfg.seeds:
            folds = make_folds(
                cfg.protocol,
                sub.subject,
                sub.trial,
                sub.labels,
                n_folds=cfg.n_folds,
                calib_fraction=0.0,
                seed=seed,
            )
            for i, fold in enumerate(folds):
                fseed = seed * 10007 + i
                tr, te = fold.train, fold.test
                k = sub.n_classes
                prior = _majority_probs(sub.labels[tr], k)
                sub_store.add(("r", "", "majority"), seed, te, np.tile(prior, (te.size, 1)))
                sub_store.add(("r", "", "chance"), seed, te, np.full((te.size, k), 1.0 / k))
                if np.unique(sub.labels[tr]).size >= 2:
                    lg = fit_logistic(sub.eeg_de[tr], sub.labels[tr], k)
                    sub_store.add(
                        ("r", "", "logistic"), seed, te, logistic_probs(lg, sub.eeg_de[te])
                    )
                st = train_eeg_student(sub.eeg_de[tr], sub.labels[tr], k, cfg.models, seed=fseed)
                sub_store.add(("r", "", "eeg_student"), seed, te, student_probs(st, sub.eeg_de[te]))
        rows = {}
        for key, parts in sub_store.parts.items():
            summ = _summarise(parts, sub, sub.labels, cfg.ece_bins, chance=key[2] == "chance")
            accs = [d["accuracy"] for d in summ["per_subject"].values()]
            summ["range"] = [float(np.min(accs)), float(np.max(accs))] if accs else None
            rows[key[2]] = summ
        out[scheme] = {"class_names": list(sub.class_names), "rows": _ordered(rows)}
    return out


def _ordered(rows: dict[str, Any]) -> dict[str, Any]:
    return {k: rows[k] for k in ROWS if k in rows}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run_benchmark(
    es: EvalSet, config: BenchmarkConfig | None = None, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the requested tables on a set of labelled windows.

    Parameters
    ----------
    es : EvalSet
        The windows (recorded sessions or a feature table).
    config : BenchmarkConfig
    progress : callable, optional
        Called with one line of text per fold.

    Returns
    -------
    dict
        JSON-able: ``config``, ``data`` (what was scored), ``folds`` (per seed), ``seconds``
        (per table), ``tables`` (each table's rows: ``mean``/``sd`` over subjects and
        ``pooled`` scores), ``skipped`` (tables that could not run, and why).
    """
    cfg = config or BenchmarkConfig()
    say = progress or (lambda _m: None)
    t_start = time.perf_counter()
    store = _Store()
    ctx = _Ctx(es, cfg, store, {}, say)
    skipped: dict[str, str] = {}
    for t in cfg.tables:
        if t in FACE_TABLES and not ctx.face:
            skipped[t] = (
                "needs the face-teacher / EEG-student model: recorded sessions with a "
                "FaceFeatures stream"
            )
        if t == "corrupted-eeg" and not es.has_corrupted:
            skipped[t] = "needs recorded sessions (the EEG is corrupted before the filters)"
        if t == "muscle" and es.emg_score is None:
            skipped[t] = "needs the EMG score of each window (recorded sessions)"
        if t == "realism" and (es.valence is None or es.arousal is None):
            skipped[t] = "needs the 1-9 ratings (recorded sessions)"
    if len(np.unique(es.labels)) < 2:
        raise ConfigError(
            f"the windows hold a single class ({es.class_names[int(es.labels[0])]}); a "
            "benchmark needs at least two"
        )
    folds_info = {}
    for seed in cfg.seeds:
        folds = make_folds(
            cfg.protocol,
            es.subject,
            es.trial,
            es.labels,
            n_folds=cfg.n_folds,
            calib_fraction=cfg.calib_fraction,
            seed=seed,
        )
        folds_info[str(seed)] = [
            {
                "name": f.name,
                "n_train": int(f.train.size),
                "n_calib": int(f.calib.size),
                "n_test": int(f.test.size),
                "test_subjects": list(f.test_subjects),
            }
            for f in folds
        ]
        for i, fold in enumerate(folds):
            t0 = time.perf_counter()
            if np.unique(es.labels[fold.train]).size < 2:
                logger.warning("%s: one class in the training windows; fold left out", fold.name)
                continue
            _run_fold(ctx, fold, i, seed)
            say(
                f"seed {seed} {fold.name} ({i + 1}/{len(folds)}): {fold.train.size} train, "
                f"{fold.calib.size} calib, {fold.test.size} test windows "
                f"({time.perf_counter() - t0:.1f} s)"
            )
    tables: dict[str, Any] = {}
    bins = cfg.ece_bins
    y = es.labels

    def variants(table: str, order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = defaultdict(dict)
        for key in store.keys(table):
            out[key[1]][key[2]] = _summarise(
                store.parts[key], es, y, bins, chance=key[2] == "chance"
            )
        names = [v for v in order if v in out] + [v for v in out if v not in order]
        return {v: _ordered(out[v]) for v in names}

    if "main" in cfg.tables:
        tables["main"] = {"rows": variants("main").get("", {})}
    levels = {
        "ablation": list(ABLATIONS),
        "label-noise": [_level_name(x) for x in cfg.noise_levels],
        "missing-face": [_level_name(x) for x in cfg.missing_levels],
        "corrupted-eeg": [_level_name(x) for x in cfg.corrupt_levels],
    }
    for name in ("ablation", "label-noise", "missing-face", "corrupted-eeg"):
        if name in cfg.tables and name not in skipped:
            tables[name] = {"variants": variants(name, levels[name])}
    if "label-noise" in tables and 0.0 in cfg.noise_levels:
        noisy = tables["label-noise"]["variants"]
        keep = {r for v in noisy.values() for r in v} or set(ROWS)
        main_rows = variants("main").get("", {})
        zero = {r: main_rows[r] for r in main_rows if r in keep}
        tables["label-noise"]["variants"] = {
            v: (zero if v == _level_name(0.0) else noisy[v])
            for v in levels["label-noise"]
            if v == _level_name(0.0) or v in noisy
        }
    if "corrupted-eeg" in tables:
        tables["corrupted-eeg"]["window_scores"] = _corruption_scores(es)
    if "active-learning" in cfg.tables:
        tables["active-learning"] = _al_table(store, es, cfg)
    if "muscle" in cfg.tables and "muscle" not in skipped:
        tables["muscle"] = _muscle_table(store, es, cfg)
    if "realism" in cfg.tables and "realism" not in skipped:
        t0 = time.perf_counter()
        tables["realism"] = _realism(ctx, store)
        ctx.timed("realism", t0)
    return {
        "config": cfg.to_dict(),
        "data": {**es.summary(), **(es.info or {})},
        "folds": folds_info,
        "seconds": {k: round(v, 1) for k, v in ctx.seconds.items()},
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "tables": tables,
        "skipped": skipped,
        "row_labels": ROWS,
    }


def _al_table(store: _Store, es: EvalSet, cfg: BenchmarkConfig) -> dict[str, Any]:
    """``arms[arm][policy][budget][row]``; the full budget (every window labelled) is one
    model per fold, shared by every policy."""
    arms: dict[str, Any] = {}
    full: dict[str, dict[str, Any]] = {}
    for key in store.keys("active-learning"):
        parts = key[1].split("|")
        summ = _summarise(store.parts[key], es, es.labels, cfg.ece_bins)
        if len(parts) == 2:
            full.setdefault(parts[0], {})[key[2]] = summ
            continue
        arm, policy, budget = parts
        arms.setdefault(arm, {}).setdefault(policy, {}).setdefault(budget, {})[key[2]] = summ
    for arm, policies in arms.items():
        for per_budget in policies.values():
            if arm in full:
                per_budget["1"] = full[arm]
    return {"budgets": [f"{b:g}" for b in cfg.budgets], "arms": arms}


def _muscle_table(store: _Store, es: EvalSet, cfg: BenchmarkConfig) -> dict[str, Any]:
    emg = es.emg_score.astype(np.float64)
    clean = np.isfinite(emg) & (emg < cfg.emg_clean_threshold)
    rows: dict[str, Any] = {}
    for key in store.keys("main"):
        name = key[2]
        parts = store.parts[key]
        entry = {}
        for part_name, fn in (
            ("all", None),
            ("clean", lambda i: clean[i]),
            ("contaminated", lambda i: ~clean[i]),
        ):
            entry[part_name] = _summarise(
                parts, es, es.labels, cfg.ece_bins, chance=name == "chance", mask_fn=fn
            )
        rows[name] = entry
    idx = np.unique(np.concatenate([p.idx for p in store.parts.get(("main", "", "chance"), [])]))
    share = float(clean[idx].mean()) if idx.size else float("nan")
    return {"threshold": cfg.emg_clean_threshold, "share_clean": share, "rows": _ordered(rows)}


def _corruption_scores(es: EvalSet) -> dict[str, float]:
    """Mean EEG quality and EMG score of the windows, clean and corrupted."""

    def m(x: NDArray | None) -> float:
        return float(np.nanmean(x)) if x is not None and x.size else float("nan")

    return {
        "quality_clean": m(es.eeg_quality),
        "quality_corrupted": m(es.corrupt_eeg_quality),
        "emg_clean": m(es.emg_score),
        "emg_corrupted": m(es.corrupt_emg_score),
    }
