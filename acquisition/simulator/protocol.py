"""The experimental protocol: trials, their affect targets, felt states and ratings, markers.

A session is ``lead_in_s`` of rest, then ``n_trials`` trials separated by rests, then
``tail_s``. Each trial presents a stimulus whose target valence and arousal come from one of
the four quadrants (high/low valence x high/low arousal, balanced); the subject's felt state
scatters around the target (``affect.induction_sd``); the rating is the felt state plus rater
noise, rounded and clipped to 1-9, and with probability ``labels.wrong_label_rate`` mirrored
(``r -> 10 - r``) separately for valence and arousal. During a trial the brain and face follow
the felt state; at rest the state is neutral (5, 5).

Markers (JSON strings on the ``Markers`` stream, LSL seconds)::

    {"event": "session_start", "subject": "sub-01", "session": "ses-01", "seed": 7,
     "subject_index": 1, "generator": "bci-affect simulate", "version": "0.1.0"}
    {"event": "trial_start", "trial": 1, "stimulus": "stim-042"}
    {"event": "rating", "trial": 1, "valence": 7, "arousal": 3}
    {"event": "trial_end", "trial": 1}
    ...
    {"event": "session_end"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from acquisition.simulator.config import SimulatorConfig

__all__ = ["QUADRANTS", "Schedule", "Trial", "make_schedule", "marker_samples", "state_at"]

#: Quadrant codes: (valence high?, arousal high?).
QUADRANTS = {
    "HVHA": (True, True),
    "HVLA": (True, False),
    "LVHA": (False, True),
    "LVLA": (False, False),
}

#: Stimuli per quadrant in the simulated stimulus pool (ids ``stim-000`` ... ``stim-159``).
STIMULI_PER_QUADRANT = 40


@dataclass(frozen=True)
class Trial:
    """One trial and its ground truth (times in seconds on the LSL clock).

    ``target_*`` is what the stimulus aims at, ``felt_*`` the state the simulated brain and
    face follow, ``rating_*`` what the subject reports (integers 1-9), ``flipped_*`` whether
    that rating was mirrored (a wrong label).
    """

    trial: int
    stimulus: str
    quadrant: str
    start: float
    rating_time: float
    end: float
    target_valence: float
    target_arousal: float
    felt_valence: float
    felt_arousal: float
    rating_valence: int
    rating_arousal: int
    flipped_valence: bool
    flipped_arousal: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Schedule:
    """The session's timeline: ``start`` and ``stop`` (LSL seconds) and its trials."""

    start: float
    stop: float
    trials: tuple[Trial, ...]

    @property
    def duration_s(self) -> float:
        return self.stop - self.start


def _rating(rng: np.random.Generator, felt: float, sd: float, flip: bool) -> int:
    r = int(np.clip(np.rint(felt + rng.normal(0.0, sd)), 1, 9))
    return 10 - r if flip else r


