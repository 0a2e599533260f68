"""Labelled windows from recorded sessions: windows, features and labels, trial by trial.

A dataset is a folder of recorded sessions (XDF): an EEG stream, a FaceFeatures stream and a
``Markers`` stream of JSON strings that carry the trial boundaries and the self-reports::

    {"event": "trial_start", "trial": 3}
    {"event": "rating", "trial": 3, "valence": 7, "arousal": 3}
    {"event": "trial_end", "trial": 3}

This module takes sessions that are already loaded (``dict[str, Chunk]`` per session, e.g. from
``acquisition.xdf.load_xdf``), runs the *same* signals chain as live inference
(:func:`~bci_affect.processors.iter_recording`: the offline, vectorised twin of
:class:`~bci_affect.processors.SignalPipeline`), keeps the windows that lie wholly inside a
rated trial, and labels them from the trial's 1–9 ratings with a label scheme
(:func:`~bci_affect.models.teacher.ratings_to_labels`). Every window keeps its session,
subject and trial, so that splits can keep whole trials together.

Streams and trials come from :mod:`bci_affect.training.markers`; the model inputs from
:mod:`bci_affect.training.inputs`, which live inference uses too, so a model trained offline
sees exactly the inputs it gets live. Nothing is cached: building a dataset always reads the
sessions it is given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.chunk import Chunk
from bci_affect.core.errors import ConfigError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.models.teacher import (
    DEFAULT_LABEL_SCHEME,
    RATING_MAX,
    RATING_MIN,
    class_names,
    ratings_to_labels,
)
from bci_affect.processors import SignalsConfig, WindowResult, iter_recording
from bci_affect.training.inputs import site_array, window_arrays
from bci_affect.training.markers import (
    TrialSpan,
    marker_events,
    parse_trials,
    pick_session_streams,
)

logger = logging.getLogger(__name__)

__all__ = ["DatasetConfig", "WindowDataset", "build_dataset", "session_windows"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetConfig:
    """How windows are cut from sessions and labelled.

    Parameters
    ----------
    signals : SignalsConfig
        The signals chain (filters, window length and hop, quality, features); stored in the
        checkpoint so that live inference rebuilds the same chain.
    label_scheme : {"quadrant", "valence", "arousal"}
        Classes from the ratings (default: the four valence-arousal quadrants).
    rating_threshold : float
        A 1–9 rating strictly above this is *high*.
    eeg_stream, face_stream, markers_stream : str, optional
        Stream names; default: the stream of type ``EEG``, the stream of type
        ``FaceFeatures``, and the string ``Markers`` stream that holds ``trial_start`` events.
    skip_start_s : float
        Leave out windows that start less than this after a trial starts (the time the
        induced state takes to build up), seconds.
    keep_incomplete : bool
        Keep windows with EEG gaps (their quality is 0 and the student gives them no evidence).
    """

    signals: SignalsConfig = field(default_factory=SignalsConfig)
    label_scheme: str = DEFAULT_LABEL_SCHEME
    rating_threshold: float = 5.0
    eeg_stream: str | None = None
    face_stream: str | None = None
    markers_stream: str | None = None
    skip_start_s: float = 0.0
    keep_incomplete: bool = False

    def __post_init__(self) -> None:
        class_names(self.label_scheme)
        if not RATING_MIN <= self.rating_threshold < RATING_MAX:
            raise ConfigError(
                f"rating_threshold must be in [{RATING_MIN:g}, {RATING_MAX:g}), "
                f"got {self.rating_threshold}"
            )
        if not (math.isfinite(self.skip_start_s) and self.skip_start_s >= 0):
            raise ConfigError(f"skip_start_s must be >= 0 s, got {self.skip_start_s}")


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------

#: Per-window arrays of a WindowDataset (first axis: windows).
_WINDOW_FIELDS = (
    "face",
    "face_mask",
    "eeg_de",
    "eeg_raw",
    "eeg_sites",
    "emg_score",
    "eeg_quality",
    "muscle_score",
    "valence",
    "arousal",
    "labels",
    "session",
    "subject",
    "trial",
    "t_end",
)


@dataclass(frozen=True, eq=False)
class WindowDataset:
    """Labelled windows of one or more sessions (``N`` windows, numpy arrays).

    Attributes
    ----------
    face : ndarray, shape (N, n_frames, n_face_chans), float32, or None
        FaceFeatures frames, NaN-padded; ``None`` when no session had a face stream.
    face_mask : ndarray of bool, shape (N, n_frames), or None
        Frames with a face.
    eeg_de : ndarray, shape (N, n_chans, n_bands), float32
        Differential entropy (nats), NaN for channels left out.
    eeg_raw : ndarray, shape (N, n_chans, n_times), float32, or None
        Filtered, re-referenced windows in µV (when the features kept the tensor).
    eeg_sites : ndarray, shape (N, n_sites, n_bands), float32
        Differential entropy on the virtual 10-20 montage, z-scored per session
        (:mod:`bci_affect.processors.sites`); NaN where a session has no scalp positions.
    emg_score : ndarray, shape (N,), float32
        Model EMG score in [0, 1] (:func:`emg_score_from_muscle`).
    eeg_quality : ndarray, shape (N,), float32
        Window quality in [0, 1].
    muscle_score : ndarray, shape (N,)
        The quality module's muscle score (1 at its threshold).
    valence, arousal : ndarray, shape (N,)
        The trial's 1–9 ratings (NaN when not reported).
    labels : ndarray of int64, shape (N,)
        Class index under ``label_scheme``.
    session, subject : ndarray of str, shape (N,)
        Session and subject of each window.
    trial : ndarray of int64, shape (N,)
        Trial number (unique within a session).
    t_end : ndarray, shape (N,)
        Window end, LSL seconds.
    eeg_ch_names, face_ch_names : tuple of str
        Channels.
    sfreq : float
        EEG rate, Hz.
    n_times : int
        Samples per window.
    bands : tuple of str
        Bands of ``eeg_de``.
    label_scheme : str
    rating_threshold : float
    signals : SignalsConfig
        The chain that made the windows.
    """

    face: NDArray | None
    face_mask: NDArray | None
    eeg_de: NDArray
    eeg_raw: NDArray | None
    emg_score: NDArray
    eeg_quality: NDArray
    muscle_score: NDArray
    valence: NDArray
    arousal: NDArray
    labels: NDArray
    session: NDArray
    subject: NDArray
    trial: NDArray
    t_end: NDArray
    eeg_ch_names: tuple[str, ...]
    face_ch_names: tuple[str, ...]
    sfreq: float
    n_times: int
    bands: tuple[str, ...]
    label_scheme: str
    rating_threshold: float
    signals: SignalsConfig
    eeg_sites: NDArray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.label_scheme)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def window_s(self) -> float:
        return self.signals.window.window_s

    @property
    def trial_keys(self) -> NDArray:
        """``"<session>#<trial>"`` per window: the unit that splits keep together."""
        return np.array([f"{s}#{t}" for s, t in zip(self.session, self.trial, strict=True)])

    @property
    def n_trials(self) -> int:
        return int(np.unique(self.trial_keys).size) if len(self) else 0

    @property
    def sessions(self) -> tuple[str, ...]:
        """Sessions in order of appearance."""
        return tuple(dict.fromkeys(self.session.tolist()))

    def class_counts(self) -> NDArray[np.int64]:
        """Windows per class, shape ``(n_classes,)``."""
        return np.bincount(self.labels, minlength=self.n_classes).astype(np.int64)

    def subset(self, index: Any) -> WindowDataset:
        """The windows selected by ``index`` (a slice, indices or a boolean mask)."""
        idx = index if isinstance(index, slice) else np.asarray(index)
        if isinstance(idx, np.ndarray):
            if idx.dtype == bool and idx.shape != (len(self),):
                raise ConfigError(f"a mask over {len(self)} windows has shape {idx.shape}")
            if idx.dtype != bool and idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise ConfigError(f"window indices must be integers, got {idx.dtype}")
            if idx.dtype != bool:
                idx = idx.astype(np.intp)
        return replace(
            self,
            **{
                k: None if getattr(self, k) is None else getattr(self, k)[idx]
                for k in _WINDOW_FIELDS
            },
        )

    def relabel(self, scheme: str, threshold: float | None = None) -> WindowDataset:
        """The same windows labelled with another scheme; windows without the needed
        rating are dropped."""
        thr = self.rating_threshold if threshold is None else threshold
        class_names(scheme)
        need = {"quadrant": ("valence", "arousal"), "valence": ("valence",)}.get(
            scheme, ("arousal",)
        )
        keep = np.all([np.isfinite(getattr(self, k)) for k in need], axis=0)
        sub = self.subset(keep)
        labels = (
            ratings_to_labels(
                sub.valence if "valence" in need else None,
                sub.arousal if "arousal" in need else None,
                scheme=scheme,
                threshold=thr,
            )
            if len(sub)
            else np.zeros(0, np.int64)
        )
        return replace(sub, labels=labels, label_scheme=scheme, rating_threshold=thr)

    def batch(self, index: Any = None) -> Any:
        """Model inputs (:class:`~bci_affect.models.transfer.WindowBatch`, float32 tensors that
        share memory with these arrays)."""
        from bci_affect.models.transfer import WindowBatch

        ds = self if index is None else self.subset(index)
        return WindowBatch.from_arrays(
            face=ds.face,
            face_mask=ds.face_mask,
            eeg_de=ds.eeg_de,
            eeg_raw=ds.eeg_raw,
            emg_score=ds.emg_score,
            eeg_quality=ds.eeg_quality,
        )

    def summary(self) -> dict[str, Any]:
        """Counts for reports: windows, trials, sessions, subjects, windows per class."""
        return {
            "n_windows": len(self),
            "n_trials": self.n_trials,
            "n_sessions": len(self.sessions),
            "n_subjects": int(np.unique(self.subject).size) if len(self) else 0,
            "class_counts": dict(zip(self.class_names, self.class_counts().tolist(), strict=True)),
            "windows_with_face": int(self.face_mask.any(axis=1).sum())
            if self.face_mask is not None
            else 0,
        }

    def montage_free(self) -> WindowDataset:
        """The same windows with the virtual-site features as the EEG input: ``eeg_de`` is
        ``eeg_sites``, the channels are the virtual sites, no filtered windows are kept."""
        if self.eeg_sites is None:
            raise ConfigError("these windows carry no virtual-site features")
        return replace(self, eeg_de=self.eeg_sites, eeg_raw=None, eeg_ch_names=tuple(VIRTUAL_SITES))

    @classmethod
    def concat(cls, parts: Sequence[WindowDataset]) -> WindowDataset:
        """Join datasets made with the same channels, rate, window and label scheme.

        Sessions of different montages or rates are joined on their montage-free features
        (:meth:`montage_free`): the per-channel features cannot be stacked then, and
        ``sfreq`` / ``n_times`` are 0 when the rates differ.
        """
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ConfigError("no datasets to join")
        first = parts[0]
        mixed = any(
            getattr(p, a) != getattr(first, a)
            for p in parts[1:]
            for a in ("eeg_ch_names", "sfreq", "n_times")
        )
        if mixed and all(_has_sites(p) for p in parts):
            logger.info("sessions of several montages or rates: joined on virtual-site features")
            rates = {p.sfreq for p in parts}
            parts = [p.montage_free() for p in parts]
            if len(rates) > 1 or len({p.n_times for p in parts}) > 1:
                parts = [replace(p, sfreq=0.0, n_times=0) for p in parts]
            first = parts[0]
        for p in parts[1:]:
            for attr in ("eeg_ch_names", "sfreq", "n_times", "bands", "label_scheme"):
                if getattr(p, attr) != getattr(first, attr):
                    where = p.sessions[0] if len(p) else "a session"
                    raise ConfigError(
                        f"{where} has {attr} {getattr(p, attr)!r}, the sessions before it "
                        f"{getattr(first, attr)!r}; a dataset needs one montage, rate, window "
                        "and label scheme"
                    )
            if p.face_ch_names and first.face_ch_names and p.face_ch_names != first.face_ch_names:
                where = p.sessions[0] if len(p) else "a session"
                raise ConfigError(
                    f"{where} has other FaceFeatures channels than the sessions before it "
                    "(another face feature extractor version?); use sessions of one version"
                )
        face_names = next((p.face_ch_names for p in parts if p.face_ch_names), ())
        out: dict[str, Any] = {}
        n_frames = max((p.face.shape[1] for p in parts if p.face is not None), default=0)
        if face_names:
            faces, masks = [], []
            for p in parts:
                f = np.full((len(p), n_frames, len(face_names)), np.nan, np.float32)
                m = np.zeros((len(p), n_frames), bool)
                if p.face is not None:
                    f[:, : p.face.shape[1]] = p.face
                    m[:, : p.face.shape[1]] = p.face_mask
                faces.append(f)
                masks.append(m)
            out["face"], out["face_mask"] = np.concatenate(faces), np.concatenate(masks)
        else:
            out["face"] = out["face_mask"] = None
        for k in _WINDOW_FIELDS:
            if k in ("face", "face_mask"):
                continue
            if k in ("eeg_raw", "eeg_sites"):
                have = all(getattr(p, k) is not None for p in parts)
                out[k] = np.concatenate([getattr(p, k) for p in parts]) if have else None
                continue
            out[k] = np.concatenate([getattr(p, k) for p in parts])
        return replace(first, face_ch_names=face_names, **out)


def _has_sites(ds: WindowDataset) -> bool:
    """Whether every window can be scored on the virtual montage (a scalp position known)."""
    return ds.eeg_sites is not None and (
        len(ds) == 0 or bool(np.isfinite(ds.eeg_sites).any(axis=(1, 2)).all())
    )


def _empty_dataset(eeg: Chunk, face: Chunk | None, config: DatasetConfig) -> WindowDataset:
    n_times = int(round(config.signals.window.window_s * eeg.sfreq))
    n_bands = len(config.signals.features.bands)
    c = eeg.info.n_chans
    nf = face.info.n_chans if face is not None else 0
    return WindowDataset(
        face=np.zeros((0, 1, nf), np.float32) if face is not None else None,
        face_mask=np.zeros((0, 1), bool) if face is not None else None,
        eeg_de=np.zeros((0, c, n_bands), np.float32),
        eeg_raw=np.zeros((0, c, n_times), np.float32) if config.signals.features.tensor else None,
        eeg_sites=np.zeros((0, len(VIRTUAL_SITES), n_bands), np.float32),
        emg_score=np.zeros(0, np.float32),
        eeg_quality=np.zeros(0, np.float32),
        muscle_score=np.zeros(0),
        valence=np.zeros(0),
        arousal=np.zeros(0),
        labels=np.zeros(0, np.int64),
        session=np.zeros(0, dtype=object),
        subject=np.zeros(0, dtype=object),
        trial=np.zeros(0, np.int64),
        t_end=np.zeros(0),
        eeg_ch_names=tuple(eeg.ch_names),
        face_ch_names=tuple(face.ch_names) if face is not None else (),
        sfreq=float(eeg.sfreq),
        n_times=n_times,
        bands=tuple(b[0] for b in config.signals.features.bands),
        label_scheme=config.label_scheme,
        rating_threshold=config.rating_threshold,
        signals=config.signals,
    )


def _trial_labels(trials: list[TrialSpan], config: DatasetConfig) -> list[tuple[TrialSpan, int]]:
    out = []
    for tr in trials:
        v, a = tr.valence, tr.arousal
        need_v = config.label_scheme in ("quadrant", "valence")
        need_a = config.label_scheme in ("quadrant", "arousal")
        if (need_v and v is None) or (need_a and a is None):
            continue
        y = ratings_to_labels(
            v if need_v else None,
            a if need_a else None,
            scheme=config.label_scheme,
            threshold=config.rating_threshold,
        )
        out.append((tr, int(y)))
    return out


def session_windows(
    streams: Mapping[str, Chunk],
    config: DatasetConfig | None = None,
    *,
    session: str,
    subject: str | None = None,
) -> WindowDataset:
    """Labelled windows of one loaded session.

    The whole EEG (and FaceFeatures) stream goes through the signals chain
    (:func:`~bci_affect.processors.iter_recording`); a window is kept when it lies wholly
    inside a trial that has the ratings the label scheme needs (and starts at least
    ``skip_start_s`` after the trial starts) and, unless ``keep_incomplete``, has no EEG gap.

    Parameters
    ----------
    streams : mapping of str to Chunk
        The session's streams by name (see :func:`pick_session_streams`).
    config : DatasetConfig
    session : str
        Session id (unique in a dataset, e.g. ``"sub-01/ses-01"``).
    subject : str, optional
        Subject id; default: the ``subject`` field of a ``session_start`` marker, else
        ``session``.

    Returns
    -------
    WindowDataset
        Possibly empty (a warning says why).
    """
    config = config or DatasetConfig()
    eeg, face, markers = pick_session_streams(
        streams,
        eeg=config.eeg_stream,
        face=config.face_stream,
        markers=config.markers_stream,
        session=session,
    )
    if subject is None:
        starts = [b for _, b in marker_events(markers) if b.get("event") == "session_start"]
        subject = str(starts[0]["subject"]) if starts and "subject" in starts[0] else session
    trials = parse_trials(markers, session=session)
    labelled = _trial_labels(trials, config)
    if len(labelled) < len(trials):
        logger.warning(
            "%s: %d of %d trials lack the ratings the %r labels need; left out",
            session,
            len(trials) - len(labelled),
            len(trials),
            config.label_scheme,
        )
    empty = _empty_dataset(eeg, face, config)
    if not labelled or eeg.n_times == 0:
        logger.warning("%s: no rated trial with EEG; no windows", session)
        return empty
    starts_arr = np.array([tr.start for tr, _ in labelled])
    ends_arr = np.array([tr.end for tr, _ in labelled])
    order = np.argsort(starts_arr, kind="stable")
    starts_arr, ends_arr = starts_arr[order], ends_arr[order]
    labelled = [labelled[i] for i in order]
    tol = 0.5 / eeg.sfreq
    window_s = config.signals.window.window_s
    kept: list[WindowResult] = []
    which: list[int] = []
    n_gaps = 0
    for r in iter_recording(eeg, face, config.signals):
        t_end = r.window.t_end
        t_start = t_end - window_s
        j = int(np.searchsorted(starts_arr, t_start + tol, side="right")) - 1
        if j < 0:
            continue
        if t_start + tol < starts_arr[j] + config.skip_start_s or t_end - tol > ends_arr[j]:
            continue
        if not r.window.complete and not config.keep_incomplete:
            n_gaps += 1
            continue
        kept.append(r)
        which.append(j)
    if n_gaps:
        logger.warning("%s: %d windows inside trials have EEG gaps; left out", session, n_gaps)
    if not kept:
        logger.warning("%s: no window fits inside a rated trial", session)
        return empty
    arrays = window_arrays(kept, eeg_raw=config.signals.features.tensor)
    idx = np.array(which)
    spans = [labelled[j][0] for j in which]
    n = len(kept)
    return replace(
        empty,
        face=arrays["face"],
        face_mask=arrays["face_mask"],
        eeg_de=arrays["eeg_de"],
        eeg_raw=arrays["eeg_raw"],
        eeg_sites=site_array(kept),
        emg_score=arrays["emg_score"],
        eeg_quality=arrays["eeg_quality"],
        muscle_score=np.array([r.quality.muscle_score for r in kept], dtype=np.float64),
        valence=np.array([np.nan if s.valence is None else s.valence for s in spans]),
        arousal=np.array([np.nan if s.arousal is None else s.arousal for s in spans]),
        labels=np.array([labelled[j][1] for j in idx], dtype=np.int64),
        session=np.array([session] * n, dtype=object),
        subject=np.array([subject] * n, dtype=object),
        trial=np.array([s.trial for s in spans], dtype=np.int64),
        t_end=np.array([r.window.t_end for r in kept]),
    )


def build_dataset(
    sessions: Mapping[str, Mapping[str, Chunk]] | Iterable[tuple[str, Mapping[str, Chunk]]],
    config: DatasetConfig | None = None,
    *,
    subjects: Mapping[str, str] | None = None,
    progress: Callable[[str, WindowDataset], None] | None = None,
) -> WindowDataset:
    """Labelled windows of many loaded sessions.

    Parameters
    ----------
    sessions : mapping or iterable of (session id, streams)
        Each session's streams by name. An iterator is consumed one session at a time, so a
        loader can hand sessions over as it reads them (only the windows are kept).
    config : DatasetConfig
    subjects : mapping of session id to subject id, optional
    progress : callable, optional
        Called with ``(session id, its windows)`` after each session.

    Raises
    ------
    ConfigError
        No session gave a window, or sessions differ in montage, rate or face channels.
    """
    config = config or DatasetConfig()
    items = sessions.items() if isinstance(sessions, Mapping) else sessions
    parts = []
    for name, streams in items:
        part = session_windows(streams, config, session=name, subject=(subjects or {}).get(name))
        parts.append(part)
        if progress is not None:
            progress(name, part)
    if not parts:
        raise ConfigError("no sessions given")
    ds = WindowDataset.concat(parts)
    if len(ds) == 0:
        raise ConfigError(
            f"none of the {len(parts)} sessions has a window inside a rated trial; check the "
            "Markers stream (trial_start / rating / trial_end JSON markers) and the window length"
        )
    return ds
