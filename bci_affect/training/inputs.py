"""Model inputs from scored windows, and the JSON form of the signals chain.

:func:`window_arrays` / :func:`window_batch` turn :class:`~bci_affect.processors.WindowResult`
objects (from :class:`~bci_affect.processors.SignalPipeline` live, or
:func:`~bci_affect.processors.iter_recording` offline) into the model's
:class:`~bci_affect.models.transfer.WindowBatch`. Training and live inference both go through
them, so a model trained offline sees exactly the inputs it gets live.
:func:`signals_config_to_dict` / :func:`signals_config_from_dict` store the chain in a model's
checkpoint so that inference rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError
from bci_affect.processors import (
    FeatureConfig,
    PreprocessConfig,
    QualityConfig,
    SignalsConfig,
    WindowConfig,
    WindowResult,
)

__all__ = [
    "emg_score_from_muscle",
    "signals_config_from_dict",
    "signals_config_to_dict",
    "window_arrays",
    "window_batch",
]


def signals_config_to_dict(config: SignalsConfig) -> dict[str, Any]:
    """JSON-able form of a :class:`SignalsConfig` (the checkpoint's feature schema)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(asdict(config))


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list | tuple) else v


def signals_config_from_dict(d: Mapping[str, Any]) -> SignalsConfig:
    """Inverse of :func:`signals_config_to_dict`; unknown or invalid keys are refused."""
    parts = {
        "preprocess": PreprocessConfig,
        "window": WindowConfig,
        "quality": QualityConfig,
        "features": FeatureConfig,
    }
    if not isinstance(d, Mapping):
        raise ConfigError(f"a signals config must be a mapping, got {type(d).__name__}")
    unknown = set(d) - set(parts)
    if unknown:
        raise ConfigError(
            f"unknown signals config sections {sorted(unknown)}; valid: {list(parts)}"
        )
    kwargs = {}
    for name, cls in parts.items():
        section = d.get(name, {})
        valid = {f.name for f in fields(cls)}
        bad = set(section) - valid
        if bad:
            raise ConfigError(
                f"unknown keys {sorted(bad)} in signals config section {name!r}; valid: {sorted(valid)}"
            )
        try:
            kwargs[name] = cls(**{k: _tuples(v) for k, v in section.items()})
        except TypeError as exc:
            raise ConfigError(f"invalid signals config section {name!r}: {exc}") from None
    return SignalsConfig(**kwargs)


def emg_score_from_muscle(muscle_score: Any) -> NDArray[np.float64]:
    """The model's EMG score in [0, 1] from the quality module's muscle score.

    ``emg = m / (1 + m)``: the quality module's muscle threshold (``m = 1``, band RMS equal
    to ``QualityConfig.emg_uv``) sits at 0.5, the middle of the model's muscle-leakage guard;
    clean EEG (``m`` about 0.35 with a sensor noise floor) is about 0.26. NaN (no usable
    channel) stays NaN, which the model treats as contaminated.
    """
    m = np.asarray(muscle_score, dtype=np.float64)
    m = np.where(np.isfinite(m), np.maximum(m, 0.0), np.nan)
    return m / (1.0 + m)


def window_arrays(
    results: Sequence[WindowResult],
    *,
    n_frames: int | None = None,
    eeg_raw: bool = False,
    sites: bool = False,
) -> dict[str, NDArray | None]:
    """Model inputs of scored windows as numpy arrays, by :class:`WindowBatch` field.

    Parameters
    ----------
    results : sequence of WindowResult
        Windows from :class:`~bci_affect.processors.SignalPipeline` or
        :func:`~bci_affect.processors.iter_recording` (same EEG channels).
    n_frames : int, optional
        Face frames per window (padding with NaN and a false mask; extra frames are cut from
        the start). Default: the most frames of any window.
    eeg_raw : bool
        Also return the filtered, re-referenced window (needs ``FeatureConfig.tensor``).
    sites : bool
        ``eeg_de`` holds the session-normalised virtual-site features (``features.sites``,
        shape (N, n_sites, n_bands); NaN for a window without them) instead of the per-channel
        differential entropy: the input of a montage-free student.

    Returns
    -------
    dict
        ``face`` (N, n_frames, n_face_chans) float32 or None without a face stream;
        ``face_mask`` (N, n_frames) bool or None; ``eeg_de`` (N, n_chans, n_bands) float32
        (NaN for channels left out); ``eeg_raw`` (N, n_chans, n_times) float32 or None (NaN
        for incomplete windows); ``emg_score`` (N,) from :func:`emg_score_from_muscle`;
        ``eeg_quality`` (N,).
    """
    n = len(results)
    if n == 0:
        raise ConfigError("no windows to convert")
    de = site_array(results) if sites else np.stack([r.features.de for r in results])
    de = de.astype(np.float32)
    muscle = np.array([r.quality.muscle_score for r in results], dtype=np.float64)
    quality = np.array([r.quality.quality for r in results], dtype=np.float32)
    raw = None
    if eeg_raw:
        w0 = results[0].window
        raw = np.full((n, len(w0.ch_names), w0.n_times), np.nan, dtype=np.float32)
        for i, r in enumerate(results):
            if r.features.tensor is None:
                if r.window.complete:
                    raise ConfigError(
                        "the windows carry no EEG tensor; build them with FeatureConfig(tensor=True)"
                    )
                continue
            raw[i] = r.features.tensor
    face = mask = None
    has_face = [r.window.face is not None for r in results]
    if any(has_face):
        names = next(r.window.face_names for r in results if r.window.face is not None)
        f = (
            n_frames
            if n_frames is not None
            else max(
                (r.window.face.shape[0] for r in results if r.window.face is not None), default=0
            )
        )
        f = max(int(f), 1)
        face = np.full((n, f, len(names)), np.nan, dtype=np.float32)
        mask = np.zeros((n, f), dtype=bool)
        for i, r in enumerate(results):
            w = r.window
            if w.face is None or w.face.shape[0] == 0:
                continue
            k = min(f, w.face.shape[0])
            face[i, :k] = w.face[-k:]
            mask[i, :k] = w.face_mask[-k:]
    return {
        "face": face,
        "face_mask": mask,
        "eeg_de": de,
        "eeg_raw": raw,
        "emg_score": emg_score_from_muscle(muscle).astype(np.float32),
        "eeg_quality": quality,
    }


def site_array(results: Sequence[WindowResult]) -> NDArray[np.float32]:
    """``features.sites`` of each window, shape (N, n_sites, n_bands); NaN rows for windows
    without them (a montage without scalp positions)."""
    from bci_affect.dsp.montage import VIRTUAL_SITES  # noqa: PLC0415

    n_bands = len(results[0].features.bands)
    empty = np.full((len(VIRTUAL_SITES), n_bands), np.nan, np.float32)
    return np.stack([r.features.sites if r.features.sites is not None else empty for r in results])


def window_batch(
    results: Sequence[WindowResult],
    *,
    n_frames: int | None = None,
    eeg_raw: bool = False,
    sites: bool = False,
) -> Any:
    """:func:`window_arrays` as a :class:`~bci_affect.models.transfer.WindowBatch`."""
    from bci_affect.models.transfer import WindowBatch

    arrays = window_arrays(results, n_frames=n_frames, eeg_raw=eeg_raw, sites=sites)
    return WindowBatch.from_arrays(**arrays)
