"""Streaming inference: sources -> windows -> features -> model -> predictions.

:class:`Engine` serves live sessions and replays through one code path (see
:mod:`bci_affect.engine.engine`); :class:`Prediction` is the record of one window, published
on an ``AffectPredictions`` LSL stream and written as JSON lines
(:mod:`bci_affect.engine.prediction`); :mod:`bci_affect.engine.report` summarises a run and
draws its report. Importing this package loads torch (the engine scores with it).
"""

from bci_affect.engine.engine import (
    Engine,
    EngineConfig,
    EngineError,
    Feeder,
    Session,
    SessionStats,
    Sink,
)
from bci_affect.engine.models import (
    UNTRAINED_MODEL,
    LoadedModel,
    ModelProvider,
    StreamSignature,
    bundled_model_path,
    resolve_device,
)
from bci_affect.engine.prediction import (
    LATENCY_STAGES,
    PREDICTIONS_NAME,
    PREDICTIONS_TYPE,
    JsonlWriter,
    Prediction,
    iter_jsonl,
    prediction_channels,
    predictions_chunk,
    predictions_stream_info,
    read_jsonl,
    row_to_dict,
)
from bci_affect.engine.report import PredictionLog, format_summary, summarize, write_report

__all__ = [
    "LATENCY_STAGES",
    "PREDICTIONS_NAME",
    "PREDICTIONS_TYPE",
    "UNTRAINED_MODEL",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Feeder",
    "JsonlWriter",
    "LoadedModel",
    "ModelProvider",
    "Prediction",
    "PredictionLog",
    "Session",
    "SessionStats",
    "Sink",
    "StreamSignature",
    "bundled_model_path",
    "format_summary",
    "iter_jsonl",
    "prediction_channels",
    "predictions_chunk",
    "predictions_stream_info",
    "read_jsonl",
    "resolve_device",
    "row_to_dict",
    "summarize",
    "write_report",
]
