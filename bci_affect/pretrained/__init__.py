"""The bundled default model: where the demo and new users start.

``default/`` is a model folder (``config.json`` + ``weights.safetensors``, about 200 kB)
written by ``bci-affect train``: the face teacher with its zero-label circumplex prior, and an
EEG student trained on the project's simulated sessions (the OpenBCI Cyton montage Fp1, Fp2,
C3, C4, P7, P8, O1, O2 at 250 Hz, 4 s windows, the four valence-arousal quadrants). Its
``config.json`` records the exact command, seed, dataset and validation metrics.
``scripts/make_default_model.sh`` rebuilds it.

A stream with another montage or rate is refused on loading; personalise or train a model for
it with ``bci-affect train``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from bci_affect.core.errors import FileFormatError

__all__ = ["DEFAULT_MODEL_NAME", "default_model_path", "load_default_model"]

#: Name of the bundled model folder inside this package.
DEFAULT_MODEL_NAME = "default"


def default_model_path() -> Path:
    """Folder of the bundled default model.

    Raises
    ------
    FileFormatError
        The installation lacks the model files (a broken or partial install).
    """
    path = Path(os.fspath(resources.files(__name__) / DEFAULT_MODEL_NAME))
    if not (path / "config.json").is_file() or not (path / "weights.safetensors").is_file():
        raise FileFormatError(
            f"the bundled default model is missing from {path}; reinstall bci-affect, or "
            "rebuild it with scripts/make_default_model.sh"
        )
    return path


def load_default_model(**kwargs: Any) -> Any:
    """Load the bundled model (:func:`bci_affect.training.model_io.load_model` keywords:
    ``eeg=``, ``face=`` stream infos, ``window_s=``, ``label_scheme=``, ``device=``)."""
    from bci_affect.training.model_io import load_model

    return load_model(default_model_path(), **kwargs)