def make_schedule(config: SimulatorConfig, rng: np.random.Generator) -> Schedule:
    """Draw the trial order, timing, targets, felt states and ratings of one session."""
    ses, aff, lab = config.session, config.affect, config.labels
    codes = list(QUADRANTS)
    n = ses.n_trials
    counts = {q: n // 4 for q in codes}
    for q in rng.choice(codes, size=n % 4, replace=False):
        counts[str(q)] += 1
    order = [q for q in codes for _ in range(counts[q])]
    order = [order[i] for i in rng.permutation(n)]
    pools = {
        q: rng.permutation(STIMULI_PER_QUADRANT) + k * STIMULI_PER_QUADRANT
        for k, q in enumerate(codes)
    }
    used = dict.fromkeys(codes, 0)

    t = ses.start_time_s + ses.lead_in_s
    trials = []
    for i, quadrant in enumerate(order):
        hv, ha = QUADRANTS[quadrant]
        length = rng.uniform(*ses.trial_s)
        target_v = rng.uniform(*(aff.high_range if hv else aff.low_range))
        target_a = rng.uniform(*(aff.high_range if ha else aff.low_range))
        felt_v = float(np.clip(target_v + rng.normal(0.0, aff.induction_sd), 1.0, 9.0))
        felt_a = float(np.clip(target_a + rng.normal(0.0, aff.induction_sd), 1.0, 9.0))
        flip_v = bool(rng.random() < lab.wrong_label_rate)
        flip_a = bool(rng.random() < lab.wrong_label_rate)
        rating_v = _rating(rng, felt_v, lab.rater_noise_sd, flip_v)
        rating_a = _rating(rng, felt_a, lab.rater_noise_sd, flip_a)
        answer = rng.uniform(0.0, ses.rating_s)
        stim = int(pools[quadrant][used[quadrant] % STIMULI_PER_QUADRANT])
        used[quadrant] += 1
        end = t + length
        trials.append(
            Trial(
                trial=i + 1,
                stimulus=f"stim-{stim:03d}",
                quadrant=quadrant,
                start=round(t, 6),
                rating_time=round(end - ses.rating_s + answer, 6),
                end=round(end, 6),
                target_valence=round(float(target_v), 3),
                target_arousal=round(float(target_a), 3),
                felt_valence=round(felt_v, 3),
                felt_arousal=round(felt_a, 3),
                rating_valence=rating_v,
                rating_arousal=rating_a,
                flipped_valence=flip_v,
                flipped_arousal=flip_a,
            )
        )
        rest = rng.uniform(*ses.rest_s) if i < n - 1 else ses.tail_s
        t = end + rest
    return Schedule(start=ses.start_time_s, stop=round(t, 6), trials=tuple(trials))


def _ramp(x: NDArray, width: float) -> NDArray:
    """0 before 0, 1 after ``width``, a raised cosine in between."""
    if width <= 0:
        return (x >= 0).astype(np.float64)
    u = np.clip(x / width, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * u)


def trial_window(times: NDArray, trial: Trial, ramp_s: float) -> NDArray[np.float64]:
    """How much of ``trial``'s state is expressed at ``times`` (0..1): rises over ``ramp_s``
    after the trial starts, falls over ``ramp_s`` after it ends."""
    return _ramp(times - trial.start, ramp_s) - _ramp(times - trial.end, ramp_s)


def state_at(
    times: NDArray, schedule: Schedule, ramp_s: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Felt valence and arousal as ``z = (x - 5) / 4`` at ``times`` (0 at rest).

    Returns
    -------
    valence_z, arousal_z : ndarray, shape like ``times``
    """
    times = np.asarray(times, dtype=np.float64)
    v = np.zeros_like(times)
    a = np.zeros_like(times)
    for tr in schedule.trials:
        lo = np.searchsorted(times, tr.start)
        hi = np.searchsorted(times, tr.end + ramp_s, side="right")
        w = trial_window(times[lo:hi], tr, ramp_s)
        v[lo:hi] += w * (tr.felt_valence - 5.0) / 4.0
        a[lo:hi] += w * (tr.felt_arousal - 5.0) / 4.0
    return v, a


def marker_samples(schedule: Schedule, header: dict) -> tuple[list[str], NDArray[np.float64]]:
    """The Markers stream of a session: JSON strings and their times (LSL seconds).

    ``header`` holds the extra fields of the ``session_start`` marker (subject, seed, ...).
    """
    items: list[tuple[float, int, dict]] = [
        (schedule.start, 0, {"event": "session_start", **header})
    ]
    for tr in schedule.trials:
        items.append(
            (tr.start, 1, {"event": "trial_start", "trial": tr.trial, "stimulus": tr.stimulus})
        )
        items.append(
            (
                tr.rating_time,
                2,
                {
                    "event": "rating",
                    "trial": tr.trial,
                    "valence": tr.rating_valence,
                    "arousal": tr.rating_arousal,
                },
            )
        )
        items.append((tr.end, 3, {"event": "trial_end", "trial": tr.trial}))
    items.append((schedule.stop, 4, {"event": "session_end"}))
    items.sort(key=lambda it: (it[0], it[1]))
    return [json.dumps(body) for _, _, body in items], np.array([t for t, _, _ in items])
