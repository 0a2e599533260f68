"""The windows a benchmark scores: labelled EEG features (and face frames), once per run.

:class:`EvalSet` holds what every table needs, as numpy arrays over ``N`` windows: the EEG
band features ``eeg_de`` ``(N, n_chans, n_bands)``, the face frames when there are any, the
EEG quality and EMG scores, the labels, and each window's subject, trial and time span. It is
built either from recorded sessions (:func:`build_eval_set`: the training windows of
:mod:`bci_affect.training.dataset`, plus the same sessions with corrupted EEG for the
robustness table) or from a plain feature table (:mod:`bci_affect.evaluation.features_csv`).

:func:`save_eval_set` / :func:`load_eval_set` keep the arrays in an ``.npz`` file so that a
second run on the same recordings and settings does not cut the windows again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.chunk import Chunk
from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.models.teacher import class_names as scheme_class_names
from bci_affect.models.teacher import ratings_to_labels
from bci_affect.training.dataset import DatasetConfig, WindowDataset, session_windows
from bci_affect.training.inputs import signals_config_to_dict
from bci_affect.training.markers import pick_session_streams

logger = logging.getLogger(__name__)

__all__ = [
    "CorruptionConfig",
    "EvalSet",
    "build_eval_set",
    "cache_key",
    "corrupt_eeg",
    "from_window_dataset",
    "load_eval_set",
    "save_eval_set",
]

#: Cache file format version (bump when the arrays change meaning).
CACHE_VERSION = 1

#: Per-window arrays of an EvalSet (first axis: windows); the others are metadata.
_ARRAYS = (
    "eeg_de",
    "labels",
    "subject",
    "session",
    "trial",
    "t_start",
    "t_end",
    "face",
    "face_mask",
    "emg_score",
    "eeg_quality",
    "valence",
    "arousal",
    "corrupt_eeg_de",
    "corrupt_emg_score",
    "corrupt_eeg_quality",
)


@dataclass(frozen=True)
class CorruptionConfig:
    """How the robustness table corrupts EEG: broadband Gaussian noise added to the raw stream.

    Parameters
    ----------
    noise_uv : float
        RMS of the white noise added to every channel, µV (0: no corrupted copy is built).
        50 µV over the 0–125 Hz band of a 250 Hz stream puts about 900 µV² into 1–45 Hz,
        several times the EEG's own power there: a loose electrode or a moving cable.
    seed : int
        Seed of the noise.
    """

    noise_uv: float = 50.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.noise_uv) and self.noise_uv >= 0):
            raise ConfigError(f"noise_uv must be a finite number >= 0 µV, got {self.noise_uv}")


@dataclass(frozen=True, eq=False)
class EvalSet:
    """Labelled windows for the benchmark (``N`` windows, ``K`` classes).

    Attributes
    ----------
    eeg_de : ndarray, shape (N, n_chans, n_bands), float32
        EEG band features (differential entropy; for a feature table ``n_bands`` is 1 and a
        "channel" is a feature column). NaN where a channel was left out.
    labels : ndarray of int64, shape (N,)
    subject, session : ndarray of str, shape (N,)
        Subject and recording session of each window (a feature table: the subject).
    trial : ndarray of str, shape (N,)
        Trial id, unique within its subject (e.g. ``"sub-01/ses-01#3"``).
    t_start, t_end : ndarray, shape (N,)
        Window span, seconds (for a feature table: the row's position in its subject).
    class_names : tuple of str
    feature_names : tuple of str
        One name per ``n_chans * n_bands`` feature (``"<channel>_<band>"``).
    ch_names, bands : tuple of str
        The EEG channels and bands of ``eeg_de``.
    label_scheme : str or None
        ``"quadrant"``, ``"valence"`` or ``"arousal"`` for recorded sessions, ``None`` for a
        feature table.
    face : ndarray, shape (N, n_frames, n_face_chans), float32, or None
    face_mask : ndarray of bool, shape (N, n_frames), or None
    face_ch_names : tuple of str
    emg_score, eeg_quality : ndarray, shape (N,), or None
        EMG score in [0, 1] and EEG quality in [0, 1] of each window.
    valence, arousal : ndarray, shape (N,), or None
        The trial's 1–9 ratings (for other label schemes).
    corrupt_eeg_de, corrupt_emg_score, corrupt_eeg_quality : ndarray or None
        The same windows cut from the same sessions with corrupted EEG
        (:class:`CorruptionConfig`).
    source : str
        ``"sessions"`` or ``"features"``.
    info : dict
        What the windows were made from (settings, counts), for reports.
    """

    eeg_de: NDArray
    labels: NDArray
    subject: NDArray
    session: NDArray
    trial: NDArray
    t_start: NDArray
    t_end: NDArray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    ch_names: tuple[str, ...]
    bands: tuple[str, ...]
    label_scheme: str | None = None
    face: NDArray | None = None
    face_mask: NDArray | None = None
    face_ch_names: tuple[str, ...] = ()
    emg_score: NDArray | None = None
    eeg_quality: NDArray | None = None
    valence: NDArray | None = None
    arousal: NDArray | None = None
    corrupt_eeg_de: NDArray | None = None
    corrupt_emg_score: NDArray | None = None
    corrupt_eeg_quality: NDArray | None = None
    source: str = "sessions"
    info: dict | None = None

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        for name in _ARRAYS:
            v = getattr(self, name)
            if v is not None and v.shape[0] != n:
                raise ConfigError(f"EvalSet.{name} has {v.shape[0]} rows for {n} labels")
        if self.eeg_de.ndim != 3:
            raise ConfigError(f"eeg_de must be (N, n_chans, n_bands), got {self.eeg_de.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ConfigError(f"labels must lie in [0, {len(self.class_names)})")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_face(self) -> bool:
        return self.face is not None and bool(self.face_mask.any())

    @property
    def has_corrupted(self) -> bool:
        return self.corrupt_eeg_de is not None

    @property
    def trial_keys(self) -> NDArray:
        """``"<subject>|<trial>"`` per window: the unit no split may cut."""
        return np.char.add(np.char.add(self.subject.astype(str), "|"), self.trial.astype(str))

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(np.unique(self.subject.astype(str)).tolist())

    def spread_times(self) -> tuple[NDArray, NDArray]:
        """Window spans on one time line per session (sessions placed 1e6 s apart), so that
        windows of different sessions never count as overlapping."""
        _, code = np.unique(self.session, return_inverse=True)
        offset = 1.0e6 * code
        return self.t_start + offset, self.t_end + offset

    def subset(self, index: Any) -> EvalSet:
        """The windows selected by ``index`` (indices or a boolean mask)."""
        idx = np.asarray(index)
        return replace(
            self,
            **{k: None if getattr(self, k) is None else getattr(self, k)[idx] for k in _ARRAYS},
        )

    def relabel(self, scheme: str, threshold: float = 5.0) -> EvalSet:
        """The windows labelled with another rating scheme; windows without the ratings it needs
        are dropped."""
        if self.valence is None or self.arousal is None:
            raise ConfigError("relabelling needs the ratings; a feature table has none")
        names = scheme_class_names(scheme)
        need_v = scheme in ("quadrant", "valence")
        need_a = scheme in ("quadrant", "arousal")
        keep = np.ones(len(self), bool)
        if need_v:
            keep &= np.isfinite(self.valence)
        if need_a:
            keep &= np.isfinite(self.arousal)
        sub = self.subset(keep)
        labels = ratings_to_labels(
            sub.valence if need_v else None,
            sub.arousal if need_a else None,
            scheme=scheme,
            threshold=threshold,
        )
        return replace(
            sub,
            labels=np.asarray(labels, dtype=np.int64).reshape(-1),
            class_names=names,
            label_scheme=scheme,
        )

    def summary(self) -> dict[str, Any]:
        """Counts for reports."""
        counts = np.bincount(self.labels, minlength=self.n_classes).tolist()
        return {
            "source": self.source,
            "n_windows": len(self),
            "n_trials": int(np.unique(self.trial_keys).size),
            "n_subjects": len(self.subjects),
            "class_counts": dict(zip(self.class_names, counts, strict=True)),
            "n_features": len(self.feature_names),
            "face_frames_per_window": None if self.face is None else int(self.face.shape[1]),
            "windows_with_face": 0 if self.face_mask is None else int(self.face_mask.any(1).sum()),
            "corrupted_copy": self.has_corrupted,
        }


def from_window_dataset(
    ds: WindowDataset,
    *,
    face_stride: int = 1,
    corrupted: WindowDataset | None = None,
    info: dict | None = None,
) -> EvalSet:
    """An :class:`EvalSet` from training windows.

    Parameters
    ----------
    ds : WindowDataset
    face_stride : int
        Keep every ``face_stride``-th face frame (fewer frames, faster teachers).
    corrupted : WindowDataset, optional
        The same windows from corrupted sessions (aligned by session and window end).
    info : dict, optional
    """
    if face_stride < 1:
        raise ConfigError(f"face_stride must be >= 1, got {face_stride}")
    face = mask = None
    if ds.face is not None:
        face = np.ascontiguousarray(ds.face[:, ::face_stride])
        mask = np.ascontiguousarray(ds.face_mask[:, ::face_stride])
    trial = np.array([f"{s}#{t}" for s, t in zip(ds.session, ds.trial, strict=True)], dtype=str)
    extra: dict[str, Any] = {}
    if corrupted is not None:
        order = _align(ds, corrupted)
        extra = {
            "corrupt_eeg_de": corrupted.eeg_de[order],
            "corrupt_emg_score": np.asarray(corrupted.emg_score, np.float32)[order],
            "corrupt_eeg_quality": np.asarray(corrupted.eeg_quality, np.float32)[order],
        }
    n_chans, n_bands = ds.eeg_de.shape[1:]
    return EvalSet(
        eeg_de=np.asarray(ds.eeg_de, np.float32),
        labels=np.asarray(ds.labels, np.int64),
        subject=np.asarray(ds.subject).astype(str),
        session=np.asarray(ds.session).astype(str),
        trial=trial,
        t_start=np.asarray(ds.t_end, np.float64) - ds.window_s,
        t_end=np.asarray(ds.t_end, np.float64),
        class_names=tuple(ds.class_names),
        feature_names=tuple(f"{c}_{b}" for c in ds.eeg_ch_names for b in ds.bands),
        ch_names=tuple(ds.eeg_ch_names),
        bands=tuple(ds.bands),
        label_scheme=ds.label_scheme,
        face=face,
        face_mask=mask,
        face_ch_names=tuple(ds.face_ch_names),
        emg_score=np.asarray(ds.emg_score, np.float32),
        eeg_quality=np.asarray(ds.eeg_quality, np.float32),
        valence=np.asarray(ds.valence, np.float64),
        arousal=np.asarray(ds.arousal, np.float64),
        source="sessions",
        info=dict(info or {}, n_chans=int(n_chans), n_bands=int(n_bands)),
        **extra,
    )


def _align(ds: WindowDataset, other: WindowDataset) -> NDArray[np.int64]:
    """Index into ``other`` of each window of ``ds`` (same session and window end)."""
    key = {
        (s, round(float(t), 4)): i
        for i, (s, t) in enumerate(zip(other.session, other.t_end, strict=True))
    }
    try:
        return np.array(
            [key[(s, round(float(t), 4))] for s, t in zip(ds.session, ds.t_end, strict=True)],
            dtype=np.int64,
        )
    except KeyError as exc:
        raise ConfigError(
            f"the corrupted sessions lack window {exc.args[0]} of the clean ones; the corruption "
            "must not change the timestamps"
        ) from None


def corrupt_eeg(
    streams: Mapping[str, Chunk],
    config: CorruptionConfig,
    *,
    dataset_config: DatasetConfig | None = None,
    session: str = "the session",
    seed: int = 0,
) -> dict[str, Chunk]:
    """The session's streams with white Gaussian noise added to the EEG (a copy).

    Parameters
    ----------
    streams : mapping of str to Chunk
    config : CorruptionConfig
    dataset_config : DatasetConfig, optional
        Names the EEG stream (default: the one of type EEG).
    session : str
        For error messages.
    seed : int
        Extra seed (e.g. the session's index), combined with ``config.seed``.
    """
    dc = dataset_config or DatasetConfig()
    eeg, _, _ = pick_session_streams(
        streams,
        eeg=dc.eeg_stream,
        face=dc.face_stream,
        markers=dc.markers_stream,
        session=session,
    )
    rng = np.random.default_rng([config.seed, seed])
    noisy = eeg.data.astype(np.float64) + config.noise_uv * rng.standard_normal(eeg.data.shape)
    out = dict(streams)
    out[eeg.name] = replace(eeg, data=noisy.astype(eeg.data.dtype))
    return out


def build_eval_set(
    sessions: Iterable[tuple[str, Mapping[str, Chunk]]],
    config: DatasetConfig,
    *,
    subjects: Mapping[str, str] | None = None,
    face_stride: int = 1,
    corruption: CorruptionConfig | None = None,
    progress: Callable[[str, WindowDataset], None] | None = None,
    sites: bool = True,
) -> EvalSet:
    """Cut the labelled windows of loaded sessions once, with a corrupted twin.

    With ``sites`` (the default, what the product's model reads) the EEG features of every
    arm are the montage-free, session-normalised virtual-site features
    (:mod:`bci_affect.processors.sites`); otherwise the differential entropy per channel.

    Sessions are consumed one at a time (only their windows are kept).

    Parameters
    ----------
    sessions : iterable of (session id, streams)
    config : DatasetConfig
        Windows, filters, label scheme (the EEG tensor is never kept: the benchmark's models
        read band features).
    subjects : mapping of session id to subject id, optional
    face_stride : int
        Keep every ``face_stride``-th face frame.
    corruption : CorruptionConfig, optional
        Also cut the windows of each session with corrupted EEG (``noise_uv`` 0: not).
    progress : callable, optional
        Called with ``(session id, its windows)``.

    Raises
    ------
    ConfigError
        No session gave a window.
    """
    signals = config.signals
    if signals.features.tensor:
        signals = replace(signals, features=replace(signals.features, tensor=False))
        config = replace(config, signals=signals)
    clean, dirty = [], []
    n = 0
    for i, (name, streams) in enumerate(sessions):
        n += 1
        subject = (subjects or {}).get(name)
        part = session_windows(streams, config, session=name, subject=subject)
        clean.append(part)
        if corruption is not None and corruption.noise_uv > 0 and len(part):
            bad = corrupt_eeg(streams, corruption, dataset_config=config, session=name, seed=i)
            dirty.append(session_windows(bad, config, session=name, subject=subject))
        if progress is not None:
            progress(name, part)
    if n == 0:
        raise ConfigError("no sessions given")
    ds = WindowDataset.concat(clean)
    if len(ds) == 0:
        raise ConfigError(
            f"none of the {n} sessions has a window inside a rated trial; check the Markers "
            "stream (trial_start / rating / trial_end JSON markers) and the window length"
        )
    corrupted = WindowDataset.concat(dirty) if dirty else None
    info = {
        "signals": signals_config_to_dict(signals),
        "label_scheme": config.label_scheme,
        "rating_threshold": config.rating_threshold,
        "skip_start_s": config.skip_start_s,
        "window_s": signals.window.window_s,
        "hop_s": signals.window.hop_s,
        "face_stride": face_stride,
        "corruption": None if corruption is None else {"noise_uv": corruption.noise_uv},
        "n_sessions": n,
    }
    info["eeg_features"] = "sites" if sites else "channels"
    if sites:
        ds = ds if ds.eeg_ch_names == VIRTUAL_SITES else ds.montage_free()
        if corrupted is not None and corrupted.eeg_ch_names != VIRTUAL_SITES:
            corrupted = corrupted.montage_free()
    return from_window_dataset(ds, face_stride=face_stride, corrupted=corrupted, info=info)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_key(files: Iterable[str | Path], settings: Mapping[str, Any]) -> str:
    """A short hash of the session files (path, size, modification time) and the settings."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}".encode())
    for f in sorted(Path(p).resolve() for p in files):
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


_META = (
    "class_names",
    "feature_names",
    "ch_names",
    "bands",
    "label_scheme",
    "face_ch_names",
    "source",
    "info",
)


def save_eval_set(es: EvalSet, path: str | Path) -> Path:
    """Write the arrays of an :class:`EvalSet` to an ``.npz`` file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(es, k) for k in _ARRAYS if getattr(es, k) is not None}
    meta = {k: getattr(es, k) for k in _META}
    meta["version"] = CACHE_VERSION
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, __meta__=np.array(json.dumps(meta, default=str)), **arrays)
    tmp.replace(path)
    return path


def load_eval_set(path: str | Path) -> EvalSet:
    """Read an :class:`EvalSet` written by :func:`save_eval_set`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise FileFormatError(f"{path}: not a benchmark window cache ({exc})") from None
    if meta.pop("version", None) != CACHE_VERSION:
        raise FileFormatError(f"{path}: window cache of another version; delete it")
    for k in ("class_names", "feature_names", "ch_names", "bands", "face_ch_names"):
        meta[k] = tuple(meta[k])
    kw = {f.name: None for f in fields(EvalSet) if f.name in _ARRAYS}
    kw.update(arrays)
    return EvalSet(**kw, **meta)
