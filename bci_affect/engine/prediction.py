"""The prediction record of one window, its JSON line and the ``AffectPredictions`` LSL layout.

One :class:`Prediction` per scored window (every hop), per session. It travels three ways:

- as a JSON object per line (:meth:`Prediction.to_json`), the full record;
- as one sample of the ``AffectPredictions`` LSL stream (:meth:`Prediction.to_row`, layout from
  :func:`prediction_channels`), stamped with the window's end time, so ``bci-affect record``
  stores it beside the EEG and FaceFeatures it was computed from;
- in memory, to the summary and the report (:mod:`bci_affect.engine.report`).

JSON fields (``K`` classes, e.g. ``LVLA, LVHA, HVLA, HVHA`` for the quadrant scheme):

=======================  ===================================================================
``session``              session name (several sessions can share one engine)
``index``                window index on the session's window grid
``t_window_end``         end of the window, seconds on the LSL clock
``window_s``             window length, seconds
``classes``              class names, in class-index order
``predicted``            the fused decision (class name)
``probs``                fused class probabilities (Dirichlet mean of the fused opinion)
``probs_teacher``        the face teacher's class probabilities (softmax of its logits)
``probs_student``        the EEG student's class probabilities (softmax of its logits)
``uncertainty``          fused Dirichlet uncertainty ``K / S`` in (0, 1]; 1 = no evidence
``uncertainty_teacher``  the face opinion's uncertainty
``uncertainty_student``  the EEG opinion's uncertainty
``disagreement``         Jensen-Shannon divergence (nats, [0, ln 2]) between teacher and
                         student probabilities; 0 without a face
``conformal_set``        classes of the conformal prediction set; ``null`` when the model has
                         no fitted conformal predictor
``modalities``           ``face_available`` (a face in the window), ``eeg_available`` (EEG
                         the student could read), ``face_used`` / ``eeg_used`` (the modality
                         contributed evidence to the fused opinion)
``reliability``          ``face`` and ``eeg`` reliability weights in [0, 1] the model applied
``quality``              ``eeg_quality`` ([0, 1]), ``eeg_coverage``, ``complete``, ``blink``,
                         ``blink_score``, ``muscle``, ``muscle_score``, ``bad_channels``,
                         ``face_frames``, ``face_coverage``, ``face_gap``
``n_skipped``            windows of this session skipped (back-pressure) since the previous
                         prediction
``latency_ms``           ``signals`` (chunk arrival to window ready: queueing, filtering,
                         windowing, quality, features), ``queue`` (waiting for the model),
                         ``model`` (batch assembly, forward pass, record), ``total``
``lag_ms``               live only: LSL clock at prediction minus ``t_window_end`` (includes
                         waiting for the samples after the window's end); ``null`` offline
``model``                which model scored the window
=======================  ===================================================================

Non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, FileFormatError, ShapeError

__all__ = [
    "LATENCY_STAGES",
    "PREDICTIONS_NAME",
    "PREDICTIONS_TYPE",
    "JsonlWriter",
    "Prediction",
    "iter_jsonl",
    "prediction_channels",
    "prediction_units",
    "predictions_chunk",
    "predictions_stream_info",
    "read_jsonl",
    "row_to_dict",
]

#: Stream type (and default name) of the predictions stream.
PREDICTIONS_TYPE = "AffectPredictions"
PREDICTIONS_NAME = "AffectPredictions"

#: Latency stages of a prediction, in pipeline order, then the total.
LATENCY_STAGES = ("signals", "queue", "model", "total")

_QUALITY_CHANNELS = (
    ("quality", "ratio"),
    ("eeg_coverage", "ratio"),
    ("face_coverage", "ratio"),
    ("face_available", "boolean"),
    ("eeg_available", "boolean"),
    ("face_used", "boolean"),
    ("eeg_used", "boolean"),
    ("face_reliability", "ratio"),
    ("eeg_reliability", "ratio"),
    ("blink", "boolean"),
    ("muscle", "boolean"),
    ("n_bad_channels", "count"),
    ("n_skipped", "count"),
)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"need >= 2 unique class names, got {list(classes)}")
    return classes


def prediction_channels(classes: Sequence[str]) -> tuple[str, ...]:
    """Channel names of the ``AffectPredictions`` stream for these classes, in order.

    ``t_window_end``, ``window_index``, ``predicted`` (class index), ``p_<class>`` (fused),
    ``p_teacher_<class>``, ``p_student_<class>``, ``uncertainty``, ``uncertainty_teacher``,
    ``uncertainty_student``, ``disagreement``, ``set_<class>`` (1 in the conformal set, 0 out,
    NaN without a conformal predictor), ``quality`` (EEG window quality), ``eeg_coverage``,
    ``face_coverage``, ``face_available``, ``eeg_available``, ``face_used``, ``eeg_used``,
    ``face_reliability``, ``eeg_reliability``, ``blink``, ``muscle``, ``n_bad_channels``,
    ``n_skipped``, ``latency_signals_ms``, ``latency_queue_ms``, ``latency_model_ms``,
    ``latency_total_ms``, ``lag_ms`` (NaN offline).
    """
    classes = _check_classes(classes)
    return (
        ("t_window_end", "window_index", "predicted")
        + tuple(f"p_{c}" for c in classes)
        + tuple(f"p_teacher_{c}" for c in classes)
        + tuple(f"p_student_{c}" for c in classes)
        + ("uncertainty", "uncertainty_teacher", "uncertainty_student", "disagreement")
        + tuple(f"set_{c}" for c in classes)
        + tuple(name for name, _ in _QUALITY_CHANNELS)
        + tuple(f"latency_{s}_ms" for s in LATENCY_STAGES)
        + ("lag_ms",)
    )


def prediction_units(classes: Sequence[str]) -> tuple[str, ...]:
    """Unit of each channel of :func:`prediction_channels`."""
    k = len(_check_classes(classes))
    return (
        ("seconds", "count", "class_index")
        + ("probability",) * (3 * k)
        + ("ratio", "ratio", "ratio", "nats")
        + ("boolean",) * k
        + tuple(unit for _, unit in _QUALITY_CHANNELS)
        + ("milliseconds",) * (len(LATENCY_STAGES) + 1)
    )


def predictions_stream_info(
    classes: Sequence[str],
    *,
    name: str = PREDICTIONS_NAME,
    source_id: str = "",
    session: str | None = None,
    model: str | None = None,
) -> StreamInfo:
    """The :class:`StreamInfo` of an ``AffectPredictions`` stream.

    Irregular rate (one sample per window, stamped with the window's end time), ``double64``
    channels: ``t_window_end`` is an LSL clock reading, which float32 would round to tens of
    milliseconds on a machine that has been up for days.
    """
    classes = _check_classes(classes)
    desc: dict[str, str] = {"classes": ",".join(classes)}
    if session is not None:
        desc["session"] = session
    if model is not None:
        desc["model"] = model
    return StreamInfo(
        name=name,
        type=PREDICTIONS_TYPE,
        sfreq=0.0,
        ch_names=prediction_channels(classes),
        units=prediction_units(classes),
        source_id=source_id,
        channel_format="double64",
        desc=desc,
    )


def _num_or_none(x: Any) -> float | None:
    """A finite float, else ``None`` (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _bool_or_none(x: Any) -> bool | None:
    return None if x is None else bool(x)


def _class_dict(classes: tuple[str, ...], values: NDArray) -> dict[str, float | None]:
    return {
        c: (v if math.isfinite(v) else None) for c, v in zip(classes, values.tolist(), strict=True)
    }


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the engine says about one window (see the module docstring for each field).

    Attributes
    ----------
    probs, probs_teacher, probs_student : ndarray, shape (n_classes,)
        Class probabilities, in the order of ``classes``.
    conformal_set : ndarray of bool, shape (n_classes,), or None
    quality : dict
        Window quality (EEG and face).
    latency_ms : dict
        Milliseconds per stage (:data:`LATENCY_STAGES`).
    """

    session: str
    index: int
    t_window_end: float
    window_s: float
    classes: tuple[str, ...]
    probs: NDArray[np.float64]
    probs_teacher: NDArray[np.float64]
    probs_student: NDArray[np.float64]
    uncertainty: float
    uncertainty_teacher: float
    uncertainty_student: float
    disagreement: float
    conformal_set: NDArray[np.bool_] | None
    face_available: bool
    eeg_available: bool
    face_used: bool
    eeg_used: bool
    face_reliability: float
    eeg_reliability: float
    quality: dict = field(default_factory=dict)
    n_skipped: int = 0
    latency_ms: dict = field(default_factory=dict)
    lag_ms: float | None = None
    model: str = ""

    @property
    def predicted(self) -> int:
        """Index of the fused decision."""
        return int(np.argmax(self.probs))

    @property
    def predicted_class(self) -> str:
        return self.classes[self.predicted]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (non-finite numbers as ``None``)."""
        q = self.quality
        classes = self.classes
        n = _num_or_none
        return {
            "session": self.session,
            "index": int(self.index),
            "t_window_end": n(self.t_window_end),
            "window_s": n(self.window_s),
            "classes": list(classes),
            "predicted": self.predicted_class,
            "probs": _class_dict(classes, self.probs),
            "probs_teacher": _class_dict(classes, self.probs_teacher),
            "probs_student": _class_dict(classes, self.probs_student),
            "uncertainty": n(self.uncertainty),
            "uncertainty_teacher": n(self.uncertainty_teacher),
            "uncertainty_student": n(self.uncertainty_student),
            "disagreement": n(self.disagreement),
            "conformal_set": None
            if self.conformal_set is None
            else [c for c, keep in zip(classes, self.conformal_set.tolist(), strict=True) if keep],
            "modalities": {
                "face_available": bool(self.face_available),
                "eeg_available": bool(self.eeg_available),
                "face_used": bool(self.face_used),
                "eeg_used": bool(self.eeg_used),
            },
            "reliability": {"face": n(self.face_reliability), "eeg": n(self.eeg_reliability)},
            "quality": {
                "eeg_quality": n(q.get("eeg_quality")),
                "eeg_coverage": n(q.get("eeg_coverage")),
                "complete": _bool_or_none(q.get("complete")),
                "blink": _bool_or_none(q.get("blink")),
                "blink_score": n(q.get("blink_score")),
                "muscle": _bool_or_none(q.get("muscle")),
                "muscle_score": n(q.get("muscle_score")),
                "bad_channels": [str(c) for c in q.get("bad_channels", ())],
                "face_frames": None if q.get("face_frames") is None else int(q["face_frames"]),
                "face_coverage": n(q.get("face_coverage")),
                "face_gap": _bool_or_none(q.get("face_gap")),
            },
            "n_skipped": int(self.n_skipped),
            "latency_ms": {s: n(self.latency_ms.get(s)) for s in LATENCY_STAGES},
            "lag_ms": n(self.lag_ms),
            "model": self.model,
        }

    def to_json(self) -> str:
        """One line of JSON (no NaN: non-finite numbers are ``null``)."""
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    def to_row(self) -> NDArray[np.float64]:
        """The ``AffectPredictions`` sample, shape ``(n_channels,)``, float64."""
        k = len(self.classes)
        q = self.quality
        sets = (
            np.full(k, np.nan) if self.conformal_set is None else self.conformal_set.astype(float)
        )
        nan = math.nan

        def f(v: Any) -> float:
            return nan if v is None else float(v)

        quality = [
            f(q.get("eeg_quality")),
            f(q.get("eeg_coverage")),
            f(q.get("face_coverage")),
            float(self.face_available),
            float(self.eeg_available),
            float(self.face_used),
            float(self.eeg_used),
            float(self.face_reliability),
            float(self.eeg_reliability),
            f(q.get("blink")),
            f(q.get("muscle")),
            float(len(q.get("bad_channels", ()))),
            float(self.n_skipped),
        ]
        return np.concatenate(
            [
                [self.t_window_end, float(self.index), float(self.predicted)],
                self.probs,
                self.probs_teacher,
                self.probs_student,
                [
                    self.uncertainty,
                    self.uncertainty_teacher,
                    self.uncertainty_student,
                    self.disagreement,
                ],
                sets,
                quality,
                [f(self.latency_ms.get(s)) for s in LATENCY_STAGES],
                [f(self.lag_ms)],
            ]
        ).astype(np.float64)


def predictions_chunk(predictions: Sequence[Prediction], info: StreamInfo) -> Chunk:
    """Predictions as one chunk of ``info``'s stream, each stamped with its window's end."""
    if not predictions:
        return Chunk.empty(info)
    rows = np.stack([p.to_row() for p in predictions])  # (n, n_chans)
    if rows.shape[1] != info.n_chans:
        raise ShapeError(
            f"predictions have {rows.shape[1]} channels, stream {info.name!r} has "
            f"{info.n_chans}; build the stream info with the model's class names"
        )
    times = np.array([p.t_window_end for p in predictions], dtype=np.float64)
    return Chunk(np.ascontiguousarray(rows.T), times, info)


def row_to_dict(row: Sequence[float], ch_names: Sequence[str]) -> dict[str, float]:
    """One ``AffectPredictions`` sample as ``{channel: value}`` (for consumers of the stream)."""
    row = list(row)
    if len(row) != len(ch_names):
        raise ShapeError(f"sample has {len(row)} values for {len(ch_names)} channels")
    return dict(zip(ch_names, (float(v) for v in row), strict=True))


class JsonlWriter:
    """Appends predictions to a JSON-lines file, one object per line, flushed per batch.

    Parameters
    ----------
    path : path-like
        File to write (folders are created; an existing file is replaced).
    flush_every : int
        Flush to the OS after this many lines (a crash loses at most that many).
    """

    def __init__(self, path: str | os.PathLike, *, flush_every: int = 1) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(
                f"{self.path} is a folder; give a file name such as predictions.jsonl"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from None
        self.flush_every = max(1, int(flush_every))
        self.n_written = 0

    def __call__(self, prediction: Prediction) -> None:
        self.write_record(prediction.to_dict())

    def write_record(self, record: dict[str, Any]) -> None:
        """Write one record (:meth:`Prediction.to_dict`) as a line."""
        if self._file is None:
            return
        self._file.write(json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n")
        self.n_written += 1
        if self.n_written % self.flush_every == 0:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a predictions JSON-lines file.

    Raises
    ------
    FileFormatError
        A line is not a JSON object with ``t_window_end`` and ``probs``.
    """
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """:func:`read_jsonl`, one record at a time."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"predictions file {path} not found")
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"{path}:{i}: not JSON ({exc.msg})") from None
            if not isinstance(rec, Mapping) or "t_window_end" not in rec or "probs" not in rec:
                raise FileFormatError(
                    f"{path}:{i}: not a prediction record (needs t_window_end and probs)"
                )
            yield dict(rec)
