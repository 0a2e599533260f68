"""Stateful streaming steps: ``Config`` (frozen) + ``reset()`` + ``__call__``.

Each wraps pure maths from :mod:`bci_affect.dsp`; outputs do not depend on how the input is
chunked.
"""

from bci_affect.processors.features import (
    FeatureConfig,
    FeatureExtractor,
    Features,
    extract_features,
)
from bci_affect.processors.preprocess import Preprocess, PreprocessConfig
from bci_affect.processors.quality import Quality, QualityConfig, QualityScorer, score_windows
from bci_affect.processors.signals import (
    SignalPipeline,
    SignalsConfig,
    WindowResult,
    iter_recording,
    process_recording,
)
from bci_affect.processors.windower import FACE_TYPE, Window, WindowConfig, Windower

__all__ = [
    "FACE_TYPE",
    "FeatureConfig",
    "FeatureExtractor",
    "Features",
    "Preprocess",
    "PreprocessConfig",
    "Quality",
    "QualityConfig",
    "QualityScorer",
    "SignalPipeline",
    "SignalsConfig",
    "Window",
    "WindowConfig",
    "WindowResult",
    "Windower",
    "extract_features",
    "iter_recording",
    "process_recording",
    "score_windows",
]
