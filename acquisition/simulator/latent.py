"""Hidden processes that both modalities see: facial expression intensity and blinks.

Expressions are the bridge between the felt state, the face and the EEG: the FaceFeatures
stream shows them (probabilities, geometry, embedding), and the muscles behind them add EMG to
the EEG (a smile contracts zygomaticus and, with a clenched jaw, temporalis: the confound).
Blinks show in frontal EEG and close the eyes in the face's geometry at the same moments.

Expression intensity of class ``k`` at time ``t`` (0 = none, 1 = a full, posed expression):

    expressivity * (tonic_k(t) + sum of episodes of class k active at t)

``tonic_k`` is a weak sustained expression during trials, ``0.25 * propensity_k(state)``;
episodes (onset, duration, amplitude) come as a Poisson process at
``expression_rate_per_min * sum_k propensity_k`` in each trial, their class drawn in
proportion to the propensities, plus weak spontaneous episodes at any time. Propensities of
the felt state ``(v, a)`` in z units (``v+ = max(v, 0)``, ``v- = max(-v, 0)``, same for a):

=========  ==========================================
happy      ``v+ * (0.7 + 0.3 a+)``
surprise   ``a+ * (0.3 + 0.2 v+)``
sad        ``v- * (0.4 + 0.6 a-)``
angry      ``0.8 v- a+``
fear       ``0.6 v- a+``
disgust    ``0.25 v-``
=========  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from acquisition.simulator.config import SimulatorConfig
from acquisition.simulator.protocol import Schedule, trial_window
from acquisition.simulator.subject import SubjectParams

__all__ = [
    "EXPRESSIONS",
    "Blinks",
    "ExpressionTrack",
    "draw_blinks",
    "draw_expressions",
    "propensities",
]

#: Expression classes with an intensity (neutral is their absence), in FER2013 order.
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise")

_RISE_S = 0.4
_FALL_S = 0.7
_TONIC = 0.25
_SPONTANEOUS_CLASSES = np.array([0.05, 0.02, 0.05, 0.55, 0.13, 0.20])


def propensities(v: float, a: float) -> NDArray[np.float64]:
    """How strongly the felt state ``(v, a)`` (z units) calls for each of :data:`EXPRESSIONS`."""
    vp, vn, ap, an = max(v, 0.0), max(-v, 0.0), max(a, 0.0), max(-a, 0.0)
    return np.array(
        [
            0.8 * vn * ap,
            0.25 * vn,
            0.6 * vn * ap,
            vp * (0.7 + 0.3 * ap),
            vn * (0.4 + 0.6 * an),
            ap * (0.3 + 0.2 * vp),
        ]
    )


def _envelope(x: NDArray, duration: float) -> NDArray[np.float64]:
    """Episode shape at ``x`` seconds after onset: raised-cosine rise and fall, plateau."""
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(x / _RISE_S, 0.0, 1.0))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((x - duration) / _FALL_S, 0.0, 1.0))
    return np.where((x >= 0) & (x <= duration + _FALL_S), rise * fall, 0.0)


@dataclass(frozen=True)
class ExpressionTrack:
    """Expression episodes of a session; :meth:`intensity` evaluates them at any times.

    Attributes
    ----------
    kind, onset, duration, amplitude : ndarray, shape (n_episodes,)
        Class index into :data:`EXPRESSIONS`, onset (LSL s), plateau duration (s), height.
    tonic : list of (start, end, ndarray of shape (6,))
        Per trial, the tonic level of each class.
    expressivity : float
        The subject's overall expression strength.
    ramp_s : float
        Rise/fall time of the tonic level.
    schedule : Schedule
        The session's trials (where the tonic levels apply).
    """

    kind: NDArray[np.int64]
    onset: NDArray[np.float64]
    duration: NDArray[np.float64]
    amplitude: NDArray[np.float64]
    tonic: tuple
    expressivity: float
    ramp_s: float
    schedule: Schedule

    def intensity(self, times: NDArray) -> NDArray[np.float64]:
        """Intensity of each class at ``times`` (sorted, LSL s), shape (6, n_times), >= 0."""
        times = np.asarray(times, dtype=np.float64)
        out = np.zeros((len(EXPRESSIONS), times.size))
        for trial, level in zip(self.schedule.trials, self.tonic, strict=True):
            lo = np.searchsorted(times, trial.start)
            hi = np.searchsorted(times, trial.end + self.ramp_s, side="right")
            w = trial_window(times[lo:hi], trial, self.ramp_s)
            out[:, lo:hi] += level[:, None] * w[None, :]
        for k, t0, d, amp in zip(self.kind, self.onset, self.duration, self.amplitude, strict=True):
            lo = np.searchsorted(times, t0)
            hi = np.searchsorted(times, t0 + d + _FALL_S, side="right")
            out[k, lo:hi] += amp * _envelope(times[lo:hi] - t0, d)
        return np.clip(self.expressivity * out, 0.0, 1.5)

    def episodes(self) -> list[dict]:
        """The episodes as JSON-ready dicts (for the ground truth)."""
        return [
            {
                "expression": EXPRESSIONS[int(k)],
                "onset": round(float(t0), 3),
                "duration_s": round(float(d), 3),
                "amplitude": round(float(a) * self.expressivity, 3),
            }
            for k, t0, d, a in zip(
                self.kind, self.onset, self.duration, self.amplitude, strict=True
            )
        ]


def draw_expressions(
    config: SimulatorConfig,
    subject: SubjectParams,
    schedule: Schedule,
    rng: np.random.Generator,
) -> ExpressionTrack:
    """Draw the expression episodes of a session."""
    face = config.face
    kinds, onsets, durations, amps, tonic = [], [], [], [], []
    for tr in schedule.trials:
        p = propensities((tr.felt_valence - 5.0) / 4.0, (tr.felt_arousal - 5.0) / 4.0)
        tonic.append(_TONIC * p)
        total = float(p.sum())
        length = tr.end - tr.start
        n = rng.poisson(face.expression_rate_per_min / 60.0 * length * total) if total > 0 else 0
        if n:
            kinds.append(rng.choice(len(EXPRESSIONS), size=n, p=p / total))
            onsets.append(tr.start + rng.uniform(0.0, length, size=n))
            durations.append(rng.uniform(*face.expression_s, size=n))
            amps.append(rng.uniform(0.4, 1.0, size=n) * min(1.0, 0.5 + total))
    n = rng.poisson(face.spontaneous_rate_per_min / 60.0 * schedule.duration_s)
    if n:
        kinds.append(rng.choice(len(EXPRESSIONS), size=n, p=_SPONTANEOUS_CLASSES))
        onsets.append(schedule.start + rng.uniform(0.0, schedule.duration_s, size=n))
        durations.append(rng.uniform(0.5, 2.0, size=n))
        amps.append(rng.uniform(0.15, 0.4, size=n))

    def cat(parts: list, dtype: type) -> NDArray:
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    onset = cat(onsets, np.float64)
    order = np.argsort(onset, kind="stable")
    return ExpressionTrack(
        kind=cat(kinds, np.int64)[order],
        onset=onset[order],
        duration=cat(durations, np.float64)[order],
        amplitude=cat(amps, np.float64)[order],
        tonic=tuple(tonic),
        expressivity=subject.expressivity,
        ramp_s=config.affect.ramp_s,
        schedule=schedule,
    )


@dataclass(frozen=True)
class Blinks:
    """Blink times (LSL s, the start of each blink), durations (s) and relative sizes."""

    onset: NDArray[np.float64]
    duration: NDArray[np.float64]
    size: NDArray[np.float64]

    def closure(self, times: NDArray) -> NDArray[np.float64]:
        """Eyelid closure at ``times`` (sorted): 0 open, about 1 fully closed."""
        times = np.asarray(times, dtype=np.float64)
        out = np.zeros(times.size)
        for t0, d, s in zip(self.onset, self.duration, self.size, strict=True):
            lo = np.searchsorted(times, t0)
            hi = np.searchsorted(times, t0 + d, side="right")
            out[lo:hi] = np.maximum(out[lo:hi], min(s, 1.0) * blink_shape((times[lo:hi] - t0) / d))
        return out


def blink_shape(u: NDArray) -> NDArray[np.float64]:
    """Blink waveform over its duration (``u`` in [0, 1]): a fast rise over the first 40 %,
    a slower fall; peak 1, zero outside."""
    u = np.asarray(u, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(u / 0.4, 0.0, 1.0))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((u - 0.4) / 0.6, 0.0, 1.0))
    return np.where((u >= 0) & (u <= 1), np.where(u < 0.4, rise, fall), 0.0)


def draw_blinks(
    config: SimulatorConfig, subject: SubjectParams, schedule: Schedule, rng: np.random.Generator
) -> Blinks:
    """Blinks as a Poisson process with a 0.6 s refractory period."""
    rate = subject.blink_rate_per_min / 60.0
    mean_d = config.artifacts.blink_duration_s
    if rate <= 0:
        empty = np.empty(0)
        return Blinks(empty, empty, empty)
    n_max = int(schedule.duration_s * rate * 2 + 20)
    gaps = 0.6 + rng.exponential(max(1.0 / rate - 0.6, 0.05), size=n_max)
    onset = schedule.start + np.cumsum(gaps)
    duration = mean_d * np.exp(rng.normal(0.0, 0.2, size=n_max))
    size = np.exp(rng.normal(0.0, 0.2, size=n_max))
    keep = onset + duration < schedule.stop
    return Blinks(onset[keep], duration[keep], size[keep])
