"""Build a registered model by name (the registry itself is :data:`bci_affect.models.REGISTRY`).

Every model takes ``n_chans, n_outputs`` positionally plus keyword-only hyper-parameters
(``n_chans`` is the number of input channels of the modality the model reads: FaceFeatures
channels for the teacher, EEG channels otherwise).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bci_affect.models import REGISTRY, get_model_class

__all__ = ["REGISTRY", "build_model", "get_model_class"]


def build_model(name: str, n_chans: int, n_outputs: int, **kwargs: Any) -> nn.Module:
    """Instantiate a registered model: ``REGISTRY[name](n_chans, n_outputs, **kwargs)``."""
    return get_model_class(name)(n_chans, n_outputs, **kwargs)
