"""Personalisation: fine-tune a subject's model on the labels of their calibration answers.

A round (:func:`personalise_round`) loads the subject's current model version, fine-tunes the
EEG student and the teacher's task head (the face encoder stays fixed) on the windows of every
answered query of the subject, refits the conformal predictor, and writes the new version as a
checkpoint folder. :class:`Personaliser` runs rounds in a separate worker process, so the live
session's acquisition and inference never wait for training (the process has its own
interpreter lock, one CPU thread and a lower scheduling priority); the session then registers the version and switches the
engine to it.

Conformal refit: the calibration scores are the *prequential* ones: for every labelled window,
the probabilities the live model gave it before any update had trained on its answer (stored
with the query). They are out of sample, which split-conformal needs; training windows scored
by the new model would not be.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bci_affect.core.errors import ConfigError

__all__ = [
    "INPUT_KEYS",
    "Personaliser",
    "RoundSettings",
    "features_metadata",
    "labelled_data",
    "personalise_round",
    "stack_inputs",
]

#: Scheduling priority the worker lowers itself by (the live session keeps the CPU).
WORKER_NICENESS = 10

#: Keys of one window's model inputs (see :func:`bci_affect.training.inputs.window_arrays`).
INPUT_KEYS = ("face", "face_mask", "eeg_de", "eeg_raw", "emg_score", "eeg_quality")


@dataclass(frozen=True)
class RoundSettings:
    """One personalisation round's settings.

    Parameters
    ----------
    epochs : int
        Passes over the labelled windows.
    lr : float
        AdamW learning rate.
    coverage : float
        Target coverage of the refitted conformal sets.
    rating_threshold : float
        Ratings above it are "high" (see :func:`bci_affect.models.teacher.rating_to_label`).
    seed : int
    folds : int
        Cross-fitting folds of whole answers (the out-of-sample estimate).
    anchor_l2 : float
        Pull of the fine-tuned weights towards the starting version's.
    fusion_prior : float
        Pull of the refitted fusion towards the starting version's, in answers (see
        :func:`bci_affect.uncertainty.fusion.select_pool`).
    tolerance : float
        Log-loss (nats per window) by which a candidate may exceed the current version's, one
        standard error up (over the answers), and still be adopted (its mean accuracy must not
        be lower).
    kd_student : float
        Weight of the face teacher's soft labels on the session's unlabelled windows with a
        face, distilled into the EEG student (``LossConfig.lambda_kd_student``).
    face_stride : int
        Every ``face_stride``-th face frame of a window is used (the teacher pools the frames
        of a window; fewer frames make a round several times faster).
    min_random_answers : int
        Answers to queries asked at random moments (an unbiased sample of the session) needed
        before a candidate can be adopted, when some queries were chosen by score.
    """

    epochs: int = 10
    lr: float = 1e-3
    coverage: float = 0.9
    rating_threshold: float = 5.0
    seed: int = 0
    folds: int = 5
    anchor_l2: float = 0.1
    fusion_prior: float = 0.5
    tolerance: float = 0.02
    kd_student: float = 0.5
    face_stride: int = 4
    min_random_answers: int = 3


def stack_inputs(windows: list[dict[str, np.ndarray | None]]) -> dict[str, np.ndarray | None]:
    """Stack single-window inputs into batch arrays, padding face frames to the longest.

    Parameters
    ----------
    windows : list of dict
        One dict per window, keys :data:`INPUT_KEYS`: ``face`` (n_frames, n_face_chans),
        ``face_mask`` (n_frames,), ``eeg_de`` (n_chans, n_bands), ``eeg_raw``
        (n_chans, n_times) or None, ``emg_score`` and ``eeg_quality`` scalars (shape ()).

    Returns
    -------
    dict
        The same keys with a leading window axis; missing frames are NaN with a false mask.
    """
    if not windows:
        raise ConfigError("no windows to stack")
    n = len(windows)
    out: dict[str, np.ndarray | None] = {}
    faces = [w.get("face") for w in windows]
    with_face = [f for f in faces if f is not None]
    if with_face:
        n_frames = max(1, max(f.shape[0] for f in with_face))
        n_ch = with_face[0].shape[1]
        face = np.full((n, n_frames, n_ch), np.nan, dtype=np.float32)
        mask = np.zeros((n, n_frames), dtype=bool)
        for i, w in enumerate(windows):
            f = w.get("face")
            if f is None or f.shape[0] == 0:
                continue
            face[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = w["face_mask"]
        out["face"], out["face_mask"] = face, mask
    else:
        out["face"] = out["face_mask"] = None
    for key in ("eeg_de", "eeg_raw", "emg_score", "eeg_quality"):
        vals = [w.get(key) for w in windows]
        out[key] = None if any(v is None for v in vals) else np.stack(vals).astype(np.float32)
    return out


def labelled_data(
    store,
    subject: str,
    *,
    label_scheme: str,
    rating_threshold: float = 5.0,
    with_groups: bool = False,
):
    """Every labelled window of ``subject``'s answered queries, with prequential probabilities.

    Returns
    -------
    inputs : dict of ndarray
        Stacked model inputs (:func:`stack_inputs`), N windows.
    labels : ndarray of int64, shape (N,)
    live_probs : ndarray of float64, shape (N, n_classes), or None
        The fused probabilities the live model gave each window before its answer was used
        (NaN rows where unknown).
    n_answers : int
        Answered queries the windows come from.
    groups : ndarray of int64, shape (N,)
        With ``with_groups``: the query id of each window (its answer).
    """
    from bci_affect.models.teacher import rating_to_label  # noqa: PLC0415

    answered = store.answered(subject=subject)
    if not answered:
        empty = (None, np.zeros(0, dtype=np.int64), None, 0)
        return (*empty, np.zeros(0, np.int64)) if with_groups else empty
    by_query = store.load_query_windows([a.query.id for a in answered])
    inputs: list[dict] = []
    labels: list[int] = []
    probs: list[list[float] | None] = []
    groups: list[int] = []
    for a in answered:
        label = rating_to_label(
            a.answer.valence, a.answer.arousal, scheme=label_scheme, threshold=rating_threshold
        )
        live = (a.query.prediction or {}).get("window_probs") or {}
        for window_index, _t_end, arrays in by_query.get(a.query.id, []):
            inputs.append(arrays)
            groups.append(int(a.query.id))
            labels.append(label)
            probs.append(live.get(str(window_index)))
    if not inputs:
        empty = (None, np.zeros(0, dtype=np.int64), None, len(answered))
        return (*empty, np.zeros(0, np.int64)) if with_groups else empty
    k = max((len(p) for p in probs if p is not None), default=0)
    live_probs = None
    if k:
        live_probs = np.full((len(probs), k), np.nan)
        for i, p in enumerate(probs):
            if p is not None and len(p) == k:
                live_probs[i] = p
    out = (stack_inputs(inputs), np.asarray(labels, dtype=np.int64), live_probs, len(answered))
    return (*out, np.asarray(groups, np.int64)) if with_groups else out


def save_unlabelled(windows: list[dict], path: str | os.PathLike) -> Path | None:
    """Write unlabelled windows' inputs (one dict per window, :data:`INPUT_KEYS`) to an
    ``.npz`` file for a round (atomically); ``None`` when there are none."""
    if not windows:
        return None
    arrays = {k: v for k, v in stack_inputs(windows).items() if v is not None}
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_unlabelled(path: str | os.PathLike | None) -> dict[str, np.ndarray | None] | None:
    """The arrays :func:`save_unlabelled` wrote (``None`` for no file)."""
    if path is None or not Path(path).is_file():
        return None
    with np.load(path) as z:
        return {k: (z[k] if k in z.files else None) for k in INPUT_KEYS}


def features_metadata(model, signals) -> dict[str, Any]:
    """The ``metadata.features`` block of a checkpoint of ``model`` scoring ``signals``
    windows (what ``bci-affect run --model`` needs to rebuild the signals chain)."""
    from bci_affect.training.inputs import signals_config_to_dict  # noqa: PLC0415
    from bci_affect.training.model_io import FEATURE_SCHEMA_VERSION  # noqa: PLC0415

    c = model.config
    return {
        "schema_version": FEATURE_SCHEMA_VERSION,
        "eeg_ch_names": list(c.eeg_ch_names),
        "sfreq": c.sfreq,
        "window_s": signals.window.window_s,
        "hop_s": signals.window.hop_s,
        "n_times": c.n_times,
        "bands": [list(b) for b in signals.features.bands],
        "face_ch_names_count": len(c.face_ch_names),
        "label_scheme": c.label_scheme,
        "class_names": list(model.class_names),
        "emg_score": "m / (1 + m), m = QualityConfig muscle score",
        "signals": signals_config_to_dict(signals),
    }


@dataclass
class RoundResult:
    """What a round produced: the candidate checkpoint folder, its facts, and the decision.

    ``adopted`` is ``False`` when the out-of-sample estimate on the answers so far says the
    candidate is worse than the current version (``reason`` says by how much): the session
    then keeps the current version.
    """

    path: str
    n_windows: int
    n_answers: int
    seconds: float
    train_accuracy: float
    conformal_threshold: float | None
    n_conformal: int
    adopted: bool = True
    reason: str = ""
    n_unlabelled: int = 0
    estimate: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """JSON-able facts (the last epoch's loss terms, not every epoch's)."""
        d = asdict(self)
        d.pop("path")
        d["final_loss"] = d.pop("history")[-1] if self.history else {}
        return d


def _concat_inputs(a: dict, b: dict) -> dict:
    """Two sets of stacked inputs as one (face frames padded to the longer, as
    :func:`stack_inputs` pads them)."""
    out: dict[str, np.ndarray | None] = {}
    if a["face"] is not None and b["face"] is not None:
        n_frames = max(a["face"].shape[1], b["face"].shape[1])
        for key, fill in (("face", np.nan), ("face_mask", False)):
            parts = []
            for x in (a[key], b[key]):
                pad = [(0, 0), (0, n_frames - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
                parts.append(np.pad(x, pad, constant_values=fill))
            out[key] = np.concatenate(parts)
    else:
        out["face"] = out["face_mask"] = None
    for key in ("eeg_de", "eeg_raw", "emg_score", "eeg_quality"):
        have = a[key] is not None and b[key] is not None
        out[key] = np.concatenate([a[key], b[key]]) if have else None
    return out


def _stride_frames(arrays: dict | None, stride: int) -> dict | None:
    """Every ``stride``-th face frame of stacked inputs (``None`` passes through)."""
    if arrays is None or arrays.get("face") is None or stride <= 1:
        return arrays
    return {
        **arrays,
        "face": np.ascontiguousarray(arrays["face"][:, ::stride]),
        "face_mask": np.ascontiguousarray(arrays["face_mask"][:, ::stride]),
    }


def _answer_folds(groups: np.ndarray, k: int) -> list[np.ndarray]:
    """Window masks of ``k`` folds of whole answers (an answer's windows stay together)."""
    answers = np.unique(groups)
    return [np.isin(groups, answers[i::k]) for i in range(k)]


def _per_answer_differences(
    cand: np.ndarray, cur: np.ndarray, labels: np.ndarray, groups: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per answer: the candidate's mean log-loss and accuracy minus the current lineage's,
    over that answer's windows with both estimates. Shapes (n_answers,)."""
    d_nll, d_acc = [], []
    for g in np.unique(groups[known]):
        m = known & (groups == g)
        nc, ac = _log_loss_acc(cand[m], labels[m])
        np_, ap = _log_loss_acc(cur[m], labels[m])
        d_nll.append(nc - np_)
        d_acc.append(ac - ap)
    return np.asarray(d_nll), np.asarray(d_acc)


def _log_loss_acc(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    p = np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0)
    return float(-np.log(p).mean()), float((probs.argmax(1) == labels).mean())


def personalise_round(
    parent: str | os.PathLike,
    out: str | os.PathLike,
    store_path: str | os.PathLike,
    subject: str,
    settings: RoundSettings | None = None,
    unlabelled: str | os.PathLike | None = None,
) -> RoundResult:
    """Personalise the checkpoint ``parent`` on ``subject``'s labels; write the candidate to
    ``out`` and say whether it should replace ``parent``.

    ``unlabelled`` (an ``.npz`` of :func:`save_unlabelled`) holds windows of the session with
    a usable face but no answer: every fit also distils the face teacher's soft labels on
    them into the EEG student, weighted by the face's reliability (``kd_student``).

    1. **Cross-fitting.** The answers are split into ``folds`` groups of whole answers; for
       each, a copy of ``parent`` is fine-tuned on the other answers and scores the held-out
       ones. Every answered window so gets candidate probabilities from a model that did not
       see its answer.
    2. **The decision.** The candidate's out-of-sample log-loss and accuracy are compared with
       the prequential ones of the current lineage (the probabilities the live model gave each
       window before its answer was used, stored with the query), answer by answer (the
       windows of one answer are one piece of evidence). The candidate is adopted only when
       it is at least as accurate on average and its log-loss is surely no worse: the mean
       per-answer difference plus one standard error must be at most ``tolerance``. With a
       handful of answers that takes a clear win; a candidate that is as good only by chance
       is kept out. Queries chosen by score are asked where the current version is at its
       worst, a biased sample. So when some queries were chosen by score, the candidate is
       also judged on the answers to queries asked at random moments (``method`` ``random``,
       see :class:`calibration.policy.PolicyConfig`): there must be ``min_random_answers`` of
       them, and on those it must be at least as accurate and within ``tolerance`` in mean
       log-loss. A session that never asks at random (``explore=0``) so never adopts.
    3. **The candidate.** ``parent`` fine-tuned on every answer (the student and the teacher's
       task head; the face encoder and the input standardisation kept), pulled towards
       ``parent``'s weights (``anchor_l2``), with its fused output refitted on the
       cross-fitted, out-of-sample head outputs (how much face and EEG count, and the
       temperature: the uncertainty is recalibrated after every update), and its conformal
       sets refitted on the prequential probabilities.

    ``out`` is written atomically (a temporary sibling folder renamed into place).

    Raises
    ------
    ConfigError
        Fewer than two labelled windows.
    """
    import copy  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from bci_affect.models.checkpoint import (  # noqa: PLC0415
        load_checkpoint,
        read_checkpoint_config,
        save_checkpoint,
    )
    from bci_affect.models.finetune import TrainConfig, fit, predict  # noqa: PLC0415
    from bci_affect.models.transfer import LossConfig, WindowBatch  # noqa: PLC0415
    from bci_affect.uncertainty.conformal import ConformalPredictor  # noqa: PLC0415
    from bci_affect.uncertainty.fusion import FusionPool, pool_logits, select_pool  # noqa: PLC0415
    from calibration.store import LabelStore  # noqa: PLC0415

    s = settings or RoundSettings()
    t0 = time.perf_counter()
    _, doc = read_checkpoint_config(parent)
    base = load_checkpoint(parent)
    with LabelStore(store_path) as store:
        inputs, labels, live_probs, n_answers, groups = labelled_data(
            store,
            subject,
            label_scheme=base.config.label_scheme,
            rating_threshold=s.rating_threshold,
            with_groups=True,
        )
        chosen_by = {a.query.id: a.query.method for a in store.answered(subject=subject)}
    if inputs is None or labels.size < 2:
        raise ConfigError(
            f"subject {subject!r} has {labels.size} labelled windows; a round needs at least 2"
        )
    extra = load_unlabelled(unlabelled)
    if extra is not None and (
        extra["eeg_de"] is None
        or inputs["eeg_de"] is None
        or extra["eeg_de"].shape[1:] != inputs["eeg_de"].shape[1:]
    ):
        extra = None  # another model's inputs (a version switch in between): not usable
    n_unlabelled = 0 if extra is None else int(extra["eeg_de"].shape[0])
    # the answered windows first, then the unlabelled ones (label -1), in one batch
    both = _stride_frames(inputs if extra is None else _concat_inputs(inputs, extra), s.face_stride)
    pool = WindowBatch.from_arrays(**both)
    pool_labels = torch.as_tensor(np.concatenate([labels, np.full(n_unlabelled, -1, np.int64)]))
    data = pool.index(slice(0, labels.size))
    y = pool_labels[: labels.size]

    def train_cfg(n: int) -> TrainConfig:
        return TrainConfig(
            epochs=s.epochs,
            lr=s.lr,
            seed=s.seed,
            device="cpu",
            freeze="teacher_encoder",
            fit_input_stats=False,
            kl_anneal_epochs=0,
            batch_size=min(64, max(2, n)),
            anchor_l2=s.anchor_l2,
            loss=LossConfig(lambda_kd_student=s.kd_student),
        )

    def tuned_on(mask: np.ndarray):
        m = copy.deepcopy(base)
        m.conformal = None
        idx = np.r_[np.flatnonzero(mask), labels.size + np.arange(n_unlabelled)]
        if mask.sum() >= 2:
            sel = torch.as_tensor(idx)
            fit(m, pool.index(sel), pool_labels[sel], train_cfg(idx.size))
        return m

    # 1. cross-fitted, out-of-sample outputs of the candidate recipe
    k = min(s.folds, int(np.unique(groups).size))
    n_out = base.n_outputs
    oos_probs = np.full((labels.size, n_out), np.nan)
    oos_t = torch.zeros(labels.size, n_out)
    oos_s = torch.zeros(labels.size, n_out)
    oos_rt, oos_rs = torch.zeros(labels.size), torch.zeros(labels.size)
    if k >= 2:
        for held in _answer_folds(groups, k):
            m = tuned_on(~held)
            o = predict(m, data.index(torch.as_tensor(np.flatnonzero(held))))
            oos_probs[held] = o.probs.double().numpy()
            oos_t[held] = torch.log_softmax(o.teacher_logits, -1)
            oos_s[held] = torch.log_softmax(o.student_logits, -1)
            oos_rt[held], oos_rs[held] = o.face_reliability, o.eeg_reliability
    # 3. the candidate on every answer, its pool refitted out of sample
    model = tuned_on(np.ones(labels.size, bool))
    fusion: dict[str, Any] = {}
    if k >= 2:
        raw, bias, chosen = select_pool(
            oos_t,
            oos_s,
            oos_rt,
            oos_rs,
            y,
            groups,
            raw_init=base.fusion_raw.detach(),
            bias_init=base.fusion_bias.detach(),
            prior_l2=s.fusion_prior,
        )
        with torch.no_grad():
            model.fusion_raw.copy_(raw)
            model.fusion_bias.copy_(bias)
        w = FusionPool.weights(raw)
        pooled = torch.softmax(pool_logits(oos_t, oos_s, oos_rt, oos_rs, w, bias), dim=-1)
        oos_probs = pooled.double().numpy()  # the recalibrated candidate, still out of sample
        fusion = {"w_face": float(w[0]), "w_eeg": float(w[1]), "choice": chosen["choice"]}
    with torch.inference_mode():
        train_acc = float((model(data).predicted.numpy() == labels).mean())
    # 2. the decision, on windows with both estimates
    adopted, reason, estimate = True, "", {}
    known = np.isfinite(oos_probs).all(1)
    if live_probs is not None and live_probs.shape[1] == n_out:
        known &= np.isfinite(live_probs).all(1)
    else:
        known[:] = False
    if known.any():
        nll_c, acc_c = _log_loss_acc(oos_probs[known], labels[known])
        nll_p, acc_p = _log_loss_acc(live_probs[known], labels[known])
        # the windows of one answer are one piece of evidence: compare answer by answer
        d_nll, d_acc = _per_answer_differences(oos_probs, live_probs, labels, groups, known)
        answer_ids = np.unique(groups[known])
        random_ans = np.array([chosen_by.get(int(g)) == "random" for g in answer_ids], bool)
        n_ans = d_nll.size
        se = float(d_nll.std(ddof=1) / np.sqrt(n_ans)) if n_ans > 1 else float("inf")
        bound = float(d_nll.mean()) + se  # one standard error above the mean difference
        estimate = {
            "n_windows": int(known.sum()),
            "n_answers": int(n_ans),
            "candidate_accuracy": acc_c,
            "candidate_log_loss": nll_c,
            "current_accuracy": acc_p,
            "current_log_loss": nll_p,
            "log_loss_difference": float(d_nll.mean()),
            "log_loss_difference_se": se,
            "n_random_answers": int(random_ans.sum()),
        }
        if random_ans.any():
            estimate["random_log_loss_difference"] = float(d_nll[random_ans].mean())
            estimate["random_accuracy_difference"] = float(d_acc[random_ans].mean())
        if float(d_acc.mean()) < -1e-9 or not bound <= s.tolerance:
            adopted = False
            reason = (
                f"out of sample on {n_ans} answers ({int(known.sum())} windows) the candidate is "
                f"not surely as good: accuracy {acc_c:.2f} vs {acc_p:.2f}, log-loss "
                f"{nll_c:.3f} vs {nll_p:.3f} (difference {d_nll.mean():+.3f} ± {se:.3f} per "
                f"answer; adopted when it is <= {s.tolerance:g} one standard error up)"
            )
        elif not random_ans.all() and random_ans.sum() < s.min_random_answers:
            adopted = False
            reason = (
                f"{int(random_ans.sum())} of the answers came from queries asked at random "
                f"moments; a new version is adopted once at least {s.min_random_answers} such "
                f"answers can judge it (queries chosen by score are asked where the current "
                f"version is at its worst, a biased sample)"
            )
        elif not random_ans.all() and (
            estimate["random_accuracy_difference"] < -1e-9
            or estimate["random_log_loss_difference"] > s.tolerance
        ):
            # the scored answers sit where the current model is at its worst; the answers to
            # queries asked at random moments are an unbiased sample of the session
            adopted = False
            reason = (
                f"better on the answers asked where the model was unsure, but not on the "
                f"{int(random_ans.sum())} asked at random moments: accuracy "
                f"{estimate['random_accuracy_difference']:+.2f}, log-loss "
                f"{estimate['random_log_loss_difference']:+.3f} per answer vs the current version"
            )
    else:
        adopted, reason = False, "no out-of-sample estimate yet (too few answers)"
    threshold, n_conf = None, 0
    if live_probs is not None:
        keep = np.isfinite(live_probs).all(axis=1)
        n_conf = int(keep.sum())
        if n_conf:
            cp = ConformalPredictor(coverage=s.coverage, seed=s.seed).fit(
                torch.as_tensor(live_probs[keep]), torch.as_tensor(labels[keep])
            )
            model.conformal = cp
            threshold = float(cp.threshold) if np.isfinite(cp.threshold) else None
    result = RoundResult(
        path=str(out),
        n_windows=int(labels.size),
        n_answers=n_answers,
        seconds=0.0,
        train_accuracy=train_acc,
        conformal_threshold=threshold,
        n_conformal=n_conf,
        adopted=adopted,
        reason=reason,
        estimate=estimate,
        fusion=fusion,
        n_unlabelled=n_unlabelled,
    )
    meta = dict(doc.get("metadata") or {})
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    result.seconds = time.perf_counter() - t0
    meta["personalisation"] = {"subject": subject, "parent": str(parent), **result.metrics()}
    save_checkpoint(model, tmp, metadata=json.loads(json.dumps(meta, default=float)))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return result


def _warm() -> int:
    """Import what a round needs (run once in the worker when it starts). The priority is
    lowered first: even the imports must not take CPU from the live session."""
    with contextlib.suppress(OSError):  # background work: live acquisition and scoring first
        os.nice(WORKER_NICENESS)
    _die_with_parent()
    import torch  # noqa: PLC0415

    import bci_affect.models.finetune  # noqa: F401, PLC0415
    import calibration.store  # noqa: F401, PLC0415

    torch.set_num_threads(1)
    return os.getpid()


def _die_with_parent() -> None:
    """Linux: the kernel ends this worker when the session process dies, even by SIGKILL
    (no orphan keeps training or holds the session's terminal)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


class Personaliser:
    """Runs :func:`personalise_round` in one warm worker process, one round at a time.

    ``submit`` returns a :class:`concurrent.futures.Future` of the :class:`RoundResult`;
    ``busy`` tells whether a round is running. The worker is started (and its imports done)
    by :meth:`start`, so the first round does not pay for them.
    """

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._future: concurrent.futures.Future | None = None

    def start(self) -> Personaliser:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
            self._pool.submit(_warm)
        return self

    @property
    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    def submit(
        self,
        parent: str | os.PathLike,
        out: str | os.PathLike,
        store_path: str | os.PathLike,
        subject: str,
        settings: RoundSettings | None = None,
        *,
        unlabelled: str | os.PathLike | None = None,
    ) -> concurrent.futures.Future:
        if self.busy:
            raise ConfigError("a personalisation round is already running; wait for it")
        self.start()
        assert self._pool is not None
        self._future = self._pool.submit(
            personalise_round,
            str(parent),
            str(out),
            str(store_path),
            subject,
            settings,
            None if unlabelled is None else str(unlabelled),
        )
        return self._future

    def close(self, *, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
