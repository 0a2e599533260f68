"""Torch models of bci-affect, and a name -> class registry.

Models are ``nn.Module`` classes without I/O (``fer_weights`` is the one module here that touches
files: it fetches and caches pretrained weights at set-up). :data:`REGISTRY` maps a model name
to its class and imports the class's module (and torch) only when it is looked up, so importing
this package stays cheap::

    from bci_affect.models import REGISTRY
    model = REGISTRY["mini_xception"]()
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from bci_affect.core.errors import ConfigError

__all__ = ["REGISTRY", "get_model_class"]

#: name -> "module:attribute" of every registered model.
_MODEL_PATHS: dict[str, str] = {
    "mini_xception": "bci_affect.models.fer:MiniXception",
    "affect_model": "bci_affect.models.transfer:AffectModel",
    "face_teacher": "bci_affect.models.teacher:FaceTeacher",
    "eeg_student": "bci_affect.models.student:EEGStudent",
    "logistic_baseline": "bci_affect.models.student:LogisticBaseline",
}


class _LazyRegistry(Mapping[str, type]):
    """A read-only mapping that imports a model's module on first lookup."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths

    def __getitem__(self, name: str) -> type:
        try:
            module_name, attr = self._paths[name].split(":")
        except KeyError:
            raise ConfigError(
                f"unknown model {name!r}; registered: {', '.join(sorted(self._paths))}"
            ) from None
        return getattr(importlib.import_module(module_name), attr)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths


#: Model name -> class (imported on lookup).
REGISTRY: Mapping[str, type] = _LazyRegistry(_MODEL_PATHS)


def get_model_class(name: str) -> type:
    """The class registered as ``name``; :class:`ConfigError` lists the names otherwise."""
    return REGISTRY[name]
