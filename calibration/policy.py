"""When to ask the participant, and about which span.

:class:`QueryPolicy` sees every prediction of the session (in window order) and decides, window
by window, whether now is the moment to ask "how did you feel during the last ``span_s``
seconds?". A query is triggered when all of these hold:

- the session's budget is not spent and no other query is waiting for an answer;
- at least ``min_interval_s`` seconds (LSL clock) passed since the previous query;
- the span ``[t - span_s, t]`` overlaps no earlier query's span (so no two answers label the
  same windows);
- at least ``warmup`` windows were seen, and the span's score is in the top ``top_fraction``
  of the span scores seen so far this session (highest disagreement/uncertainty first).

A span's score is the mean score of the windows that end inside it; a window's score comes
from the model's active-learning signals (:func:`window_score`): teacher-student disagreement
(Jensen-Shannon divergence, the default), the fused Dirichlet uncertainty, the EEG student's
entropy, or ``random`` (the baseline). Windows without a face cannot disagree and score 0
under ``disagreement``.

A fraction ``explore`` of the queries is asked at a random moment instead (recorded with method
``random``): a query chosen by score lands where the model is at its worst, so answers to
scored queries alone would judge a personalised version on a biased sample; the random ones
are an unbiased sample of the session (see :func:`calibration.personalise.personalise_round`).
Each query is drawn to be exploratory or not when the previous one is asked; an exploratory
query waits a random extra delay of up to ``max(min_interval_s, span_s)`` seconds.

To spend the budget when scores are flat, the threshold relaxes once the remaining session
time no longer holds the remaining budget at one query per ``min_interval_s`` (only when the
session's duration is known).
"""

from __future__ import annotations

import bisect
import collections
import math
import random
from dataclasses import dataclass

from bci_affect.core.errors import ConfigError

__all__ = ["QUERY_METHODS", "PolicyConfig", "QueryPolicy", "Trigger", "window_score"]

#: Window scores the policy can rank by.
QUERY_METHODS = ("disagreement", "uncertainty", "entropy", "random")


def window_score(prediction, method: str, rng: random.Random | None = None) -> float:
    """The active-learning score of one window's prediction (higher = ask sooner).

    Parameters
    ----------
    prediction : bci_affect.engine.Prediction
    method : str
        One of :data:`QUERY_METHODS`.
    rng : random.Random, optional
        For ``"random"``.
    """
    if method == "disagreement":
        d = prediction.disagreement if prediction.face_available else 0.0
        return float(d) if math.isfinite(d) else 0.0
    if method == "uncertainty":
        u = prediction.uncertainty
        return float(u) if math.isfinite(u) else 0.0
    if method == "entropy":
        p = [float(x) for x in prediction.probs_student if math.isfinite(x) and x > 0]
        return -sum(x * math.log(x) for x in p)
    if method == "random":
        return (rng or random).random()
    raise ConfigError(f"unknown query method {method!r}; valid: {', '.join(QUERY_METHODS)}")


