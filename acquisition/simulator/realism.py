"""Checks that simulated sessions look like real data: spectrum and decodability.

Two measurements, used by the tests and by ``python -m acquisition.simulator.realism``:

:func:`segment_band_powers`
    band power (µV², delta to gamma and 1-45 Hz total) per channel in consecutive segments,
    after a 1 Hz high-pass, on the same footing for the real OpenBCI recording and for a
    simulated session;
:func:`within_subject_accuracy`
    the quick decoding check: log band power (5 bands x channels) of 4 s windows inside
    trials, binary high/low labels from the ratings (> 5 is high), a ridge logistic regression
    (numpy), cross-validated over *trials* (no window of a test trial is ever in training),
    window-level accuracy.

Real reference (``OpenBCI_GUI-v6-blinks-jawClench-alpha.txt``, Cyton, 8 channels, eyes-open
segments 20-28 s and 76-80 s, 1 Hz high-pass, 2 s Welch), median over channels: total 1-45 Hz
power about 180 µV², alpha/beta power ratio about 0.5 (occipital about 0.5-0.6; eyes closed
there it is 1.5-1.7). ``docs/simulator.md`` lists the per-band values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import signal

__all__ = [
    "BANDS",
    "DecodingResult",
    "logistic_fit",
    "segment_band_powers",
    "trial_windows",
    "window_features",
    "within_subject_accuracy",
]

#: Bands of the checks, Hz, half-open.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
    "total": (1.0, 45.0),
}


def _highpass(data: NDArray, sfreq: float, hz: float = 1.0) -> NDArray[np.float64]:
    sos = signal.butter(4, hz, "highpass", fs=sfreq, output="sos")
    x = np.asarray(data, dtype=np.float64)
    return signal.sosfiltfilt(sos, x - x[:, :1], axis=-1)


def _band_power(psd: NDArray, freqs: NDArray, lo: float, hi: float) -> NDArray:
    m = (freqs >= lo) & (freqs < hi)
    return psd[..., m].sum(axis=-1) * (freqs[1] - freqs[0])


def segment_band_powers(
    data: NDArray, sfreq: float, segment_s: float = 8.0
) -> dict[str, NDArray[np.float64]]:
    """Band power per segment and channel after a 1 Hz high-pass.

    Parameters
    ----------
    data : ndarray, shape (n_chans, n_times)
        µV.
    sfreq : float
        Hz.
    segment_s : float
        Length of the consecutive, non-overlapping segments.

    Returns
    -------
    dict of band name -> ndarray, shape (n_segments, n_chans)
        µV² in each of :data:`BANDS`.
    """
    x = _highpass(data, sfreq)
    n_seg = int(x.shape[1] // (segment_s * sfreq))
    seg_len = int(segment_s * sfreq)
    segs = x[:, : n_seg * seg_len].reshape(x.shape[0], n_seg, seg_len).transpose(1, 0, 2)
    freqs, psd = signal.welch(segs, fs=sfreq, nperseg=int(2 * sfreq), axis=-1)
    return {b: _band_power(psd, freqs, lo, hi) for b, (lo, hi) in BANDS.items()}


def window_features(windows: NDArray, sfreq: float) -> NDArray[np.float64]:
    """Log band power of windows, shape (n_windows, n_chans * 5) (delta ... gamma)."""
    freqs, psd = signal.welch(windows, fs=sfreq, nperseg=int(sfreq), axis=-1)
    feats = [
        np.log(_band_power(psd, freqs, lo, hi) + 1e-6)
        for b, (lo, hi) in BANDS.items()
        if b != "total"
    ]
    return np.concatenate(feats, axis=-1)


def trial_windows(
    data: NDArray,
    times: NDArray,
    sfreq: float,
    trials: Sequence[tuple[float, float]],
    *,
    window_s: float = 4.0,
    skip_s: float = 2.0,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """High-passed windows inside each trial ``(start, end)`` (the first ``skip_s`` left out).

    Returns
    -------
    windows : ndarray, shape (n_windows, n_chans, window_s * sfreq)
    trial_index : ndarray, shape (n_windows,)
        Index into ``trials`` of each window.
    """
    x = _highpass(data, sfreq)
    n_win = int(round(window_s * sfreq))
    out, idx = [], []
    for i, (start, end) in enumerate(trials):
        lo = int(np.searchsorted(times, start + skip_s))
        hi = int(np.searchsorted(times, end))
        for a in range(lo, hi - n_win + 1, n_win):
            out.append(x[:, a : a + n_win])
            idx.append(i)
    return np.asarray(out), np.asarray(idx, dtype=np.int64)


def logistic_fit(
    x: NDArray, y: NDArray, *, l2: float = 1.0, n_iter: int = 50
) -> tuple[NDArray[np.float64], float]:
    """Ridge logistic regression by Newton's method (IRLS); ``y`` in {0, 1}.

    Returns ``(w, b)``; predict ``x @ w + b > 0``. The intercept is not penalised.
    """
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(n_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1], float(w[-1])


@dataclass(frozen=True)
class DecodingResult:
    """Cross-validated window-level accuracy of one subject (NaN when a label has one class)."""

    subject: str
    valence: float
    arousal: float
    n_windows: int
    n_trials: int


def _cv_accuracy(
    feats: NDArray, trial_idx: NDArray, labels: NDArray, n_folds: int, rng: np.random.Generator
) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    trials = np.arange(labels.size)
    # stratified assignment of trials to folds
    fold = np.empty(labels.size, dtype=int)
    for cls in (0, 1):
        members = rng.permutation(trials[labels == cls])
        fold[members] = np.arange(members.size) % n_folds
    correct = total = 0
    for k in range(n_folds):
        test_trials = trials[fold == k]
        if not test_trials.size:
            continue
        test = np.isin(trial_idx, test_trials)
        train = ~test
        y_train = labels[trial_idx[train]]
        if len(np.unique(y_train)) < 2:
            continue
        mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-9
        w, b = logistic_fit((feats[train] - mu) / sd, y_train.astype(float))
        pred = ((feats[test] - mu) / sd) @ w + b > 0
        correct += int(np.sum(pred == labels[trial_idx[test]].astype(bool)))
        total += int(test.sum())
    return correct / total if total else float("nan")


def within_subject_accuracy(
    eeg: NDArray,
    times: NDArray,
    sfreq: float,
    trials: Sequence[tuple[float, float]],
    ratings: NDArray,
    *,
    subject: str = "",
    n_folds: int = 4,
    seed: int = 0,
) -> DecodingResult:
    """EEG-only decoding of high/low valence and arousal within one session.

    Parameters
    ----------
    eeg : ndarray, shape (n_chans, n_times)
        µV (raw: the 1 Hz high-pass is applied here).
    times : ndarray, shape (n_times,)
    sfreq : float
    trials : sequence of (start, end)
        LSL seconds of each trial.
    ratings : ndarray, shape (n_trials, 2)
        Valence and arousal ratings (1-9); > 5 is "high".
    """
    windows, trial_idx = trial_windows(eeg, times, sfreq, trials)
    feats = window_features(windows, sfreq)
    feats = feats.reshape(len(feats), -1)
    ratings = np.asarray(ratings)
    rng = np.random.default_rng(seed)
    acc = [
        _cv_accuracy(feats, trial_idx, (ratings[:, j] > 5).astype(int), n_folds, rng)
        for j in range(2)
    ]
    return DecodingResult(subject, acc[0], acc[1], int(len(feats)), len(trials))


def session_accuracy(session, **kwargs) -> DecodingResult:
    """:func:`within_subject_accuracy` of a :class:`~acquisition.simulator.SimulatedSession`,
    with the labels a user would have: the ratings in its Markers."""
    eeg = session.chunk(session.config.eeg.name)
    trials = [(t.start, t.end) for t in session.schedule.trials]
    ratings = np.array([(t.rating_valence, t.rating_arousal) for t in session.schedule.trials])
    return within_subject_accuracy(
        eeg.data, eeg.times, eeg.sfreq, trials, ratings, subject=session.subject.subject, **kwargs
    )


def main(argv: list[str] | None = None) -> int:
    """Print the decoding table for N default subjects (``--subjects``, ``--seed``)."""
    from acquisition.simulator import load_config, simulate_session  # noqa: PLC0415

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--subjects", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None)
    args = p.parse_args(argv)
    config = load_config(args.config)
    rows = []
    print(f"{'subject':8s} {'responder':9s} {'poker':5s} {'valence':>7s} {'arousal':>7s}")
    for k in range(1, args.subjects + 1):
        s = simulate_session(config, seed=args.seed, subject_index=k, n_subjects=args.subjects)
        r = session_accuracy(s)
        rows.append((s.subject.responder, r.valence, r.arousal))
        print(
            f"{r.subject:8s} {str(s.subject.responder):9s} {str(s.subject.poker_face):5s} "
            f"{r.valence:7.3f} {r.arousal:7.3f}"
        )
    arr = np.array([(v, a) for _, v, a in rows], dtype=float)
    resp = np.array([r for r, _, _ in rows])
    print(f"{'mean':24s} {np.nanmean(arr[:, 0]):7.3f} {np.nanmean(arr[:, 1]):7.3f}")
    for flag, label in ((True, "responders"), (False, "non-resp.")):
        if np.any(resp == flag):
            sub = arr[resp == flag]
            print(f"{label:24s} {np.nanmean(sub[:, 0]):7.3f} {np.nanmean(sub[:, 1]):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
