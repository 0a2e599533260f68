"""What a labelling UI shows and what it hands back: one interface, two front ends.

The session (:mod:`calibration.session`) drives a UI through :class:`LabelUI`: it shows a
:class:`QueryView` when the policy asks a question, clears it when the question is answered,
skipped or expires, and sends a :class:`SessionStatus` a few times a second (progress, model
version, live signal quality). The UI reports back through two callbacks given at
construction: ``on_answer(Answer)`` when the participant rates or skips, and
``on_shown(query_id, t_wall)`` when a query is on screen. Front ends: the local web page
(:mod:`calibration.web`) and the terminal (:mod:`calibration.terminal`).

Ratings use the Self-Assessment Manikin scales, integers 1 (very unpleasant / very calm) to
9 (very pleasant / very excited).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = [
    "RATING_MAX",
    "RATING_MIN",
    "Answer",
    "AnswerCallback",
    "LabelUI",
    "QueryView",
    "SessionStatus",
    "ShownCallback",
    "check_rating",
]

RATING_MIN = 1
RATING_MAX = 9


def check_rating(value: Any, what: str) -> int:
    """``value`` as an int SAM rating in [1, 9]; ``ValueError`` naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{what} must be an integer {RATING_MIN}-{RATING_MAX}, got {value!r}")
    v = int(value)
    if not RATING_MIN <= v <= RATING_MAX:
        raise ValueError(f"{what} must be in {RATING_MIN}-{RATING_MAX}, got {v}")
    return v


@dataclass(frozen=True)
class QueryView:
    """One question on screen.

    Attributes
    ----------
    query_id : int
        The query's id in the label store.
    span_s : float
        Length of the span asked about, seconds ("the last 8 seconds").
    prompt : str
        The sentence shown, e.g. "How did you feel during the last 8 seconds?".
    number : int
        1 for the session's first query, 2 for the second...
    budget : int
        Queries this session may ask in all.
    """

    query_id: int
    span_s: float
    prompt: str
    number: int
    budget: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SessionStatus:
    """The session's state for the progress display (all fields JSON-able).

    Attributes
    ----------
    subject, session : str
        The participant and the session's name.
    phase : str
        What the participant is doing: ``"rest"``, ``"free"``, ``"stimulus <name>"``, ``"done"``.
    elapsed_s : float
        Seconds since the session started.
    duration_s : float or None
        Planned length (``None``: until stopped).
    answered, skipped, budget : int
        Queries answered and skipped so far, and the session's budget.
    model_version : int
        The model version scoring the session (0 = the starting model).
    personalising : bool
        A personalisation round is running.
    eeg_quality : float or None
        Latest window's EEG quality in [0, 1].
    face_present : bool or None
        Whether the latest window had a face.
    bad_channels : list of str
        Channels flagged bad in the latest window.
    blink, muscle : bool or None
        Latest window flagged for blinks / muscle activity.
    predicted : str or None
        The latest fused prediction (class name).
    uncertainty : float or None
        Its Dirichlet uncertainty in [0, 1].
    message : str
        A line for the participant or operator ("" for none).
    """

    subject: str
    session: str
    phase: str = "rest"
    elapsed_s: float = 0.0
    duration_s: float | None = None
    answered: int = 0
    skipped: int = 0
    budget: int = 0
    model_version: int = 0
    personalising: bool = False
    eeg_quality: float | None = None
    face_present: bool | None = None
    bad_channels: list[str] = field(default_factory=list)
    blink: bool | None = None
    muscle: bool | None = None
    predicted: str | None = None
    uncertainty: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """The participant's reply to one query.

    ``valence`` and ``arousal`` are SAM ratings 1-9, both ``None`` when ``skipped``.
    ``t_wall`` is when the reply arrived (``time.time()`` seconds).
    """

    query_id: int
    valence: int | None
    arousal: int | None
    skipped: bool
    t_wall: float

    def __post_init__(self) -> None:
        if self.skipped:
            if self.valence is not None or self.arousal is not None:
                raise ValueError("a skipped query carries no ratings")
        else:
            object.__setattr__(self, "valence", check_rating(self.valence, "valence"))
            object.__setattr__(self, "arousal", check_rating(self.arousal, "arousal"))


AnswerCallback = Callable[[Answer], None]
ShownCallback = Callable[[int, float], None]


class LabelUI(Protocol):
    """A front end of the calibration session.

    Constructed with ``on_answer`` and ``on_shown`` callbacks (called from the UI's own
    threads; they must be quick and never raise into the UI). Methods are thread-safe.
    """

    def start(self) -> None:
        """Open the UI (bind the server / take the terminal); returns once it is ready."""

    def show_query(self, query: QueryView) -> None:
        """Put ``query`` on screen (replacing any other)."""

    def clear_query(self, query_id: int) -> None:
        """Take ``query_id`` off screen (answered, skipped or expired); no-op if not shown."""

    def update_status(self, status: SessionStatus) -> None:
        """The latest progress and signal quality."""

    def close(self) -> None:
        """Release everything (idempotent)."""