@dataclass(frozen=True)
class PolicyConfig:
    """Settings of :class:`QueryPolicy` (seconds on the LSL clock).

    Parameters
    ----------
    budget : int
        Most queries this session.
    span_s : float
        Length of the span each query asks about.
    min_interval_s : float
        Least time between two queries.
    method : str
        Window score, one of :data:`QUERY_METHODS`.
    top_fraction : float
        Ask when the span's score is in this top fraction of the scores seen so far.
    warmup : int
        Windows to see before the first query.
    answer_timeout_s : float
        An unanswered query expires after this long (it does not count against the budget).
    explore : float
        Fraction of the queries (0-1) asked at a random moment, not by score.
    seed : int
        Seed of the ``random`` method and of the exploratory draws.
    """

    budget: int = 20
    span_s: float = 8.0
    min_interval_s: float = 20.0
    method: str = "disagreement"
    top_fraction: float = 0.3
    warmup: int = 8
    answer_timeout_s: float = 60.0
    explore: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 0:
            raise ConfigError(f"budget must be an integer >= 0, got {self.budget!r}")
        for name in ("span_s", "answer_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not self.min_interval_s >= 0:
            raise ConfigError(f"min_interval_s must be >= 0 seconds, got {self.min_interval_s}")
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if not 0 <= self.explore <= 1:
            raise ConfigError(f"explore must be a fraction in [0, 1], got {self.explore}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0 windows, got {self.warmup}")
        if self.method not in QUERY_METHODS:
            raise ConfigError(
                f"unknown query method {self.method!r}; valid: {', '.join(QUERY_METHODS)}"
            )


@dataclass(frozen=True)
class Trigger:
    """A query the policy asks for: the span ``[t_start, t_end]`` (LSL clock), its score and
    how it was chosen (``method``: the policy's score method, or ``random`` for an
    exploratory query)."""

    t_start: float
    t_end: float
    score: float
    threshold: float
    method: str = "disagreement"


class QueryPolicy:
    """Decides when to query; feed it every prediction with :meth:`offer` (see module doc).

    Parameters
    ----------
    config : PolicyConfig
    duration_s : float, optional
        Planned session length (from the first window), to spend the budget in time.
    used : int
        Queries already asked in this session (a resumed session).
    spans : list of (float, float)
        Spans already asked about (a resumed session): never asked about again.
    """

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        duration_s: float | None = None,
        used: int = 0,
        spans: list[tuple[float, float]] | None = None,
    ) -> None:
        self.config = config or PolicyConfig()
        self.duration_s = duration_s
        self.used = int(used)
        self.spans: list[tuple[float, float]] = sorted(spans or [])
        self.waiting = False
        self._recent: collections.deque[tuple[float, float]] = collections.deque()
        self._sorted: list[float] = []  # span scores seen, sorted
        self._n_windows = 0
        self._t_first: float | None = None
        self._t_last_query = max((e for _, e in self.spans), default=-math.inf)
        self._rng = random.Random(self.config.seed)
        self._explore_delay: float | None = None
        self._draw_next()

    @property
    def remaining(self) -> int:
        return max(0, self.config.budget - self.used)

    def window_score(self, prediction) -> float:
        return window_score(prediction, self.config.method, self._rng)

    def offer(self, t_end: float, score: float) -> Trigger | None:
        """One scored window ending at ``t_end`` (in time order); a :class:`Trigger` when
        the policy asks now (the caller then calls :meth:`asked`)."""
        cfg = self.config
        if self._t_first is None:
            self._t_first = t_end
        self._n_windows += 1
        recent = self._recent
        recent.append((t_end, score if math.isfinite(score) else 0.0))
        while recent and recent[0][0] <= t_end - cfg.span_s:
            recent.popleft()
        span_score = sum(s for _, s in recent) / len(recent)
        bisect.insort(self._sorted, span_score)
        if self.waiting or self.remaining == 0 or self._n_windows < max(cfg.warmup, 1):
            return None
        if t_end - self._t_last_query < cfg.min_interval_s:
            return None
        t_start = t_end - cfg.span_s
        if any(s < t_end and t_start < e for s, e in self.spans):
            return None
        if self._explore_delay is not None:  # exploratory: a random moment, any score
            since = self._t_first if not math.isfinite(self._t_last_query) else self._t_last_query
            if t_end - since < cfg.min_interval_s + self._explore_delay:
                return None
            return Trigger(t_start, t_end, span_score, -math.inf, method="random")
        threshold = self._threshold(t_end)
        if span_score < threshold:
            return None
        return Trigger(t_start, t_end, span_score, threshold, method=cfg.method)

    def asked(self, trigger: Trigger) -> None:
        """The query of ``trigger`` is on its way: count it and block its span."""
        self.used += 1
        self.waiting = True
        self.spans.append((trigger.t_start, trigger.t_end))
        self._t_last_query = trigger.t_end
        self._draw_next()

    def _draw_next(self) -> None:
        """Decide whether the next query is exploratory (and its extra delay, seconds)."""
        cfg = self.config
        self._explore_delay = None
        if cfg.method != "random" and cfg.explore > 0 and self._rng.random() < cfg.explore:
            self._explore_delay = self._rng.uniform(0.0, max(cfg.min_interval_s, cfg.span_s))

    def closed(self, *, counted: bool = True) -> None:
        """The waiting query was answered or skipped (``counted``), or expired (not counted:
        the budget gets it back)."""
        self.waiting = False
        if not counted:
            self.used = max(0, self.used - 1)

    def _threshold(self, t: float) -> float:
        cfg = self.config
        s = self._sorted
        k = min(len(s) - 1, max(0, math.ceil((1.0 - cfg.top_fraction) * len(s)) - 1))
        threshold = s[k]
        if self.duration_s is not None and self._t_first is not None:
            left_s = self.duration_s - (t - self._t_first)
            slots = left_s / max(cfg.min_interval_s, cfg.span_s)
            if slots <= self.remaining:  # behind schedule: take what comes
                return -math.inf
        return threshold
