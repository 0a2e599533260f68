"""A session's streams and its trials: which stream is which, and the trial markers.

Session markers are JSON strings on a ``Markers`` stream::

    {"event": "trial_start", "trial": 3}
    {"event": "rating", "trial": 3, "valence": 7, "arousal": 3}
    {"event": "trial_end", "trial": 3}

:func:`pick_session_streams` finds the EEG, FaceFeatures and marker streams of a loaded session
(acquisition event streams such as ``EEG-events`` are also of type ``Markers``; the session
markers are the ones that hold ``trial_start`` events); :func:`parse_trials` turns the markers
into :class:`TrialSpan` objects, logging every problem it meets instead of guessing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from bci_affect.core.chunk import Chunk
from bci_affect.core.errors import StreamNotFoundError
from bci_affect.models.teacher import RATING_MAX, RATING_MIN
from bci_affect.processors import FACE_TYPE

logger = logging.getLogger(__name__)

__all__ = ["MARKERS_TYPE", "TrialSpan", "marker_events", "parse_trials", "pick_session_streams"]

#: Stream type of session markers (and of acquisition event streams, named ``<stream>-events``).
MARKERS_TYPE = "Markers"


def _describe(streams: Mapping[str, Chunk]) -> str:
    return ", ".join(
        f"{n!r} (type {c.info.type!r}, {c.info.n_chans} ch)" for n, c in streams.items()
    )


def marker_events(chunk: Chunk) -> list[tuple[float, dict]]:
    """The JSON-object samples of a string stream as ``(time, body)``, in time order."""
    out = []
    if not chunk.info.is_string or chunk.n_times == 0:
        return out
    for t, s in zip(chunk.times, chunk.data[0], strict=True):
        try:
            body = json.loads(s)
        except (TypeError, ValueError):
            continue
        if isinstance(body, dict):
            out.append((float(t), body))
    out.sort(key=lambda it: it[0])  # stable: simultaneous markers keep their order
    return out


def pick_session_streams(
    streams: Mapping[str, Chunk],
    *,
    eeg: str | None = None,
    face: str | None = None,
    markers: str | None = None,
    session: str = "the session",
) -> tuple[Chunk, Chunk | None, Chunk]:
    """The EEG, FaceFeatures and session-marker streams of a loaded session.

    Parameters
    ----------
    streams : mapping of str to Chunk
        Every stream of the session by name (one whole chunk each).
    eeg, face, markers : str, optional
        Names to use; default: the numeric stream of type ``EEG``, the stream of type
        ``FaceFeatures`` (``None`` when there is none), and the string stream of type
        ``Markers`` that holds ``trial_start`` events (acquisition event streams such as
        ``EEG-events`` are also of type ``Markers`` but hold none).
    session : str
        Name of the session for error messages.

    Returns
    -------
    eeg, face, markers : Chunk, Chunk or None, Chunk

    Raises
    ------
    StreamNotFoundError
        A named stream is missing, no EEG or markers stream is found, or the choice is
        ambiguous; the message lists the session's streams.
    """
    have = _describe(streams)

    def named(name: str, what: str) -> Chunk:
        if name not in streams:
            raise StreamNotFoundError(
                f"{session} has no {what} stream named {name!r}; its streams: {have}"
            )
        return streams[name]

    if eeg is not None:
        eeg_chunk = named(eeg, "EEG")
    else:
        cands = [
            c for c in streams.values() if c.info.type.upper() == "EEG" and not c.info.is_string
        ]
        if len(cands) != 1:
            why = "no numeric stream of type 'EEG'" if not cands else "several EEG streams"
            raise StreamNotFoundError(
                f"{session}: {why}; its streams: {have}. Name the EEG stream (--eeg-stream)"
            )
        eeg_chunk = cands[0]
    if eeg_chunk.info.is_string or not eeg_chunk.info.sfreq > 0:
        raise StreamNotFoundError(
            f"{session}: stream {eeg_chunk.name!r} is not regularly sampled numeric EEG"
        )
    if face is not None:
        face_chunk: Chunk | None = named(face, "FaceFeatures")
    else:
        cands = [c for c in streams.values() if c.info.type == FACE_TYPE]
        if len(cands) > 1:
            raise StreamNotFoundError(
                f"{session}: several FaceFeatures streams; its streams: {have}. "
                "Name one (--face-stream)"
            )
        face_chunk = cands[0] if cands else None
    if markers is not None:
        marker_chunk = named(markers, "markers")
    else:
        cands = [
            c
            for c in streams.values()
            if c.info.is_string
            and c.info.type.lower() == MARKERS_TYPE.lower()
            and any(b.get("event") == "trial_start" for _, b in marker_events(c))
        ]
        if len(cands) > 1:
            by_name = [c for c in cands if c.name == MARKERS_TYPE]
            cands = by_name or cands
        if len(cands) != 1:
            why = (
                "no Markers stream with trial_start events"
                if not cands
                else "several Markers streams with trial_start events"
            )
            raise StreamNotFoundError(
                f"{session}: {why}; its streams: {have}. A training session needs JSON markers "
                '{"event": "trial_start", "trial": N}, {"event": "rating", "valence": V, '
                '"arousal": A}, {"event": "trial_end", "trial": N}; name the stream with '
                "--markers-stream"
            )
        marker_chunk = cands[0]
    return eeg_chunk, face_chunk, marker_chunk


@dataclass(frozen=True)
class TrialSpan:
    """One trial of a session: its span on the LSL clock and its self-report.

    Attributes
    ----------
    trial : int
        Trial number from the markers.
    start, end : float
        ``trial_start`` and ``trial_end`` times, LSL seconds.
    valence, arousal : float or None
        The 1–9 ratings (``None`` when not reported).
    """

    trial: int
    start: float
    end: float
    valence: float | None = None
    arousal: float | None = None


def _rating_value(body: dict, key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError(f"{key} rating {v!r} is not a number")
    x = float(v)  # ValueError / TypeError for non-numbers
    if not (math.isfinite(x) and RATING_MIN <= x <= RATING_MAX):
        raise ValueError(f"{key} rating {v!r} is outside [{RATING_MIN:g}, {RATING_MAX:g}]")
    return x


def _trial_id(body: dict) -> int | None:
    v = body.get("trial")
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def parse_trials(markers: Chunk, *, session: str = "the session") -> list[TrialSpan]:
    """Trials and ratings from a session's JSON markers.

    ``trial_start`` opens a trial (numbered by its ``trial`` field, else by its order);
    ``trial_end`` closes it (the trial named, else the open one); a ``rating`` belongs to the
    trial it names, else to the trial that started last. A trial that starts while another
    is open closes that one. Problems (a trial that never ends, a duplicate trial number, a
    rating outside 1–9) are logged as warnings naming the session, and the trial concerned
    is left out or left unrated; nothing is guessed.

    Parameters
    ----------
    markers : Chunk
        String stream whose samples are JSON objects; other samples are ignored.
    session : str
        Name used in warnings.

    Returns
    -------
    list of TrialSpan
        Closed trials in start order.
    """
    spans: dict[int, list[float]] = {}
    order: list[int] = []
    ratings: dict[int, tuple[float | None, float | None]] = {}
    open_id: int | None = None
    last_id: int | None = None
    for t, body in marker_events(markers):
        event = body.get("event")
        if event == "trial_start":
            tid = _trial_id(body)
            if tid is None:
                tid = len(order) + 1
                while tid in spans:
                    tid += 1
            if tid in spans:
                logger.warning(
                    "%s: trial %d starts a second time at %.3f s; the repeat is left out",
                    session,
                    tid,
                    t,
                )
                continue
            if open_id is not None:
                logger.warning(
                    "%s: trial %d starts at %.3f s while trial %d is open; trial %d ends there",
                    session,
                    tid,
                    t,
                    open_id,
                    open_id,
                )
                spans[open_id][1] = t
            spans[tid] = [t, math.nan]
            order.append(tid)
            open_id = last_id = tid
        elif event == "trial_end":
            tid = _trial_id(body)
            tid = open_id if tid is None else tid
            if tid is None or tid not in spans or not math.isnan(spans[tid][1]):
                logger.warning(
                    "%s: trial_end at %.3f s for trial %s, which is not open; ignored",
                    session,
                    t,
                    tid,
                )
                continue
            spans[tid][1] = t
            if open_id == tid:
                open_id = None
        elif event == "rating":
            tid = _trial_id(body)
            tid = last_id if tid is None else tid
            if tid is None:
                logger.warning("%s: rating at %.3f s before any trial; ignored", session, t)
                continue
            try:
                pair = (_rating_value(body, "valence"), _rating_value(body, "arousal"))
            except (TypeError, ValueError) as exc:
                logger.warning("%s: trial %d: %s; the trial is left unrated", session, tid, exc)
                ratings[tid] = (None, None)
                continue
            if tid in ratings:
                logger.warning(
                    "%s: trial %d rated again at %.3f s; the last rating counts", session, tid, t
                )
            ratings[tid] = pair
    out = []
    for tid in order:
        start, end = spans[tid]
        if math.isnan(end):
            logger.warning("%s: trial %d never ends (no trial_end); left out", session, tid)
            continue
        v, a = ratings.get(tid, (None, None))
        out.append(TrialSpan(tid, start, end, v, a))
    return out
