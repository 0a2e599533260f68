"""Model checkpoints: a folder with ``config.json`` and ``weights.safetensors``.

``config.json`` holds the :class:`~bci_affect.models.transfer.ModelConfig` (including the
FaceFeatures and EEG channel names, the sample rate and the window length), the class names,
the fitted conformal predictor and the package version; ``weights.safetensors`` holds plain
tensors (no pickled objects). Loading rebuilds the model from the config, loads the tensors
strictly, and refuses a live stream whose channels, sample rate or window length differ from
what the model was trained on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.models.transfer import AffectModel, ModelConfig
from bci_affect.uncertainty.conformal import ConformalPredictor

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "check_compatible",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "bci-affect-model"
CHECKPOINT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def _version() -> str:
    from bci_affect import __version__

    return __version__


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: AffectModel, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to the folder ``path`` (created if needed; files replaced atomically).

    Parameters
    ----------
    model : AffectModel
    path : path-like
        Checkpoint folder.
    metadata : dict, optional
        JSON-able extra information (dataset, subjects, metrics) stored under ``"metadata"``.

    Returns
    -------
    Path
        The folder.
    """
    from safetensors.torch import save_file

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"checkpoint path {folder} exists and is not a folder; choose a folder path"
        )
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    doc = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": "affect_model",
        "config": model.config.to_dict(),
        "class_names": list(model.class_names),
        "calibrated": bool(model.calibrated),
        "conformal": model.conformal.to_dict() if model.conformal is not None else None,
        "bci_affect_version": _version(),
        "metadata": metadata or {},
    }
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint metadata must be JSON-serialisable (no NaN): {exc}"
        ) from None
    _atomic_write(
        folder / WEIGHTS_FILE,
        lambda tmp: save_file(state, tmp, metadata={"format": CHECKPOINT_FORMAT}),
    )
    _atomic_write(
        folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8")
    )
    logger.info("saved checkpoint to %s", folder)
    return folder


def read_checkpoint_config(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and validate ``config.json`` of a checkpoint without loading the weights.

    Returns
    -------
    config : ModelConfig
    document : dict
        The whole JSON document (``class_names``, ``conformal``, ``metadata``...).
    """
    folder = Path(path)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileFormatError(
            f"{folder} is not a bci-affect checkpoint: {CONFIG_FILE} not found "
            "(a checkpoint is a folder written by `bci-affect train --out`)"
        )
    try:
        doc = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"cannot read {cfg_path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise FileFormatError(f"{cfg_path} is not a {CHECKPOINT_FORMAT} config")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise FileFormatError(
            f"{cfg_path} has checkpoint format version {version!r}; this bci-affect reads versions "
            f"<= {CHECKPOINT_VERSION}: upgrade bci-affect"
        )
    try:
        config = ModelConfig.from_dict(doc["config"])
    except KeyError:
        raise FileFormatError(f"{cfg_path} has no 'config' section") from None
    except ConfigError as exc:
        raise FileFormatError(f"{cfg_path}: {exc}") from None
    return config, doc


def _diff(expected: Sequence[str], got: Sequence[str]) -> str:
    missing = [c for c in expected if c not in set(got)]
    extra = [c for c in got if c not in set(expected)]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"extra {extra}")
    if not parts:
        parts.append("same channels in another order")
    return "; ".join(parts)


def check_compatible(
    config: ModelConfig,
    *,
    face_ch_names: Sequence[str] | None = None,
    eeg_ch_names: Sequence[str] | None = None,
    sfreq: float | None = None,
    n_times: int | None = None,
    label_scheme: str | None = None,
    source: str = "the checkpoint",
) -> None:
    """Refuse a stream that does not match what the model was trained on.

    Each argument that is given is compared with the config; ``None`` skips that check.

    Raises
    ------
    ConfigError
        Naming what differs and what to do.
    """
    if config.montage_free:
        if eeg_ch_names is not None:
            from bci_affect.dsp.montage import montage_map  # noqa: PLC0415

            montage_map(tuple(eeg_ch_names))  # >= 2 scalp positions, or one clear error
        eeg_ch_names = sfreq = n_times = None  # any montage, rate and window length fit
    if eeg_ch_names is not None and tuple(eeg_ch_names) != config.eeg_ch_names:
        raise ConfigError(
            f"{source} was trained on EEG channels {list(config.eeg_ch_names)} "
            f"({len(config.eeg_ch_names)}), the stream has {list(eeg_ch_names)} ({len(eeg_ch_names)}): "
            f"{_diff(config.eeg_ch_names, eeg_ch_names)}. Use the same montage in the same order, "
            "or train a model for this montage"
        )
    if face_ch_names is not None and tuple(face_ch_names) != config.face_ch_names:
        raise ConfigError(
            f"{source} was trained on FaceFeatures channels {list(config.face_ch_names)}, the stream has "
            f"{list(face_ch_names)}: {_diff(config.face_ch_names, face_ch_names)}. Use the same face "
            "feature extractor version, or retrain"
        )
    if (
        sfreq is not None
        and config.sfreq is not None
        and not math.isclose(sfreq, config.sfreq, rel_tol=1e-6)
    ):
        raise ConfigError(
            f"{source} was trained on EEG at {config.sfreq:g} Hz, the stream runs at {sfreq:g} Hz; "
            "resample the stream to the model's rate or retrain"
        )
    if (
        n_times is not None
        and config.n_times is not None
        and config.eeg_inputs != "de"
        and n_times != config.n_times
    ):
        raise ConfigError(
            f"{source} was trained on windows of {config.n_times} samples, got {n_times}; "
            "use the model's window length or retrain"
        )
    if label_scheme is not None and label_scheme != config.label_scheme:
        raise ConfigError(
            f"{source} predicts the label scheme {config.label_scheme!r}, not {label_scheme!r}; "
            "use a model trained for that scheme"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    face_ch_names: Sequence[str] | None = None,
    eeg_ch_names: Sequence[str] | None = None,
    sfreq: float | None = None,
    n_times: int | None = None,
    label_scheme: str | None = None,
    device: str | torch.device = "cpu",
) -> AffectModel:
    """Load a checkpoint folder, refusing a stream it does not fit.

    Parameters
    ----------
    path : path-like
        Checkpoint folder (see :func:`save_checkpoint`).
    face_ch_names, eeg_ch_names, sfreq, n_times, label_scheme : optional
        The live stream's properties; each one given must match the checkpoint
        (:func:`check_compatible`).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    AffectModel
        In eval mode.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    config, doc = read_checkpoint_config(folder)
    check_compatible(
        config,
        face_ch_names=face_ch_names,
        eeg_ch_names=eeg_ch_names,
        sfreq=sfreq,
        n_times=n_times,
        label_scheme=label_scheme,
        source=f"model {folder}",
    )
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileFormatError(
            f"checkpoint {folder} has no {WEIGHTS_FILE}; it is incomplete, save it again"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {weights}: {exc}") from None
    model = AffectModel.from_config(config)
    older = {"fusion_raw", "fusion_bias"} - set(state)
    if older == {"fusion_raw", "fusion_bias"}:  # saved before the fusion was learned
        logger.info(
            "%s predates the learned fusion: its fused output pools the two heads equally "
            "until it is retrained or personalised",
            folder,
        )
        state = {**state, **{k: v for k, v in model.state_dict().items() if k in older}}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FileFormatError(
            f"the weights in {weights} do not fit its {CONFIG_FILE} ({first}); the checkpoint is corrupt"
        ) from None
    if doc.get("conformal"):
        model.conformal = ConformalPredictor.from_dict(doc["conformal"])
    model.to(device)
    model.eval()
    return model
