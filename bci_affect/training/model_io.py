"""Trained-model folders: the checkpoint plus the feature schema that made its inputs.

A trained model is a checkpoint folder (:mod:`bci_affect.models.checkpoint`:
``config.json`` + ``weights.safetensors``) whose ``metadata`` also records how the windows were
made (``features``: the whole :class:`~bci_affect.processors.SignalsConfig`, window length,
bands, label scheme and rating threshold), the dataset it saw and its metrics. Live
inference rebuilds the signals chain from it, so a model sees the same features live as in
training.

:func:`save_model` writes the folder atomically (a temporary sibling renamed into place);
:func:`load_model` refuses a stream the model does not fit, naming what differs.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bci_affect.core.chunk import StreamInfo
from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.models.checkpoint import (
    CONFIG_FILE,
    check_compatible,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from bci_affect.models.transfer import AffectModel
from bci_affect.processors import SignalsConfig
from bci_affect.training.dataset import WindowDataset
from bci_affect.training.inputs import signals_config_from_dict, signals_config_to_dict

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_SCHEMA_VERSION",
    "TrainedModel",
    "check_output_folder",
    "feature_schema",
    "load_model",
    "save_model",
]

#: Version of the ``metadata.features`` block.
FEATURE_SCHEMA_VERSION = 1


def feature_schema(dataset: WindowDataset) -> dict[str, Any]:
    """The ``metadata.features`` block of a model trained on ``dataset``."""
    return {
        "schema_version": FEATURE_SCHEMA_VERSION,
        "eeg_ch_names": list(dataset.eeg_ch_names),
        "sfreq": dataset.sfreq,
        "window_s": dataset.window_s,
        "hop_s": dataset.signals.window.hop_s,
        "n_times": dataset.n_times,
        "bands": list(dataset.bands),
        "face_ch_names_count": len(dataset.face_ch_names),
        "label_scheme": dataset.label_scheme,
        "class_names": list(dataset.class_names),
        "rating_threshold": dataset.rating_threshold,
        "emg_score": "m / (1 + m), m = QualityConfig muscle score",
        "signals": signals_config_to_dict(dataset.signals),
    }


def check_output_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that a model can be written to ``path`` (call before long work).

    Raises
    ------
    ConfigError
        ``path`` exists and ``overwrite`` is off, or it exists and is not a model folder (a
        folder that is not a checkpoint is never replaced, even with ``overwrite``).
    """
    out = Path(path)
    if not out.exists():
        if not out.parent.exists():
            raise ConfigError(f"the folder {out.parent} for the model does not exist; create it")
        return out
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; give a new folder path for the model")
    if any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{out} exists and is not a model folder (no {CONFIG_FILE}); give a new folder path"
        )
    if not overwrite and any(out.iterdir()):
        raise ConfigError(f"the model folder {out} already exists; pass --overwrite to replace it")
    return out


def save_model(
    model: AffectModel,
    path: str | os.PathLike[str],
    *,
    dataset: WindowDataset,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trained model folder atomically.

    The checkpoint is written to a temporary sibling folder and renamed into place, so
    ``path`` holds either the old model or the complete new one, never a mixture.

    Parameters
    ----------
    model : AffectModel
    path : path-like
        The model folder.
    dataset : WindowDataset
        The training data (its feature schema is stored).
    metadata : dict, optional
        More JSON-able metadata (metrics, dataset summary, settings).
    overwrite : bool
        Replace an existing model folder.

    Returns
    -------
    Path
    """
    out = check_output_folder(path, overwrite=overwrite)
    meta = {"features": feature_schema(dataset), **(metadata or {})}
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    try:
        save_checkpoint(model, tmp, metadata=meta)
        for f in tmp.iterdir():  # temporary files are private; a model is an ordinary file
            f.chmod(_file_mode())
        if out.exists():
            old = out.parent / f".{out.name}.old-{tag}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote model %s", out)
    return out


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode of a file created the ordinary way."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@dataclass(eq=False)
class TrainedModel:
    """A loaded model folder.

    Attributes
    ----------
    model : AffectModel
        In eval mode.
    signals : SignalsConfig
        The signals chain its inputs must come from.
    metadata : dict
        The checkpoint's metadata (features, dataset, metrics, settings).
    path : Path
    """

    model: AffectModel
    signals: SignalsConfig
    metadata: dict[str, Any]
    path: Path

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names


def _signals(doc: dict[str, Any], folder: Path) -> SignalsConfig:
    feats = (doc.get("metadata") or {}).get("features")
    if not isinstance(feats, dict) or "signals" not in feats:
        raise FileFormatError(
            f"{folder / CONFIG_FILE} has no metadata.features.signals: it was not written by "
            "`bci-affect train`, so the features its inputs need are unknown"
        )
    version = feats.get("schema_version")
    if not isinstance(version, int) or version > FEATURE_SCHEMA_VERSION:
        raise FileFormatError(
            f"{folder / CONFIG_FILE} has feature schema version {version!r}; this bci-affect "
            f"reads versions <= {FEATURE_SCHEMA_VERSION}: upgrade bci-affect"
        )
    try:
        return signals_config_from_dict(feats["signals"])
    except ConfigError as exc:
        raise FileFormatError(f"{folder / CONFIG_FILE}: {exc}") from None


def load_model(
    path: str | os.PathLike[str],
    *,
    eeg: StreamInfo | None = None,
    face: StreamInfo | None = None,
    window_s: float | None = None,
    label_scheme: str | None = None,
    device: str = "cpu",
) -> TrainedModel:
    """Load a model folder, refusing streams it does not fit.

    Parameters
    ----------
    path : path-like
        Model folder written by :func:`save_model` (``bci-affect train --out``).
    eeg : StreamInfo, optional
        The EEG stream it will score: its channel names (same names, same order) and
        sample rate must match the model's.
    face : StreamInfo, optional
        The FaceFeatures stream: its channel names must match.
    window_s : float, optional
        The window length the caller will cut, seconds (must match).
    label_scheme : str, optional
        The classes the caller expects.
    device : str

    Returns
    -------
    TrainedModel

    Raises
    ------
    ConfigError
        A stream, window length or label scheme does not match; the message names it.
    FileFormatError
        The folder is not a complete model.
    """
    folder = Path(path)
    config, doc = read_checkpoint_config(folder)
    signals = _signals(doc, folder)
    source = f"model {folder}"
    if eeg is not None and eeg.type.upper() != "EEG":
        raise ConfigError(
            f"stream {eeg.name!r} has type {eeg.type!r}, not EEG; pass the EEG stream's info"
        )
    if window_s is not None and not math.isclose(
        window_s, signals.window.window_s, rel_tol=1e-9, abs_tol=1e-9
    ):
        raise ConfigError(
            f"{source} was trained on {signals.window.window_s:g} s windows, not {window_s:g} s; "
            "use the model's window length or retrain"
        )
    check_compatible(
        config,
        eeg_ch_names=eeg.ch_names if eeg is not None else None,
        face_ch_names=face.ch_names if face is not None else None,
        sfreq=eeg.sfreq if eeg is not None else None,
        label_scheme=label_scheme,
        source=source,
    )
    model = load_checkpoint(folder, device=device)
    return TrainedModel(model, signals, dict(doc.get("metadata") or {}), folder)
